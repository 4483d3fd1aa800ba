"""gTrade v10 adapter: a trade's life from TradeStored to a liquidation, on golden diamond logs
(tests/test_gtrade_adapter.py covers the v9 events, pending orders and unknown collateral).

Rules (GainsNetwork-org/sdk ABI, gTrade v10 diamond; shared/protocols.md 5; the adapter's
docstring): a trade is (user, index), key keccak256(abi.encode(user, index)); size in
collateral tokens is collateralAmount x leverage / 1e3 (leverage has 3 decimals); USD values at
the trade's ``collateralPriceUsd`` (1e8); pair prices 1e10 on chain; ``TradeClosed`` is a
liquidation when the transaction's ``LimitExecuted`` has ``orderType`` 6 (LIQ_CLOSE).
"""

from __future__ import annotations

from indexer.adapters.base import AdapterContext
from tests.unit.chainlogs import addr, ev, keccak, pick, rows, run, word

DIAMOND = addr("d1")
USER = addr("a1")
USDC = addr("c6")  # 6 decimals, gTrade collateral index 3
USDC_INDEX = 3
#: $0.9999 per USDC (1e8).
USDC_PRICE = 99_990_000
E18 = 10**18

TRADE = ("(address,uint32,uint16,uint24,bool,bool,uint8,uint8,uint120,uint64,uint64,uint64,bool,"
         "uint160,uint24)")
STORED = (f"TradeStored(address indexed user, uint32 indexed index, {TRADE} trade, "
          "(uint32,uint32,uint32,uint16,uint48,uint48,uint8,uint32,uint8) tradeInfo, "
          "(uint40,uint40,uint40,uint24,uint24) liquidationParams)")
POSITION_UPDATED = ("TradePositionUpdated(address indexed user, uint32 indexed index, "
                    "uint120 collateralAmount, uint24 leverage, uint64 openPrice, uint64 newSl, "
                    "uint160 newPositionSizeToken, uint8 pendingOrderType, bool isPnlPositive)")
COLLATERAL_UPDATED = ("TradeCollateralUpdated(address indexed user, uint32 indexed index, "
                      "uint120 collateralAmount)")
CLOSED = "TradeClosed(address indexed user, uint32 indexed index, bool isPnlPositive)"
LIMIT_EXECUTED = ("LimitExecuted((address,uint32) orderId, address indexed user, "
                  f"uint32 indexed index, uint32 indexed limitIndex, {TRADE} t, "
                  "address triggerCaller, uint8 orderType, uint256 oraclePrice, "
                  "uint256 marketPrice, uint256 liqPrice, "
                  "(uint256,int256,int256,int256,int256,uint64) priceImpact, "
                  "int256 percentProfit, uint256 amountSentToTrader, uint256 collateralPriceUsd, "
                  "bool exactExecution)")
TP_CLOSE, LIQ_CLOSE = 4, 6


def trade_key(user: str, index: int) -> str:
    return "0x" + keccak(word(user) + index.to_bytes(32, "big")).hex()


def trade(index: int, collateral: int, leverage: int, open_price: int) -> tuple:
    # user, index, pairIndex, leverage, long, isOpen, collateralIndex, tradeType (0 = trade),
    # collateralAmount, openPrice, tp, sl, isCounterTrade, positionSizeToken, placeholder
    return (USER, index, 1, leverage, True, True, USDC_INDEX, 0, collateral, open_price, 0, 0,
            False, 0, 0)


def stored(t: int, tr: tuple) -> dict:
    info = (100, 100, 100, 1000, 1_712_000_000, USDC_PRICE, 10, 100, 0)
    return ev(STORED, DIAMOND, t, user=USER, index=tr[1], trade=tr, tradeInfo=info,
              liquidationParams=(0, 0, 0, 0, 0))


def executed(t: int, tr: tuple, order_type: int, market_price: int) -> dict:
    return ev(LIMIT_EXECUTED, DIAMOND, t, orderId=(USER, 9), user=USER, index=tr[1],
              limitIndex=0, t=tr, triggerCaller=addr("be"), orderType=order_type,
              oraclePrice=market_price, marketPrice=market_price, liqPrice=0,
              priceImpact=(0, 0, 0, 0, 0, market_price), percentProfit=-90 * 10**10,
              amountSentToTrader=0, collateralPriceUsd=USDC_PRICE, exactExecution=True)


def usd(usdc_units: int) -> int:
    """USDC units valued at $0.9999, as raw USD with 18 decimals."""
    return usdc_units * USDC_PRICE * 10**10 // 10**6


def test_open_partial_decrease_collateral_update_and_liquidation():
    # 1000 USDC at 10x (leverage 10_000 / 1e3) long BTC at $60,000
    tr = trade(0, 1000 * 10**6, 10_000, 60_000 * 10**10)
    logs = [
        stored(1, tr),
        # partial close: collateral 600 USDC, same leverage and open price
        ev(POSITION_UPDATED, DIAMOND, 2, user=USER, index=0, collateralAmount=600 * 10**6,
           leverage=10_000, openPrice=60_000 * 10**10, newSl=0, newPositionSizeToken=0,
           pendingOrderType=1, isPnlPositive=True),
        # 10 USDC taken from the collateral (e.g. a fee): size follows at the same leverage
        ev(COLLATERAL_UPDATED, DIAMOND, 3, user=USER, index=0, collateralAmount=590 * 10**6),
        # liquidated at $54,600
        executed(4, tr, LIQ_CLOSE, 54_600 * 10**10),
        ev(CLOSED, DIAMOND, 4, user=USER, index=0, isPnlPositive=False),
    ]
    out = run("gtrade", logs, AdapterContext(42161, {"diamond": (DIAMOND,)},
                                             token_ids={USDC_INDEX: USDC}, decimals={USDC: 6}))
    assert out.rejected == []
    got = rows(out.changes)
    common = {"position_key": trade_key(USER, 0), "account": USER, "market": "1",
              "collateral_token": USDC, "is_long": True, "fee": 0, "realized_pnl": None,
              "collateral_decimals": 6}
    assert all(pick(r, common) == common for r in got)
    want = [
        {"row": 0, "kind": "increase", "size_delta_tokens": 10_000 * 10**6,
         "size_after_tokens": 10_000 * 10**6, "size_delta": usd(10_000 * 10**6),
         "size_after": usd(10_000 * 10**6), "collateral_delta": usd(1000 * 10**6),
         "collateral_after_tokens": 1000 * 10**6, "price": 60_000 * E18,
         "entry_price": 60_000 * E18},
        {"row": 1, "kind": "decrease", "size_delta_tokens": -4000 * 10**6,
         "size_after_tokens": 6000 * 10**6, "size_delta": -usd(4000 * 10**6),
         "collateral_delta_tokens": -400 * 10**6, "collateral_after_tokens": 600 * 10**6},
        {"row": 2, "kind": "decrease", "size_delta_tokens": -100 * 10**6,
         "size_after_tokens": 5900 * 10**6, "collateral_delta_tokens": -10 * 10**6},
        {"row": 4, "kind": "liquidation", "size_delta_tokens": -5900 * 10**6,
         "size_after_tokens": 0, "size_delta": -usd(5900 * 10**6), "size_after": 0,
         "collateral_after": 0, "collateral_delta_tokens": -590 * 10**6,
         "price": 54_600 * E18, "entry_price": 0},
    ]
    assert [pick(r, w) for r, w in zip(got, want, strict=True)] == want
    assert usd(10_000 * 10**6) == 9_999 * E18  # the helper itself: $10,000 of USDC at $0.9999


def test_take_profit_close_is_a_close():
    tr = trade(2, 500 * 10**6, 5_000, 3_000 * 10**10)
    logs = [stored(1, tr), executed(2, tr, TP_CLOSE, 3_300 * 10**10),
            ev(CLOSED, DIAMOND, 2, user=USER, index=2, isPnlPositive=True)]
    out = run("gtrade", logs, AdapterContext(42161, {"diamond": (DIAMOND,)},
                                             token_ids={USDC_INDEX: USDC}, decimals={USDC: 6}))
    assert [pick(r, {"kind": 0, "size_delta_tokens": 0, "price": 0})
            for r in rows(out.changes)] == [
        {"kind": "increase", "size_delta_tokens": 2_500 * 10**6, "price": 3_000 * E18},
        {"kind": "close", "size_delta_tokens": -2_500 * 10**6, "price": 3_300 * E18}]
