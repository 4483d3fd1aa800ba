"""Writing the ledger: one range of one source committed with its checkpoint, and the positions
it touched refreshed, in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from indexer.store.amounts import decimal18_array
from indexer.store.sql import statement


@dataclass(slots=True)
class RangeRows:
    """Everything one block range of one source produced, ready to store."""

    chain_id: int
    protocol: str
    source: str
    usd_decimals: int
    #: Ledger columns (see ``indexer.types.ChangeColumns``, plus block_number, block_time,
    #: tx_hash, log_index); amounts as raw ints.
    changes: dict[str, list[Any]]
    #: Funding rows: block_number, block_time, log_index, market, rate.
    funding: dict[str, list[Any]]
    #: Quarantine rows: block_number, tx_hash, log_index, address, topics, data, reason.
    quarantine: list[tuple[Any, ...]]
    #: Block headers to keep: (number, hash, parent_hash, timestamp).
    blocks: list[tuple[int, str, str, int]]
    #: Markets found in events: block_number, log_index, market, index/long/short token, name.
    markets: dict[str, list[Any]] | None = None
    #: Protocol OI updates: block_number, block_time, log_index, market, collateral_token,
    #: is_long, unit, delta, next_value.
    open_interest: dict[str, list[Any]] | None = None
    #: Protocol parameters set in the range: (block_number, log_index, market or None, name,
    #: value); values read with eth_call have log_index -1 (in force from the block's start).
    parameters: list[tuple[int, int, str | None, str, int]] | None = None
    #: Funding settled per position: block_number, block_time, tx_hash, log_index, account,
    #: position_key, market, amount (raw USD).
    payments: dict[str, list[Any]] | None = None

    @property
    def change_count(self) -> int:
        return len(self.changes["block_number"])


_USD_COLUMNS = ("size_delta", "collateral_delta", "size_after", "collateral_after", "price", "fee",
                "realized_pnl", "entry_price", "liquidation_price")
_RAW_COLUMNS = ("size_delta", "size_after", "collateral_after", "entry_price")
_TOKEN_COLUMNS = ("size_delta_tokens", "size_after_tokens", "collateral_delta_tokens",
                  "collateral_after_tokens")
#: Ledger columns passed through as they are.
_PLAIN_COLUMNS = ("block_number", "block_time", "tx_hash", "log_index", "position_key", "account",
                  "market", "collateral_token", "is_long", "kind", "index_token", "index_decimals",
                  "collateral_decimals")
#: Tables holding rows of a source keyed by block_number (deleted on replay and rollback).
RANGE_TABLES = ("position_changes", "funding_updates", "quarantine", "markets",
                "protocol_open_interest", "protocol_parameters", "funding_payments")


def changes_table(rows: RangeRows) -> tuple[pa.Table, list[tuple[Any, ...]]]:
    """The ledger rows as one Arrow table (USD and token amounts as DECIMAL(38,18), raw
    integers as decimal strings for BIGNUM), and the quarantine rows of changes whose USD
    amounts do not fit DECIMAL(38,18) (left out of the table)."""
    c = rows.changes
    n = len(c["position_key"])
    none = [None] * n
    data: dict[str, Any] = {name: c.get(name, none) for name in _PLAIN_COLUMNS}
    bad: set[int] = set()
    for name in _USD_COLUMNS:
        data[f"{name}_usd"], too_large = decimal18_array(c.get(name, none), rows.usd_decimals)
        bad.update(too_large)
    for name, dec in (("size_after_tokens", "index_decimals"),
                      ("collateral_after_tokens", "collateral_decimals")):
        # whole tokens; NULL when decimals are unknown or it does not fit (raw kept)
        data[name] = decimal18_array(c.get(name, none), c.get(dec, none))[0]
    for name in _RAW_COLUMNS + _TOKEN_COLUMNS:
        values = c.get(name, none)
        data[f"{name}_raw"] = pa.array([None if v is None else str(v) for v in values],
                                       pa.string())
    # small protocol counters (a funding rate at 1e6, a sequence index): BIGINT; one past
    # 2**63 fails the range loudly rather than being cut
    data["funding_entry"] = pa.array(c.get("funding_entry", none), pa.int64())
    table = pa.table(data)
    if not bad:
        return table, []
    overflow: list[tuple[Any, ...]] = [(c["block_number"][i], c["tx_hash"][i], c["log_index"][i], None, None, None,
                 (f"{c['kind'][i]} of {c['position_key'][i]}: an amount does not fit "
                  "DECIMAL(38,18) USD")) for i in sorted(bad)]
    return table.filter(pa.array([i not in bad for i in range(n)])), overflow


class LedgerWriter:
    """The writer's ledger operations (mixed into :class:`indexer.store.Store`)."""

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        raise NotImplementedError  # the Store's: a connection per thread

    def transaction(self) -> _Transaction:
        return _Transaction(self.con)

    def commit_range(self, rows: RangeRows, lo: int, hi: int, hi_hash: str, start_block: int,
                     staged: tuple[str, int] | None = None) -> int:
        """Store one range [lo, hi] of one source and move its checkpoint to ``hi``, atomically.
        ``staged``: the (file, log count) of a cluster's staged partition the range comes from,
        recorded in the same transaction.

        Returns the number of ledger rows written. Rows whose amounts do not fit DECIMAL(38,18)
        go to the quarantine with the reason instead of failing the range.
        """
        changes, overflow = changes_table(rows)
        quarantine = list(rows.quarantine) + overflow
        con = self.con
        source = {"source": rows.source}
        ids = {"chain_id": rows.chain_id, "protocol": rows.protocol, **source}
        with self.transaction():
            written = 0
            # (fetchall: a result left unfinished would block register() below)
            ((past,),) = con.execute(statement("range_is_past_checkpoint"),
                                     {"lo": lo, **source}).fetchall()
            replaced: set[str] = set()
            replay = False
            if not past:
                span = {"lo": lo, "hi": hi, **source}
                replaced = {k for (k,) in con.execute(statement("keys_in_range"),
                                                      span).fetchall()}
                # a replay (rows in or above the range): the keys' later rows depend on it
                replay = bool(replaced) or con.execute(statement("rows_above"),
                                                       {"hi": hi, **source}).fetchall()[0][0]
                for table in RANGE_TABLES:
                    con.execute(statement("delete_range_rows", table=table), span)
            if changes.num_rows:
                con.register("batch_changes", changes)
                con.execute(statement("keys_before_batch"), source)
                ((written,),) = con.execute(statement("insert_changes"), {
                    **ids, "usd_decimals": rows.usd_decimals}).fetchall()
                con.unregister("batch_changes")
            self._insert_funding(rows, ids)
            self._insert_markets(rows, ids)
            self._insert_open_interest(rows, ids)
            self._insert_payments(rows, ids)
            if rows.parameters:
                con.executemany(statement("insert_parameter"),
                                [(rows.chain_id, rows.protocol, rows.source, *p)
                                 for p in rows.parameters])
            if quarantine:
                con.executemany(statement("insert_quarantine"),
                                [(rows.chain_id, rows.source, *q) for q in quarantine])
            if rows.blocks:
                con.executemany(statement("insert_block"),
                                [(rows.chain_id, *b) for b in rows.blocks])
            if replay:
                new_keys = changes.column("position_key").to_pylist() if changes.num_rows else []
                self._refresh_keys(rows.source, replaced | set(new_keys))
            elif written:
                self._refresh_positions_incremental(rows.source, lo, hi)
            con.execute("DROP TABLE IF EXISTS prev")
            con.execute(statement("move_checkpoint"), {
                **ids, "start_block": start_block, "block": hi, "hash": hi_hash})
            if staged is not None:
                con.execute(statement("forget_staged"), {**source, "file": staged[0]})
                con.execute(statement("record_staged"), {**source, "file": staged[0], "lo": lo,
                                                         "hi": hi, "logs": staged[1]})
        return int(written)

    def merged_files(self, source: str) -> set[str]:
        """The staged files of ``source`` already merged into the ledger."""
        return {f for (f,) in self.con.execute(statement("merged_files"),
                                               {"source": source}).fetchall()}

    def _insert_batch(self, name: str, table: pa.Table, ids: dict[str, Any]) -> None:
        """Run the named insert over ``table``, registered as ``batch_<what it inserts>``."""
        view = "batch_" + name.removeprefix("insert_")
        self.con.register(view, table)
        self.con.execute(statement(name), ids)
        self.con.unregister(view)

    def _insert_funding(self, rows: RangeRows, ids: dict[str, Any]) -> None:
        f = rows.funding
        if f.get("market"):
            self._insert_batch("insert_funding", pa.table({
                "block_number": f["block_number"], "block_time": f["block_time"],
                "log_index": f["log_index"], "market": f["market"],
                "rate": [str(r) for r in f["rate"]],
                "funding_index": pa.array(f.get("index") or [None] * len(f["rate"]), pa.int64()),
                "current_rate": [None if r is None else str(r)
                                 for r in f.get("current_rate") or [None] * len(f["rate"])]}),
                ids)

    def _insert_markets(self, rows: RangeRows, ids: dict[str, Any]) -> None:
        if rows.markets and rows.markets["market"]:
            self._insert_batch("insert_markets", pa.table(rows.markets), ids)

    def _insert_open_interest(self, rows: RangeRows, ids: dict[str, Any]) -> None:
        oi = rows.open_interest
        if not oi or not oi["market"]:
            return
        data = dict(oi)
        data["next_value_usd"] = decimal18_array(
            [v if u == "usd" else None for v, u in zip(oi["next_value"], oi["unit"], strict=True)],
            rows.usd_decimals)[0]
        data["delta"] = [str(v) for v in oi["delta"]]
        data["next_value"] = [str(v) for v in oi["next_value"]]
        self._insert_batch("insert_open_interest", pa.table(data), ids)

    def _insert_payments(self, rows: RangeRows, ids: dict[str, Any]) -> None:
        p = rows.payments
        if not p or not p["account"]:
            return
        data = dict(p)
        data["amount_usd"] = decimal18_array(p["amount"], rows.usd_decimals)[0]
        data["amount"] = [str(v) for v in p["amount"]]
        self._insert_batch("insert_payments", pa.table(data), ids)

    def _refresh_positions_incremental(self, source: str, lo: int, hi: int) -> None:
        """Fold the range's changes into positions; only ``opened_block`` needs the old row
        (kept in the ``prev`` table by :meth:`commit_range`)."""
        con = self.con
        con.execute("CREATE OR REPLACE TEMP TABLE new_positions AS " + statement(
            "positions", where="source = $source AND block_number BETWEEN $lo AND $hi"),
            {"source": source, "lo": lo, "hi": hi})
        con.execute(statement("keep_opened_block"))
        con.execute(statement("delete_replaced_positions"))
        con.execute(statement("insert_new_positions"))
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
        con.execute(statement("redo_oi_deltas", where=where), {"source": source})
        con.execute(f"DELETE FROM position_changes WHERE {where}", {"source": source})
        con.execute("INSERT INTO position_changes BY NAME SELECT * EXCLUDE (l, s) "
                    "FROM redo_changes")
        con.execute("DROP TABLE redo_changes")
        con.execute(f"DELETE FROM positions WHERE {where}", {"source": source})
        con.execute("INSERT INTO positions BY NAME " + statement("positions", where=where),
                    {"source": source})
        con.execute("DROP TABLE touched_keys")

    def rebuild_positions(self) -> int:
        """Recompute the whole ``positions`` table from the ledger, in one set-based query and
        one transaction (no RPC). Returns the number of ledger rows folded."""
        con = self.con
        with self.transaction():
            (rows,) = con.execute("SELECT count(*) FROM position_changes").fetchone() or (0,)
            con.execute("DELETE FROM positions")
            con.execute("INSERT INTO positions BY NAME " + statement("positions", where="true"))
        return int(rows)

    def set_analytics(self, imbalance_threshold: float, dominance_threshold: float) -> None:
        """The analytics views' thresholds (from the writer's config)."""
        with self.transaction():
            self.con.execute("DELETE FROM analytics_settings")
            self.con.execute("INSERT INTO analytics_settings VALUES (?, ?)",
                             [imbalance_threshold, dominance_threshold])

    def reset(self) -> None:
        """Delete every row of every table, in one transaction (the demo's fresh start)."""
        with self.transaction():
            for (table,) in self.con.execute(statement("tables")).fetchall():
                self.con.execute(f"DELETE FROM {table}")

    def record_error(self, source: str, message: str) -> None:
        """The latest error of ``source`` (``checkpoints.last_error``; a commit clears it)."""
        self.con.execute(statement("record_error"), {"message": message[:500], "source": source})

    def prune_blocks(self, chain_id: int, keep_above: int) -> None:
        self.con.execute(statement("prune_blocks"), {"chain_id": chain_id,
                                                     "keep_above": keep_above})


class _Transaction:
    """``with``: BEGIN, then COMMIT, or ROLLBACK on any exception (re-raised)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def __enter__(self) -> None:
        self.con.execute("BEGIN TRANSACTION")

    def __exit__(self, kind: object, error: object, tb: object) -> None:
        self.con.execute("COMMIT" if kind is None else "ROLLBACK")
