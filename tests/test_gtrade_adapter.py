"""The gTrade adapter on hand-built logs (encoded with eth_abi from the real ABI) for what the
anvil run does not produce: v9 events, a trade opened before the start block, an unlisted
collateral, and a pending order's close."""

from __future__ import annotations

import eth_abi
import pytest

from indexer.abi import decode_logs, load_abi_dir
from indexer.adapters import gtrade
from indexer.adapters.base import AdapterContext
from indexer.rpc import as_logs
from indexer.types import LogMeta
from tests.helpers import ROOT

pytestmark = pytest.mark.unit

ABI = load_abi_dir(ROOT / "indexer" / "abis" / "gtrade")
USER = "0x" + "ab" * 20
DAI = "0x" + "da" * 20


def _log(name: str, source: str, values: dict, tx: str = "0x01", index: int = 0) -> dict:
    ev = next(e for e in ABI.by_shape.values() if e.name == name and e.source == source)
    topics = [ev.topic0] + ["0x" + eth_abi.encode([t], [values[n]]).hex()
                            for n, t, ix in ev.inputs if ix]
    data = eth_abi.encode([t for _, t, ix in ev.inputs if not ix],
                          [values[n] for n, _, ix in ev.inputs if not ix])
    return {"topics": topics, "data": "0x" + data.hex(), "blockNumber": "0x10",
            "blockHash": "0x" + "00" * 32, "transactionHash": tx, "logIndex": hex(index),
            "address": "0x" + "11" * 20, "blockTimestamp": "0x1"}


def _trade_v9(index: int, collateral_index: int = 1, trade_type: int = 0) -> tuple:
    # user, index, pair, leverage, long, isOpen, collateralIndex, tradeType, collateral,
    # openPrice, tp, sl, placeholder
    return (USER, index, 1, 20_000, False, True, collateral_index, trade_type, 500 * 10**18,
            3000 * 10**10, 0, 0, 0)


def _run(logs: list[dict]):
    ctx = AdapterContext(1, {"diamond": ("0x" + "11" * 20,)}, token_ids={1: DAI},
                         decimals={DAI: 18})
    logs = as_logs(logs)
    return gtrade.to_changes(decode_logs(logs, ABI), LogMeta.from_logs(logs), ctx)


def _executed(t: tuple, open_: bool) -> dict:
    return {"orderId": (USER, t[1]), "user": USER, "index": t[1], "t": t, "open": open_,
            "oraclePrice": 2900 * 10**10, "marketPrice": 2900 * 10**10, "liqPrice": 0,
            "priceImpactP": 0, "percentProfit": 5, "amountSentToTrader": 1,
            "collateralPriceUsd": 10**8}


def test_v9_update_then_close_of_a_trade_opened_before_the_start():
    v9 = "GNSMultiCollatDiamond_v9.json"
    t = _trade_v9(7)
    logs = [
        _log("TradeClosed", "GNSMultiCollatDiamond.json",
             {"user": USER, "index": 7, "isPnlPositive": True}, tx="0x02", index=0),
        _log("MarketExecuted", v9, _executed(t, False), tx="0x02", index=1),
    ]
    out = _run(logs)
    ch = out.changes
    assert out.rejected == []
    assert ch.kind == ["close"] and ch.is_long == [False] and ch.market == ["1"]
    size = 500 * 10**18 * 20_000 // 1000
    assert ch.size_delta_tokens == [-size] and ch.size_after_tokens == [0]
    assert ch.size_delta == [-size] and ch.price == [2900 * 10**18]  # DAI at 1 USD, 18 decimals
    assert ch.position_key == [gtrade.trade_key(USER, 7)]


def test_v9_position_update_unknown_collateral_and_pending_orders():
    v9 = "GNSMultiCollatDiamond_v9.json"
    info = (1, 1, 1, 1000, 1, 10**8, 1, 1, 0)
    liq = (0, 0, 0, 0, 0)
    logs = [
        _log("TradeStored", v9, {"user": USER, "index": 1, "trade": _trade_v9(1),
                                 "tradeInfo": info, "liquidationParams": liq}, index=0),
        _log("TradePositionUpdated", v9, {
            "user": USER, "index": 1, "collateralAmount": 400 * 10**18, "leverage": 10_000,
            "openPrice": 3100 * 10**10, "newTp": 0, "newSl": 0, "isPartialIncrease": False,
            "isPnlPositive": False}, index=1),
        _log("TradeStored", v9, {"user": USER, "index": 2, "trade": _trade_v9(2, trade_type=1),
                                 "tradeInfo": info, "liquidationParams": liq}, index=2),
        _log("TradeClosed", "GNSMultiCollatDiamond.json",
             {"user": USER, "index": 2, "isPnlPositive": False}, index=3),
        _log("TradeStored", v9, {"user": USER, "index": 3, "trade": _trade_v9(3, 9),
                                 "tradeInfo": info, "liquidationParams": liq}, index=4),
        _log("TradeCollateralUpdated", "GNSMultiCollatDiamond.json",
             {"user": USER, "index": 4, "collateralAmount": 1}, index=5),
    ]
    out = _run(logs)
    ch = out.changes
    assert ch.kind == ["increase", "decrease"]
    assert ch.size_after_tokens == [10_000 * 10**18, 4_000 * 10**18]
    assert ch.collateral_after_tokens == [500 * 10**18, 400 * 10**18]
    assert ch.entry_price == [3000 * 10**18, 3100 * 10**18]
    reasons = dict(out.rejected)
    assert set(reasons) == {4, 5}
    assert "collateral index 9" in reasons[4] and "not seen open" in reasons[5]
