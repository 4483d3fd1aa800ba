"""DuckDB storage: the only package that imports duckdb (and pyarrow).

Invariants:

* The ledger rows, quarantined logs, funding updates, block hashes and checkpoint of one block range
  are written in ONE transaction (:meth:`Store.commit_range`). A crash leaves all of it or none.
* Re-committing a range first deletes what that source stored in the range, so replays are
  idempotent: rows are identified by (chain_id, source, block_number, log_index).
* ``positions`` is derived from ``position_changes`` (the last change of each key carries the
  full state after it) and is refreshed in the same transaction for the keys the range touched.
* One process writes the file. Readers of a live database query it inside that process, each on
  a read-only cursor of its own (:mod:`indexer.store.read_only`, served by :mod:`indexer.service`).

Modules: ``ledger`` (commit a range, refresh positions), ``rollback`` (undo a reorg),
``readers`` (queries, resume state), ``read_only`` (analysts' guarded SQL), ``amounts`` (exact DECIMAL(38,18)), ``sql``
(the named statements of ``indexer/sql/``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType

import duckdb

from indexer.errors import StoreError
from indexer.store.amounts import decimal18_array, to_decimal18
from indexer.store.export import ExportResult, RunArrow, export, exported_tables
from indexer.store.ledger import RangeRows
from indexer.store.read_only import (
    Limits,
    QueryRefused,
    QueryTimeout,
    ReadOnlyQueries,
    Result,
    ResultTooLarge,
    read_arrow_stream,
    result_table,
    write_arrow_stream,
    write_parquet,
)
from indexer.store.readers import Checkpoint, Readers, lock_holder
from indexer.store.rollback import Rollback
from indexer.store.sql import sql_file

__all__ = ["Checkpoint", "ExportResult", "Limits", "QueryRefused", "QueryTimeout", "RangeRows",
           "ReadOnlyQueries", "Result", "ResultTooLarge", "RunArrow", "SCHEMA_VERSION",
           "Store", "decimal18_array", "export", "exported_tables", "read_arrow_stream",
           "result_table", "to_decimal18", "write_arrow_stream", "write_parquet"]

#: The layout of ``sql/schema.sql``; raise it with any change of a table's columns.
SCHEMA_VERSION = 2


class Store(Rollback, Readers):
    """A connection to a DuckDB file: the writer's (one process), or a read-only one (see
    :meth:`Store.read_only_queries`). A context manager: ``with Store(path) as store: ...`` closes it.

    Safe to use from several threads: a DuckDB connection is not, so each thread other than the
    one that opened the store works on a cursor of its own (:attr:`con`), with its own
    transactions over the same database (sources prepared on their threads read while the
    writer thread commits)."""

    def __init__(self, path: Path | str, read_only: bool = False,
                 memory_limit_mb: int | None = None) -> None:
        self.path = Path(path)
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._root = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as e:
            if "lock" in str(e).lower():
                raise StoreError(
                    f"{self.path}: the database is in use by another writing process "
                    f"({lock_holder(str(e))}); stop it first, or query it through that process's "
                    "query service (`perp-indexer query`)") from None
            raise StoreError(f"{self.path}: cannot open database: {e}") from None
        self.read_only = read_only
        self.rollbacks = 0
        self._owner = threading.get_ident()
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._cursors_lock = threading.Lock()
        try:
            self._check_layout()
            if memory_limit_mb is not None:
                self.con.execute(f"SET memory_limit = '{int(memory_limit_mb)}MB'")
            if not read_only:
                self.con.execute(sql_file("schema.sql"))
                self.con.execute(sql_file("views.sql"))
                self.con.execute(sql_file("analytics.sql"))
                if self.con.execute("SELECT count(*) FROM schema_version").fetchone() == (0,):
                    self.con.execute("INSERT INTO schema_version VALUES (?)", [SCHEMA_VERSION])
                if self.con.execute("SELECT count(*) FROM analytics_settings").fetchone() == (0,):
                    self.con.execute("INSERT INTO analytics_settings VALUES (0.5, 0.4)")
        except BaseException:
            self._root.close()
            raise

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """This thread's connection: the store's own on the thread that opened it, else a
        cursor kept for the thread."""
        if threading.get_ident() == self._owner:
            return self._root
        cursor: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = self._root.cursor()
            with self._cursors_lock:
                self._cursors.append(cursor)
        return cursor

    def _check_layout(self) -> None:
        """A database written by another layout is refused, naming the rebuild."""
        tables = {t for (t,) in self.con.execute(
            "SELECT table_name FROM information_schema.tables").fetchall()}
        if "position_changes" not in tables:
            return  # a new database
        found = None
        if "schema_version" in tables:
            # fetchall: a result left unfinished blocks the connection's next sql() (Store.arrow)
            rows = self.con.execute("SELECT max(version) FROM schema_version").fetchall()
            found = rows[0][0] if rows else None
        if found != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: written by another layout of perp-indexer (schema version "
                f"{found if found is not None else 'before 1'}, this version reads "
                f"{SCHEMA_VERSION}); 0.x does not migrate: move the file aside and rebuild it "
                "with `perp-indexer backfill --config <your config>`")

    def close(self) -> None:
        with self._cursors_lock:
            cursors, self._cursors = self._cursors, []
        for cursor in cursors:
            cursor.close()
        self._root.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
