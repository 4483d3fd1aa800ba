"""Known answers of the analytics views over small hand-written ledgers, committed through the
store's own commit path (so OI deltas and positions are the store's)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from indexer.store import RangeRows, Store

T0 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
USD = 10**18
#: (source, protocol, block, hour, market, account, is_long, kind, size delta, size after,
#: price, liquidation price)
Row = tuple[str, str, int, int, str, str, bool, str, int, int, int | None, int | None]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "db.duckdb") as s:
        yield s


def commit(store: Store, rows: list[Row], assets: dict[str, str]) -> None:
    by_source: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        by_source.setdefault((r[0], r[1]), []).append(r)
    for (source, protocol), mine in by_source.items():
        mine.sort(key=lambda r: r[2])
        changes = {
            "block_number": [r[2] for r in mine],
            "block_time": [T0 + 3600 * r[3] + 60 for r in mine],
            "tx_hash": [f"0x{r[2]:064x}" for r in mine],
            "log_index": [0] * len(mine),
            "position_key": [f"{r[4]}/{r[5]}/{r[6]}" for r in mine],
            "account": [r[5] for r in mine], "market": [r[4] for r in mine],
            "is_long": [r[6] for r in mine], "kind": [r[7] for r in mine],
            "size_delta": [r[8] * USD for r in mine], "size_after": [r[9] * USD for r in mine],
            "collateral_delta": [0] * len(mine), "collateral_after": [0] * len(mine),
            "price": [None if r[10] is None else r[10] * USD // 1000 for r in mine],
            "fee": [0] * len(mine),
            "liquidation_price": [None if r[11] is None else r[11] * USD // 1000 for r in mine]}
        markets = sorted({r[4] for r in mine})
        listed = {"block_number": [0] * len(markets), "log_index": [0] * len(markets),
                  "market": markets, "index_token": [None] * len(markets),
                  "long_token": [None] * len(markets), "short_token": [None] * len(markets),
                  "name": [None] * len(markets), "found_by": ["trade"] * len(markets),
                  "symbol": [None] * len(markets), "asset": [assets.get(m) for m in markets]}
        rr = RangeRows(1, protocol, source, 18, changes, {}, [], [], listed, None)
        store.commit_range(rr, 0, max(r[2] for r in mine), "0x00", 0)


def test_venue_shares_and_dominance(store):
    commit(store, [
        ("g", "gmx_v1", 1, 0, "X", "a", True, "increase", 400, 400, None, None),
        ("g", "gmx_v1", 2, 0, "X", "b", False, "increase", 200, 200, None, None),
        ("s", "synthetix_perps_v2", 1, 0, "Y", "c", True, "increase", 400, 400, None, None),
        ("s", "synthetix_perps_v2", 2, 0, "Z", "d", True, "increase", 50, 50, None, None),
    ], {"X": "ETH", "Y": "ETH"})  # Z: unknown asset, left out
    rows = store.con.execute("SELECT protocol, total_oi_usd, venue_share, dominant "
                             "FROM asset_open_interest ORDER BY protocol").fetchall()
    assert rows == [("gmx_v1", Decimal(600), 0.6, True),
                    ("synthetix_perps_v2", Decimal(400), 0.4, False)]
    store.set_analytics(0.5, 0.65)
    assert store.con.execute("SELECT count(*) FROM asset_open_interest WHERE dominant"
                             ).fetchone() == (0,)


def test_long_short_ratios_by_accounts_notional_and_top_10(store):
    rows: list[Row] = [("g", "gtrade", 1, 0, "M", "short", False, "increase", 300, 300, None,
                        None)]
    rows += [("g", "gtrade", 2 + i, 0, "M", f"l{i:02}", True, "increase", 10 * (i + 1),
              10 * (i + 1), None, None) for i in range(11)]  # 10..110
    commit(store, rows, {"M": "BTC"})
    got = store.con.execute(
        "SELECT scope, long_accounts, short_accounts, accounts_ratio, long_usd, short_usd, "
        "notional_ratio, top10_long_usd, top10_short_usd, top10_ratio FROM long_short_ratios "
        "ORDER BY scope").fetchall()
    longs = sum(10 * (i + 1) for i in range(11))  # 660
    top10_longs = longs - 10 - 20  # the short (300) ranks first: 9 longs beside it
    want = (11, 1, 11.0, Decimal(longs), Decimal(300), longs / 300, Decimal(top10_longs),
            Decimal(300), top10_longs / 300)
    assert got == [("asset", *want), ("market", *want)]


def test_imbalance_episodes_open_end_and_flip(store):
    commit(store, [
        ("g", "gtrade", 1, 0, "M", "a", True, "increase", 100, 100, None, None),  # skew 1
        ("g", "gtrade", 2, 1, "M", "b", False, "increase", 100, 100, None, None),  # 0
        ("g", "gtrade", 3, 3, "M", "c", False, "increase", 300, 300, None, None),  # -0.6
        ("g", "gtrade", 4, 4, "M", "d", False, "increase", 10, 10, None, None),  # -310/510
    ], {"M": "ETH"})
    rows = store.con.execute(
        "SELECT side, hour(start_hour), hour(end_hour), peak_skew, hours "
        "FROM imbalance_episodes WHERE scope = 'market' ORDER BY start_hour").fetchall()
    # the short episode runs on (two hours so far): no end hour
    assert rows == [("long", 0, 1, 1.0, 1), ("short", 3, None, -310 / 510, 2)]
    assert store.con.execute("SELECT count(*) FROM imbalance_episodes WHERE scope = 'asset'"
                             ).fetchone() == (2,)


def test_oi_regimes(store):
    # OI 100 @10 -> 110 @11 -> 120 @10 -> 100 @10.5 -> 90 @10 -> 90.1 ~ 10.001
    commit(store, [
        ("g", "gtrade", 1, 0, "M", "a", True, "increase", 100, 100, 10000, None),
        ("g", "gtrade", 2, 1, "M", "a", True, "increase", 10, 110, 11000, None),
        ("g", "gtrade", 3, 2, "M", "b", False, "increase", 10, 10, 10000, None),
        ("g", "gtrade", 4, 3, "M", "a", True, "decrease", -20, 90, 10500, None),
        ("g", "gtrade", 5, 4, "M", "a", True, "decrease", -10, 80, 10000, None),
        ("g", "gtrade", 6, 5, "M", "c", True, "increase", 0, 0, 10001, None),
    ], {"M": "ETH"})
    rows = store.con.execute("SELECT hour(hour), regime FROM oi_regimes_hourly "
                             "WHERE scope = 'market' ORDER BY hour").fetchall()
    assert rows == [(0, "flat"), (1, "new_longs"), (2, "new_shorts"), (3, "short_covering"),
                    (4, "long_unwinding"), (5, "flat")]


def test_liquidation_map_from_reported_liquidation_prices(store):
    # mark 10; a long liquidated at 8.95 (a fall of 10.5%), a short at 12 (a rise of 20%)
    commit(store, [
        ("g", "gtrade", 1, 0, "M", "a", True, "increase", 100, 100, 10000, 8950),
        ("g", "gtrade", 2, 0, "M", "b", False, "increase", 70, 70, 10000, 12000),
        ("g", "gtrade", 3, 0, "M", "c", True, "increase", 5, 5, 10000, None),
    ], {"M": "ETH"})
    rows = dict(((p, s), (lg, sh, u)) for p, s, lg, sh, u in store.con.execute(
        "SELECT move_pct, scope, long_liquidated_usd, short_liquidated_usd, unpriced_oi_usd "
        "FROM liquidation_map").fetchall())
    for scope in ("market", "asset"):
        assert rows[(10, scope)] == (0, 0, 5)
        assert rows[(11, scope)] == (100, 0, 5)
        assert rows[(19, scope)] == (100, 0, 5)
        assert rows[(20, scope)] == (100, 70, 5)
    risk = store.con.execute("SELECT account, distance_to_liquidation FROM position_risk "
                             "ORDER BY account").fetchall()
    assert risk[0] == ("a", pytest.approx(0.105)) and risk[1] == ("b", pytest.approx(0.2))
    assert risk[2] == ("c", None)
