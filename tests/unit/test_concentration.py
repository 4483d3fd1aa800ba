"""Known answers of the ``whale_concentration`` view (indexer/sql/views.sql), on positions
written through the real store.

Definitions, per (chain, protocol) (market NULL) and per market, over the accounts' summed open
size s_i (total S, n accounts):

* top10_share = (sum of the 10 largest s_i) / S;
* HHI = sum (s_i / S)^2: 1/n for n equal holders, 1 for a single holder;
* Gini = sum_i sum_j |s_i - s_j| / (2 n^2 mean): 0 for equal holders;
* whales = accounts with s_i >= 1,000,000 USD.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from indexer.store import RangeRows, Store

USD = 10**30  # the rows' usd_decimals

COLUMNS = ("block_number", "block_time", "tx_hash", "log_index", "position_key", "account",
           "market", "collateral_token", "is_long", "kind", "size_delta", "collateral_delta",
           "size_after", "collateral_after", "price", "fee", "realized_pnl", "entry_price")


def positions(*changes: tuple[str, str, bool, int, str]) -> RangeRows:
    """Ledger rows, one block each: (account, market, is_long, size after in USD, kind)."""
    cols: dict[str, list] = {k: [] for k in COLUMNS}
    for i, (account, market, is_long, size, kind) in enumerate(changes):
        key = f"{account}/{market}/{'long' if is_long else 'short'}"
        values = {"block_number": 10 + i, "block_time": 1_700_000_000 + 60 * i,
                  "tx_hash": f"0x{i:064x}", "log_index": 0, "position_key": key,
                  "account": account, "market": market, "collateral_token": "0xc",
                  "is_long": is_long, "kind": kind, "size_delta": size * USD,
                  "collateral_delta": 0, "size_after": size * USD, "collateral_after": 0,
                  "price": 1000 * USD, "fee": 0, "realized_pnl": 0, "entry_price": 1000 * USD}
        for k, v in values.items():
            cols[k].append(v)
    return RangeRows(1, "gmx_v1", "src", 30, cols,
                     {"block_number": [], "block_time": [], "log_index": [], "market": [],
                      "rate": []}, [], [])


def concentration(tmp_path, *changes) -> dict[str | None, tuple]:
    """market (None: the whole protocol) -> (accounts, open_interest_usd, top10_share, hhi,
    gini, whales)."""
    store = Store(tmp_path / "x.duckdb")
    try:
        store.commit_range(positions(*changes), 10, 10 + len(changes), "0xhash", 10)
        _, got = store.query("SELECT market, accounts, open_interest_usd, top10_share, hhi, "
                             "gini, whales FROM whale_concentration")
    finally:
        store.close()
    return {m: tuple(rest) for m, *rest in got}


def acct(i: int) -> str:
    return f"0x{i:040x}"


def test_equal_holders(tmp_path):
    got = concentration(tmp_path, *[(acct(i), "0xa", i % 2 == 0, 500, "increase")
                                    for i in range(4)])
    accounts, oi, top10, hhi, gini, whales = got["0xa"]
    assert (accounts, oi, whales) == (4, Decimal(2000), 0)
    assert top10 == pytest.approx(1.0, abs=1e-12)
    assert hhi == pytest.approx(0.25, abs=1e-12)  # 4 x (1/4)^2
    assert gini == pytest.approx(0.0, abs=1e-12)
    assert got[None] == got["0xa"]  # one market: the protocol row is the same


def test_one_holder(tmp_path):
    got = concentration(tmp_path, (acct(1), "0xa", True, 2_500_000, "increase"))
    accounts, oi, top10, hhi, gini, whales = got["0xa"]
    assert (accounts, oi, whales) == (1, Decimal(2_500_000), 1)
    assert top10 == pytest.approx(1.0, abs=1e-12)
    assert hhi == pytest.approx(1.0, abs=1e-12)
    assert gini == pytest.approx(0.0, abs=1e-12)


def test_three_unequal_holders(tmp_path):
    # sizes 1, 2, 7 (x $100,000): shares .1, .2, .7
    # HHI  = .01 + .04 + .49 = .54
    # Gini = sum over ordered pairs |s_i - s_j| / (2 n^2 mean)
    #      = 2 x (|1-2| + |1-7| + |2-7|) / (2 x 9 x 10/3) = 24 / 60 = .4
    got = concentration(tmp_path, (acct(1), "0xa", True, 100_000, "increase"),
                        (acct(2), "0xa", False, 200_000, "increase"),
                        (acct(3), "0xa", True, 700_000, "increase"))
    accounts, oi, top10, hhi, gini, whales = got["0xa"]
    assert (accounts, oi, whales) == (3, Decimal(1_000_000), 0)
    assert top10 == pytest.approx(1.0, abs=1e-12)
    assert hhi == pytest.approx(0.54, abs=1e-12)
    assert gini == pytest.approx(0.4, abs=1e-12)


def test_top10_share_counts_ten_accounts_and_sums_an_accounts_positions(tmp_path):
    # 12 accounts of $100 in market 0xa; account 0 also holds $1,100 in 0xb, and a closed
    # position (not counted anywhere)
    changes = [(acct(i), "0xa", True, 100, "increase") for i in range(12)]
    changes += [(acct(0), "0xb", False, 1_100, "increase"),
                (acct(5), "0xb", True, 0, "close")]
    got = concentration(tmp_path, *changes)
    assert set(got) == {None, "0xa", "0xb"}
    accounts, oi, top10, hhi, gini, _ = got["0xa"]
    assert (accounts, oi) == (12, Decimal(1200))
    assert top10 == pytest.approx(10 / 12, abs=1e-12)
    assert hhi == pytest.approx(1 / 12, abs=1e-12)
    assert gini == pytest.approx(0.0, abs=1e-12)
    assert got["0xb"][:2] == (1, Decimal(1100))
    # the protocol row: account 0 holds 100 + 1100 = 1200 of 2300, eleven others 100 each
    accounts, oi, top10, hhi, gini, _ = got[None]
    assert (accounts, oi) == (12, Decimal(2300))
    assert top10 == pytest.approx(2100 / 2300, abs=1e-12)  # 1200 + 9 x 100
    assert hhi == pytest.approx((1200 / 2300) ** 2 + 11 * (100 / 2300) ** 2, abs=1e-12)
    # Gini: the 2 x 11 ordered (big, small) pairs differ by 1100, the others by 0; mean 2300/12:
    # 22 x 1100 / (2 x 12^2 x 2300/12) = 24200 / 55200
    assert gini == pytest.approx(24_200 / 55_200, abs=1e-12)
