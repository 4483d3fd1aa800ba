"""Backfill the shared recording of the unmodified gmx-synthetics contracts (GMX v2) and compare
with what its Reader and DataStore returned at every snapshot block."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from indexer.store import Store
from tests.helpers import GMX_V2_DATA, dump, run_cli, write_config

pytestmark = pytest.mark.replay

def backfill(tmp_path: Path, url: str, truth: dict, name: str, to: int | None = None,
             **kw: object) -> Path:
    cfg = write_config(tmp_path / f"{name}.yaml", url, truth["contracts"]["EventEmitter"]["address"],
                       truth["deploymentBlock"], adapter="gmx_v2", database=f"{name}.duckdb", **kw)
    args = ["backfill", "--config", str(cfg), "--no-progress"]
    assert run_cli(*args, *(["--to", str(to)] if to is not None else [])) == 0
    return cfg


def check_snapshot(store: Store, snap: dict, markets: dict) -> int:
    _, rows = store.query(
        "SELECT position_key, account, market, collateral_token, is_long, size_raw::VARCHAR, "
        "size_tokens_raw::VARCHAR, collateral_tokens_raw::VARCHAR, status FROM positions")
    ours = {r[0]: r for r in rows}
    assert set(ours) == {p["key"].lower() for p in snap["positions"]}
    for p in snap["positions"]:
        r = ours[p["key"].lower()]
        assert r[1:5] == (p["account"].lower(), p["market"].lower(),
                          p["collateralToken"].lower(), p["isLong"]), p["key"]
        assert r[5:8] == (p["sizeInUsd"], p["sizeInTokens"], p["collateralAmount"]), p["key"]
        assert (r[8] == "open") == (int(p["sizeInUsd"]) > 0), p["key"]
        assert (p["onchainAccount"] == "0x" + "0" * 40) == (int(p["sizeInUsd"]) == 0)
    # open interest per (market, collateral token, side): rebuilt from positions, and the
    # protocol's own OpenInterest[InTokens]Updated, both equal to the DataStore
    _, got = store.query(
        "SELECT market, collateral_token, is_long, sum(size_raw)::VARCHAR, "
        "sum(size_tokens_raw)::VARCHAR FROM positions WHERE status = 'open' GROUP BY ALL")
    rebuilt = {(m, c, lg): (s, t) for m, c, lg, s, t in got}
    _, got = store.query(
        "SELECT market, collateral_token, is_long, unit, arg_max(next_value_raw, "
        "block_number * 1000000 + log_index)::VARCHAR FROM protocol_open_interest GROUP BY ALL")
    own = {(m, c, lg, u): v for m, c, lg, u, v in got}
    _, view = store.query("SELECT market, long_oi_usd, short_oi_usd FROM open_interest")
    by_view = {m: (lg, sh) for m, lg, sh in view}
    for name, oi in snap["openInterest"].items():
        market = markets[name]["marketToken"].lower()
        for row in oi["byCollateral"]:
            k = (market, row["collateralToken"].lower(), row["isLong"])
            want = (row["openInterest"], row["openInterestInTokens"])
            assert rebuilt.get(k, ("0", "0")) == want, (name, row)
            assert (own.get((*k, "usd"), "0"), own.get((*k, "tokens"), "0")) == want, (name, row)
        long_usd, short_usd = by_view.get(market, (Decimal(0), Decimal(0)))
        assert long_usd == Decimal(oi["long"]["openInterest"]) / 10**30, name
        assert short_usd == Decimal(oi["short"]["openInterest"]) / 10**30, name
    return len(snap["positions"])


def test_backfill_reproduces_reader_state_at_every_snapshot(tmp_path, replay_factory,
                                                             gmx_v2_truth):
    """Given only the EventEmitter address and its deployment block (no markets, no tokens)."""
    node = replay_factory(data=GMX_V2_DATA, prefix="gmx_v2")
    compared = 0
    for snap in gmx_v2_truth["snapshots"]:
        backfill(tmp_path, node.url, gmx_v2_truth, "db", to=snap["blockNumber"],
                 max_block_range=113)
        store = Store(tmp_path / "db.duckdb", read_only=True)
        try:
            compared += check_snapshot(store, snap, gmx_v2_truth["markets"])
            cp = store.load_checkpoint("gmx_v2_dev")
            assert cp is not None and (cp.block_number, cp.block_hash) == (
                snap["blockNumber"], snap["blockHash"])
        finally:
            store.close()
    assert compared == 816  # position rows over the 11 snapshots, as the recording's README says

    store = Store(tmp_path / "db.duckdb", read_only=True)
    try:
        _, liq = store.query("SELECT tx_hash, position_key, block_number, account, market "
                             "FROM position_changes WHERE kind = 'liquidation'")
        _, kinds = store.query("SELECT kind, count(*) FROM position_changes GROUP BY ALL")
        _, markets = store.query("SELECT market, index_token, long_token, short_token FROM markets")
        _, quarantined = store.query("SELECT count(*) FROM quarantine")
    finally:
        store.close()
    want = {(x["transactionHash"], x["key"], x["blockNumber"], x["account"].lower(),
             x["market"].lower()) for x in gmx_v2_truth["liquidations"]}
    assert set(liq) == want and len(liq) == 24
    counts = gmx_v2_truth["summary"]["positionEventsByOrderType"]
    increases = sum(v for k, v in counts.items() if k.startswith("PositionIncrease"))
    decreases = sum(v for k, v in counts.items() if k.startswith("PositionDecrease"))
    kinds = dict(kinds)
    assert kinds["increase"] == increases
    assert kinds["decrease"] + kinds["close"] + kinds["liquidation"] == decreases
    assert len(markets) == 9  # every MarketCreated of the fixture
    for m in gmx_v2_truth["markets"].values():
        assert (m["marketToken"].lower(), m["indexToken"].lower(), m["longToken"].lower(),
                m["shortToken"].lower()) in markets
    assert quarantined == [(0,)]

    # a run stopped at 11 blocks and resumed equals one uninterrupted run
    backfill(tmp_path, node.url, gmx_v2_truth, "one")
    assert dump(tmp_path / "db.duckdb") == dump(tmp_path / "one.duckdb")

    # a full rebuild from the ledger (what scripts/bench.py times) gives the same positions
    before = dump(tmp_path / "one.duckdb")["positions"]
    store = Store(tmp_path / "one.duckdb")
    try:
        store.con.execute("UPDATE positions SET size_raw = 0")  # spoil them first
        assert store.rebuild_positions() == len(dump_rows(store, "position_changes"))
    finally:
        store.close()
    assert dump(tmp_path / "one.duckdb")["positions"] == before


def test_prices_use_configured_token_decimals(tmp_path, replay_factory, gmx_v2_truth):
    """With token decimals in the config, USD prices per whole token and collateral in USD."""
    node = replay_factory("--max-range", "40", "--max-logs", "25", data=GMX_V2_DATA,
                          prefix="gmx_v2")
    tokens = "".join(f'\n      "{t["address"]}": {{ decimals: {t["decimals"]}, symbol: {s} }}'
                     for s, t in gmx_v2_truth["tokens"].items())
    backfill(tmp_path, node.url, gmx_v2_truth, "db", protocol_extra=f"    tokens:{tokens}\n",
             max_block_range=5000)
    store = Store(tmp_path / "db.duckdb", read_only=True)
    try:
        check_snapshot(store, gmx_v2_truth["snapshots"][-1], gmx_v2_truth["markets"])
        _, rows = store.query(
            "SELECT m.name, c.price_usd, c.entry_price_usd, c.size_after_usd, "
            "c.size_after_tokens, c.collateral_after_tokens, c.collateral_after_tokens_raw, "
            "c.collateral_decimals, c.collateral_after_usd, c.index_token "
            "FROM position_changes c JOIN (VALUES " + ", ".join(
                f"('{m['marketToken'].lower()}', '{n}')"
                for n, m in gmx_v2_truth["markets"].items()) + ") m(market, name) USING (market) "
            "WHERE c.kind = 'increase'")
    finally:
        store.close()
    start = {"ETH/USD": 5000, "BTC/USD": 50000, "SOL/USD": 150}
    for name, price, entry, size_usd, size_tokens, coll_tokens, coll_raw, coll_dec, coll_usd, \
            index in rows:
        market = gmx_v2_truth["markets"][name]
        assert index == market["indexToken"].lower()
        # the random walk stays within a factor 2 of the start price
        assert start[name] / 2 < price < start[name] * 2, (name, price)
        assert entry == pytest.approx(size_usd / size_tokens, rel=Decimal("1e-12"))
        assert coll_tokens == Decimal(int(coll_raw)) / 10**coll_dec
        assert coll_usd > 0


def dump_rows(store: Store, table: str) -> list[tuple]:
    return store.query(f"SELECT * FROM {table}")[1]
