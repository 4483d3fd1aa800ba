"""Backfill: history from the checkpoint (or --from) up to the safe head, range after range
through the three stages (fetch ahead, prepare, commit on the writer thread). Resumable. The
sources of a config run at once, through one writer (:func:`backfill_all`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import closing

from indexer.chains import Chain
from indexer.engine.commit import CommitQueue, single_writer
from indexer.engine.ranges import BlockRange
from indexer.engine.source import ScanState
from indexer.errors import ConfigError
from indexer.store import Store

logger = logging.getLogger(__name__)

#: (source's state, range) once a range is committed.
OnRange = Callable[[ScanState, BlockRange], None]
#: What indexes [lo, hi] of a source: :func:`run_ranges` on this machine, or a cluster's
#: ``Cluster.run`` (state, chain, store, lo, hi, start_block, stop, on_range, writer).
RunRanges = Callable[[ScanState, Chain, Store, int, int, int, threading.Event, OnRange | None,
                      "ThreadPoolExecutor | None"], int]


def ensure_markets(state: ScanState, store: Store) -> None:
    """Markets stored from events, read once and again after a rollback."""
    if not state.markets_loaded:
        name = state.source.name
        state.load_markets(store.load_markets(name), store.load_listed(name),
                           store.load_parameters(name))


def resume_point(state: ScanState, store: Store, from_block: int | None, file: str
                 ) -> tuple[int, int]:
    """(first block to index, start_block of the contiguous indexed range)."""
    source = state.source
    cp = store.load_checkpoint(source.name)
    if cp is None:
        start = source.config.start_block if from_block is None else from_block
        return start, start
    if from_block is None:
        return cp.block_number + 1, cp.start_block
    if not cp.start_block <= from_block <= cp.block_number + 1:
        raise ConfigError(file, "--from", from_block,
                          f"a block within the indexed range {cp.start_block}..{cp.block_number + 1}"
                          f" of {source.name} (ranges stay contiguous; start a new database for"
                          " a separate range)")
    return from_block, cp.start_block


def run_ranges(state: ScanState, chain: Chain, store: Store, lo: int, hi: int,
               start_block: int, stop: threading.Event, on_range: OnRange | None = None,
               writer: ThreadPoolExecutor | None = None) -> int:
    """Index [lo, hi] range by range, committing in order, while the next ranges are fetched
    (threads, see :func:`fetch_ahead`) and, unless the adapter reads prior state, while the
    next one is prepared: commits run on the writer thread, at most one behind. Returns the
    last block committed."""
    done = lo - 1
    ensure_markets(state, store)  # before fetching: stored markets are fetched addresses too
    in_order = state.source.adapter.reads_prior_state
    gather = 0 if in_order else state.source.commit_rows

    def committed(r: BlockRange) -> None:
        if on_range:
            on_range(state, r)

    with closing(chain.ranges(state, store, lo, hi, stop)) as ranges, \
            CommitQueue(store, start_block, gather, committed, writer) as queue:
        for fetched in ranges:
            if stop.is_set():
                break
            if in_order:  # its prior state is the previous range's commit
                queue.wait()
            prepared = chain.prepare(state, store, fetched)
            done = prepared.hi
            queue.add(prepared, now=stop.is_set())
    return done


def backfill(state: ScanState, chain: Chain, store: Store, from_block: int | None,
             to_block: int | None, file: str, stop: threading.Event,
             on_range: OnRange | None = None,
             on_plan: Callable[[int, int], None] | None = None,
             writer: ThreadPoolExecutor | None = None,
             run: RunRanges | None = None) -> tuple[int, int]:
    """Index history from the checkpoint (or --from) to --to / the safe head. Returns (last
    block committed, the target). ``writer``: the commit thread shared with other sources;
    ``run``: what indexes the range (:func:`run_ranges` unless a cluster does)."""
    chain.check()
    lo, start_block = resume_point(state, store, from_block, file)
    head = chain.safe_head()
    hi = head if to_block is None else min(to_block, head)
    if to_block is not None and to_block > head:
        logger.warning("--to %d is above the safe head %d; stopping at %d", to_block, head, head)
    if on_plan:
        on_plan(lo, hi)
    if lo > hi:
        return lo - 1, hi
    run = run or run_ranges
    return run(state, chain, store, lo, hi, start_block, stop, on_range, writer), hi


#: One source's backfill as :func:`backfill_all` runs it: (state, its writer) -> (done, target).
RunOne = Callable[[ScanState, ThreadPoolExecutor], tuple[int, int]]


def backfill_all(states: list[ScanState], run_one: RunOne) -> dict[str, tuple[int, int] | BaseException]:
    """Backfill every source at once, each on a thread of its own (fetching and preparing),
    all committing through one writer thread: the wall time approaches the slowest source's,
    not the sum, while the database keeps one writer. A source that fails does not stop the
    others (each commits what it finished); its error is its result. Sources of one chain
    share that chain's client, so its endpoints' request limits hold for all of them."""
    results: dict[str, tuple[int, int] | BaseException] = {}
    writer = single_writer()
    with ThreadPoolExecutor(max(len(states), 1), thread_name_prefix="source") as pool:
        futures = {pool.submit(run_one, state, writer): state.source.name for state in states}
        for future in as_completed(futures):
            name = futures[future]
            try:
                results[name] = future.result()
            except BaseException as e:  # noqa: BLE001 - reported per source by the caller
                logger.error("%s: backfill failed: %s", name, e)
                results[name] = e
    writer.shutdown(wait=True)
    return {s.source.name: results[s.source.name] for s in states}
