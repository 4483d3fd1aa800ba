"""Perpetual Protocol v2 (Curie) adapter on golden ClearingHouse logs.

Rules (perpetual-protocol/perp-curie-contract ``IClearingHouse.sol`` / ``ClearingHouse.sol``;
shared/protocols.md 6; the Perp v2 recording's README):

* ``PositionChanged.exchangedPositionSize`` is the signed base delta of the trader's taker
  position (> 0 long); the taker size is the sum of them; ``openNotional`` is the open notional
  after the change (negative for a long); all values 1e18;
* a liquidation is the trader's ``PositionChanged`` (minus the liquidated size), the
  liquidator's (taking it over), then ``PositionLiquidated`` (which must not be counted again);
* ``PositionClosed(trader, baseToken, closedPositionSize, ...)`` (``quitMarket``): the signed
  taker position before is closed at ``closedPrice``.

Ledger conventions of the adapter (its docstring): key = keccak256(abi.encode(trader,
baseToken)); price = |notional| / |size exchanged|; USD size = base size at that price; entry
price = |openNotional| / |size|; realised PnL cumulative; no per-position collateral.
"""

from __future__ import annotations

from indexer.adapters import perp_v2
from indexer.adapters.base import AdapterContext
from indexer.types import PreviousState
from tests.unit.chainlogs import addr, decode, ev, keccak, pick, rows, run, word

E18 = 10**18
CLEARING_HOUSE = addr("c4")
TRADER = addr("a1")
LIQUIDATOR = addr("11")
VETH = addr("e5")

CHANGED = ("PositionChanged(address indexed trader, address indexed baseToken, "
           "int256 exchangedPositionSize, int256 exchangedPositionNotional, uint256 fee, "
           "int256 openNotional, int256 realizedPnl, uint256 sqrtPriceAfterX96)")
LIQUIDATED = ("PositionLiquidated(address indexed trader, address indexed baseToken, "
              "uint256 positionNotional, uint256 positionSize, uint256 liquidationFee, "
              "address liquidator)")
CLOSED = ("PositionClosed(address indexed trader, address indexed baseToken, "
          "int256 closedPositionSize, int256 closedPositionNotional, int256 openNotional, "
          "int256 realizedPnl, uint256 closedPrice)")


def position_key(trader: str, base: str) -> str:
    return "0x" + keccak(word(trader) + word(base)).hex()


KEY = position_key(TRADER, VETH)
LIQ_KEY = position_key(LIQUIDATOR, VETH)
#: The pool's price after the swap as Uniswap v3 sqrtPriceX96: sqrt(1600) x 2**96 (quote per
#: base, both 18 decimals), i.e. $1600. Used only when no size was exchanged.
SQRT_1600 = 40 * 2**96


def changed(t: int, size: int, notional: int, *, open_notional: int, fee: int = 0,
            pnl: int = 0, trader: str = TRADER) -> dict:
    return ev(CHANGED, CLEARING_HOUSE, t, trader=trader, baseToken=VETH,
              exchangedPositionSize=size, exchangedPositionNotional=notional, fee=fee,
              openNotional=open_notional, realizedPnl=pnl, sqrtPriceAfterX96=SQRT_1600)


def prev(size: int, pnl: int = 0) -> PreviousState:
    return PreviousState(is_long=size > 0, size_tokens=abs(size), collateral=None,
                         realized_pnl=pnl, market=VETH)


def ctx(previous: dict | None = None) -> AdapterContext:
    return AdapterContext(10, {"clearing_house": (CLEARING_HOUSE,)}, previous=previous or {})


def test_open_increase_decrease_and_close_threaded_through_the_batch():
    logs = [
        # buy 2 vETH for 3000 vUSD: long 2 at $1500
        changed(1, 2 * E18, -3000 * E18, open_notional=-3000 * E18, fee=3 * E18),
        # buy 1 more for 1800: long 3, open notional 4800
        changed(2, E18, -1800 * E18, open_notional=-4800 * E18, fee=2 * E18),
        # sell 1.5 for 2400 ($1600): long 1.5, realised +0
        changed(3, -15 * E18 // 10, 2400 * E18, open_notional=-2400 * E18, pnl=0),
        # sell the remaining 1.5 for 2700 ($1800): closed, realised +300
        changed(4, -15 * E18 // 10, 2700 * E18, open_notional=0, pnl=300 * E18),
    ]
    out = run("perp_v2", logs, ctx())
    assert out.rejected == []
    got = rows(out.changes)
    common = {"position_key": KEY, "account": TRADER, "market": VETH, "index_token": VETH,
              "is_long": True, "collateral_delta": None, "collateral_after": None,
              "index_decimals": 18}
    assert all(pick(r, common) == common for r in got)
    want = [
        {"kind": "increase", "size_delta_tokens": 2 * E18, "size_after_tokens": 2 * E18,
         "price": 1500 * E18, "size_delta": 3000 * E18, "size_after": 3000 * E18,
         "entry_price": 1500 * E18, "fee": 3 * E18, "realized_pnl": 0},
        {"kind": "increase", "size_delta_tokens": E18, "size_after_tokens": 3 * E18,
         "price": 1800 * E18, "size_delta": 1800 * E18, "size_after": 5400 * E18,
         "entry_price": 1600 * E18, "fee": 2 * E18},
        {"kind": "decrease", "size_delta_tokens": -15 * E18 // 10,
         "size_after_tokens": 15 * E18 // 10, "price": 1600 * E18, "size_delta": -2400 * E18,
         "size_after": 2400 * E18, "entry_price": 1600 * E18, "realized_pnl": 0},
        {"kind": "close", "size_delta_tokens": -15 * E18 // 10, "size_after_tokens": 0,
         "price": 1800 * E18, "size_delta": -2700 * E18, "size_after": 0, "entry_price": 0,
         "realized_pnl": 300 * E18},
    ]
    assert [pick(r, w) for r, w in zip(got, want, strict=True)] == want


def test_prior_state_from_the_store_and_a_flip():
    decoded, meta = decode("perp_v2", [changed(1, -5 * E18, 10_000 * E18,
                                               open_notional=6000 * E18, pnl=-40 * E18)])
    assert perp_v2.ADAPTER.keys_needed is not None
    assert perp_v2.ADAPTER.keys_needed(decoded, meta) == [KEY]
    # long 2 before the batch (cumulative PnL 25); sells 5 at $2000: short 3
    out = perp_v2.ADAPTER.to_changes(decoded, meta, ctx({KEY: prev(2 * E18, 25 * E18)}))
    (r,) = rows(out.changes)
    want = {"kind": "increase", "is_long": False, "size_delta_tokens": 3 * E18,
            "size_after_tokens": 3 * E18, "price": 2000 * E18, "size_delta": 6000 * E18,
            "size_after": 6000 * E18, "entry_price": 2000 * E18, "realized_pnl": -15 * E18}
    assert pick(r, want) == want


def test_close_of_a_short_known_from_the_store():
    logs = [changed(1, 3 * E18, -4500 * E18, open_notional=0, pnl=-90 * E18)]
    out = run("perp_v2", logs, ctx({KEY: prev(-3 * E18)}))
    (r,) = rows(out.changes)
    want = {"kind": "close", "is_long": False, "size_delta_tokens": -3 * E18,
            "size_delta": -4500 * E18, "size_after": 0, "realized_pnl": -90 * E18}
    assert pick(r, want) == want


def test_liquidation_marks_the_traders_change_and_the_liquidator_takes_over():
    logs = [
        # trader long 4: 2.5 liquidated at $1200 (fee 0), the liquidator takes them over
        changed(7, -25 * E18 // 10, 3000 * E18, open_notional=-2400 * E18, pnl=-750 * E18),
        changed(7, 25 * E18 // 10, -3000 * E18, open_notional=-3000 * E18,
                trader=LIQUIDATOR),
        ev(LIQUIDATED, CLEARING_HOUSE, 7, trader=TRADER, baseToken=VETH,
           positionNotional=3000 * E18, positionSize=25 * E18 // 10,
           liquidationFee=75 * E18, liquidator=LIQUIDATOR),
    ]
    out = run("perp_v2", logs, ctx({KEY: prev(4 * E18)}))
    assert out.rejected == []
    got = [pick(r, {"row": 0, "position_key": 0, "kind": 0, "is_long": 0, "size_delta": 0,
                    "size_after_tokens": 0}) for r in rows(out.changes)]
    assert got == [
        {"row": 0, "position_key": KEY, "kind": "liquidation", "is_long": True,
         "size_delta": -3000 * E18, "size_after_tokens": 15 * E18 // 10},
        {"row": 1, "position_key": LIQ_KEY, "kind": "increase", "is_long": True,
         "size_delta": 3000 * E18, "size_after_tokens": 25 * E18 // 10},
    ]


def test_position_liquidated_without_the_traders_change_is_rejected():
    logs = [ev(LIQUIDATED, CLEARING_HOUSE, 3, trader=TRADER, baseToken=VETH,
               positionNotional=1, positionSize=1, liquidationFee=0, liquidator=LIQUIDATOR)]
    out = run("perp_v2", logs, ctx())
    assert len(out.changes) == 0
    assert [r for r, _ in out.rejected] == [0]
    assert "without the trader's PositionChanged" in out.rejected[0][1]


def test_change_of_a_position_never_seen_open_is_rejected():
    """No size exchanged and no position before: nothing changed (start block too late?)."""
    out = run("perp_v2", [changed(1, 0, 0, open_notional=0)], ctx())
    assert len(out.changes) == 0
    assert [r for r, _ in out.rejected] == [0]


def test_change_without_exchanged_size_is_priced_at_the_pool_price():
    out = run("perp_v2", [changed(1, 0, 0, open_notional=-3000 * E18, pnl=-4 * E18)],
              ctx({KEY: prev(2 * E18)}))
    (r,) = rows(out.changes)
    want = {"kind": "increase", "is_long": True, "size_delta_tokens": 0, "size_delta": 0,
            "price": 1600 * E18, "size_after": 3200 * E18, "entry_price": 1500 * E18,
            "realized_pnl": -4 * E18}
    assert pick(r, want) == want


def test_position_closed_by_quit_market():
    logs = [ev(CLOSED, CLEARING_HOUSE, 2, trader=TRADER, baseToken=VETH,
               closedPositionSize=-2 * E18, closedPositionNotional=3100 * E18,
               openNotional=3000 * E18, realizedPnl=-100 * E18, closedPrice=1550 * E18)]
    out = run("perp_v2", logs, ctx({KEY: prev(-2 * E18, 10 * E18)}))
    (r,) = rows(out.changes)
    want = {"kind": "close", "is_long": False, "size_delta_tokens": -2 * E18,
            "size_delta": -3100 * E18, "size_after": 0, "price": 1550 * E18,
            "realized_pnl": -90 * E18}
    assert pick(r, want) == want


def test_a_dust_taker_size_is_a_close():
    """AccountBalance.getTakerPositionSize reports |size| < 10 wei (_DUST) as 0, and the entry
    is deleted when the open notional is dust too: a sell leaving 7 wei of a long is a close."""
    logs = [changed(1, 2 * E18, -3000 * E18, open_notional=-3000 * E18),
            changed(2, -(2 * E18 - 7), 3300 * E18, open_notional=-3, pnl=300 * E18)]
    got = rows(run("perp_v2", logs, ctx()).changes)
    assert [pick(r, {"kind": 0, "size_after_tokens": 0, "size_delta_tokens": 0}) for r in got] == [
        {"kind": "increase", "size_after_tokens": 2 * E18, "size_delta_tokens": 2 * E18},
        {"kind": "close", "size_after_tokens": 0, "size_delta_tokens": -2 * E18}]
