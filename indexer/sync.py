"""Backfill (history up to the safe head) and the sync daemon (catch up, then follow the tip)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from indexer.errors import ChainMismatch, ConfigError
from indexer.pipeline import Plan, RangeResult, process_range
from indexer.reorg import find_ancestor
from indexer.rpc import Rpc
from indexer.store import Store

logger = logging.getLogger(__name__)

OnRange = Callable[[Plan, RangeResult], None]


def check_chain(plan: Plan, rpc: Rpc) -> None:
    got = rpc.fetch_chain_id()
    if got != plan.chain.chain_id:
        raise ChainMismatch(f"RPC {rpc.endpoint} serves chain id {got}, but chains."
                            f"{plan.chain.name}.chain_id is {plan.chain.chain_id}")


def safe_head(plan: Plan, rpc: Rpc) -> int:
    """The newest block backfill may index: the finalized tag, or head - confirmations."""
    if plan.chain.use_finalized_tag:
        return rpc.fetch_head("finalized")
    return rpc.fetch_head() - plan.chain.confirmations


#: Fewest recent blocks whose hashes sync keeps, whatever `confirmations` says.
MIN_REORG_WINDOW = 64


def reorg_window(plan: Plan) -> int:
    return max(plan.chain.confirmations, MIN_REORG_WINDOW)


def resume_point(plan: Plan, store: Store, from_block: int | None, file: str) -> tuple[int, int]:
    """(first block to index, start_block of the contiguous indexed range)."""
    cp = store.load_checkpoint(plan.proto.name)
    if cp is None:
        start = plan.proto.start_block if from_block is None else from_block
        return start, start
    if from_block is None:
        return cp.block_number + 1, cp.start_block
    if not cp.start_block <= from_block <= cp.block_number + 1:
        raise ConfigError(file, "--from", from_block,
                          f"a block within the indexed range {cp.start_block}..{cp.block_number + 1}"
                          f" of {plan.proto.name} (ranges stay contiguous; start a new database for"
                          " a separate range)")
    return from_block, cp.start_block


def run_ranges(plan: Plan, rpc: Rpc, store: Store, lo: int, hi: int, start_block: int,
               stop: threading.Event, on_range: OnRange | None = None) -> int:
    """Index [lo, hi] range by range, committing each; returns the last block committed."""
    done = lo - 1
    while done < hi and not stop.is_set():
        result = process_range(plan, rpc, store, done + 1, hi, start_block)
        done = result.hi
        if on_range:
            on_range(plan, result)
    return done


def backfill(plan: Plan, rpc: Rpc, store: Store, from_block: int | None, to_block: int | None,
             file: str, stop: threading.Event, on_range: OnRange | None = None,
             on_plan: Callable[[int, int], None] | None = None) -> tuple[int, int]:
    """Index history from the checkpoint (or --from) to --to / the safe head. Resumable."""
    check_chain(plan, rpc)
    lo, start_block = resume_point(plan, store, from_block, file)
    head = safe_head(plan, rpc)
    hi = head if to_block is None else min(to_block, head)
    if to_block is not None and to_block > head:
        logger.warning("--to %d is above the safe head %d; stopping at %d", to_block, head, head)
    if on_plan:
        on_plan(lo, hi)
    if lo > hi:
        return lo - 1, hi
    return run_ranges(plan, rpc, store, lo, hi, start_block, stop, on_range), hi


def _reconcile(plan: Plan, rpc: Rpc, store: Store, cp_block: int, cp_hash: str) -> None:
    """If the node's chain no longer contains our checkpoint block, roll back to the ancestor."""
    block = rpc.fetch_block(cp_block)
    if block["hash"] == cp_hash:
        return
    chain_id = plan.chain.chain_id
    ancestor = find_ancestor(lambda n: store.load_block_hash(chain_id, n),
                             lambda n: rpc.fetch_block(n)["hash"], cp_block,
                             plan.proto.start_block)
    ancestor_hash = store.load_block_hash(chain_id, ancestor) or ""
    deleted = store.rollback_to(plan.proto.name, chain_id, ancestor, ancestor_hash)
    plan.load_markets(store)  # markets announced above the ancestor are gone
    logger.warning("reorg on %s: rolled back from block %d to common ancestor %d (%d changes "
                   "removed); replaying", plan.proto.name, cp_block, ancestor, deleted)


def sync_once(plan: Plan, rpc: Rpc, store: Store, until: int | None, file: str,
              stop: threading.Event, on_range: OnRange | None = None) -> int:
    """One catch-up pass: history below the safe head as backfill, then the tip block by block
    with headers kept for reorg checks. Returns the block the checkpoint reached."""
    lo, start_block = resume_point(plan, store, None, file)
    cp = store.load_checkpoint(plan.proto.name)
    if cp is not None:
        _reconcile(plan, rpc, store, cp.block_number, cp.block_hash)
        lo, start_block = resume_point(plan, store, None, file)
    head = rpc.fetch_head()
    target = head if until is None else min(until, head)
    # the last `window` blocks go through the tip path, which keeps every block hash: a reorg
    # within them is rolled back; below them only range ends are kept (backfill path)
    safe = min(target, head - reorg_window(plan))
    done = lo - 1
    if lo <= safe:
        done = run_ranges(plan, rpc, store, lo, safe, start_block, stop, on_range)
    while done < target and not stop.is_set():
        hi = min(target, done + plan.sizer.size)
        numbers = list(range(done + 1, hi + 1))
        headers = {int(b["number"], 16): b for b in rpc.fetch_blocks(numbers)}
        stored_parent = store.load_block_hash(plan.chain.chain_id, done)
        first = headers[done + 1]
        if stored_parent is not None and first["parentHash"] != stored_parent:
            cp = store.load_checkpoint(plan.proto.name)
            assert cp is not None
            _reconcile(plan, rpc, store, cp.block_number, cp.block_hash)
            return sync_once(plan, rpc, store, until, file, stop, on_range)
        for n in numbers[1:]:
            if headers[n]["parentHash"] != headers[n - 1]["hash"]:
                logger.warning("headers %d/%d do not link (reorg while fetching); retrying on the "
                               "next poll", n - 1, n)
                return done
        result = process_range(plan, rpc, store, done + 1, hi, start_block, headers)
        done = result.hi
        if on_range:
            on_range(plan, result)
    store.prune_blocks(plan.chain.chain_id, done - 2 * reorg_window(plan))
    return done


def sync(plans: list[Plan], rpcs: dict[str, Rpc], store: Store, until: int | None, once: bool,
         file: str, stop: threading.Event, snapshot: Callable[[], None],
         on_range: OnRange | None = None, on_idle: Callable[[], None] | None = None) -> None:
    """The daemon loop: catch up every protocol, publish a snapshot, wait for new blocks."""
    for plan in plans:
        check_chain(plan, rpcs[plan.chain.name])
    poll = min(p.chain.poll_interval for p in plans)
    while not stop.is_set():
        reached = [sync_once(p, rpcs[p.chain.name], store, until, file, stop, on_range)
                   for p in plans]
        snapshot()
        if on_idle:
            on_idle()
        if once or (until is not None and all(r >= until for r in reached)):
            return
        stop.wait(poll)
    logger.info("sync stopped cleanly")

