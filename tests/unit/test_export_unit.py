"""The Parquet export on a tiny hand-made database: partitions, manifest, incrementality, files
left behind, errors (the recording's end-to-end test: tests/test_export.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from indexer.errors import ConfigError, StoreError
from indexer.store import Store
from indexer.store.export import MANIFEST_VERSION, export, exported_tables

pytestmark = pytest.mark.unit

BIG = "123456789012345678901234567890123456789012345"  # 45 digits: no DECIMAL holds it
# (protocol, chain, block, time, size_delta_usd): two protocols, two days
CHANGES = [
    ("gmx_v1", 42161, 10, "2024-04-01 10:00:00", "1.000000000000000001"),
    ("gmx_v1", 42161, 11, "2024-04-01 23:59:59", "-0.5"),
    ("gmx_v1", 42161, 20, "2024-04-02 00:00:00", "12345678901234567890.123456789012345678"),
    ("synthetix_perps_v2", 10, 30, "2024-04-02 08:00:00", "7"),
]


def arrow_of(store: Store) -> Callable[[str], pa.Table]:
    """The export's reader on a cursor of its own (a Store's connection may hold the unfinished
    result of its own set-up queries)."""
    cur = store.con.cursor()
    return lambda sql: cur.sql(sql).to_arrow_table()


def make_db(path: Path) -> Path:
    with Store(path) as store:
        con = store.con
        for i, (protocol, chain, block, t, size) in enumerate(CHANGES):
            con.execute(
                "INSERT INTO position_changes (chain_id, protocol, source, block_number, "
                "block_time, tx_hash, log_index, position_key, account, market, is_long, kind, "
                "size_delta_usd, size_after_usd, fee_usd, size_delta_raw, size_after_raw, "
                "usd_decimals, long_oi_delta_usd, short_oi_delta_usd) VALUES (?, ?, ?, ?, ?, "
                "?, ?, ?, '0xacc', '0xmkt', true, 'increase', ?, ?, 0, ?, ?, 30, ?, 0)",
                [chain, protocol, f"{protocol}_src", block, t, f"0x{i:064x}", i, f"0xk{i}",
                 size, size, BIG if i == 0 else str(i), BIG, size])
            con.execute(
                "INSERT INTO positions (chain_id, protocol, source, position_key, account, "
                "market, is_long, size_usd, status, updated_block, size_raw) VALUES "
                "(?, ?, ?, ?, '0xacc', '0xmkt', true, ?, 'open', ?, ?)",
                [chain, protocol, f"{protocol}_src", f"0xk{i}", size, block, BIG])
        con.execute("INSERT INTO checkpoints VALUES (42161, 'gmx_v1_src', 'gmx_v1', 1, 20, "
                    "'0xhash', TIMESTAMP '2024-04-02 00:00:01', NULL)")
    return path


def files(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}


def test_partitions_manifest_and_exact_values(tmp_path: Path) -> None:
    db = make_db(tmp_path / "db.duckdb")
    out = tmp_path / "out"
    seen: list[tuple[str, int, int]] = []
    with Store(db, read_only=True) as store:
        run = arrow_of(store)
        result = export(run, out, ["position_changes", "positions", "funding_updates"],
                        lambda *a: seen.append(a))
        assert "volume_hourly" in exported_tables(run)
    pc = "position_changes/protocol={}/chain_id={}/day={}/part.parquet"
    assert files(out) == {
        "manifest.json",
        pc.format("gmx_v1", 42161, "2024-04-01"), pc.format("gmx_v1", 42161, "2024-04-02"),
        pc.format("synthetix_perps_v2", 10, "2024-04-02"),
        "positions/protocol=gmx_v1/chain_id=42161/day=2024-04-01/part.parquet",
        "positions/protocol=gmx_v1/chain_id=42161/day=2024-04-02/part.parquet",
        "positions/protocol=synthetix_perps_v2/chain_id=10/day=2024-04-02/part.parquet",
    }  # funding_updates has no rows: no folder; no temporary file anywhere
    assert (result.written, result.unchanged, result.deleted, result.rows) == (6, 0, 0, 8)
    assert seen[-1] == ("funding_updates", 0, 0) and ("position_changes", 3, 3) in seen

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == MANIFEST_VERSION
    assert manifest["checkpoints"][0]["block_number"] == 20
    parts = manifest["tables"]["position_changes"]["partitions"]
    assert manifest["tables"]["position_changes"]["partition_by"] == ["protocol", "chain_id",
                                                                      "day"]
    assert {p: e["rows"] for p, e in parts.items()} == {
        "protocol=gmx_v1/chain_id=42161/day=2024-04-01": 2,
        "protocol=gmx_v1/chain_id=42161/day=2024-04-02": 1,
        "protocol=synthetix_perps_v2/chain_id=10/day=2024-04-02": 1}
    assert all(e["fingerprint"].isdigit() and e["written_at"] for e in parts.values())

    rows = duckdb.connect().execute(
        f"SELECT protocol, chain_id, day::VARCHAR, block_number, size_delta_usd, "
        f"size_delta_raw, size_after_raw, typeof(size_delta_usd) FROM read_parquet("
        f"'{out}/position_changes/**/*.parquet', hive_partitioning=true) "
        "ORDER BY block_number").fetchall()
    assert rows == [(p, c, t[:10], b, Decimal(s), BIG if i == 0 else str(i), BIG,
                     "DECIMAL(38,18)") for i, (p, c, b, t, s) in enumerate(CHANGES)]


def test_incremental_rewrites_changed_days_deletes_vanished(tmp_path: Path) -> None:
    db = make_db(tmp_path / "db.duckdb")
    out = tmp_path / "out"
    tables = ["position_changes"]

    def run_export() -> tuple[int, int, int]:
        with Store(db, read_only=True) as store:
            r = export(arrow_of(store), out, tables)
        return r.written, r.unchanged, r.deleted

    assert run_export() == (3, 0, 0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert run_export() == (0, 3, 0)
    day2 = out / "position_changes/protocol=gmx_v1/chain_id=42161/day=2024-04-02/part.parquet"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("part.parquet")}

    # one value of one day changes (same row count): that partition only is rewritten
    with Store(db) as store:
        store.con.execute("UPDATE position_changes SET fee_usd = 0.000000000000000001 "
                          "WHERE block_number = 20")
    assert run_export() == (1, 2, 0)
    after = {p: p.stat().st_mtime_ns for p in out.rglob("part.parquet")}
    assert [p for p in after if after[p] != before[p]] == [day2]
    parts = json.loads((out / "manifest.json").read_text())["tables"]["position_changes"]
    key = "protocol=gmx_v1/chain_id=42161/day=2024-04-02"
    assert parts["partitions"][key]["fingerprint"] != \
        manifest["tables"]["position_changes"]["partitions"][key]["fingerprint"]

    # a protocol's only day vanishes: its file and its now empty folders go
    with Store(db) as store:
        store.con.execute("DELETE FROM position_changes WHERE protocol = 'synthetix_perps_v2'")
    assert run_export() == (0, 2, 1)
    assert not (out / "position_changes/protocol=synthetix_perps_v2").exists()
    parts = json.loads((out / "manifest.json").read_text())["tables"]["position_changes"]
    assert len(parts["partitions"]) == 2

    # a file deleted behind the manifest's back is written again
    day2.unlink()
    assert run_export() == (1, 1, 0)


def test_interrupted_export_leaves_no_temporary_and_is_redone(tmp_path: Path) -> None:
    db = make_db(tmp_path / "db.duckdb")
    out = tmp_path / "out"
    with Store(db, read_only=True) as store:
        run = arrow_of(store)
        leftover = out / "position_changes/protocol=gmx_v1/chain_id=42161/day=2024-04-01"
        leftover.mkdir(parents=True)
        (leftover / ".part.parquet.tmp-999").write_bytes(b"half a file")
        (out / "position_changes/protocol=x/chain_id=1/day=2020-01-01").mkdir(parents=True)
        (out / "position_changes/protocol=x/chain_id=1/day=2020-01-01/part.parquet") \
            .write_bytes(b"an orphan of an interrupted run")
        calls = 0

        def failing(sql: str) -> pa.Table:
            nonlocal calls
            if "SEMI JOIN" in sql:
                calls += 1
                if calls == 2:
                    raise KeyboardInterrupt
            return run(sql)

        with pytest.raises(KeyboardInterrupt):
            export(failing, out, ["position_changes", "positions"])
        assert not (out / "manifest.json").exists()
        assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
        result = export(run, out, ["position_changes", "positions"])
    # the first table's files were written (and the orphan deleted) but no manifest named
    # them: written again
    assert (result.written, result.unchanged, result.deleted) == (6, 0, 0)
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    assert not (out / "position_changes/protocol=x").exists()


def test_errors_name_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = make_db(tmp_path / "db.duckdb")
    with Store(db, read_only=True) as store:
        run = arrow_of(store)
        a_file = tmp_path / "a_file"
        a_file.write_text("x")
        with pytest.raises(StoreError, match=f"{a_file}: the export folder is a file"):
            export(run, a_file)
        with pytest.raises(StoreError, match=f"{a_file / 'sub'}: cannot create"):
            export(run, a_file / "sub")

        out = tmp_path / "out"
        out.mkdir()
        (out / "manifest.json").write_text(json.dumps({"version": 99, "tables": {}}))
        with pytest.raises(StoreError, match=f"{out / 'manifest.json'}: an export manifest of "
                                             "format version 99"):
            export(run, out)
        (out / "manifest.json").write_text("{not json")
        with pytest.raises(StoreError, match="not a readable export manifest"):
            export(run, out)

        with pytest.raises(ConfigError, match="'volume_daily'.*one of position_changes, "
                                              "positions, funding_updates, .*volume_hourly"):
            export(run, tmp_path / "new", ["volume_daily"])

        # root may write anywhere, so an unwritable folder is what os.access says
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == tmp_path / "ro"
                            else real(p, m))
        with pytest.raises(StoreError, match=f"{tmp_path / 'ro'}: the export folder is not "
                                             "writable"):
            export(run, tmp_path / "ro")
