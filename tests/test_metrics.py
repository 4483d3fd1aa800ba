"""The SQL views against a direct computation of the same formulas on the same positions."""

from __future__ import annotations

import random
from decimal import Decimal

from indexer.store import RangeRows, Store


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
