"""DuckDB storage: the only module that imports duckdb (and pyarrow).

Invariants:

* The ledger rows, quarantined logs, funding updates, block hashes and checkpoint of one block range
  are written in ONE transaction (:meth:`Store.commit_range`). A crash leaves all of it or none.
* Re-committing a range first deletes what that source stored in the range, so replays are
  idempotent: rows are identified by (chain_id, source, block_number, log_index).
* ``positions`` is derived from ``position_changes`` (the last change of each key carries the
  full state after it) and is refreshed in the same transaction for the keys the range touched.
* One process writes the file; readers of a live database use the snapshot the writer publishes
  (:meth:`publish_snapshot`), see :func:`open_reader`.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from indexer.errors import StoreError
from indexer.types import PreviousState

_DEC_LIMIT = 10**38  # DECIMAL(38, 18) holds |x| < 1e20 USD


def to_decimal18(raw: int, decimals: int) -> str | None:
    """``raw / 10**decimals`` as an exact decimal string with 18 decimals, truncated toward
    zero (the digits past 1e-18 USD are kept in the *_raw columns). None when it does not fit
    DECIMAL(38,18). The one-value reference of :func:`decimal18_array`, which the store uses;
    the tests hold the two equal and read stored amounts back with this one."""
    if decimals >= 18:
        q = abs(raw) // 10 ** (decimals - 18)
    else:
        q = abs(raw) * 10 ** (18 - decimals)
    if q >= _DEC_LIMIT:
        return None
    sign = "-" if raw < 0 and q else ""
    return f"{sign}{q // 10**18}.{q % 10**18:018d}"


#: Integer counts of 1e-18, and the same bits read as DECIMAL(38,18).
_SCALED18, _DECIMAL18 = pa.decimal128(38, 0), pa.decimal128(38, 18)


def decimal18_array(values: list[int | None], decimals: int | list[int | None]
                    ) -> tuple[pa.Array, list[int]]:
    """``values / 10**decimals`` as an Arrow DECIMAL(38,18) column, exactly as
    :func:`to_decimal18` (truncated toward zero), but in bulk: each value is scaled to an integer
    count of 1e-18 and the Arrow array of those integers is reinterpreted with scale 18 (no
    strings, no Decimal objects). ``decimals`` is one scale or one per value (None: unknown).

    Returns the column (NULL for None and for values that do not fit) and the indexes of the
    values that do not fit DECIMAL(38,18)."""
    per_row = isinstance(decimals, list)
    if not per_row and decimals >= 18:
        div = 10 ** (decimals - 18)
        q = [None if v is None else (v // div if v >= 0 else -(-v // div)) for v in values]
    elif not per_row:
        mul = 10 ** (18 - decimals)
        q = [None if v is None else v * mul for v in values]
    else:
        q = [None if v is None or d is None else
             (v * 10 ** (18 - d) if d < 18 else v // 10 ** (d - 18) if v >= 0
              else -(-v // 10 ** (d - 18))) for v, d in zip(values, decimals, strict=True)]
    bad = [i for i, v in enumerate(q) if v is not None and not -_DEC_LIMIT < v < _DEC_LIMIT]
    for i in bad:
        q[i] = None
    return pa.array(q, _SCALED18).view(_DECIMAL18), bad


@dataclass(frozen=True, slots=True)
class Checkpoint:
    source: str
    start_block: int
    block_number: int
    block_hash: str


@dataclass(slots=True)
class RangeRows:
    """Everything one block range of one source produced, ready to store."""

    chain_id: int
    protocol: str
    source: str
    usd_decimals: int
    #: Ledger columns: see ``_CHANGE_COLUMNS``; amounts as raw ints.
    changes: dict[str, list[Any]]
    #: Funding rows: block_number, block_time, log_index, market, rate.
    funding: dict[str, list[Any]]
    #: Quarantine rows: block_number, tx_hash, log_index, address, topics, data, reason.
    quarantine: list[tuple[Any, ...]]
    #: Block headers to keep: (number, hash, parent_hash, timestamp).
    blocks: list[tuple[int, str, str, int]]
    #: Markets found in events: block_number, log_index, market, index/long/short token.
    markets: dict[str, list[Any]] | None = None
    #: Protocol OI updates: block_number, block_time, log_index, market, collateral_token,
    #: is_long, unit, delta, next_value.
    open_interest: dict[str, list[Any]] | None = None


_USD_COLUMNS = ("size_delta", "collateral_delta", "size_after", "collateral_after", "price", "fee",
                "realized_pnl", "entry_price")
_RAW_COLUMNS = ("size_delta", "size_after", "collateral_after", "entry_price")
_TOKEN_COLUMNS = ("size_delta_tokens", "size_after_tokens", "collateral_delta_tokens",
                  "collateral_after_tokens")
#: Ledger columns passed through as they are.
_PLAIN_COLUMNS = ("block_number", "block_time", "tx_hash", "log_index", "position_key", "account",
                  "market", "collateral_token", "is_long", "kind", "index_token", "index_decimals",
                  "collateral_decimals")
#: Tables holding rows of a source keyed by block_number (deleted on replay and rollback).
_RANGE_TABLES = ("position_changes", "funding_updates", "quarantine", "markets",
                 "protocol_open_interest")

#: The positions of the keys whose changes match ``{where}``: each key's last change carries its
#: full state, so one small aggregate finds that row (by rowid) and a join reads it whole; an
#: ``arg_max`` per column instead holds ~20 strings and BIGNUMs per key (5x slower at 10M keys).
_POSITIONS_SELECT = """
WITH last AS (
    SELECT arg_max(rowid, block_number * 1000000 + log_index) AS r,
           max(block_number) FILTER (WHERE kind = 'increase' AND size_after_raw = size_delta_raw)
               AS opened_block,
           max(block_number) AS updated_block
    FROM position_changes WHERE {where}
    GROUP BY source, position_key
)
SELECT chain_id, protocol, source, position_key, account, market, collateral_token, is_long,
       size_after_usd AS size_usd, collateral_after_usd AS collateral_usd, entry_price_usd,
       CASE WHEN size_after_raw <> 0 THEN 'open'  -- (partial liquidations)
            WHEN kind = 'liquidation' THEN 'liquidated' ELSE 'closed' END AS status,
       opened_block, updated_block, realized_pnl_usd,
       size_after_raw AS size_raw, collateral_after_raw AS collateral_raw, entry_price_raw,
       index_token, size_after_tokens AS size_tokens, collateral_after_tokens AS collateral_tokens,
       size_after_tokens_raw AS size_tokens_raw, collateral_after_tokens_raw AS collateral_tokens_raw
FROM position_changes JOIN last ON rowid = last.r
WHERE {where}  -- (lets the scan skip what the aggregate skipped)
"""

#: Each change's contribution to its market's open interest, per side (``long_oi_delta_usd``,
#: ``short_oi_delta_usd``): its size after minus the key's size after on that side before it,
#: so a position that flips from long to short in one trade leaves one side and enters the
#: other, and the sum over any prefix of the ledger is exactly the open interest there.
#: ``_SIDES`` splits a row's size by side; ``_OI_DELTAS`` needs ``prev_l``/``prev_s`` (the
#: key's sides before the first of the rows, NULL: none) and a window ``k`` over the key.
_SIDES = ("CASE WHEN is_long THEN size_after_usd ELSE 0 END AS l, "
          "CASE WHEN is_long THEN 0 ELSE size_after_usd END AS s")
_OI_DELTAS = ("l - coalesce(lag(l) OVER k, prev_l, 0) AS long_oi_delta_usd, "
              "s - coalesce(lag(s) OVER k, prev_s, 0) AS short_oi_delta_usd")


def _sql(name: str) -> str:
    return resources.files("indexer").joinpath("sql", name).read_text()


class Store:
    """The writer's connection to a DuckDB file (or a read-only one, see :func:`open_reader`)."""

    def __init__(self, path: Path | str, read_only: bool = False,
                 memory_limit_mb: int | None = None) -> None:
        self.path = Path(path)
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as e:
            if "lock" in str(e).lower():
                raise StoreError(
                    f"{self.path}: the database is in use by another writing process "
                    f"({lock_holder(str(e))}); stop it first, or query its snapshot with "
                    "`perp-indexer query`") from None
            raise StoreError(f"{self.path}: cannot open database: {e}") from None
        self.read_only = read_only
        if memory_limit_mb is not None:
            self.con.execute(f"SET memory_limit = '{int(memory_limit_mb)}MB'")
        #: Rollbacks done through this connection: cached state (markets) is stale when it moves.
        self.rollbacks = 0
        if not read_only:
            self.con.execute(_sql("schema.sql"))
            self.con.execute(_sql("views.sql"))
            self._migrate()

    def _migrate(self) -> None:
        """Fill what a database of an earlier version lacks (idempotent, one transaction)."""
        con = self.con
        (missing,) = con.execute("SELECT count(*) FROM position_changes "
                                 "WHERE long_oi_delta_usd IS NULL").fetchone()
        if missing:
            con.execute("BEGIN TRANSACTION")
            try:
                self._fill_oi_deltas("true")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self.con.close()

    # -- reads ---------------------------------------------------------------------------------

    def query(self, sql: str, params: list[Any] | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
        try:
            cur = self.con.execute(sql, params or [])
        except duckdb.Error as e:
            raise StoreError(f"query failed: {e}") from None
        if cur.description is None:
            return [], []
        return [d[0] for d in cur.description], cur.fetchall()

    def load_checkpoint(self, source: str) -> Checkpoint | None:
        row = self.con.execute(
            "SELECT source, start_block, block_number, block_hash FROM checkpoints WHERE source = ?",
            [source]).fetchone()
        return Checkpoint(*row) if row else None

    def load_markets(self, source: str) -> dict[str, tuple[str, str, str]]:
        """Markets ``source`` found in events: address -> (index, long, short token)."""
        rows = self.con.execute(
            "SELECT market, index_token, long_token, short_token FROM markets WHERE source = ? "
            "ORDER BY block_number, log_index", [source]).fetchall()
        return {m: (i, lg, s) for m, i, lg, s in rows}

    def load_previous(self, source: str, keys: list[str], before_block: int,
                      usd_decimals: int) -> dict[str, PreviousState]:
        """The state of each of ``keys`` after its last change below ``before_block`` (keys
        without one are left out), for adapters whose events carry only deltas.

        Read from ``positions`` when those rows are all older than ``before_block`` (the usual
        case: the range follows the checkpoint), else from the ledger itself (a replay).
        """
        if not keys:
            return {}
        cols = ("position_key, is_long, size_tokens_raw::VARCHAR, collateral_raw::VARCHAR, "
                "realized_pnl_usd, market, collateral_token, size_raw::VARCHAR, "
                "collateral_tokens_raw::VARCHAR, entry_price_raw::VARCHAR, updated_block")
        rows = self.con.execute(
            f"SELECT {cols} FROM positions WHERE source = $source AND position_key IN "
            "(SELECT unnest($keys))", {"source": source, "keys": keys}).fetchall()
        if any(r[-1] >= before_block for r in rows):
            last = ", ".join(f"arg_max({c}, o){cast}" for c, cast in (
                ("is_long", ""), ("size_after_tokens_raw", "::VARCHAR"),
                ("collateral_after_raw", "::VARCHAR"), ("realized_pnl_usd", ""), ("market", ""),
                ("collateral_token", ""), ("size_after_raw", "::VARCHAR"),
                ("collateral_after_tokens_raw", "::VARCHAR"), ("entry_price_raw", "::VARCHAR")))
            rows = self.con.execute(
                f"SELECT position_key, {last}, max(block_number) FROM (SELECT *, "
                "block_number * 1000000 + log_index AS o FROM position_changes WHERE "
                "source = $source AND block_number < $before AND position_key IN "
                "(SELECT unnest($keys))) GROUP BY position_key",
                {"source": source, "keys": keys, "before": before_block}).fetchall()
        scale = 10**usd_decimals

        def num(v: str | None) -> int | None:
            return int(v) if v is not None else None

        return {k: PreviousState(
            is_long, num(size) or 0, num(coll), int(pnl * scale) if pnl is not None else None,
            market, coll_token, num(size_usd) or 0, num(coll_tokens), num(entry))
            for k, is_long, size, coll, pnl, market, coll_token, size_usd, coll_tokens, entry, _
            in rows}

    def load_block_time(self, chain_id: int, number: int) -> int | None:
        row = self.con.execute("SELECT timestamp FROM blocks WHERE chain_id = ? AND number = ?",
                               [chain_id, number]).fetchone()
        return int(row[0]) if row else None

    def load_block_hash(self, chain_id: int, number: int) -> str | None:
        row = self.con.execute("SELECT hash FROM blocks WHERE chain_id = ? AND number = ?",
                               [chain_id, number]).fetchone()
        return row[0] if row else None

    # -- writes --------------------------------------------------------------------------------

    def commit_range(self, rows: RangeRows, lo: int, hi: int, hi_hash: str, start_block: int) -> int:
        """Store one range [lo, hi] of one source and move its checkpoint to ``hi``, atomically.

        Returns the number of ledger rows written. Rows whose amounts do not fit DECIMAL(38,18)
        go to the quarantine with the reason instead of failing the range.
        """
        changes, overflow = self._changes_table(rows)
        quarantine = list(rows.quarantine) + overflow
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            written = 0
            # every row of a source is at or below its checkpoint (rows are committed with it
            # and a rollback rewinds it), so a range past the checkpoint has nothing to replace
            # (fetchall: a result left unfinished would block register() below)
            ((past,),) = con.execute("SELECT coalesce(max(block_number) < ?, true) FROM "
                                     "checkpoints WHERE source = ?", [lo, rows.source]).fetchall()
            replaced: set[str] = set()
            replay = False
            if not past:
                replaced = {k for (k,) in con.execute(
                    "SELECT DISTINCT position_key FROM position_changes WHERE source = ? AND "
                    "block_number BETWEEN ? AND ?", [rows.source, lo, hi]).fetchall()}
                # a replay (rows in or above the range): the keys' later rows depend on it
                replay = bool(replaced) or con.execute(
                    "SELECT count(*) > 0 FROM position_changes WHERE source = ? AND "
                    "block_number > ?", [rows.source, hi]).fetchall()[0][0]
                for table in _RANGE_TABLES:
                    con.execute(f"DELETE FROM {table} WHERE source = ? AND block_number "
                                "BETWEEN ? AND ?", [rows.source, lo, hi])
            if changes.num_rows:
                con.register("batch_changes", changes)
                # the touched keys as they were before the range: where their OI deltas start
                con.execute(
                    "CREATE OR REPLACE TEMP TABLE prev AS SELECT position_key, opened_block, "
                    "CASE WHEN is_long THEN size_usd ELSE 0 END AS prev_l, "
                    "CASE WHEN is_long THEN 0 ELSE size_usd END AS prev_s FROM positions "
                    "WHERE source = $source AND position_key IN "
                    "(SELECT position_key FROM batch_changes)", {"source": rows.source})
                ((written,),) = con.execute(self._insert_changes_sql(), {
                    "chain_id": rows.chain_id, "protocol": rows.protocol, "source": rows.source,
                    "usd_decimals": rows.usd_decimals}).fetchall()
                con.unregister("batch_changes")
            self._insert_funding(rows)
            self._insert_markets(rows)
            self._insert_open_interest(rows)
            if quarantine:
                con.executemany(
                    "INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, now()::TIMESTAMP)",
                    [(rows.chain_id, rows.source, *q) for q in quarantine])
            if rows.blocks:
                con.executemany("INSERT OR REPLACE INTO blocks VALUES (?, ?, ?, ?, ?)",
                                [(rows.chain_id, *b) for b in rows.blocks])
            if replay:
                new_keys = changes.column("position_key").to_pylist() if changes.num_rows else []
                self._refresh_keys(rows.source, replaced | set(new_keys))
            elif written:
                self._refresh_positions_incremental(rows.source, lo, hi)
            con.execute("DROP TABLE IF EXISTS prev")
            # a replay of an older range never moves the checkpoint back
            con.execute(
                "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, now()::TIMESTAMP, NULL) "
                "ON CONFLICT (source) DO UPDATE SET updated_at = excluded.updated_at, "
                "last_error = NULL, start_block = least(checkpoints.start_block, "
                "excluded.start_block), block_hash = CASE WHEN excluded.block_number >= "
                "checkpoints.block_number THEN excluded.block_hash ELSE checkpoints.block_hash END,"
                " block_number = greatest(checkpoints.block_number, excluded.block_number)",
                [rows.chain_id, rows.source, rows.protocol, start_block, hi, hi_hash])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return int(written)

    def _changes_table(self, rows: RangeRows) -> tuple[pa.Table, list[tuple[Any, ...]]]:
        """The ledger rows as one Arrow table (USD and token amounts as DECIMAL(38,18), raw
        integers as decimal strings for BIGNUM), and the quarantine rows of changes whose USD
        amounts do not fit DECIMAL(38,18) (left out of the table)."""
        c = rows.changes
        n = len(c["position_key"])
        none = [None] * n
        data: dict[str, Any] = {name: c.get(name, none) for name in _PLAIN_COLUMNS}
        bad: set[int] = set()
        for name in _USD_COLUMNS:
            data[f"{name}_usd"], overflow = decimal18_array(c[name], rows.usd_decimals)
            bad.update(overflow)
        for name, dec in (("size_after_tokens", "index_decimals"),
                          ("collateral_after_tokens", "collateral_decimals")):
            # whole tokens; NULL when decimals are unknown or it does not fit (raw kept)
            data[name] = decimal18_array(c.get(name, none), c.get(dec, none))[0]
        for name in _RAW_COLUMNS + _TOKEN_COLUMNS:
            values = c.get(name, none)
            data[f"{name}_raw"] = pa.array([None if v is None else str(v) for v in values],
                                           pa.string())
        table = pa.table(data)
        if not bad:
            return table, []
        overflow = [(c["block_number"][i], c["tx_hash"][i], c["log_index"][i], None, None, None,
                     (f"{c['kind'][i]} of {c['position_key'][i]}: an amount does not fit "
                      "DECIMAL(38,18) USD")) for i in sorted(bad)]
        return table.filter(pa.array([i not in bad for i in range(n)])), overflow

    @staticmethod
    def _insert_changes_sql() -> str:
        raw = ", ".join(f"CAST({n}_raw AS BIGNUM) AS {n}_raw" for n in _RAW_COLUMNS + _TOKEN_COLUMNS)
        return (
            "INSERT INTO position_changes BY NAME SELECT $chain_id AS chain_id, "
            "$protocol AS protocol, $source AS source, block_number, "
            "CASE WHEN block_time >= 0 THEN make_timestamp(block_time * 1000000) END AS block_time,"
            " tx_hash, log_index, position_key, account, market, collateral_token, is_long, kind, "
            f"{', '.join(f'{n}_usd' for n in _USD_COLUMNS)}, {raw}, "
            "$usd_decimals AS usd_decimals, index_token, "
            "CAST(index_decimals AS TINYINT) AS index_decimals, "
            "CAST(collateral_decimals AS TINYINT) AS collateral_decimals, "
            f"size_after_tokens, collateral_after_tokens, {_OI_DELTAS} "
            f"FROM (SELECT *, {_SIDES} FROM batch_changes) LEFT JOIN prev USING (position_key) "
            "WINDOW k AS (PARTITION BY position_key ORDER BY block_number, log_index) "
            "ORDER BY block_number, log_index"
        )

    def _insert_funding(self, rows: RangeRows) -> None:
        f = rows.funding
        if not f["market"]:
            return
        table = pa.table({"block_number": f["block_number"], "block_time": f["block_time"],
                          "log_index": f["log_index"], "market": f["market"],
                          "rate": [str(r) for r in f["rate"]]})
        self.con.register("batch_funding", table)
        self.con.execute(
            "INSERT INTO funding_updates SELECT ?, ?, ?, block_number, CASE WHEN block_time >= 0 "
            "THEN make_timestamp(block_time * 1000000) END, log_index, market, CAST(rate AS BIGNUM) "
            "FROM batch_funding", [rows.chain_id, rows.protocol, rows.source])
        self.con.unregister("batch_funding")

    def _insert_markets(self, rows: RangeRows) -> None:
        m = rows.markets
        if not m or not m["market"]:
            return
        self.con.register("batch_markets", pa.table(m))
        self.con.execute(
            "INSERT INTO markets BY NAME SELECT ? AS chain_id, ? AS protocol, ? AS source, * "
            "FROM batch_markets", [rows.chain_id, rows.protocol, rows.source])
        self.con.unregister("batch_markets")

    def _insert_open_interest(self, rows: RangeRows) -> None:
        oi = rows.open_interest
        if not oi or not oi["market"]:
            return
        data = dict(oi)
        data["next_value_usd"] = decimal18_array(
            [v if u == "usd" else None for v, u in zip(oi["next_value"], oi["unit"], strict=True)],
            rows.usd_decimals)[0]
        data["delta"] = [str(v) for v in oi["delta"]]
        data["next_value"] = [str(v) for v in oi["next_value"]]
        self.con.register("batch_oi", pa.table(data))
        self.con.execute(
            "INSERT INTO protocol_open_interest BY NAME SELECT ? AS chain_id, ? AS protocol, "
            "? AS source, block_number, CASE WHEN block_time >= 0 THEN make_timestamp("
            "block_time * 1000000) END AS block_time, log_index, market, collateral_token, "
            "is_long, unit, CAST(delta AS BIGNUM) AS delta_raw, CAST(next_value AS BIGNUM) AS "
            "next_value_raw, CAST(next_value_usd AS DECIMAL(38,18)) AS next_value_usd "
            "FROM batch_oi", [rows.chain_id, rows.protocol, rows.source])
        self.con.unregister("batch_oi")

    def _refresh_positions_incremental(self, source: str, lo: int, hi: int) -> None:
        """Fold the range's changes into positions; only ``opened_block`` needs the old row
        (kept in the ``prev`` table by :meth:`commit_range`)."""
        con = self.con
        con.execute("CREATE OR REPLACE TEMP TABLE new_positions AS " + _POSITIONS_SELECT.format(
            where="source = $source AND block_number BETWEEN $lo AND $hi"),
            {"source": source, "lo": lo, "hi": hi})
        con.execute("UPDATE new_positions n SET opened_block = p.opened_block FROM prev p "
                    "WHERE n.opened_block IS NULL AND p.position_key = n.position_key")
        con.execute("DELETE FROM positions p USING new_positions n "
                    "WHERE p.source = n.source AND p.position_key = n.position_key")
        con.execute("INSERT INTO positions BY NAME SELECT * FROM new_positions")
        con.execute("DROP TABLE new_positions")

    def _refresh_keys(self, source: str, keys: set[str]) -> None:
        """Recompute the positions and OI deltas of ``keys`` from their whole history in the
        ledger (keys left without rows go)."""
        if not keys:
            return
        con = self.con
        con.execute("CREATE OR REPLACE TEMP TABLE touched_keys (position_key VARCHAR)")
        con.register("keys_batch", pa.table({"position_key": sorted(keys)}))
        con.execute("INSERT INTO touched_keys SELECT position_key FROM keys_batch")
        con.unregister("keys_batch")
        where = "source = $source AND position_key IN (SELECT position_key FROM touched_keys)"
        self._fill_oi_deltas(where, {"source": source})
        con.execute(f"DELETE FROM positions WHERE {where}", {"source": source})
        con.execute("INSERT INTO positions BY NAME " + _POSITIONS_SELECT.format(where=where),
                    {"source": source})
        con.execute("DROP TABLE touched_keys")

    def _fill_oi_deltas(self, where: str, params: dict[str, Any] | None = None) -> None:
        """(Re)compute the OI deltas of the changes matching ``where``, which must select whole
        key histories (all rows of each key it selects)."""
        self.con.execute(
            "UPDATE position_changes c SET long_oi_delta_usd = d.long_oi_delta_usd, "
            "short_oi_delta_usd = d.short_oi_delta_usd FROM ("
            f"SELECT r, {_OI_DELTAS} FROM (SELECT rowid AS r, source, position_key, block_number, "
            f"log_index, NULL AS prev_l, NULL AS prev_s, {_SIDES} FROM position_changes "
            f"WHERE {where}) WINDOW k AS (PARTITION BY source, position_key "
            "ORDER BY block_number, log_index)) d WHERE c.rowid = d.r", params or {})

    def rollback_chain(self, chain_id: int, block: int, block_hash: str) -> tuple[int, int]:
        """Undo a reorg on ``chain_id``: delete what every source of the chain stored above
        ``block`` (ledger rows, funding, markets, OI, quarantine, block hashes), recompute the
        positions they touched, rewind their checkpoints to ``block`` and record the reorg,
        all in one transaction. Returns (old tip, position changes removed)."""
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            sources = [s for (s,) in con.execute(
                "SELECT source FROM checkpoints WHERE chain_id = ? AND block_number > ? "
                "ORDER BY source", [chain_id, block]).fetchall()]
            (old_tip,) = con.execute(
                "SELECT coalesce(max(block_number), ?) FROM checkpoints WHERE chain_id = ?",
                [block, chain_id]).fetchone()
            deleted = 0
            for source in sources:
                keys = {k for (k,) in con.execute(
                    "SELECT DISTINCT position_key FROM position_changes WHERE source = ? "
                    "AND block_number > ?", [source, block]).fetchall()}
                deleted += con.execute(
                    "SELECT count(*) FROM position_changes WHERE source = ? AND block_number > ?",
                    [source, block]).fetchone()[0]
                for table in _RANGE_TABLES:
                    con.execute(f"DELETE FROM {table} WHERE source = ? AND block_number > ?",
                                [source, block])
                self._refresh_keys(source, keys)
            con.execute("DELETE FROM blocks WHERE chain_id = ? AND number > ?", [chain_id, block])
            con.execute("UPDATE checkpoints SET block_number = ?, block_hash = ?, "
                        "updated_at = now()::TIMESTAMP WHERE chain_id = ? AND block_number > ?",
                        [block, block_hash, chain_id, block])
            con.execute("INSERT INTO reorgs VALUES (?, now()::TIMESTAMP, ?, ?, ?, ?)",
                        [chain_id, old_tip, block, old_tip - block, deleted])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        self.rollbacks += 1
        return int(old_tip), int(deleted)

    def rebuild_positions(self) -> int:
        """Recompute the whole ``positions`` table from the ledger, in one set-based query and
        one transaction (no RPC). Returns the number of ledger rows folded."""
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            (rows,) = con.execute("SELECT count(*) FROM position_changes").fetchone()
            con.execute("DELETE FROM positions")
            con.execute("INSERT INTO positions BY NAME " + _POSITIONS_SELECT.format(where="true"))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return int(rows)

    def record_error(self, source: str, message: str) -> None:
        self.con.execute("UPDATE checkpoints SET last_error = ? WHERE source = ?",
                         [message[:500], source])

    def prune_blocks(self, chain_id: int, keep_above: int) -> None:
        self.con.execute("DELETE FROM blocks WHERE chain_id = ? AND number < ?",
                         [chain_id, keep_above])

    def publish_snapshot(self, dest: Path) -> float:
        """Copy a consistent image of the database to ``dest`` for readers; returns seconds.

        The copy runs in a child process. DuckDB's write lock is a POSIX record lock, which
        belongs to the process: closing any descriptor of the file in this process, such as
        one a copy opened by path, would drop it and let a second writer in."""
        started = time.monotonic()
        self.con.execute("CHECKPOINT")
        tmp = dest.with_name(dest.name + ".tmp")
        copy = subprocess.run(["cp", str(self.path), str(tmp)], capture_output=True, text=True)
        if copy.returncode != 0:
            raise StoreError(f"cannot publish the snapshot {dest}: {copy.stderr.strip()}")
        os.replace(tmp, dest)
        return time.monotonic() - started


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


def open_reader(database: Path, snapshot: Path) -> tuple[Store, str | None]:
    """Open the database read-only; while a writer holds it, open the writer's snapshot.

    Returns the store and, when the snapshot was used, a note saying how old it is.
    """
    if not database.exists():
        raise StoreError(f"{database}: no database yet; run `perp-indexer backfill` or `sync` first")
    try:
        return Store(database, read_only=True), None
    except StoreError as e:
        if "in use" not in str(e):
            raise
    if not snapshot.exists():
        raise StoreError(f"{database} is held by a running writer and it has not published a "
                         f"snapshot yet ({snapshot}); try again in a few seconds")
    age = time.time() - snapshot.stat().st_mtime
    return Store(snapshot, read_only=True), (
        f"note: {database.name} is being written by a running sync; reading its snapshot "
        f"from {age:.0f}s ago")
