"""Reading the store: queries, the state the engine resumes from, and analysts' read-only
queries beside the writer."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from indexer.errors import StoreError
from indexer.store.read_only import Limits, ReadOnlyQueries
from indexer.store.sql import statement
from indexer.types import PreviousState


@dataclass(frozen=True, slots=True)
class Checkpoint:
    source: str
    start_block: int
    block_number: int
    block_hash: str


class Readers:
    """Reads of a store's connection (mixed into :class:`indexer.store.Store`)."""

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        raise NotImplementedError  # the Store's: a connection per thread
    path: Path

    def query(self, sql: str, params: list[Any] | dict[str, Any] | None = None
              ) -> tuple[list[str], list[tuple[Any, ...]]]:
        try:
            cur = self.con.execute(sql, params or [])
        except duckdb.Error as e:
            raise StoreError(f"query failed: {e}") from None
        if cur.description is None:
            return [], []
        return [d[0] for d in cur.description], cur.fetchall()

    def arrow(self, sql: str, params: list[Any] | dict[str, Any] | None = None) -> pa.Table:
        """The result of ``sql`` as an Arrow table (amounts stay exact: DECIMAL(38, x))."""
        try:
            return self.con.sql(sql, params=params).to_arrow_table()
        except duckdb.Error as e:
            raise StoreError(f"query failed: {e}") from None

    def read_only_queries(self, limits: Limits | None = None) -> ReadOnlyQueries:
        """Analysts' queries on this database, beside the writer (locks the database down:
        see :mod:`indexer.store.read_only`)."""
        return ReadOnlyQueries(self.con, limits or Limits())

    def _one(self, name: str, **params: Any) -> Any:
        row = self.con.execute(statement(name), params).fetchone()
        return row[0] if row else None

    def load_checkpoint(self, source: str) -> Checkpoint | None:
        row = self.con.execute(statement("checkpoint"), {"source": source}).fetchone()
        return Checkpoint(*row) if row else None

    def load_markets(self, source: str) -> dict[str, tuple[str, str, str]]:
        """Markets ``source`` found in events: address -> (index, long, short token)."""
        rows = self.con.execute(statement("markets_of_source"), {"source": source}).fetchall()
        return {m: (i, lg, s) for m, i, lg, s in rows}

    def load_listed(self, source: str) -> dict[str, int]:
        """Every market of ``source`` in ``markets``: address -> the block it was listed at."""
        rows = self.con.execute(statement("listed_markets"), {"source": source}).fetchall()
        return {m: int(b) for m, b in rows}

    def load_parameters(self, source: str) -> dict[str, list[tuple[int, int]]]:
        """Stored protocol parameters of ``source``: name -> [(block, value)] by block."""
        out: dict[str, list[tuple[int, int]]] = {}
        for name, block, value in self.con.execute(statement("parameters_of_source"),
                                                   {"source": source}).fetchall():
            out.setdefault(name, []).append((int(block), int(value)))
        return out

    def load_open_interest(self, source: str, before_block: int) -> dict[str, int]:
        """The protocol's own long open interest in tokens per market, as last stored below
        ``before_block`` (the base of the next reading's delta)."""
        rows = self.con.execute(statement("open_interest_before"),
                                {"source": source, "before": before_block}).fetchall()
        return {m: int(v) for m, v in rows}

    def load_open_histories(self, source: str, before_block: int
                            ) -> dict[str, list[tuple[bool, int]]]:
        """(is_long, size after in tokens) of every change below ``before_block`` of each
        position still open there, in chain order, by position key."""
        out: dict[str, list[tuple[bool, int]]] = {}
        for key, is_long, size in self.con.execute(
                statement("open_key_histories"),
                {"source": source, "before": before_block}).fetchall():
            out.setdefault(key, []).append((bool(is_long), int(size or 0)))
        return out

    def load_previous(self, source: str, keys: list[str], before_block: int,
                      usd_decimals: int) -> dict[str, PreviousState]:
        """The state of each of ``keys`` after its last change below ``before_block`` (keys
        without one are left out), for adapters whose events carry only deltas.

        Read from ``positions`` when those rows are all older than ``before_block`` (the usual
        case: the range follows the checkpoint), else from the ledger itself (a replay).
        """
        if not keys:
            return {}
        params = {"source": source, "keys": keys}
        rows = self.con.execute(statement("previous_from_positions"), params).fetchall()
        if any(r[-1] >= before_block for r in rows):
            rows = self.con.execute(statement("previous_from_ledger"),
                                    {**params, "before": before_block}).fetchall()
        scale = 10**usd_decimals

        def num(v: str | None) -> int | None:
            return int(v) if v is not None else None

        return {k: PreviousState(
            is_long, num(size) or 0, num(coll), int(pnl * scale) if pnl is not None else None,
            market, coll_token, num(size_usd) or 0, num(coll_tokens), num(entry))
            for k, is_long, size, coll, pnl, market, coll_token, size_usd, coll_tokens, entry, _
            in rows}

    def load_block_time(self, chain_id: int, number: int) -> int | None:
        value = self._one("block_time", chain_id=chain_id, number=number)
        return int(value) if value is not None else None

    def load_block_hash(self, chain_id: int, number: int) -> str | None:
        value = self._one("block_hash", chain_id=chain_id, number=number)
        return str(value) if value is not None else None


def lock_holder(message: str) -> str:
    """The process holding a database, from DuckDB's lock error: ``PID 123: perp-indexer sync
    --config x.yaml`` where the system shows its command line, else what DuckDB says."""
    found = re.search(r"held in (.*?) \(PID (\d+)\)", message)
    if not found:
        return "see: " + message
    program, pid = found.groups()
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        command = " ".join(a.decode(errors="replace") for a in argv if a)
    except OSError:
        command = program
    return f"PID {pid}: {command or program}"
