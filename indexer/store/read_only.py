"""Analysts' SQL on a database that a writer may be writing at the same moment.

Each query runs on its own cursor of the writer's DuckDB instance, inside ``BEGIN TRANSACTION
READ ONLY``: DuckDB's MVCC gives it a snapshot of every transaction committed before it began,
so it sees whole ranges (a range and its checkpoint are one transaction) and never half of one,
and the writer goes on committing beside it.

What a query may do is checked twice. Before it runs, the text must hold exactly one statement
of a reading type (DuckDB parses it and names the type). While it runs, DuckDB itself refuses
the rest: the transaction is read-only (no ``nextval``, no writes through a table function),
file and network access from SQL is off (no ``read_csv('/etc/passwd')``, ``COPY``, ``ATTACH``,
``INSTALL``), and the configuration is locked (no ``SET``). The last two are settings of the
whole database instance and cannot be undone: :func:`lock_down` is called once, after the
writer has set what it needs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet

from indexer.errors import StoreError

logger = logging.getLogger(__name__)

#: Statement types a query may have (DESCRIBE, SHOW, SUMMARIZE, PIVOT and FROM-first are SELECTs).
READING_TYPES = ("SELECT", "EXPLAIN")
#: Rows per Arrow batch pulled from DuckDB and sent on.
BATCH_ROWS = 65_536


class QueryRefused(StoreError):
    """The text is not one read-only statement, or asks for what analysts' SQL may not do."""


class QueryTimeout(StoreError):
    """The query ran past its time limit and was interrupted."""


class ResultTooLarge(StoreError):
    """The result has more rows or bytes than the limit allows."""


@dataclass(frozen=True, slots=True)
class Limits:
    #: Seconds a query may run before it is interrupted.
    timeout: float = 60.0
    #: Rows a result held in memory (JSON, CSV) may have.
    max_rows: int = 1_000_000
    #: Rows a streamed result (Arrow) may have: it is sent as it is read, so memory stays flat.
    max_stream_rows: int = 100_000_000
    #: Bytes a JSON or CSV answer may have.
    max_bytes: int = 512 * 2**20


@dataclass(slots=True)
class Result:
    columns: list[str]
    types: list[str]
    #: Arrow batches of at most ``max_rows + 1`` rows: one more than allowed tells the reader
    #: the limit was passed (see :meth:`batches`).
    reader: pa.RecordBatchReader
    max_rows: int

    @property
    def schema(self) -> pa.Schema:
        return self.reader.schema

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The result's batches; ResultTooLarge once more than ``max_rows`` rows came."""
        seen = 0
        for batch in self.reader:
            seen += batch.num_rows
            if seen > self.max_rows:
                raise ResultTooLarge(f"the result has more than {self.max_rows:,} rows (the "
                                     "limit): add a LIMIT or a WHERE, or ask for more rows")
            yield batch

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """Python values: Decimal for exact amounts, datetime for times."""
        for batch in self.batches():
            columns = [c.to_pylist() for c in batch.columns]
            yield from zip(*columns, strict=True)


def lock_down(con: duckdb.DuckDBPyConnection) -> None:
    """Turn off file and network access from SQL and lock the configuration, for every
    connection of ``con``'s database, for the rest of the process."""
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def single_statement(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[str, str]:
    """The one reading statement of ``sql`` and its type, or QueryRefused saying why not."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise QueryRefused(f"the SQL does not parse: {_first_line(e)}") from None
    if not statements:
        raise QueryRefused("no SQL statement given")
    if len(statements) > 1:
        kinds = ", ".join(s.type.name for s in statements)
        raise QueryRefused(f"one statement per query: the text holds {len(statements)} "
                           f"({kinds}); send them one at a time")
    kind = statements[0].type.name
    if kind not in READING_TYPES:
        raise QueryRefused(f"only reading statements are served (SELECT, WITH, FROM, DESCRIBE, "
                           f"SHOW, SUMMARIZE, EXPLAIN); this one is {kind}: the database is "
                           "written by the indexer alone")
    return str(statements[0].query), kind


class ReadOnlyQueries:
    """Runs analysts' statements on their own read-only cursors of one DuckDB database."""

    def __init__(self, con: duckdb.DuckDBPyConnection, limits: Limits = Limits(),
                 lock: bool = True) -> None:
        """``con``: any connection of the database (the writer's). With ``lock``, file access
        and configuration changes are turned off for the whole database (see the module)."""
        # cursors are made from a connection of our own: the writer's is busy in its thread
        self._root = con.cursor()
        self._make = threading.Lock()
        #: cursors running a query; close() interrupts them and waits for them to end
        self._active: set[duckdb.DuckDBPyConnection] = set()
        self._idle = threading.Condition(self._make)
        self._closing = False
        self.limits = limits
        if lock:
            lock_down(self._root)

    def close(self, wait: float = 10.0) -> None:
        """Stop: refuse new queries, interrupt running ones, wait for them to let go of their
        cursors (up to ``wait`` seconds), then close. The writer's connection can be closed
        only after this: DuckDB refuses to close a connection whose cursor is busy."""
        with self._idle:
            self._closing = True
            for cur in self._active:
                cur.interrupt()
            self._idle.wait_for(lambda: not self._active, timeout=wait)
            try:
                self._root.close()
            except duckdb.Error as e:
                logger.warning("a query did not stop in %.0f s: %s", wait, e)

    def check(self, sql: str) -> tuple[str, str]:
        with self._make:
            return single_statement(self._root, sql)

    @contextmanager
    def run(self, sql: str, max_rows: int | None = None, timeout: float | None = None,
            stream: bool = False) -> Iterator[Result]:
        """Run one statement; the result is read inside the ``with`` block. ``max_rows`` and
        ``timeout`` may lower the limits, never raise them; ``stream`` results (sent as they
        are read) have the larger row limit.

        QueryRefused, QueryTimeout (the query, or the reading of its result, passed ``timeout``)
        and ResultTooLarge (from :meth:`Result.batches`) say what went wrong; any other DuckDB
        error is a StoreError with DuckDB's message.
        """
        statement, kind = self.check(sql)
        cap = self.limits.max_stream_rows if stream else self.limits.max_rows
        limit = cap if max_rows is None else max(0, min(max_rows, cap))
        seconds = self.limits.timeout if timeout is None else min(timeout, self.limits.timeout)
        with self._make:
            if self._closing:
                raise QueryRefused("the service is stopping")
            cur = self._root.cursor()
            self._active.add(cur)
        timed_out = threading.Event()

        def interrupt() -> None:
            timed_out.set()
            cur.interrupt()

        timer = threading.Timer(seconds, interrupt)
        timer.daemon = True
        try:
            cur.execute("BEGIN TRANSACTION READ ONLY")
            timer.start()
            try:
                relation = cur.sql(statement)
                if relation is None:
                    raise QueryRefused("the statement returns no rows")
                if kind != "EXPLAIN":
                    relation = relation.limit(limit + 1)
                relation = _bignums_as_text(relation)
                reader = relation.to_arrow_reader(BATCH_ROWS)
                result = Result(list(relation.columns), [str(t) for t in relation.types],
                                reader, limit)
                yield result
            except duckdb.InterruptException:
                raise QueryTimeout(f"the query ran longer than {seconds:g} s and was stopped; "
                                   "narrow it (WHERE, LIMIT) or use the Parquet export for "
                                   "bulk reads") from None
            except duckdb.PermissionException as e:
                raise QueryRefused(f"{_first_line(e)} (analysts' SQL may not read or write "
                                   "files or the network)") from None
            except duckdb.InvalidInputException as e:
                if "configuration has been locked" in str(e):
                    raise QueryRefused("settings cannot be changed through the query "
                                       "service") from None
                raise StoreError(f"query failed: {_first_line(e)}") from None
            except duckdb.TransactionException as e:
                raise QueryRefused(f"{_first_line(e)} (queries are read-only)") from None
            except duckdb.Error as e:
                if timed_out.is_set():
                    raise QueryTimeout(f"the query ran longer than {seconds:g} s and was "
                                       "stopped") from None
                raise StoreError(f"query failed: {_first_line(e)}") from None
        finally:
            timer.cancel()
            try:
                cur.execute("ROLLBACK")
            except duckdb.Error:
                pass  # the transaction already ended with its error
            cur.close()
            with self._idle:
                self._active.discard(cur)
                self._idle.notify_all()


def _bignums_as_text(relation: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    """BIGNUM columns (the exact ``*_raw`` integers) as decimal text: DuckDB hands them to Arrow
    as opaque bytes, which no reader can show."""
    types = [str(t) for t in relation.types]
    if "BIGNUM" not in types:
        return relation
    # by position: two result columns may share a name (a self-join's a.x, b.x)
    return relation.project(", ".join(
        f'#{i}::VARCHAR AS "{n}"' if t == "BIGNUM" else f'#{i} AS "{n}"'
        for i, (n, t) in enumerate(zip([c.replace('"', '""') for c in relation.columns], types,
                                       strict=True), start=1)))


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


class _Chunks:
    """A file-like sink pyarrow writes into, forwarding each write."""

    def __init__(self, write: Callable[[bytes], object]) -> None:
        self._write = write
        self.closed = False

    def write(self, data: bytes | memoryview) -> int:
        self._write(bytes(data))
        return len(data)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True


def write_arrow_stream(result: Result, write: Callable[[bytes], object]) -> int:
    """Write the result as an Arrow IPC stream to ``write``, batch by batch; returns rows.

    The schema's metadata carries ``max_rows``; a stream with more rows than that tells the
    reader the result was cut at the limit (:func:`read_arrow_stream` raises then)."""
    schema = result.schema.with_metadata({b"max_rows": str(result.max_rows).encode()})
    rows = 0
    with pa.ipc.new_stream(_Chunks(write), schema) as writer:
        for batch in result.reader:
            rows += batch.num_rows
            writer.write_batch(batch)
            if rows > result.max_rows:
                break
    return rows


def read_arrow_stream(source: Any) -> pa.Table:
    """An Arrow IPC stream (a file-like object or bytes) as a table; ResultTooLarge when the
    stream says the result passed the server's row limit."""
    table = pa.ipc.open_stream(source).read_all()
    meta = table.schema.metadata or {}
    limit = meta.get(b"max_rows")
    if limit is not None and table.num_rows > int(limit):
        raise ResultTooLarge(f"the result has more than {int(limit):,} rows (the service's "
                             "limit): add a LIMIT or a WHERE, or ask for more rows")
    return table.replace_schema_metadata(None)


def write_parquet(table: pa.Table, path: str) -> None:
    pa.parquet.write_table(table, path)


def result_table(result: Result) -> pa.Table:
    """The whole result as one table (ResultTooLarge past the row limit)."""
    return pa.Table.from_batches(list(result.batches()), schema=result.schema)
