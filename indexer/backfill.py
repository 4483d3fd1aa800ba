"""Backfill: history from the checkpoint (or --from) up to the safe head, range after range
through the three stages (fetch ahead, prepare, commit on the writer thread). Resumable."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import closing

from indexer.chains import Chain
from indexer.engine.commit import CommitQueue
from indexer.engine.ranges import BlockRange
from indexer.engine.source import ScanState
from indexer.errors import ConfigError
from indexer.store import Store

logger = logging.getLogger(__name__)

#: (source's state, range) once a range is committed.
OnRange = Callable[[ScanState, BlockRange], None]


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
               start_block: int, stop: threading.Event, on_range: OnRange | None = None) -> int:
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
            CommitQueue(store, start_block, gather, committed) as queue:
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
             on_plan: Callable[[int, int], None] | None = None) -> tuple[int, int]:
    """Index history from the checkpoint (or --from) to --to / the safe head. Returns (last
    block committed, the target)."""
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
    return run_ranges(state, chain, store, lo, hi, start_block, stop, on_range), hi
