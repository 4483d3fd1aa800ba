"""`perp-indexer export` on the GMX v1 recording (three days of data: 2024-04-01 to 04-03):
the folder read back by DuckDB, polars and pandas equals the tables; a second export writes
nothing; after a reorg rolled back part of the last day, then all of it, then a replay, the
export rewrites exactly the partitions whose rows changed (computed here in Python from the
tables' rows, not from the export's hashes) and deletes the vanished ones."""

from __future__ import annotations

import json
import math
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from indexer.store import Store
from indexer.store.export import ExportResult, export
from tests.helpers import GMX_V1_DATA, ReplayNode, run_cli, write_config

pytestmark = pytest.mark.replay

Rows = dict[str, list[tuple[Any, ...]]]   # partition path -> rows


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ReplayNode, Path]]:
    """The replay node (kept for the replay after the rollbacks) and a backfilled config."""
    truth = json.loads((GMX_V1_DATA / "gmx_v1_truth.json").read_text())
    tmp = tmp_path_factory.mktemp("export")
    node = ReplayNode(GMX_V1_DATA, "gmx_v1")
    try:
        cfg = write_config(tmp / "c.yaml", node.url, truth["contracts"]["Vault"],
                           truth["deploymentBlock"], max_block_range=150)
        assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 0
        yield node, cfg
    finally:
        node.stop()


def arrow_of(store: Store) -> Callable[[str], pa.Table]:
    """``Store.arrow`` on a cursor of its own (the store's connection may hold the unfinished
    result of its own set-up queries)."""
    cur = store.con.cursor()
    return lambda sql: cur.sql(sql).to_arrow_table()


def do_export(db: Path, out: Path) -> ExportResult:
    with Store(db, read_only=True) as store:
        return export(arrow_of(store), out)


def columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    return con.execute("SELECT column_name, data_type FROM duckdb_columns() "
                       "WHERE table_name = ? ORDER BY column_index", [table]).fetchall()


def tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    views = [v for (v,) in con.execute(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
        if v.endswith("_hourly")]
    return ["position_changes", "positions", "funding_updates", *sorted(views)]


def source(db: Path) -> dict[str, Rows]:
    """Every exported table's rows by the partition they belong in, computed here: the day of
    block_time (positions: of the key's latest change), of hour for the views; protocol and
    chain where every row has them. BIGNUM as text, as exported."""
    with Store(db, read_only=True) as store:
        con = store.con.cursor()
        last: dict[tuple[Any, ...], datetime] = {}
        for k, t in ((k, t) for *k, t in con.execute(
                "SELECT chain_id, source, position_key, block_time FROM position_changes")
                .fetchall()):
            last[tuple(k)] = max(t, last.get(tuple(k), t))
        found: dict[str, Rows] = {}
        for table in tables(con):
            cols = columns(con, table)
            names = [c for c, _ in cols]
            select = ", ".join(f'"{c}"::VARCHAR' if t == "BIGNUM" else f'"{c}"'
                               for c, t in cols)
            venue = "protocol" in names and "scope" not in names
            parts: Rows = defaultdict(list)
            for row in con.execute(f"SELECT {select} FROM {table}").fetchall():
                r = dict(zip(names, row, strict=True))
                if table == "positions":
                    day = last[(r["chain_id"], r["source"], r["position_key"])].date()
                else:
                    when = r["block_time"] if "block_time" in r else r["hour"]
                    day = when.date()
                key = (f"protocol={r['protocol']}/chain_id={r['chain_id']}/" if venue else "") \
                    + f"day={day.isoformat()}"
                parts[key].append(row)
            found[table] = {k: sorted(v, key=order) for k, v in parts.items()}
        return found


def order(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((v is None, str(v)) for v in row)


def norm(v: Any) -> Any:
    """pandas' and polars' cells as Python values (exact: Decimal stays Decimal)."""
    if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, pd.Timestamp):
        return v.to_pydatetime()
    if hasattr(v, "item") and not isinstance(v, Decimal):  # numpy scalars
        return v.item()
    return v


def assert_folder_equals(out: Path, expected: dict[str, Rows]) -> None:
    """Every table read back by DuckDB (and position_changes by polars and pandas too) equals
    the source, partition by partition; no other partition file exists."""
    con = duckdb.connect()
    for table, parts in expected.items():
        files = {p.parent.relative_to(out / table).as_posix()
                 for p in (out / table).rglob("*.parquet")} if (out / table).exists() else set()
        assert files == set(parts), table
        if not parts:
            continue
        rel = con.sql(f"SELECT * FROM read_parquet('{out}/{table}/**/*.parquet', "
                      "hive_partitioning=true)")
        got: Rows = defaultdict(list)
        src_names = source_names[table]
        for row in rel.fetchall():
            r = dict(zip(rel.columns, row, strict=True))
            key = "/".join(f"{k}={r[k]}" for k in ("protocol", "chain_id", "day") if k in r
                           and k in partition_keys(out, table))
            got[key].append(tuple(r[c] for c in src_names))
        assert {k: sorted(v, key=order) for k, v in got.items()} == parts, table

    # the ledger by polars and pandas, straight from the folder
    want = sorted((r for rows in expected["position_changes"].values() for r in rows), key=order)
    names = source_names["position_changes"]
    lazy = pl.scan_parquet(f"{out}/position_changes/**/*.parquet", hive_partitioning=True)
    frame = lazy.collect()
    assert frame.schema["size_delta_usd"] == pl.Decimal(38, 18)
    assert sorted((tuple(norm(v) for v in r) for r in frame.select(names).rows()),
                  key=order) == want
    df = pd.read_parquet(out / "position_changes", dtype_backend="pyarrow")
    assert sorted((tuple(norm(v) for v in r) for r in df[names].itertuples(index=False)),
                  key=order) == want
    assert set(df["day"].astype(str)) == {k.rsplit("=", 1)[1]
                                          for k in expected["position_changes"]}


source_names: dict[str, list[str]] = {}


def partition_keys(out: Path, table: str) -> list[str]:
    manifest = json.loads((out / "manifest.json").read_text())
    keys: list[str] = manifest["tables"][table]["partition_by"]
    return keys


def changed(before: dict[str, Rows], after: dict[str, Rows]) -> tuple[set[str], set[str]]:
    """(partitions to write, partitions to delete) between two states of the tables."""
    write, delete = set(), set()
    for table in after:
        for k, rows in after[table].items():
            if before[table].get(k) != rows:
                write.add(f"{table}/{k}")
        delete |= {f"{table}/{k}" for k in before[table] if k not in after[table]}
    return write, delete


def fingerprints(out: Path) -> dict[str, str]:
    manifest = json.loads((out / "manifest.json").read_text())
    return {f"{t}/{k}": p["fingerprint"] for t, e in manifest["tables"].items()
            for k, p in e["partitions"].items()}


def block_hash(url: str, number: int) -> str:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByNumber",
                       "params": [hex(number), False]}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(json.loads(resp.read())["result"]["hash"])


def test_export_reads_back_and_follows_reorgs(chain: tuple[ReplayNode, Path],
                                              tmp_path: Path) -> None:
    node, cfg = chain
    db = cfg.with_name("db.duckdb")
    out = tmp_path / "export"
    with Store(db, read_only=True) as store:
        con = store.con.cursor()
        for t in tables(con):
            source_names[t] = [c for c, _ in columns(con, t)]
        days = [d for (d,) in con.execute("SELECT DISTINCT block_time::DATE FROM "
                                          "position_changes ORDER BY 1").fetchall()]
        last_day_blocks = [b for (b,) in con.execute(
            "SELECT block_number FROM position_changes WHERE block_time::DATE = ? "
            "ORDER BY block_number", [days[-1]]).fetchall()]
        ((before_last_day,),) = con.execute("SELECT max(block_number) FROM position_changes "
                                            "WHERE block_time::DATE < ?", [days[-1]]).fetchall()
        ((chain_id,),) = con.execute("SELECT chain_id FROM checkpoints").fetchall()
    assert days == [date(2024, 4, 1), date(2024, 4, 2), date(2024, 4, 3)]

    state = source(db)
    first = do_export(db, out)
    assert first.written == sum(len(p) for p in state.values()) > 20
    assert first.rows == sum(len(r) for p in state.values() for r in p.values())
    assert_folder_equals(out, state)

    # nothing changed: nothing written (through the CLI: the guarded read-only path)
    before = (out / "manifest.json").read_text()
    assert run_cli("export", "--config", str(cfg), "--out", str(out), "--no-progress") == 0
    assert json.loads(before)["tables"] == json.loads((out / "manifest.json").read_text())[
        "tables"]
    assert do_export(db, out).written == 0

    def reorg_to(block: int) -> None:
        with Store(db) as store:
            store.rollback_chain(chain_id, block, block_hash(node.url, block))

    # 1. a reorg inside the last day: that day shrinks (rewritten), earlier days stay
    # 2. a reorg to before the last day: it vanishes (deleted)
    # 3. the replay brings it back
    for step in ("inside", "before", "replay"):
        if step == "inside":
            reorg_to(last_day_blocks[len(last_day_blocks) // 2])
        elif step == "before":
            reorg_to(before_last_day + 1)
        else:
            assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 0
        after = source(db)
        write, delete = changed(state, after)
        old = fingerprints(out)
        result = do_export(db, out)
        assert (result.written, result.deleted) == (len(write), len(delete)), step
        new = fingerprints(out)
        assert {k for k in new if old.get(k) != new[k]} == write, step
        assert set(old) - set(new) == delete, step
        assert result.unchanged == sum(len(p) for p in after.values()) - len(write)
        if step == "inside":
            assert not delete and any(k.endswith(f"day={days[-1]}") for k in write)
            assert not any(k.startswith("position_changes/") and f"day={days[-1]}" not in k
                           for k in write)
        if step == "before":
            assert "position_changes/protocol=gmx_v1/chain_id=31337/day=2024-04-03" in delete
            assert not (out / "position_changes/protocol=gmx_v1/chain_id=31337/"
                        "day=2024-04-03").exists()
        assert_folder_equals(out, after)
        state = after
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
