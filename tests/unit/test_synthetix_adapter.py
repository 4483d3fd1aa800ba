"""Synthetix Perps v2 adapter on golden market-proxy logs.

Rules (Synthetixio/synthetix@1609d1567 ``PerpsV2MarketProxyable.sol``, ``PerpsV2MarketLiquidate.sol``,
``IPerpsV2MarketBaseTypes.sol``; shared/protocols.md 3; the Synthetix recording's README):

* events come from the market's proxy; a position is (market, account);
* ``PositionModified.size`` is the signed size after (+ long, - short, 1e18 base units),
  ``tradeSize`` the signed trade, ``margin`` the margin after; ``tradeSize`` 0 = margin transfer;
* a liquidation emits ``PositionModified`` with size 0, tradeSize 0, margin 0, then
  ``PositionLiquidated`` with the size before (signed) and the fees (both in one transaction);
* ``MarketAdded(address market, bytes32 indexed asset, bytes32 indexed marketKey)`` on the
  FuturesMarketManager announces a market proxy;
* all amounts 1e18.

Ledger conventions of the adapter (its docstring): key = keccak256(abi.encode(market, account));
USD size = size x fill price (``lastPrice``); a flip is one increase of the new side; margin
while flat belongs to no position.
"""

from __future__ import annotations

import pytest

from indexer.adapters import synthetix_perps_v2
from indexer.adapters.base import AdapterContext
from indexer.types import PreviousState
from tests.unit.chainlogs import addr, decode, ev, keccak, pick, rows, run, word

E18 = 10**18
MANAGER = addr("fa")
ETH_MARKET = addr("e1")
BTC_MARKET = addr("b1")
TRADER = addr("a1")
KEEPER = addr("ee")

MODIFIED = ("PositionModified(uint256 indexed id, address indexed account, uint256 margin, "
            "int256 size, int256 tradeSize, uint256 lastPrice, uint256 fundingIndex, "
            "uint256 fee, int256 skew)")
LIQUIDATED = ("PositionLiquidated(uint256 id, address account, address liquidator, int256 size, "
              "uint256 price, uint256 flaggerFee, uint256 liquidatorFee, uint256 stakersFee)")
#: Before April 2023 (protocols.md 3.1).
LIQUIDATED_OLD = ("PositionLiquidated(uint256 id, address account, address liquidator, "
                  "int256 size, uint256 price, uint256 fee)")
#: Perps v1 (``FuturesMarket``): the same arguments, three of them indexed.
LIQUIDATED_V1 = ("PositionLiquidated(uint256 indexed id, address indexed account, "
                 "address indexed liquidator, int256 size, uint256 price, uint256 fee)")
FUNDING = ("FundingRecomputed(int256 funding, int256 fundingRate, uint256 index, "
           "uint256 timestamp)")
MARKET_ADDED = ("MarketAdded(address market, bytes32 indexed asset, "
                "bytes32 indexed marketKey)")


def position_key(market: str, account: str) -> str:
    return "0x" + keccak(word(market) + word(account)).hex()


KEY = position_key(ETH_MARKET, TRADER)


def modified(t: int, *, margin: int, size: int, trade: int, price: int, fee: int = 0,
             market: str = ETH_MARKET) -> dict:
    return ev(MODIFIED, market, t, id=5, account=TRADER, margin=margin, size=size,
              tradeSize=trade, lastPrice=price, fundingIndex=40 + t, fee=fee, skew=size)


def ctx(previous: dict | None = None) -> AdapterContext:
    return AdapterContext(10, {"futures_market_manager": (MANAGER,)}, previous=previous or {})


def test_deposit_open_increase_decrease_margin_moves_and_close():
    logs = [
        # 1000 sUSD deposited while flat: no position, no row
        modified(1, margin=1000 * E18, size=0, trade=0, price=2000 * E18),
        # open 2 ETH long at $2000, fee 3 sUSD taken from the margin
        modified(2, margin=997 * E18, size=2 * E18, trade=2 * E18, price=2000 * E18,
                 fee=3 * E18),
        # +1 ETH at $2100
        modified(3, margin=995 * E18, size=3 * E18, trade=E18, price=2100 * E18, fee=2 * E18),
        # -2 ETH at $2200
        modified(4, margin=1193 * E18, size=E18, trade=-2 * E18, price=2200 * E18,
                 fee=2 * E18),
        # margin in (+300) and out (-100) on the open position: size unchanged
        modified(5, margin=1493 * E18, size=E18, trade=0, price=2150 * E18),
        modified(6, margin=1393 * E18, size=E18, trade=0, price=2150 * E18),
        # close the last ETH at $2050: the margin left belongs to no position
        modified(7, margin=1541 * E18, size=0, trade=-E18, price=2050 * E18, fee=1 * E18),
    ]
    out = run("synthetix_perps_v2", logs, ctx())
    assert out.rejected == []
    got = rows(out.changes)
    common = {"position_key": KEY, "account": TRADER, "market": ETH_MARKET, "is_long": True,
              "collateral_token": None, "realized_pnl": None, "entry_price": None,
              "index_decimals": 18}
    assert all(pick(r, common) == common for r in got)
    want = [
        {"row": 1, "kind": "increase", "size_delta": 4000 * E18, "size_after": 4000 * E18,
         "collateral_delta": 997 * E18, "collateral_after": 997 * E18, "price": 2000 * E18,
         "fee": 3 * E18, "size_delta_tokens": 2 * E18, "size_after_tokens": 2 * E18},
        {"row": 2, "kind": "increase", "size_delta": 2100 * E18, "size_after": 6300 * E18,
         "collateral_delta": -2 * E18, "collateral_after": 995 * E18, "price": 2100 * E18,
         "fee": 2 * E18, "size_delta_tokens": E18, "size_after_tokens": 3 * E18},
        {"row": 3, "kind": "decrease", "size_delta": -4400 * E18, "size_after": 2200 * E18,
         "collateral_delta": 198 * E18, "collateral_after": 1193 * E18,
         "size_delta_tokens": -2 * E18, "size_after_tokens": E18},
        {"row": 4, "kind": "increase", "size_delta": 0, "size_after": 2150 * E18,
         "collateral_delta": 300 * E18, "collateral_after": 1493 * E18,
         "size_delta_tokens": 0},
        {"row": 5, "kind": "decrease", "size_delta": 0, "collateral_delta": -100 * E18,
         "collateral_after": 1393 * E18},
        {"row": 6, "kind": "close", "size_delta": -2050 * E18, "size_after": 0,
         "collateral_delta": -1393 * E18, "collateral_after": 0, "fee": E18,
         "size_delta_tokens": -E18, "size_after_tokens": 0},
    ]
    assert [pick(r, w) for r, w in zip(got, want, strict=True)] == want


def test_flip_long_to_short_is_one_increase_of_the_short_side():
    previous = {KEY: PreviousState(is_long=True, size_tokens=E18, collateral=500 * E18,
                                   realized_pnl=None, market=ETH_MARKET, size_usd=2000 * E18)}
    # 1 ETH long, sells 3 ETH at $1900: 2 ETH short
    logs = [modified(1, margin=494 * E18, size=-2 * E18, trade=-3 * E18, price=1900 * E18,
                     fee=6 * E18)]
    out = run("synthetix_perps_v2", logs, ctx(previous))
    (r,) = rows(out.changes)
    want = {"kind": "increase", "is_long": False, "size_delta_tokens": 2 * E18,
            "size_after_tokens": 2 * E18, "size_delta": 3800 * E18, "size_after": 3800 * E18,
            "collateral_delta": -6 * E18, "collateral_after": 494 * E18}
    assert pick(r, want) == want


def test_margin_only_change_uses_the_stored_margin_before_the_batch():
    previous = {KEY: PreviousState(is_long=False, size_tokens=3 * E18, collateral=800 * E18,
                                   realized_pnl=None, market=ETH_MARKET, size_usd=6000 * E18)}
    logs = [modified(1, margin=650 * E18, size=-3 * E18, trade=0, price=2000 * E18)]
    out = run("synthetix_perps_v2", logs, ctx(previous))
    (r,) = rows(out.changes)
    want = {"kind": "decrease", "is_long": False, "size_delta": 0, "size_after": 6000 * E18,
            "collateral_delta": -150 * E18, "collateral_after": 650 * E18}
    assert pick(r, want) == want


def test_margin_moves_while_flat_add_no_row():
    logs = [modified(1, margin=1000 * E18, size=0, trade=0, price=2000 * E18),
            modified(2, margin=0, size=0, trade=0, price=2000 * E18)]
    out = run("synthetix_perps_v2", logs, ctx())
    assert len(out.changes) == 0 and out.rejected == []


def test_liquidation_folds_its_size_zero_position_modified():
    previous = {KEY: PreviousState(is_long=False, size_tokens=5 * E18, collateral=700 * E18,
                                   realized_pnl=None, market=ETH_MARKET, size_usd=10_000 * E18)}
    logs = [
        ev(FUNDING, ETH_MARKET, 9, funding=-12 * E18, fundingRate=3, index=77, timestamp=1),
        modified(9, margin=0, size=0, trade=0, price=2300 * E18),
        ev(LIQUIDATED, ETH_MARKET, 9, id=5, account=TRADER, liquidator=KEEPER, size=-5 * E18,
           price=2300 * E18, flaggerFee=4 * E18, liquidatorFee=2 * E18, stakersFee=30 * E18),
    ]
    out = run("synthetix_perps_v2", logs, ctx(previous))
    assert out.rejected == []
    (r,) = rows(out.changes)
    want = {"row": 2, "kind": "liquidation", "position_key": KEY, "is_long": False,
            "size_delta_tokens": -5 * E18, "size_after_tokens": 0,
            "size_delta": -11_500 * E18, "size_after": 0, "price": 2300 * E18, "fee": 36 * E18,
            "collateral_delta": -700 * E18, "collateral_after": 0}
    assert pick(r, want) == want
    assert (out.funding.row, out.funding.market, out.funding.rate) == (
        [0], [ETH_MARKET], [-12 * E18])


@pytest.mark.parametrize("declaration", [LIQUIDATED_OLD, LIQUIDATED_V1], ids=["v2 2022", "v1"])
def test_older_position_liquidated_with_one_fee(declaration):
    logs = [modified(3, margin=0, size=0, trade=0, price=30_000 * E18, market=BTC_MARKET),
            ev(declaration, BTC_MARKET, 3, id=1, account=TRADER, liquidator=KEEPER,
               size=E18 // 10, price=30_000 * E18, fee=25 * E18)]
    out = run("synthetix_perps_v2", logs, ctx())
    (r,) = rows(out.changes)
    want = {"kind": "liquidation", "is_long": True, "market": BTC_MARKET,
            "position_key": position_key(BTC_MARKET, TRADER), "size_delta": -3000 * E18,
            "fee": 25 * E18}
    assert pick(r, want) == want


def test_size_zero_modified_in_another_transaction_than_the_liquidation_is_a_close():
    previous = {KEY: PreviousState(is_long=True, size_tokens=E18, collateral=100 * E18,
                                   realized_pnl=None, market=ETH_MARKET, size_usd=2000 * E18)}
    logs = [modified(1, margin=90 * E18, size=0, trade=-E18, price=2000 * E18),
            ev(LIQUIDATED, ETH_MARKET, 2, id=5, account=addr("a2"), liquidator=KEEPER,
               size=E18, price=2000 * E18, flaggerFee=0, liquidatorFee=0, stakersFee=0)]
    out = run("synthetix_perps_v2", logs, ctx(previous))
    got = [pick(r, {"kind": 0, "account": 0}) for r in rows(out.changes)]
    assert got == [{"kind": "close", "account": TRADER},
                   {"kind": "liquidation", "account": addr("a2")}]


def test_market_added_announces_a_market_and_its_name():
    logs = [ev(MARKET_ADDED, MANAGER, 1, market=ETH_MARKET,
               asset="0x" + b"sETH".ljust(32, b"\0").hex(),
               marketKey="0x" + b"sETHPERP".ljust(32, b"\0").hex()),
            modified(2, margin=10 * E18, size=0, trade=0, price=1)]
    decoded, meta = decode("synthetix_perps_v2", logs)
    adapter = synthetix_perps_v2.ADAPTER
    assert adapter.markets_added is not None and adapter.keys_needed is not None
    assert adapter.markets_added(decoded, meta) == [(0, ETH_MARKET)]
    assert adapter.keys_needed(decoded, meta) == [KEY]
    out = adapter.to_changes(decoded, meta, ctx())
    assert (out.markets.row, out.markets.market, out.markets.name) == (
        [0], [ETH_MARKET], ["sETHPERP"])
    assert len(out.changes) == 0
