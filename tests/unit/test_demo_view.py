"""The demo's live view (``indexer.devnet.demo.render``) on a small hand-made store: readable in
an 80x24 terminal (nothing wider than 80 columns or taller than 24 rows, no number cut), skew as
a signed number, and the largest wallet shown with its figure."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from rich.console import Console

from indexer.devnet.demo import render, usd
from indexer.devnet.simulator import token_address
from indexer.devnet.simulator_perp import base_address
from indexer.devnet.simulator_v2 import market_address
from indexer.store import RangeRows, Store

pytestmark = pytest.mark.unit

USD = 10**30  # the rows' usd_decimals
COLUMNS = ("block_number", "block_time", "tx_hash", "log_index", "position_key", "account",
           "market", "collateral_token", "is_long", "kind", "size_delta", "collateral_delta",
           "size_after", "collateral_after", "price", "fee", "realized_pnl", "entry_price")
WHALE = "0x" + "ab" * 20
#: protocol -> its markets (as the demo's adapters record them)
MARKETS = {
    "gmx_v1": [token_address(s) for s in ("WETH", "WBTC", "LINK")],
    "gmx_v2": [market_address(n) for n in ("ETH/USD", "BTC/USD", "SOL/USD")],
    "perp_v2": [base_address(s) for s in ("vETH", "vBTC", "vSOL")],
    "synthetix_perps_v2": ["0x" + f"{i:040x}" for i in (0x51, 0x52, 0x53)],
    "gtrade": ["0", "1", "2"],
}


def ledger(protocol: str, block: int, positions: list[tuple[str, str, bool, Decimal]]) -> RangeRows:
    """One block of ``protocol``'s opening rows: (account, market, is_long, size in USD)."""
    cols: dict[str, list] = {k: [] for k in COLUMNS}
    for i, (account, market, is_long, size) in enumerate(positions):
        raw = int(size * USD)
        values = {"block_number": block, "block_time": 1_700_000_000 + block, "tx_hash":
                  f"0x{block:032x}{i:032x}", "log_index": i,
                  "position_key": f"{protocol}/{account}/{market}/{is_long}", "account": account,
                  "market": market, "collateral_token": "0xc", "is_long": is_long,
                  "kind": "increase", "size_delta": raw, "collateral_delta": raw // 5,
                  "size_after": raw, "collateral_after": raw // 5, "price": 3000 * USD, "fee": 0,
                  "realized_pnl": 0, "entry_price": 3000 * USD}
        for k, v in values.items():
            cols[k].append(v)
    return RangeRows(31337, protocol, f"{protocol}_test", 30, cols,
                     {"block_number": [], "block_time": [], "log_index": [], "market": [],
                      "rate": []}, [], [])


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "view.duckdb")
    for n, (protocol, markets) in enumerate(MARKETS.items()):
        rows = []
        for m, market in enumerate(markets):
            for t in range(4):
                account = "0x" + f"{n * 100 + m * 10 + t + 1:040x}"
                size = Decimal(1234 + 987_654 * t + 55_555 * m) + Decimal("0.37")
                rows.append((account, market, (t + m) % 3 != 0, size))
        # the largest wallet: positions on three venues, $987.65M on one market
        if protocol in ("gmx_v1", "gmx_v2", "gtrade"):
            big = Decimal("987654321.12") if protocol == "gmx_v2" else Decimal("12345678.9")
            rows.append((WHALE, markets[0], protocol != "gtrade", big))
        store.commit_range(ledger(protocol, 10 + n, rows), 10 + n, 10 + n, "0xhash", 0)
    yield store
    store.close()


def screen(store: Store, width: int, height: int) -> list[str]:
    console = Console(width=width, height=height, record=True, color_system=None)
    console.print(render(store, 123_456_789, {"tx_ok": 98_765}, {"block": 123_456_780}))
    return console.export_text().rstrip("\n").split("\n")


def test_usd_is_compact_and_never_cut():
    assert [usd(v) for v in (0, Decimal("999.4"), Decimal("999.6"), 12_345, 999_499,
                             1_234_567, 987_654_321, 12_345_678_901, -5_000_000)] == [
        "$0", "$999", "$1.00K", "$12.3K", "$999K", "$1.23M", "$988M", "$12.3B", "-$5.00M"]
    assert usd(2_909_770_601_490_059) == "$2910T"  # a figure no market has, still whole
    assert usd(None) == "-"


def test_the_view_fits_80x24_without_cutting_numbers(store):
    lines = screen(store, 80, 24)
    text = "\n".join(lines)
    assert len(lines) <= 24, text
    assert max(len(line) for line in lines) <= 80, text
    assert "…" not in text, text  # nothing cut, numbers least of all
    # the open interest rows: whole compact amounts and a signed skew, readable without colour
    _, oi = store.query("SELECT count(*) FROM open_interest")
    oi_rows = [line for line in lines
               if re.search(r"(\$[\d.]+[KMBT]?\s+){3}\S*\s*[+-]\d\.\d\d\s+\d+/\d+$", line)]
    assert 10 <= len(oi_rows) <= oi[0][0], text
    assert any(re.search(r" -\d\.\d\d ", line) for line in oi_rows), text  # a short-heavy market
    _, largest = store.query("SELECT max(total_oi_usd) FROM open_interest")
    assert usd(largest[0][0]) == "$994M" and "$994M" in text  # the largest market's total
    # the largest wallet and its figure, as the database sums it
    _, top = store.query("SELECT account, sum(size_usd) s FROM positions WHERE status = 'open' "
                         "GROUP BY account ORDER BY s DESC LIMIT 1")
    account, total = top[0]
    assert account == WHALE
    wallet_line = next(line for line in lines if account in line)
    assert usd(total) == "$1.01B" and wallet_line.split()[1] == usd(total), text
    assert "Largest wallets" in text


@pytest.mark.parametrize("size", [(60, 20), (50, 16), (120, 60), (200, 80)])
def test_the_view_fits_other_terminals(store, size):
    width, height = size
    lines = screen(store, width, height)
    text = "\n".join(lines)
    assert len(lines) <= height and max(len(line) for line in lines) <= width, text
    assert "Largest wallets" in text and usd(Decimal("1012345678.02")) in text, text
    amounts = re.findall(r"-?\$[\d.]+[KMBT]?", text)
    assert amounts and all(re.fullmatch(r"-?\$\d+(\.\d+)?[KMBT]?", a) for a in amounts)
    if height >= 60:  # room for more (these rows name no asset: no assets, no map)
        assert "Whale concentration" in text and "pos L/S" in text, text
