"""The SQL views against a direct computation of the same formulas on the same positions."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from indexer.errors import StoreError
from indexer.store import SCHEMA_VERSION, RangeRows, Store

pytestmark = pytest.mark.unit


def make_rows(rng: random.Random, n_accounts: int) -> RangeRows:
    cols: dict[str, list] = {k: [] for k in (
        "block_number", "block_time", "tx_hash", "log_index", "position_key", "account", "market",
        "collateral_token", "is_long", "kind", "size_delta", "collateral_delta", "size_after",
        "collateral_after", "price", "fee", "realized_pnl", "entry_price")}
    for i in range(n_accounts * 2):
        size = rng.choice([rng.randint(100, 50_000), rng.randint(1_000_000, 9_000_000)]) * 10**30
        vals = {"block_number": 10 + i, "block_time": 1_700_000_000 + 3600 * i,
                "tx_hash": f"0x{i:064x}", "log_index": 0, "position_key": f"0x{i:064x}",
                "account": f"0x{i % n_accounts:040x}", "market": rng.choice(["0xa", "0xb"]),
                "collateral_token": "0xc", "is_long": rng.random() < 0.6, "kind": "increase",
                "size_delta": size, "collateral_delta": size // 10, "size_after": size,
                "collateral_after": size // 10, "price": 10**33, "fee": 0, "realized_pnl": 0,
                "entry_price": 10**33}
        for k, v in vals.items():
            cols[k].append(v)
    return RangeRows(1, "gmx_v1", "src", 30, cols,
                     {"block_number": [], "block_time": [], "log_index": [], "market": [],
                      "rate": []}, [], [])


def expected(sizes: list[Decimal]) -> dict:
    total = sum(sizes)
    desc = sorted(sizes, reverse=True)
    asc = sorted(sizes)
    n = len(sizes)
    gini = sum((2 * (i + 1) - n - 1) * float(x) for i, x in enumerate(asc)) / (n * float(total))
    return {"accounts": n, "top10": float(sum(desc[:10]) / total),
            "hhi": sum((float(x) / float(total)) ** 2 for x in sizes), "gini": gini,
            "whales": sum(1 for x in sizes if x >= 1_000_000)}


def test_views_match_direct_computation(tmp_path):
    store = Store(tmp_path / "m.duckdb")
    try:
        rows = make_rows(random.Random(5), 40)
        store.commit_range(rows, 10, 200, "0xhash", 10)
        c = rows.changes
        per_acct: dict[tuple[str | None, str], Decimal] = {}
        long_sum: dict[str, int] = {}
        short_sum: dict[str, int] = {}
        for acct, market, size, is_long in zip(c["account"], c["market"], c["size_after"],
                                               c["is_long"], strict=True):
            usd = Decimal(size) / Decimal(10**30)
            for m in (None, market):
                per_acct[(m, acct)] = per_acct.get((m, acct), Decimal(0)) + usd
            (long_sum if is_long else short_sum)[market] = (
                (long_sum if is_long else short_sum).get(market, 0) + size)
        _, wc = store.query("SELECT market, accounts, top10_share, hhi, gini, whales "
                            "FROM whale_concentration")
        assert len(wc) == 3
        for market, accounts, top10, hhi, gini, whales in wc:
            want = expected([v for (m, _), v in per_acct.items() if m == market])
            assert (accounts, whales) == (want["accounts"], want["whales"])
            assert abs(top10 - want["top10"]) < 1e-12 and abs(hhi - want["hhi"]) < 1e-12
            assert abs(gini - want["gini"]) < 1e-12
        _, oi = store.query("SELECT market, long_oi_usd, short_oi_usd, skew FROM open_interest")
        for market, long_usd, short_usd, skew in oi:
            assert long_usd == Decimal(long_sum.get(market, 0)) / Decimal(10**30)
            assert short_usd == Decimal(short_sum.get(market, 0)) / Decimal(10**30)
            assert abs(skew - float((long_usd - short_usd) / (long_usd + short_usd))) < 1e-12
        # history ends at the current OI, and oi_at_block agrees
        _, hist = store.query("SELECT market, arg_max(long_oi_usd, hour), arg_max(short_oi_usd, "
                              "hour) FROM oi_history GROUP BY market")
        _, at = store.query("SELECT market, long_oi_usd, short_oi_usd FROM oi_at_block(1000)")
        now = {m: (lg, sh) for m, lg, sh, _ in oi}
        assert {m: (lg, sh) for m, lg, sh in hist} == now == {m: (lg, sh) for m, lg, sh in at}
    finally:
        store.close()


def flips_and_closes() -> tuple[dict[str, list], dict[tuple[str, int], tuple[int, int]]]:
    """Ledger columns of 12 keys flipping long <-> short and closing over 120 blocks (one change
    a block, 20 minutes apart), and the true (long, short) OI per (market, hour) from a direct
    replay of the signed sizes."""
    rng = random.Random(9)
    cols: dict[str, list] = {k: [] for k in make_rows(rng, 1).changes}
    signed: dict[str, int] = {}
    truth: dict[tuple[str, int], tuple[int, int]] = {}
    for block in range(1, 121):
        key = f"0x{rng.randrange(12):064x}"
        market = "0xa" if int(key, 16) % 2 else "0xb"
        before = signed.get(key, 0)
        after = rng.choice([0, rng.randint(1, 9), -rng.randint(1, 9)]) * 10**30
        if before == after == 0:
            continue
        signed[key] = after
        is_long = after > 0 if after else before > 0
        vals = {"block_number": block, "block_time": 1_700_000_000 + 1200 * block,
                "tx_hash": f"0x{block:064x}", "log_index": 0, "position_key": key,
                "account": key[-40:], "market": market, "collateral_token": None,
                "is_long": is_long, "kind": "close" if after == 0 else "increase",
                "size_delta": abs(after) - abs(before), "collateral_delta": None,
                "size_after": abs(after), "collateral_after": None, "price": 10**30, "fee": 0,
                "realized_pnl": None, "entry_price": None}
        for k, v in vals.items():
            cols[k].append(v)
        hour = (1_700_000_000 + 1200 * block) // 3600
        for m in ("0xa", "0xb"):
            sizes = [s for k, s in signed.items() if (int(k, 16) % 2 == 1) == (m == "0xa")]
            truth[(m, hour)] = (sum(s for s in sizes if s > 0), -sum(s for s in sizes if s < 0))
    return cols, truth


def rows_between(cols: dict[str, list], lo: int, hi: int) -> RangeRows:
    keep = [i for i, b in enumerate(cols["block_number"]) if lo <= b <= hi]
    return RangeRows(1, "perp_v2", "src", 30, {k: [v[i] for i in keep] for k, v in cols.items()},
                     {"block_number": [], "block_time": [], "log_index": [], "market": [],
                      "rate": []}, [], [])


def assert_history(store: Store, truth: dict[tuple[str, int], tuple[int, int]]) -> None:
    _, hist = store.query("SELECT market, epoch(hour)::BIGINT // 3600, long_oi_usd, "
                          "short_oi_usd, last_block FROM oi_history")
    assert len(hist) > 30
    for market, hour, long_usd, short_usd, last_block in hist:
        want = truth[(market, hour)]
        assert (long_usd, short_usd) == (Decimal(want[0]) / 10**30, Decimal(want[1]) / 10**30)
        _, at = store.query("SELECT long_oi_usd, short_oi_usd FROM oi_at_block(?) "
                            "WHERE market = ?", [last_block, market])
        assert at == [(long_usd, short_usd)]


@pytest.mark.parametrize("ranges", [[(1, 200)], [(1, 17), (18, 40), (41, 90), (91, 200)]],
                         ids=["one range", "four ranges"])
def test_history_follows_flips_and_closes(tmp_path, ranges):
    """Positions flipping long <-> short and closing: OI per market at the end of every hour of
    ``oi_history`` equals a direct replay of the signed sizes (and ``oi_at_block`` there),
    whether the ledger came in one range or in several (each range's deltas start from the
    positions the previous ones left)."""
    cols, truth = flips_and_closes()
    store = Store(tmp_path / "h.duckdb")
    try:
        for lo, hi in ranges:
            store.commit_range(rows_between(cols, lo, hi), lo, hi, "0xhash", 1)
        assert_history(store, truth)
    finally:
        store.close()


def test_history_survives_replays_and_rollbacks(tmp_path):
    """The stored OI deltas stay exact when a middle range is replayed (once with other rows,
    then with the right ones), and after a rollback and its replay."""
    cols, truth = flips_and_closes()
    path = tmp_path / "h.duckdb"
    store = Store(path)
    try:
        for lo, hi in ((1, 50), (51, 120)):
            store.commit_range(rows_between(cols, lo, hi), lo, hi, "0xhash", 1)
        # a replay of 30..60 that first loses its rows, then gets them back
        store.commit_range(rows_between(cols, 0, -1), 30, 60, "0xhash", 1)
        # without those rows, the later rows' deltas still add up to the positions left
        _, at = store.query("SELECT market, long_oi_usd, short_oi_usd FROM oi_at_block(200) "
                            "WHERE long_oi_usd + short_oi_usd > 0 ORDER BY market")
        _, oi = store.query("SELECT market, long_oi_usd, short_oi_usd FROM open_interest "
                            "WHERE total_oi_usd > 0 ORDER BY market")
        assert at == oi and at
        store.commit_range(rows_between(cols, 30, 60), 30, 60, "0xhash", 1)
        assert_history(store, truth)
        store.con.execute("INSERT INTO blocks VALUES (1, 70, '0x70', '0x69', 0)")
        store.rollback_chain(1, 70, "0x70")
        store.commit_range(rows_between(cols, 71, 120), 71, 120, "0xhash", 1)
        assert_history(store, truth)
    finally:
        store.close()


def test_a_database_of_another_layout_is_refused_naming_the_rebuild(tmp_path):
    """0.x does not migrate: a file written by an earlier layout (no schema version, or
    another one) is refused by writer and reader alike, with the command that rebuilds it."""
    import duckdb

    old = tmp_path / "old.duckdb"
    con = duckdb.connect(str(old))
    con.execute("CREATE TABLE position_changes (chain_id BIGINT)")
    con.close()
    other = tmp_path / "other.duckdb"
    Store(other).close()
    con = duckdb.connect(str(other))
    con.execute("UPDATE schema_version SET version = version + 1")
    con.close()
    for path, found in ((old, "before 1"), (other, str(SCHEMA_VERSION + 1))):
        for read_only in (False, True):
            with pytest.raises(StoreError) as e:
                Store(path, read_only=read_only)
            msg = str(e.value)
            assert f"schema version {found}" in msg, msg
            assert "perp-indexer backfill --config" in msg and str(path) in msg
