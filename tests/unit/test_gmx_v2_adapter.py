"""GMX v2 (gmx-synthetics) adapter on golden EventEmitter logs.

Rules (gmx-synthetics ``PositionEventUtils.sol`` / ``DecreasePositionUtils.sol`` / ``Order.sol``
@a5c0c883; shared/protocols.md 2.2-2.5; the GMX v2 recording's README):

* every event is an ``EventLog1`` of the EventEmitter, topics[1] = keccak256(eventName), its
  ``EventLogData`` read by key name;
* ``PositionIncrease`` / ``PositionDecrease`` carry the state after (``sizeInUsd``,
  ``sizeInTokens``, ``collateralAmount``); ``sizeInUsd == 0`` after => closed; a decrease with
  ``orderType`` 7 (``Order.OrderType.Liquidation``) is a liquidation;
* key = keccak256(abi.encode(account, market, collateralToken, isLong)) (4 words);
* USD x 1e30; prices per smallest token unit x 1e30 (USD per whole token = price x
  10**decimals); collateral in collateral-token units, valued (as GMX does) at
  ``collateralTokenPrice.min``;
* fee of a change = ``totalCostAmount`` (collateral tokens) of the ``PositionFeesCollected`` of
  the same order and position, at ``collateralTokenPrice.min``.
"""

from __future__ import annotations

from typing import Any

from indexer.adapters import gmx_v2
from indexer.adapters.base import AdapterContext
from tests.unit.chainlogs import addr, decode, ev, keccak, pick, rows, run, word

USD = 10**30
EMITTER = addr("e0")
TRADER = addr("a1")
MARKET = addr("3e")  # ETH/USD [WETH-USDC]
BTC_MARKET = addr("3b")
WETH = addr("e7")  # 18 decimals
BTC = addr("b7")  # 8 decimals
USDC = addr("c6")  # 6 decimals
#: USDC's prices: max $1, min $0.9999 (x 10**(30 - 6)).
USDC_MAX = 10**24
USDC_MIN = 999_900 * 10**18
#: ETH at $5000 per whole token = 5000 x 10**(30 - 18) per wei.
ETH_5000 = 5000 * 10**12

GROUP_TYPES = ("address", "uint256", "int256", "bool", "bytes32", "bytes", "string")
ELD = "(" + ",".join(f"((string,{t})[],(string,{t}[])[])" for t in GROUP_TYPES) + ")"
EVENT_LOG1 = (f"EventLog1(address msgSender, string eventName, string indexed eventNameHash, "
              f"bytes32 indexed topic1, {ELD} eventData)")


def position_key(account: str, market: str, collateral: str, is_long: bool) -> str:
    return "0x" + keccak(word(account) + word(market) + word(collateral)
                         + int(is_long).to_bytes(32, "big")).hex()


LONG = position_key(TRADER, MARKET, USDC, True)
SHORT = position_key(TRADER, MARKET, USDC, False)


def order_key(n: int) -> str:
    return f"0x{0xdd00 + n:064x}"


def event_log1(name: str, topic1: str, t: int, **groups: dict[str, Any]) -> dict:
    """An ``EventLog1`` named ``name``; ``groups``: address=, uint=, int=, bool=, bytes32= items."""
    eld = tuple(
        ([(k, bytes.fromhex(v[2:]) if g == "bytes32" else v)
          for k, v in groups.get(g, {}).items()], [])
        for g in ("address", "uint", "int", "bool", "bytes32", "bytes", "string"))
    return ev(EVENT_LOG1, EMITTER, t, msgSender=addr("0e"), eventName=name, eventNameHash=name,
              topic1="0x" + word(topic1).hex(), eventData=eld)


def position_event(name: str, t: int, *, key: str = LONG, is_long: bool = True,
                   market: str = MARKET, size_usd: int, size_tokens: int, collateral: int,
                   size_delta_usd: int, size_delta_tokens: int, collateral_delta: int,
                   order_type: int, price: int = ETH_5000, pnl: int = 0,
                   drop: str | None = None, rename: dict[str, str] | None = None) -> dict:
    """A PositionIncrease / PositionDecrease with the keys of PositionEventUtils @a5c0c883."""
    uint = {"sizeInUsd": size_usd, "sizeInTokens": size_tokens, "collateralAmount": collateral,
            "borrowingFactor": 7, "fundingFeeAmountPerSize": 8,
            "longTokenClaimableFundingAmountPerSize": 9,
            "shortTokenClaimableFundingAmountPerSize": 10, "executionPrice": price,
            "indexTokenPrice.max": price + 10**12, "indexTokenPrice.min": price - 10**12,
            "collateralTokenPrice.max": USDC_MAX, "collateralTokenPrice.min": USDC_MIN,
            "sizeDeltaUsd": size_delta_usd, "sizeDeltaInTokens": size_delta_tokens,
            "orderType": order_type}
    if name == "PositionIncrease":
        uint["increasedAtTime"] = 1_712_000_000
        ints = {"collateralDeltaAmount": collateral_delta, "pendingPriceImpactUsd": -3 * USD,
                "pendingPriceImpactAmount": -6 * 10**14}
    else:
        uint |= {"collateralDeltaAmount": collateral_delta, "values.priceImpactDiffUsd": 0,
                 "decreasedAtTime": 1_712_000_000}
        ints = {"priceImpactUsd": 0, "basePnlUsd": pnl, "uncappedBasePnlUsd": pnl,
                "proportionalPendingImpactUsd": 0, "totalImpactUsd": 0}
    for old, new in (rename or {}).items():
        uint[new] = uint.pop(old)
    b32 = {"orderKey": order_key(t), "positionKey": key}
    if drop:
        b32.pop(drop)
    return event_log1(name, TRADER, t,
                      address={"account": TRADER, "market": market, "collateralToken": USDC},
                      uint=uint, int=ints, bool={"isLong": is_long}, bytes32=b32)


def fees(t: int, *, key: str = LONG, total_cost: int) -> dict:
    """PositionFeesCollected (topic1 = market) of order ``t``: ``total_cost`` USDC units."""
    uint = {"collateralTokenPrice.min": USDC_MIN, "collateralTokenPrice.max": USDC_MAX,
            "tradeSizeUsd": 1, "fundingFeeAmount": 0, "borrowingFeeUsd": 0,
            "positionFeeAmount": total_cost, "totalCostAmount": total_cost}
    return event_log1("PositionFeesCollected", MARKET, t,
                      address={"market": MARKET, "collateralToken": USDC, "trader": TRADER},
                      uint=uint, bool={"isIncrease": True},
                      bytes32={"orderKey": order_key(t), "positionKey": key,
                               "referralCode": "0x" + "00" * 32})


def ctx(markets: dict | None = None, decimals: dict | None = None) -> AdapterContext:
    return AdapterContext(
        42161, {"event_emitter": (EMITTER,)},
        markets={MARKET: (WETH, WETH, USDC)} if markets is None else markets,
        decimals={WETH: 18, USDC: 6} if decimals is None else decimals)


def test_open_increase_deposit_partial_decrease_and_close():
    logs = [
        # open long: 2 ETH at $5000 = $10,000, 1000 USDC deposited, 5 USDC of fees out of it
        fees(1, total_cost=5 * 10**6),
        position_event("PositionIncrease", 1, size_usd=10_000 * USD, size_tokens=2 * 10**18,
                       collateral=995 * 10**6, size_delta_usd=10_000 * USD,
                       size_delta_tokens=2 * 10**18, collateral_delta=1000 * 10**6,
                       order_type=2),
        # +1 ETH at $5500 ($5,500): 3 ETH for $15,500
        position_event("PositionIncrease", 2, size_usd=15_500 * USD, size_tokens=3 * 10**18,
                       collateral=992 * 10**6, size_delta_usd=5_500 * USD,
                       size_delta_tokens=10**18, collateral_delta=0, order_type=2,
                       price=5500 * 10**12),
        # collateral-only deposit of 500 USDC
        position_event("PositionIncrease", 3, size_usd=15_500 * USD, size_tokens=3 * 10**18,
                       collateral=1492 * 10**6, size_delta_usd=0, size_delta_tokens=0,
                       collateral_delta=500 * 10**6, order_type=2),
        # half closed at $6000: 1.5 ETH / $7,750 out, 200 USDC withdrawn, $1,250 realised
        position_event("PositionDecrease", 4, size_usd=7_750 * USD,
                       size_tokens=15 * 10**17, collateral=1292 * 10**6,
                       size_delta_usd=7_750 * USD, size_delta_tokens=15 * 10**17,
                       collateral_delta=200 * 10**6, order_type=4, price=6000 * 10**12,
                       pnl=1_250 * USD),
        # the rest closed at $4000 (loss of $1,550); all collateral out
        position_event("PositionDecrease", 5, size_usd=0, size_tokens=0, collateral=0,
                       size_delta_usd=7_750 * USD, size_delta_tokens=15 * 10**17,
                       collateral_delta=1292 * 10**6, order_type=4, price=4000 * 10**12,
                       pnl=-1_550 * USD),
    ]
    out = run("gmx_v2", logs, ctx())
    assert out.rejected == []
    got = rows(out.changes)
    common = {"position_key": LONG, "account": TRADER, "market": MARKET, "index_token": WETH,
              "collateral_token": USDC, "is_long": True, "index_decimals": 18,
              "collateral_decimals": 6}
    assert all(pick(r, common) == common for r in got)
    want = [
        {"row": 1, "kind": "increase", "size_delta": 10_000 * USD,
         "collateral_delta": 1000 * 10**6 * USDC_MIN, "size_after": 10_000 * USD,
         "collateral_after": 995 * 10**6 * USDC_MIN, "price": 5000 * USD,
         "fee": 5 * 10**6 * USDC_MIN, "realized_pnl": 0, "entry_price": 5000 * USD,
         "size_delta_tokens": 2 * 10**18, "size_after_tokens": 2 * 10**18,
         "collateral_delta_tokens": 1000 * 10**6, "collateral_after_tokens": 995 * 10**6},
        # entry = $15,500 / 3 ETH, in raw USD per whole ETH (truncated)
        {"row": 2, "kind": "increase", "size_delta": 5_500 * USD, "collateral_delta": 0,
         "size_after": 15_500 * USD, "price": 5500 * USD, "fee": 0,
         "entry_price": 15_500 * USD // 3, "size_delta_tokens": 10**18},
        {"row": 3, "kind": "increase", "size_delta": 0,
         "collateral_delta": 500 * 10**6 * USDC_MIN, "size_after": 15_500 * USD,
         "collateral_after": 1492 * 10**6 * USDC_MIN, "collateral_delta_tokens": 500 * 10**6},
        {"row": 4, "kind": "decrease", "size_delta": -7_750 * USD,
         "collateral_delta": -200 * 10**6 * USDC_MIN, "size_after": 7_750 * USD,
         "collateral_after": 1292 * 10**6 * USDC_MIN, "price": 6000 * USD,
         "realized_pnl": 1_250 * USD, "entry_price": 7_750 * USD * 10**18 // (15 * 10**17),
         "size_delta_tokens": -15 * 10**17, "size_after_tokens": 15 * 10**17,
         "collateral_delta_tokens": -200 * 10**6},
        {"row": 5, "kind": "close", "size_delta": -7_750 * USD,
         "collateral_delta": -1292 * 10**6 * USDC_MIN, "size_after": 0, "collateral_after": 0,
         "price": 4000 * USD, "realized_pnl": -1_550 * USD, "entry_price": 0,
         "size_after_tokens": 0},
    ]
    assert [pick(r, w) for r, w in zip(got, want, strict=True)] == want


def test_order_type_7_is_a_liquidation_and_a_stop_loss_close_is_not():
    def full_decrease(t: int, key: str, is_long: bool, order_type: int) -> dict:
        return position_event("PositionDecrease", t, key=key, is_long=is_long, size_usd=0,
                              size_tokens=0, collateral=0, size_delta_usd=9_000 * USD,
                              size_delta_tokens=18 * 10**17, collateral_delta=0,
                              order_type=order_type, pnl=-600 * USD)

    logs = [full_decrease(1, SHORT, False, 7), full_decrease(2, LONG, True, 6)]
    out = run("gmx_v2", logs, ctx())
    assert out.rejected == []
    got = [pick(r, {"position_key": 0, "kind": 0, "is_long": 0, "size_delta": 0,
                    "size_after": 0, "realized_pnl": 0}) for r in rows(out.changes)]
    assert got == [
        {"position_key": SHORT, "kind": "liquidation", "is_long": False,
         "size_delta": -9_000 * USD, "size_after": 0, "realized_pnl": -600 * USD},
        {"position_key": LONG, "kind": "close", "is_long": True, "size_delta": -9_000 * USD,
         "size_after": 0, "realized_pnl": -600 * USD},
    ]


def test_collateral_withdrawal_and_the_renamed_size_delta_key():
    """A PositionDecrease with no size change is a decrease (not a close); the short-lived
    key name ``baseSizeDeltaInTokens`` (protocols.md 2.4) is read like ``sizeDeltaInTokens``."""
    logs = [
        position_event("PositionDecrease", 1, size_usd=3_000 * USD, size_tokens=6 * 10**17,
                       collateral=250 * 10**6, size_delta_usd=0, size_delta_tokens=0,
                       collateral_delta=50 * 10**6, order_type=4),
        position_event("PositionDecrease", 2, size_usd=1_000 * USD, size_tokens=2 * 10**17,
                       collateral=250 * 10**6, size_delta_usd=2_000 * USD,
                       size_delta_tokens=4 * 10**17, collateral_delta=0, order_type=5,
                       rename={"sizeDeltaInTokens": "baseSizeDeltaInTokens"}),
    ]
    out = run("gmx_v2", logs, ctx())
    assert out.rejected == []
    got = [pick(r, {"kind": 0, "size_delta": 0, "collateral_delta_tokens": 0,
                    "size_delta_tokens": 0, "size_after_tokens": 0}) for r in rows(out.changes)]
    assert got == [
        {"kind": "decrease", "size_delta": 0, "collateral_delta_tokens": -50 * 10**6,
         "size_delta_tokens": 0, "size_after_tokens": 6 * 10**17},
        {"kind": "decrease", "size_delta": -2_000 * USD, "collateral_delta_tokens": 0,
         "size_delta_tokens": -4 * 10**17, "size_after_tokens": 2 * 10**17},
    ]


def test_fees_attach_only_to_the_same_order_and_position():
    logs = [
        fees(1, key=SHORT, total_cost=7 * 10**6),  # same transaction, other position
        position_event("PositionIncrease", 1, size_usd=1_000 * USD, size_tokens=2 * 10**17,
                       collateral=100 * 10**6, size_delta_usd=1_000 * USD,
                       size_delta_tokens=2 * 10**17, collateral_delta=100 * 10**6,
                       order_type=2),
        fees(2, total_cost=3 * 10**6),  # another transaction (and order)
    ]
    out = run("gmx_v2", logs, ctx())
    assert out.changes.fee == [0]


def test_market_created_in_the_batch_gives_the_index_token():
    btc_long = position_key(TRADER, BTC_MARKET, USDC, True)
    logs = [
        event_log1("MarketCreated", BTC_MARKET, 1,
                   address={"marketToken": BTC_MARKET, "indexToken": BTC, "longToken": BTC,
                            "shortToken": USDC},
                   bytes32={"salt": "0x" + "11" * 32, "marketType": "0x" + "22" * 32}),
        # 0.1 BTC at $60,000 (60000 x 10**(30 - 8) per satoshi)
        position_event("PositionIncrease", 2, key=btc_long, market=BTC_MARKET,
                       size_usd=6_000 * USD, size_tokens=10**7, collateral=600 * 10**6,
                       size_delta_usd=6_000 * USD, size_delta_tokens=10**7,
                       collateral_delta=600 * 10**6, order_type=2, price=60_000 * 10**22),
    ]
    decoded, meta = decode("gmx_v2", logs)
    # BTC's decimals are not known yet: the adapter asks for them
    assert gmx_v2.ADAPTER.tokens_needed is not None
    assert gmx_v2.ADAPTER.tokens_needed(decoded, meta, ctx(markets={}, decimals={USDC: 6})) \
        == [BTC]
    out = gmx_v2.ADAPTER.to_changes(decoded, meta, ctx(markets={}, decimals={BTC: 8, USDC: 6}))
    assert out.rejected == []
    m = out.markets
    assert (m.row, m.market, m.index_token, m.long_token, m.short_token) == (
        [0], [BTC_MARKET], [BTC], [BTC], [USDC])
    (r,) = rows(out.changes)
    want = {"position_key": btc_long, "market": BTC_MARKET, "index_token": BTC,
            "index_decimals": 8, "price": 60_000 * USD, "entry_price": 60_000 * USD,
            "size_after": 6_000 * USD}
    assert pick(r, want) == want


def test_unknown_index_decimals_leave_prices_null():
    logs = [position_event("PositionIncrease", 1, size_usd=1_000 * USD, size_tokens=2 * 10**17,
                           collateral=100 * 10**6, size_delta_usd=1_000 * USD,
                           size_delta_tokens=2 * 10**17, collateral_delta=100 * 10**6,
                           order_type=2)]
    out = run("gmx_v2", logs, ctx(decimals={USDC: 6}))
    (r,) = rows(out.changes)
    want = {"price": None, "entry_price": None, "index_decimals": None,
            "size_after": 1_000 * USD, "collateral_after": 100 * 10**6 * USDC_MIN}
    assert pick(r, want) == want


def test_position_event_missing_a_key_is_rejected():
    logs = [position_event("PositionIncrease", 1, size_usd=1, size_tokens=1, collateral=1,
                           size_delta_usd=1, size_delta_tokens=1, collateral_delta=1,
                           order_type=2, drop="positionKey")]
    out = run("gmx_v2", logs, ctx())
    assert len(out.changes) == 0
    assert [r for r, _ in out.rejected] == [0]
    assert "positionKey" in out.rejected[0][1]


def test_open_interest_updates():
    logs = [event_log1(name, MARKET, 1,
                       address={"market": MARKET, "collateralToken": USDC},
                       bool={"isLong": False}, int={"delta": -2 * 10**18 if tokens else -9 * USD},
                       uint={"nextValue": 5 * 10**18 if tokens else 40 * USD})
            for name, tokens in (("OpenInterestUpdated", False),
                                 ("OpenInterestInTokensUpdated", True))]
    out = run("gmx_v2", logs, ctx())
    oi = out.open_interest
    assert (oi.row, oi.market, oi.collateral_token, oi.is_long, oi.unit, oi.delta,
            oi.next_value) == ([0, 1], [MARKET] * 2, [USDC] * 2, [False] * 2, ["usd", "tokens"],
                               [-9 * USD, -2 * 10**18], [40 * USD, 5 * 10**18])


def test_log_filter_names_hash_to_the_documented_topics():
    """topics[1] = keccak256(eventName) (protocols.md 2.2 table)."""
    documented = {
        "PositionIncrease": "0xf94196ccb31f81a3e67df18f2a62cbfb50009c80a7d3c728a3f542e3abc5cb63",
        "PositionDecrease": "0x07d51b51b408d7c62dcc47cc558da5ce6a6e0fd129a427ebce150f52b0e5171a",
        "PositionFeesCollected":
            "0xe096982abd597114bdaa4a60612f87fabfcc7206aa12d61c50e7ba1e6c291100",
    }
    assert set(documented) <= set(gmx_v2.ADAPTER.event_names)
    assert {n: "0x" + keccak(n.encode()).hex() for n in documented} == documented
