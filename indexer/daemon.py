"""The sync daemon: catch every source up, then follow the chain head through reorgs.

A pass of one source: re-verify the stored tip against the node (a reorg is a rollback to the
common ancestor, then a replay), index what is older than the reorg window as backfill does,
then the window block by block with every header kept for the next pass's checks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from indexer.backfill import OnRange, ensure_markets, resume_point, run_ranges
from indexer.chains import Chain
from indexer.chains.cometbft import CometChain
from indexer.chains.evm import EvmChain
from indexer.engine.commit import commit
from indexer.engine.prepare import prepare
from indexer.engine.ranges import BlockRange
from indexer.engine.source import ScanState
from indexer.engine.tip import fetch_at_tip
from indexer.errors import BlockMissing, ChainMismatch, ChainMoved, RpcUnavailable
from indexer.observer import Observer
from indexer.reorg import find_ancestor
from indexer.store import Store

logger = logging.getLogger(__name__)

#: Longest pause between passes while every RPC endpoint is down.
MAX_BACKOFF = 60.0
#: Passes of one source retried at once when the chain moves under them.
CHAIN_MOVED_RETRIES = 3
#: (the chain, its depth in blocks) after a rollback
OnReorg = Callable[[EvmChain, int], None]


def reconcile(state: ScanState, chain: EvmChain, store: Store, cp_block: int, cp_hash: str,
              on_reorg: OnReorg) -> int | None:
    """If the node's chain no longer holds our checkpoint block, roll the chain back to the
    common ancestor (every source on it). Returns the ancestor, or None when nothing changed.

    A node that lacks the checkpoint block is behind us, not reorganised, when its head block is
    one we stored: BlockMissing goes up and nothing is touched. When its head block differs from
    ours, it is on a shorter branch: the walk starts there. A divergence below the kept hashes
    raises ReorgTooDeep, unwritten.
    """
    chain_id = chain.config.chain_id
    rpc = chain.rpc
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
                             state.source.config.start_block)
    ancestor_hash = store.load_block_hash(chain_id, ancestor) or ""
    old_tip, deleted = store.rollback_chain(chain_id, ancestor, ancestor_hash)
    logger.warning("reorg on %s: rolled back from block %d to common ancestor %d (depth %d, %d "
                   "changes removed); replaying", chain.name, old_tip, ancestor,
                   old_tip - ancestor, deleted)
    on_reorg(chain, old_tip - ancestor)
    return ancestor


def sync_final(state: ScanState, chain: CometChain, store: Store, until: int | None, file: str,
               stop: threading.Event, on_range: OnRange, observer: Observer) -> int:
    """One catch-up pass of a source on a chain with final blocks: the stored checkpoint block
    must still be the node's (else the node serves another chain: ChainMismatch, nothing
    written), then every block up to the head is indexed as backfill does."""
    source = state.source
    cp = store.load_checkpoint(source.name)
    if cp is not None:
        theirs = chain.block_hash(cp.block_number)
        if theirs != cp.block_hash:
            raise ChainMismatch(f"{chain.name}: the node's block {cp.block_number} is {theirs}, "
                                f"the stored one {cp.block_hash}; committed CometBFT blocks never "
                                "change, so this node serves another chain")
    lo, start_block = resume_point(state, store, None, file)
    head, head_time = chain.head()
    observer.head(source.name, head, head_time)
    target = head if until is None else min(until, head)
    if lo > target:
        return lo - 1
    return run_ranges(state, chain, store, lo, target, start_block, stop, on_range)


def sync_once(state: ScanState, chain: EvmChain, store: Store, until: int | None, file: str,
              stop: threading.Event, on_range: OnRange, observer: Observer,
              on_reorg: OnReorg) -> int:
    """One catch-up pass of one source (see the module's docstring). Returns the block the
    checkpoint reached.

    Raises BlockMissing when the node is behind us and ChainMoved when the chain reorganised
    during the pass; both leave the database consistent and the caller retries later.
    """
    source = state.source
    chain_id = chain.config.chain_id
    cp = store.load_checkpoint(source.name)
    if cp is not None:
        reconcile(state, chain, store, cp.block_number, cp.block_hash, on_reorg)
    lo, start_block = resume_point(state, store, None, file)
    latest = chain.rpc.fetch_tagged("latest")
    head = int(latest["number"], 16)
    observer.head(source.name, head, int(latest["timestamp"], 16))
    target = head if until is None else min(until, head)
    window = chain.reorg_window(head)
    # below the window only range ends are kept (backfill path); within it every block hash is,
    # so a reorg there is found and rolled back
    safe = min(target, head - window)
    done = lo - 1
    if lo <= safe:
        done = run_ranges(state, chain, store, lo, safe, start_block, stop, on_range)
    while done < target and not stop.is_set():
        hi = min(target, done + state.sizer.size)
        numbers = list(range(done + 1, hi + 1))
        headers = {int(b["number"], 16): b for b in chain.rpc.fetch_blocks(numbers)}
        stored_parent = store.load_block_hash(chain_id, done)
        if stored_parent is not None and headers[done + 1]["parentHash"] != stored_parent:
            cp = store.load_checkpoint(source.name)
            assert cp is not None
            ancestor = reconcile(state, chain, store, cp.block_number, cp.block_hash, on_reorg)
            if ancestor is None:  # the node answers inconsistently (balanced backends)
                raise ChainMoved(f"block {done + 1} does not link to block {done} although "
                                 f"block {done} is unchanged")
            done = ancestor
            continue
        for n in numbers[1:]:
            if headers[n]["parentHash"] != headers[n - 1]["hash"]:
                raise ChainMoved(f"headers {n - 1} and {n} do not link (reorg while fetching)")
        ensure_markets(state, store)
        fetched = fetch_at_tip(state, chain.rpc, done + 1, hi, headers)
        result = commit(store, prepare(state, chain.rpc, store, fetched, headers), start_block)
        done = result.hi
        on_range(state, result)
    store.prune_blocks(chain_id, done - 2 * window)
    return done


def sync(states: list[ScanState], chains: dict[str, Chain], store: Store, until: int | None,
         once: bool, file: str, stop: threading.Event, on_range: OnRange | None = None,
         on_idle: Callable[[], object] | None = None,
         observer: Observer | None = None) -> None:
    """The daemon loop: catch up every source, run ``on_idle``, wait for new blocks.

    What cannot be written now is retried, never skipped: a node behind us (BlockMissing) or a
    chain moving during a pass (ChainMoved) waits for the next poll; all endpoints down
    (RpcUnavailable) backs off up to MAX_BACKOFF and keeps trying, reported by the health
    endpoint (with ``once`` it is raised instead). Anything fatal (ReorgTooDeep, RpcError,
    StoreError) stops the daemon. Each retried problem is also the source's ``last_error`` in
    the database until its next commit.
    """
    watch = observer or Observer()
    for c in {s.source.chain.name for s in states}:
        chains[c].check()
    poll = min(s.source.chain.poll_interval for s in states)
    backoff = poll

    def ranged(state: ScanState, r: BlockRange) -> None:
        watch.range_done(state.source.name, r.hi, r.end_time, r.written, r.log_count,
                         r.quarantined, r.refetched, r.request_blocks)
        if on_range:
            on_range(state, r)

    def reorged(chain: EvmChain, depth: int) -> None:
        mine = [s for s in states if s.source.chain.name == chain.name]
        for s in mine:
            s.invalidate()  # markets found in rolled-back rows are gone
        watch.reorg([s.source.name for s in mine], depth)

    def problem(state: ScanState, kind: str, error: Exception) -> None:
        watch.problem(state.source.name, kind, str(error))
        store.record_error(state.source.name, f"{kind}: {error}")

    while not stop.is_set():
        reached: list[int] = []
        down = False
        for state in states:
            if stop.is_set():
                break
            name = state.source.name
            chain = chains[state.source.chain.name]
            for attempt in range(1, CHAIN_MOVED_RETRIES + 1):
                try:
                    if isinstance(chain, CometChain):
                        reached.append(sync_final(state, chain, store, until, file, stop,
                                                  ranged, watch))
                    else:
                        assert isinstance(chain, EvmChain)
                        reached.append(sync_once(state, chain, store, until, file, stop,
                                                 ranged, watch, reorged))
                    cp = store.load_checkpoint(name)
                    if cp is None:
                        watch.pass_done(name, None, None)
                    else:
                        watch.pass_done(name, cp.block_number, store.load_block_time(
                            chain.config.chain_id, cp.block_number))
                    break
                except ChainMoved as e:
                    logger.warning("%s: %s; trying again (%d/%d)", name, e, attempt,
                                   CHAIN_MOVED_RETRIES)
                    problem(state, "chain_moved", e)
                except BlockMissing as e:
                    logger.warning("%s: %s (not a reorg: nothing is rolled back)", name, e)
                    problem(state, "node_behind", e)
                    break
                except RpcUnavailable as e:
                    if once:
                        raise
                    logger.error("%s: %s; retrying in %.0fs (health reports unhealthy)", name,
                                 e, backoff)
                    problem(state, "error", e)
                    down = True
                    break
        if on_idle:
            on_idle()
        if once or (until is not None and len(reached) == len(states)
                    and all(r >= until for r in reached)):
            return
        backoff = min(backoff * 2, MAX_BACKOFF) if down else poll
        stop.wait(backoff if down else poll)
    logger.info("sync stopped cleanly")
