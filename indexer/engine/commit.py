"""The commit stage: prepared ranges committed in order on a writer thread, each in one
transaction with its checkpoint; consecutive small ranges are gathered into one commit."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

from indexer.engine.ranges import BlockRange
from indexer.store import RangeRows, Store


def _concat(parts: list[dict[str, list[Any]] | None]) -> dict[str, list[Any]] | None:
    """Column dicts of the same columns joined row-wise (None: no rows)."""
    present = [p for p in parts if p is not None]
    if not present:
        return None
    out: dict[str, list[Any]] = {}
    for name in present[0]:
        column: list[Any] = []
        for p in present:
            column += p[name]
        out[name] = column
    return out


def merged(batch: list[BlockRange]) -> BlockRange:
    """Consecutive prepared ranges of one source as one (committed in one transaction)."""
    if len(batch) == 1:
        return batch[0]
    assert all(p.staged is None for p in batch), "a staged partition is committed alone"
    first, last = batch[0], batch[-1]
    parts = [p.rows for p in batch if p.rows is not None]
    rows = parts[0]
    joined = RangeRows(rows.chain_id, rows.protocol, rows.source, rows.usd_decimals,
                       _concat([r.changes for r in parts]) or {},
                       _concat([r.funding for r in parts]) or {},
                       [q for r in parts for q in r.quarantine],
                       [b for r in parts for b in r.blocks],
                       _concat([r.markets for r in parts]),
                       _concat([r.open_interest for r in parts]),
                       [p for r in parts for p in r.parameters or []],
                       _concat([r.payments for r in parts]))
    return BlockRange(first.lo, last.hi, last.end, [], last.request_blocks,
                      sum(p.log_bytes for p in batch), sum(p.log_count for p in batch),
                      sum(p.refetched for p in batch), joined)


def single_writer() -> ThreadPoolExecutor:
    """The one thread commits run on (DuckDB allows one writing process; one thread keeps
    transactions from meeting inside it)."""
    return ThreadPoolExecutor(1, thread_name_prefix="commit")


def commit(store: Store, prepared: BlockRange, start_block: int) -> BlockRange:
    """Commit a prepared range with its checkpoint (one transaction)."""
    assert prepared.rows is not None, "commit of a range that was not prepared"
    prepared.written = store.commit_range(prepared.rows, prepared.lo, prepared.hi,
                                          prepared.end["hash"], start_block, prepared.staged)
    return prepared


class CommitQueue:
    """Commits on one writer thread (DuckDB works without the GIL), at most one behind the
    caller, in the order given. Ranges are gathered until they hold ``gather_rows`` ledger rows
    (0: each alone). ``on_commit`` sees each committed range, on the caller's thread.

    Sources indexed at once share one ``writer`` (see :func:`single_writer`): their commits queue on
    its one thread, so the database has one writer whatever the number of sources.

    Leaving the ``with`` block waits for the commit under way; on an error, what was gathered
    before it is committed first, then the error goes on."""

    def __init__(self, store: Store, start_block: int, gather_rows: int,
                 on_commit: Callable[[BlockRange], None] | None = None,
                 writer: ThreadPoolExecutor | None = None) -> None:
        self.store, self.start_block, self.gather_rows = store, start_block, gather_rows
        self.on_commit = on_commit
        self._own_writer = writer is None
        self._writer = writer or single_writer()
        self._pending: Future[BlockRange] | None = None
        self._batch: list[BlockRange] = []

    def add(self, prepared: BlockRange, now: bool = False) -> None:
        """Queue a prepared range; it is committed once the gathered rows reach the target, or
        at once with ``now``."""
        self._batch.append(prepared)
        rows = sum(p.rows.change_count for p in self._batch if p.rows is not None)
        if now or rows >= self.gather_rows:
            self.flush()

    def flush(self) -> None:
        """Commit what is gathered (after the commit under way)."""
        if not self._batch:
            return
        self.wait()
        batch, self._batch = self._batch, []
        self._pending = self._writer.submit(commit, self.store, merged(batch), self.start_block)

    def wait(self) -> None:
        """Wait for the commit under way (its error is raised here)."""
        if self._pending is not None:
            done, self._pending = self._pending.result(), None
            if self.on_commit:
                self.on_commit(done)

    def __enter__(self) -> CommitQueue:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.flush()
            self.wait()
        finally:
            if self._own_writer:
                self._writer.shutdown(wait=True)
