"""GMX v1 adapter on golden Vault logs.

Rules (gmx-contracts ``Vault.sol`` @fe55c4b; shared/protocols.md 1.2-1.3; the GMX v1 recording's
README "How the truth relates to the events"):

* increase = ``IncreasePosition`` + ``UpdatePosition`` (state after); partial decrease =
  ``DecreasePosition`` + ``UpdatePosition``; full close = ``DecreasePosition`` +
  ``ClosePosition`` (the pre-delete state: ``size`` is the size closed);
* ``LiquidatePosition`` alone removes the position (its size/collateral are those just before);
* ``DecreasePosition`` + ``ClosePosition`` in a transaction calling the Vault's
  ``liquidatePosition`` (selector 0xde2ea948) is a liquidation by the Vault (ClosedByLiquidator);
* key = keccak256(abi.encodePacked(account, collateralToken, indexToken, isLong)) (61 bytes);
* USD amounts and prices x 1e30; collateralDelta is USD.
"""

from __future__ import annotations

from indexer.adapters import gmx_v1
from indexer.adapters.base import AdapterContext
from tests.unit.chainlogs import addr, decode, ev, keccak, pick, rows, run, tx

USD = 10**30
VAULT = addr("5a")
TRADER = addr("a1")
OTHER = addr("a2")
WETH = addr("e7")
USDC = addr("c6")

INCREASE = ("IncreasePosition(bytes32 key, address account, address collateralToken, "
            "address indexToken, uint256 collateralDelta, uint256 sizeDelta, bool isLong, "
            "uint256 price, uint256 fee)")
DECREASE = INCREASE.replace("IncreasePosition", "DecreasePosition")
LIQUIDATE = ("LiquidatePosition(bytes32 key, address account, address collateralToken, "
             "address indexToken, bool isLong, uint256 size, uint256 collateral, "
             "uint256 reserveAmount, int256 realisedPnl, uint256 markPrice)")
#: Avalanche / the devnet recording: 8 arguments, with markPrice.
UPDATE = ("UpdatePosition(bytes32 key, uint256 size, uint256 collateral, uint256 averagePrice, "
          "uint256 entryFundingRate, uint256 reserveAmount, int256 realisedPnl, "
          "uint256 markPrice)")
#: Arbitrum: 7 arguments, no markPrice (protocols.md 1.2).
UPDATE_ARBITRUM = UPDATE.replace(", uint256 markPrice", "")
CLOSE = ("ClosePosition(bytes32 key, uint256 size, uint256 collateral, uint256 averagePrice, "
         "uint256 entryFundingRate, uint256 reserveAmount, int256 realisedPnl)")
FUNDING = "UpdateFundingRate(address token, uint256 fundingRate)"

#: Calldata selectors (shared/data/gmx_v1_devnet/README.md).
VAULT_LIQUIDATE = "0xde2ea948"  # Vault.liquidatePosition(address,address,address,bool,address)
ROUTER_DECREASE = "0x90205d8c"  # Router.decreasePosition(...)


def position_key(account: str, collateral: str, index: str, is_long: bool) -> str:
    packed = (bytes.fromhex(account[2:]) + bytes.fromhex(collateral[2:])
              + bytes.fromhex(index[2:]) + bytes([is_long]))
    assert len(packed) == 61
    return "0x" + keccak(packed).hex()


LONG_KEY = position_key(TRADER, WETH, WETH, True)
SHORT_KEY = position_key(TRADER, USDC, WETH, False)


def ctx(**transactions: str) -> AdapterContext:
    """``transactions``: tx hash -> its input's selector."""
    return AdapterContext(31337, {"vault": (VAULT,)},
                          transactions={h: {"input": sel + "00" * 32} for h, sel in transactions.items()})


def opened(name: str, t: int, key: str = LONG_KEY, *, collateral_delta: int, size_delta: int,
           price: int, fee: int, is_long: bool = True, collateral: str = WETH,
           account: str = TRADER) -> dict:
    return ev(INCREASE if name == "increase" else DECREASE, VAULT, t, key=key, account=account,
              collateralToken=collateral, indexToken=WETH, collateralDelta=collateral_delta,
              sizeDelta=size_delta, isLong=is_long, price=price, fee=fee)


def update(t: int, key: str = LONG_KEY, *, size: int, collateral: int, average: int,
           pnl: int = 0, legacy: bool = False) -> dict:
    values = dict(key=key, size=size, collateral=collateral, averagePrice=average,
                  entryFundingRate=1234, reserveAmount=10**18, realisedPnl=pnl)
    if legacy:
        return ev(UPDATE_ARBITRUM, VAULT, t, **values)
    return ev(UPDATE, VAULT, t, markPrice=average, **values)


def close(t: int, key: str = LONG_KEY, *, size: int, collateral: int, pnl: int) -> dict:
    return ev(CLOSE, VAULT, t, key=key, size=size, collateral=collateral, averagePrice=3200 * USD,
              entryFundingRate=1234, reserveAmount=10**18, realisedPnl=pnl)


def test_open_increase_partial_decrease_and_close_of_a_long():
    logs = [
        # open: $1,000 collateral, $10,000 size at $3,100, fee $10 (taken from the collateral)
        opened("increase", 1, collateral_delta=1000 * USD, size_delta=10_000 * USD,
               price=3100 * USD, fee=10 * USD),
        update(1, size=10_000 * USD, collateral=990 * USD, average=3100 * USD),
        # increase by $5,000 at $3,300 (no collateral added): average 3166.67
        opened("increase", 2, collateral_delta=0, size_delta=5000 * USD, price=3300 * USD,
               fee=5 * USD),
        update(2, size=15_000 * USD, collateral=985 * USD, average=3166 * USD),
        # partial decrease: $6,000 of size and $100 of collateral out, $40 realised
        opened("decrease", 3, collateral_delta=100 * USD, size_delta=6000 * USD,
               price=3200 * USD, fee=6 * USD),
        update(3, size=9000 * USD, collateral=879 * USD, average=3166 * USD, pnl=40 * USD),
        # full close by the trader through the Router
        opened("decrease", 4, collateral_delta=0, size_delta=9000 * USD, price=3250 * USD,
               fee=9 * USD),
        close(4, size=9000 * USD, collateral=879 * USD, pnl=280 * USD),
    ]
    out = run("gmx_v1", logs, ctx(**{tx(4): ROUTER_DECREASE}))
    assert out.rejected == []
    got = rows(out.changes)
    assert [r["row"] for r in got] == [0, 2, 4, 6]  # keyed by the Increase/Decrease log
    common = {"position_key": LONG_KEY, "account": TRADER, "market": WETH, "index_token": WETH,
              "collateral_token": WETH, "is_long": True}
    assert all(pick(r, common) == common for r in got)
    want = [
        {"kind": "increase", "size_delta": 10_000 * USD, "collateral_delta": 1000 * USD,
         "size_after": 10_000 * USD, "collateral_after": 990 * USD, "price": 3100 * USD,
         "fee": 10 * USD, "realized_pnl": 0, "entry_price": 3100 * USD},
        {"kind": "increase", "size_delta": 5000 * USD, "collateral_delta": 0,
         "size_after": 15_000 * USD, "collateral_after": 985 * USD, "price": 3300 * USD,
         "fee": 5 * USD, "realized_pnl": 0, "entry_price": 3166 * USD},
        {"kind": "decrease", "size_delta": -6000 * USD, "collateral_delta": -100 * USD,
         "size_after": 9000 * USD, "collateral_after": 879 * USD, "price": 3200 * USD,
         "fee": 6 * USD, "realized_pnl": 40 * USD, "entry_price": 3166 * USD},
        # ClosePosition carries the size closed; the position is 0 afterwards
        {"kind": "close", "size_delta": -9000 * USD, "collateral_delta": 0, "size_after": 0,
         "collateral_after": 0, "price": 3250 * USD, "fee": 9 * USD,
         "realized_pnl": 280 * USD, "entry_price": 0},
    ]
    assert [pick(r, w) for r, w in zip(got, want, strict=True)] == want


def test_arbitrum_update_position_without_mark_price_pairs_the_same():
    logs = [opened("increase", 1, collateral_delta=500 * USD, size_delta=2000 * USD,
                   price=3000 * USD, fee=2 * USD),
            update(1, size=2000 * USD, collateral=498 * USD, average=3000 * USD, legacy=True)]
    out = run("gmx_v1", logs, ctx())
    assert out.rejected == []
    (r,) = rows(out.changes)
    assert pick(r, {"kind": "increase", "size_after": 0, "collateral_after": 0}) == {
        "kind": "increase", "size_after": 2000 * USD, "collateral_after": 498 * USD}


def test_liquidate_position_event():
    logs = [ev(LIQUIDATE, VAULT, 7, key=SHORT_KEY, account=TRADER, collateralToken=USDC,
               indexToken=WETH, isLong=False, size=8000 * USD, collateral=150 * USD,
               reserveAmount=8000 * 10**6, realisedPnl=-120 * USD, markPrice=3400 * USD)]
    out = run("gmx_v1", logs, ctx())
    assert out.rejected == []
    (r,) = rows(out.changes)
    want = {"kind": "liquidation", "position_key": SHORT_KEY, "account": TRADER, "market": WETH,
            "collateral_token": USDC, "is_long": False, "size_delta": -8000 * USD,
            "collateral_delta": -150 * USD, "size_after": 0, "collateral_after": 0,
            "price": 3400 * USD, "realized_pnl": -120 * USD}
    assert pick(r, want) == want


def test_close_in_a_vault_liquidate_position_call_is_a_liquidation():
    """ClosedByLiquidator: same logs as a trader's close, told apart only by the selector."""
    def full_close(t: int) -> list[dict]:
        return [opened("decrease", t, SHORT_KEY, collateral_delta=0, size_delta=4000 * USD,
                       price=3500 * USD, fee=4 * USD, is_long=False, collateral=USDC),
                close(t, SHORT_KEY, size=4000 * USD, collateral=60 * USD, pnl=-300 * USD)]

    logs = full_close(8) + full_close(9)
    decoded, meta = decode("gmx_v1", logs)
    # the adapter asks for exactly the transactions of full closes
    assert gmx_v1.ADAPTER.transactions_needed is not None
    assert gmx_v1.ADAPTER.transactions_needed(decoded, meta) == [tx(8), tx(9)]
    out = gmx_v1.ADAPTER.to_changes(decoded, meta, ctx(**{tx(8): VAULT_LIQUIDATE,
                                                          tx(9): ROUTER_DECREASE}))
    assert out.rejected == []
    got = rows(out.changes)
    assert [r["kind"] for r in got] == ["liquidation", "close"]
    for r in got:
        assert pick(r, {"is_long": 0, "size_delta": 0, "size_after": 0, "collateral_after": 0,
                        "realized_pnl": 0}) == {
            "is_long": False, "size_delta": -4000 * USD, "size_after": 0, "collateral_after": 0,
            "realized_pnl": -300 * USD}


def test_full_close_without_its_transaction_is_rejected():
    logs = [opened("decrease", 5, collateral_delta=0, size_delta=1000 * USD, price=3000 * USD,
                   fee=1 * USD),
            close(5, size=1000 * USD, collateral=100 * USD, pnl=0)]
    out = run("gmx_v1", logs, ctx())  # the transaction was not fetched
    assert len(out.changes) == 0
    assert [r for r, _ in out.rejected] == [1]
    assert "not fetched" in out.rejected[0][1]


def test_unpaired_events_are_rejected_with_a_reason():
    logs = [
        # UpdatePosition with no Increase/DecreasePosition before it in its transaction
        update(1, size=1000 * USD, collateral=100 * USD, average=3000 * USD),
        # IncreasePosition whose UpdatePosition is in another transaction
        opened("increase", 2, collateral_delta=100 * USD, size_delta=1000 * USD,
               price=3000 * USD, fee=1 * USD),
        update(3, size=1000 * USD, collateral=99 * USD, average=3000 * USD),
        # ClosePosition after an IncreasePosition (a close follows a decrease only)
        opened("increase", 4, collateral_delta=100 * USD, size_delta=1000 * USD,
               price=3000 * USD, fee=1 * USD),
        close(4, size=1000 * USD, collateral=99 * USD, pnl=0),
    ]
    out = run("gmx_v1", logs, ctx(**{tx(4): ROUTER_DECREASE}))
    assert len(out.changes) == 0
    reasons = dict(out.rejected)
    assert sorted(reasons) == [0, 1, 2, 4]
    assert "without a preceding Increase/DecreasePosition" in reasons[0]
    assert "IncreasePosition without UpdatePosition/ClosePosition" in reasons[1]
    assert "without a preceding" in reasons[2]
    assert "ClosePosition after IncreasePosition" in reasons[4]


def test_two_positions_changed_in_one_transaction_pair_by_key():
    """A contract changing two positions in one transaction: each Update pairs with its key."""
    other_key = position_key(OTHER, USDC, WETH, False)
    logs = [
        opened("increase", 1, collateral_delta=100 * USD, size_delta=1000 * USD,
               price=3000 * USD, fee=1 * USD),
        opened("increase", 1, other_key, collateral_delta=200 * USD, size_delta=3000 * USD,
               price=2999 * USD, fee=3 * USD, is_long=False, collateral=USDC, account=OTHER),
        update(1, other_key, size=3000 * USD, collateral=197 * USD, average=2999 * USD),
        update(1, size=1000 * USD, collateral=99 * USD, average=3000 * USD),
    ]
    out = run("gmx_v1", logs, ctx())
    assert out.rejected == []
    got = [pick(r, {"position_key": 0, "account": 0, "is_long": 0, "size_after": 0,
                    "collateral_after": 0}) for r in rows(out.changes)]
    assert got == [
        {"position_key": LONG_KEY, "account": TRADER, "is_long": True, "size_after": 1000 * USD,
         "collateral_after": 99 * USD},
        {"position_key": other_key, "account": OTHER, "is_long": False,
         "size_after": 3000 * USD, "collateral_after": 197 * USD},
    ]


def test_two_increases_of_one_key_in_one_transaction():
    logs = [
        opened("increase", 1, collateral_delta=100 * USD, size_delta=1000 * USD,
               price=3000 * USD, fee=1 * USD),
        update(1, size=1000 * USD, collateral=99 * USD, average=3000 * USD),
        opened("increase", 1, collateral_delta=0, size_delta=2000 * USD, price=3000 * USD,
               fee=2 * USD),
        update(1, size=3000 * USD, collateral=97 * USD, average=3000 * USD),
    ]
    out = run("gmx_v1", logs, ctx())
    assert out.rejected == []
    assert [pick(r, {"row": 0, "size_delta": 0, "size_after": 0}) for r in rows(out.changes)] == [
        {"row": 0, "size_delta": 1000 * USD, "size_after": 1000 * USD},
        {"row": 2, "size_delta": 2000 * USD, "size_after": 3000 * USD}]


def test_funding_rate_updates():
    logs = [ev(FUNDING, VAULT, 1, token=WETH, fundingRate=4_200),
            ev(FUNDING, VAULT, 2, token=USDC, fundingRate=17)]
    out = run("gmx_v1", logs, ctx())
    assert (out.funding.row, out.funding.market, out.funding.rate) == (
        [0, 1], [WETH, USDC], [4_200, 17])
    assert len(out.changes) == 0
