"""Backfill the shared recording of the unmodified GMX v1 contracts and compare with the Vault."""

from __future__ import annotations

from decimal import Decimal

import pytest

from indexer.store import Store, to_decimal18
from tests.helpers import dump, run_cli, write_config

pytestmark = pytest.mark.replay

def check_snapshot(store: Store, snap: dict, tokens: dict) -> int:
    _, rows = store.query(
        "SELECT position_key, account, collateral_token, market, is_long, size_raw::VARCHAR, "
        "collateral_raw::VARCHAR, entry_price_raw::VARCHAR, status, realized_pnl_usd "
        "FROM positions")
    ours = {r[0]: r for r in rows}
    assert set(ours) == {p["key"].lower() for p in snap["positions"]}
    for p in snap["positions"]:
        r = ours[p["key"].lower()]
        assert r[1:5] == (p["account"].lower(), p["collateralToken"].lower(),
                          p["indexToken"].lower(), p["isLong"]), p["key"]
        assert (r[5], r[6], r[7]) == (p["size"], p["collateral"], p["averagePrice"]), p["key"]
        assert (r[8] == "open") == (int(p["size"]) > 0)
        if int(p["size"]) > 0:
            pnl = int(p["realisedPnl"]) * (1 if p["hasProfit"] else -1)
            assert r[9] == Decimal(to_decimal18(pnl, 30))
    _, oi = store.query(
        "SELECT market, is_long, sum(size_raw)::VARCHAR, count(*) FROM positions "
        "WHERE status = 'open' GROUP BY ALL")
    got = {(m, lg): (s, n) for m, lg, s, n in oi}
    for sym, want in snap["openInterest"].items():
        token = tokens[sym]["address"].lower()
        long_ = got.get((token, True), ("0", 0))
        short = got.get((token, False), ("0", 0))
        assert long_ == (want["longOpenInterestUsd"], want["openLongPositions"]), sym
        assert short == (want["shortOpenInterestUsd"], want["openShortPositions"]), sym
        assert short[0] == snap["tokens"][sym]["globalShortSizes"], sym
    # the view sums per-position DECIMAL(38,18) sizes (each truncated below 1e-18 USD), so it
    # is within one 1e-18 unit per position of the exact raw sum
    _, view = store.query("SELECT market, long_oi_usd, short_oi_usd, long_positions, "
                          "short_positions FROM open_interest")
    for market, long_usd, short_usd, n_long, n_short in view:
        for usd, side, n in ((long_usd, True, n_long), (short_usd, False, n_short)):
            exact = Decimal(to_decimal18(int(got.get((market, side), ("0", 0))[0]), 30))
            assert exact - Decimal(n) * Decimal("1e-18") <= usd <= exact
    return len(snap["positions"])


def test_backfill_reproduces_vault_state_at_every_snapshot(tmp_path, replay_factory, gmx_v1_truth):
    node = replay_factory()
    cfg = write_config(tmp_path / "c.yaml", node.url, gmx_v1_truth["contracts"]["Vault"],
                       gmx_v1_truth["deploymentBlock"], max_block_range=97)
    compared = 0
    for snap in gmx_v1_truth["snapshots"]:
        assert run_cli("backfill", "--config", str(cfg), "--to", str(snap["blockNumber"]),
                       "--no-progress") == 0
        store = Store(tmp_path / "db.duckdb", read_only=True)
        try:
            compared += check_snapshot(store, snap, gmx_v1_truth["tokens"])
            cp = store.load_checkpoint("gmx_v1_dev")
            assert cp is not None and (cp.block_number, cp.block_hash) == (
                snap["blockNumber"], snap["blockHash"])
        finally:
            store.close()
    assert compared == 697  # position rows over the 13 snapshots, as the recording's README says

    # resumed run (13 stops) == one uninterrupted run
    one = write_config(tmp_path / "one.yaml", node.url, gmx_v1_truth["contracts"]["Vault"],
                       gmx_v1_truth["deploymentBlock"], database="one.duckdb")
    assert run_cli("backfill", "--config", str(one), "--no-progress") == 0
    assert dump(tmp_path / "db.duckdb") == dump(tmp_path / "one.duckdb")


def test_liquidations_of_both_kinds_are_classified(tmp_path, replay_factory, gmx_v1_truth):
    node = replay_factory()
    cfg = write_config(tmp_path / "c.yaml", node.url, gmx_v1_truth["contracts"]["Vault"], 0)
    assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 0
    store = Store(tmp_path / "db.duckdb", read_only=True)
    try:
        _, rows = store.query("SELECT tx_hash, position_key, block_number FROM position_changes "
                              "WHERE kind = 'liquidation'")
        _, statuses = store.query("SELECT status, count(*) FROM positions GROUP BY ALL")
        _, closes = store.query("SELECT count(*) FROM position_changes WHERE kind = 'close'")
    finally:
        store.close()
    want = {(x["transactionHash"], x["key"], x["blockNumber"]) for x in gmx_v1_truth["liquidations"]}
    assert set(rows) == want and len(rows) == 29
    kinds = [x["kind"] for x in gmx_v1_truth["liquidations"]]
    assert kinds.count("LiquidatePosition") == 18 and kinds.count("ClosedByLiquidator") == 11
    activity = gmx_v1_truth["summary"]["positionActivity"]
    assert closes[0][0] == activity["fullCloses(incl. ClosedByLiquidator)"] - 11 == 25
    assert dict(statuses)["open"] == gmx_v1_truth["summary"]["openPositionsAtHead"]


def test_provider_caps_are_survived(tmp_path, replay_factory, gmx_v1_truth):
    """Range and result caps (with the provider's messages) shrink the range; nothing is lost."""
    node = replay_factory("--max-range", "50", "--max-logs", "20")
    cfg = write_config(tmp_path / "c.yaml", node.url, gmx_v1_truth["contracts"]["Vault"], 0,
                       max_block_range=5000)
    assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 0
    store = Store(tmp_path / "db.duckdb", read_only=True)
    try:
        check_snapshot(store, gmx_v1_truth["snapshots"][-1], gmx_v1_truth["tokens"])
    finally:
        store.close()
