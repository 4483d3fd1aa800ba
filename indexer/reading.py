"""Where the reading commands (query, status, export, report) get the data: the running
daemon's query service when one answers, else the database file itself, read-only.

DuckDB lets no other process open a file its writer holds, so while ``sync`` (or ``backfill``,
or the demo) runs, its service is the only way in; when none runs, the file is opened directly.
Both paths run the same guard (one read-only statement, no file access from SQL).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexer.client import Connection, QueryError
from indexer.errors import StoreError
from indexer.results import arrow_rows
from indexer.store import Limits, ReadOnlyQueries, Store, result_table

#: Seconds a query of a reading command may run on the file itself (no daemon to share with).
LOCAL_TIMEOUT = 24 * 3600.0


@dataclass
class Reader:
    """Runs analysts' statements; ``via`` says where (for a note to the user)."""

    via: str
    _service: Connection | None = None
    _queries: ReadOnlyQueries | None = None

    def arrow(self, sql: str) -> Any:
        """The result as an Arrow table."""
        if self._service is not None:
            return self._service.sql(sql).arrow()
        assert self._queries is not None
        with self._queries.run(sql, stream=True) as result:
            return result_table(result)

    def rows(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        table = self.arrow(sql)
        return list(table.column_names), arrow_rows(table)


@contextmanager
def open_reader(database: Path, service_url: str | None, token: str | None = None
                ) -> Iterator[Reader]:
    """A reader of ``database``: through the service at ``service_url`` when it answers, else
    the file opened read-only. StoreError when neither is possible, saying why."""
    service = Connection(service_url, token) if service_url else None
    if service is not None and service.available():
        yield Reader(f"the running daemon's query service at {service_url}", _service=service)
        return
    if not database.exists():
        raise StoreError(f"{database}: no database yet; run `perp-indexer backfill` or `sync` "
                         "first (or start the demo)")
    try:
        store = Store(database, read_only=True)
    except StoreError as e:
        if "in use" not in str(e):
            raise
        where = (f"its query service does not answer at {service_url}" if service_url else
                 "the config serves no query service (metrics_port: 0)")
        raise StoreError(f"{e}; {where}: give the daemon a metrics_port to query it while it "
                         "runs") from None
    try:
        # the reader's own process: the service's limits, meant to share a writer, do not apply
        yield Reader(f"{database} (no daemon running)",
                     _queries=ReadOnlyQueries(store.con, Limits(timeout=LOCAL_TIMEOUT)))
    finally:
        store.close()


__all__ = ["QueryError", "Reader", "open_reader"]
