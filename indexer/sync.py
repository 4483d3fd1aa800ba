"""Backfill (history up to the safe head) and the sync daemon (catch up, then follow the tip)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing

from indexer.errors import (
    BlockMissing,
    ChainMismatch,
    ChainMoved,
    ConfigError,
    RpcError,
    RpcUnavailable,
)
from indexer.metrics import Metrics
from indexer.pipeline import (
    Plan,
    Prepared,
    RangeResult,
    commit_prepared,
    fetch_ahead,
    merge_prepared,
    prepare_range,
    process_range,
    reads_store,
)
from indexer.reorg import find_ancestor
from indexer.rpc import Rpc
from indexer.store import Store

logger = logging.getLogger(__name__)

OnRange = Callable[[Plan, RangeResult], None]
#: (plan, head block number, head block timestamp)
OnHead = Callable[[Plan, int, int], None]
#: (plan, depth in blocks) after a rollback
OnReorg = Callable[[Plan, int], None]


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


#: Fewest recent blocks whose hashes sync keeps, whatever `confirmations` or the node's tags say.
MIN_REORG_WINDOW = 64
#: Most: past this the tip path (one header per block) would dominate a catch-up.
MAX_REORG_WINDOW = 20_000


def finalized_block(plan: Plan, rpc: Rpc) -> int | None:
    """The node's ``finalized`` (else ``safe``) block number; None where it has neither tag
    (remembered, so a node without them is asked once)."""
    if not plan.finality_tags:
        return None
    for tag in ("finalized", "safe"):
        try:
            return rpc.fetch_head(tag)
        except (RpcError, BlockMissing):
            continue
    logger.info("%s: the node has no finalized/safe tag; the reorg window is `confirmations` "
                "(%d blocks, at least %d)", plan.chain.name, plan.chain.confirmations,
                MIN_REORG_WINDOW)
    plan.finality_tags = False
    return None


def reorg_window(plan: Plan, rpc: Rpc, head: int) -> int:
    """How many recent blocks can still reorganise: the distance from the head to the node's
    finalized (or safe) block where it has the tags, never less than ``confirmations`` or
    MIN_REORG_WINDOW, never more than MAX_REORG_WINDOW."""
    window = max(plan.chain.confirmations, MIN_REORG_WINDOW)
    final = finalized_block(plan, rpc)
    if final is not None:
        window = max(window, head - final)
    return min(window, MAX_REORG_WINDOW)


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
    """Index [lo, hi] range by range, committing in order, while the next ranges are fetched
    (threads, see :func:`fetch_ahead`) and, unless the adapter reads the store, while the next
    one is decoded and adapted: the commit runs on a writer thread (DuckDB works without the
    GIL), at most one commit behind. Consecutive ranges are committed together until they hold
    ``plan.commit_rows`` ledger rows (a commit has a fixed cost). Returns the last block
    committed."""
    done = lo - 1
    plan.refresh_markets(store)  # before fetching: stored markets are fetched addresses too
    overlap = not reads_store(plan)
    pending: Future[RangeResult] | None = None

    def finish() -> None:
        nonlocal pending
        if pending is not None:
            result, pending = pending.result(), None
            if on_range:
                on_range(plan, result)

    batch: list[Prepared] = []

    def submit() -> None:
        nonlocal pending, batch
        finish()
        pending = writer.submit(commit_prepared, store, merge_prepared(batch), start_block)
        batch = []

    # (on an error, leaving the executor waits for the commit under way)
    with closing(fetch_ahead(plan, rpc, lo, hi, stop)) as ranges, \
            ThreadPoolExecutor(1, thread_name_prefix="commit") as writer:
        try:
            for fetched in ranges:
                if stop.is_set():
                    break
                if not overlap:
                    finish()
                prepared = prepare_range(plan, rpc, store, done + 1, hi, fetched=fetched)
                batch.append(prepared)
                done = prepared.hi
                rows = sum(len(p.rows.changes["block_number"]) for p in batch)
                # a range that reads the store needs the one before it committed: never gathered
                if not overlap or rows >= plan.commit_rows or stop.is_set():
                    submit()
        except BaseException:
            if batch:  # what was prepared before the failure is committed, then it is raised
                submit()
                finish()
            raise
        if batch:
            submit()
        finish()
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


def _reconcile(plan: Plan, rpc: Rpc, store: Store, cp_block: int, cp_hash: str,
               on_reorg: OnReorg | None) -> int | None:
    """If the node's chain no longer holds our checkpoint block, roll the chain back to the
    common ancestor (every protocol on it). Returns the ancestor, or None when nothing changed.

    A node that lacks the checkpoint block is behind us, not reorganised, when its head block is
    one we stored: BlockMissing goes up and nothing is touched. When its head block differs from
    ours, it is on a shorter branch: the walk starts there. A divergence below the kept hashes raises ReorgTooDeep, unwritten.
    """
    chain_id = plan.chain.chain_id
    try:
        block = rpc.fetch_block(cp_block)
    except BlockMissing:
        # behind us, or on a shorter branch: its head block tells (same hash as ours: lagging)
        latest = rpc.fetch_tagged("latest")
        number = int(latest["number"], 16)
        ours = store.load_block_hash(chain_id, number) if number < cp_block else None
        if ours is None or ours == latest["hash"]:
            raise
        block, cp_block = latest, number
    if block["hash"] == cp_hash:
        return None
    ancestor = find_ancestor(lambda n: store.load_block_hash(chain_id, n),
                             lambda n: rpc.fetch_block(n)["hash"], cp_block,
                             plan.proto.start_block)
    ancestor_hash = store.load_block_hash(chain_id, ancestor) or ""
    old_tip, deleted = store.rollback_chain(chain_id, ancestor, ancestor_hash)
    logger.warning("reorg on %s: rolled back from block %d to common ancestor %d (depth %d, %d "
                   "changes removed); replaying", plan.chain.name, old_tip, ancestor,
                   old_tip - ancestor, deleted)
    if on_reorg:
        on_reorg(plan, old_tip - ancestor)
    return ancestor


def sync_once(plan: Plan, rpc: Rpc, store: Store, until: int | None, file: str,
              stop: threading.Event, on_range: OnRange | None = None,
              on_head: OnHead | None = None, on_reorg: OnReorg | None = None) -> int:
    """One catch-up pass: first re-verify the stored tip against the node (rolling back a
    reorg), then history below the reorg window as backfill, then the window block by block
    with every header kept for the next pass's checks. Returns the block the checkpoint reached.

    Raises BlockMissing when the node is behind us and ChainMoved when the chain reorganised
    during the pass; both leave the database consistent and the caller retries later.
    """
    cp = store.load_checkpoint(plan.proto.name)
    if cp is not None:
        _reconcile(plan, rpc, store, cp.block_number, cp.block_hash, on_reorg)
    lo, start_block = resume_point(plan, store, None, file)
    latest = rpc.fetch_tagged("latest")
    head = int(latest["number"], 16)
    if on_head:
        on_head(plan, head, int(latest["timestamp"], 16))
    target = head if until is None else min(until, head)
    window = reorg_window(plan, rpc, head)
    # below the window only range ends are kept (backfill path); within it every block hash is,
    # so a reorg there is found and rolled back
    safe = min(target, head - window)
    done = lo - 1
    if lo <= safe:
        done = run_ranges(plan, rpc, store, lo, safe, start_block, stop, on_range)
    while done < target and not stop.is_set():
        hi = min(target, done + plan.sizer.size)
        numbers = list(range(done + 1, hi + 1))
        headers = {int(b["number"], 16): b for b in rpc.fetch_blocks(numbers)}
        stored_parent = store.load_block_hash(plan.chain.chain_id, done)
        if stored_parent is not None and headers[done + 1]["parentHash"] != stored_parent:
            cp = store.load_checkpoint(plan.proto.name)
            assert cp is not None
            ancestor = _reconcile(plan, rpc, store, cp.block_number, cp.block_hash, on_reorg)
            if ancestor is None:  # the node answers inconsistently (balanced backends)
                raise ChainMoved(f"block {done + 1} does not link to block {done} although "
                                 f"block {done} is unchanged")
            done = ancestor
            continue
        for n in numbers[1:]:
            if headers[n]["parentHash"] != headers[n - 1]["hash"]:
                raise ChainMoved(f"headers {n - 1} and {n} do not link (reorg while fetching)")
        result = process_range(plan, rpc, store, done + 1, hi, start_block, headers)
        done = result.hi
        if on_range:
            on_range(plan, result)
    store.prune_blocks(plan.chain.chain_id, done - 2 * window)
    return done


#: Longest pause between passes while every RPC endpoint is down.
MAX_BACKOFF = 60.0
#: Passes of one protocol retried at once when the chain moves under them.
CHAIN_MOVED_RETRIES = 3


def sync(plans: list[Plan], rpcs: dict[str, Rpc], store: Store, until: int | None, once: bool,
         file: str, stop: threading.Event, snapshot: Callable[[], None],
         on_range: OnRange | None = None, on_idle: Callable[[], None] | None = None,
         metrics: Metrics | None = None) -> None:
    """The daemon loop: catch up every protocol, publish a snapshot, wait for new blocks.

    What cannot be written now is retried, never skipped: a node behind us (BlockMissing) or a
    chain moving during a pass (ChainMoved) waits for the next poll; all endpoints down
    (RpcUnavailable) backs off up to MAX_BACKOFF and keeps trying, reported by the health
    endpoint (with ``once`` it is raised instead). Anything fatal (ReorgTooDeep, RpcError,
    StoreError) stops the daemon.
    """
    for plan in plans:
        check_chain(plan, rpcs[plan.chain.name])
    poll = min(p.chain.poll_interval for p in plans)
    backoff = poll

    def ranged(plan: Plan, r: RangeResult) -> None:
        if metrics:
            metrics.range_done(plan.proto.name, r.hi, r.hi_time, r.changes, r.logs,
                               r.quarantined, r.refetched, r.range_size)
        if on_range:
            on_range(plan, r)

    def headed(plan: Plan, number: int, timestamp: int) -> None:
        if metrics:
            metrics.head(plan.proto.name, number, timestamp)

    def reorged(plan: Plan, depth: int) -> None:
        if metrics:
            metrics.reorg([p.proto.name for p in plans if p.chain.name == plan.chain.name], depth)

    while not stop.is_set():
        reached: list[int] = []
        down = False
        for p in plans:
            if stop.is_set():
                break
            rpc = rpcs[p.chain.name]
            for attempt in range(1, CHAIN_MOVED_RETRIES + 1):
                try:
                    reached.append(sync_once(p, rpc, store, until, file, stop, ranged, headed,
                                             reorged))
                    if metrics:
                        cp = store.load_checkpoint(p.proto.name)
                        metrics.pass_done(p.proto.name, cp and cp.block_number, cp and store.
                                          load_block_time(p.chain.chain_id, cp.block_number))
                    break
                except ChainMoved as e:
                    logger.warning("%s: %s; trying again (%d/%d)", p.proto.name, e, attempt,
                                   CHAIN_MOVED_RETRIES)
                    if metrics:
                        metrics.problem(p.proto.name, "chain_moved", str(e))
                except BlockMissing as e:
                    logger.warning("%s: %s (not a reorg: nothing is rolled back)", p.proto.name, e)
                    if metrics:
                        metrics.problem(p.proto.name, "node_behind", str(e))
                    break
                except RpcUnavailable as e:
                    if once:
                        raise
                    logger.error("%s: %s; retrying in %.0fs (health reports unhealthy)",
                                 p.proto.name, e, backoff)
                    if metrics:
                        metrics.problem(p.proto.name, "error", str(e))
                    down = True
                    break
        snapshot()
        if on_idle:
            on_idle()
        if once or (until is not None and len(reached) == len(plans)
                    and all(r >= until for r in reached)):
            return
        backoff = min(backoff * 2, MAX_BACKOFF) if down else poll
        stop.wait(backoff if down else poll)
    logger.info("sync stopped cleanly")
