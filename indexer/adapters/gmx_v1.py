"""GMX v1 Vault: decoded Vault events -> normalized position changes (pure).

How the Vault reports a position change (gmx-contracts ``Vault.sol``; protocols.md 1.3):

* increase: ``IncreasePosition`` then ``UpdatePosition`` (the new state) for the same key;
* partial decrease: ``DecreasePosition`` then ``UpdatePosition``;
* full close: ``DecreasePosition`` then ``ClosePosition``, then the position is deleted;
* liquidation: ``LiquidatePosition`` alone; or, when max leverage is exceeded but collateral
  remains, the Vault closes the position itself: ``DecreasePosition`` + ``ClosePosition`` in a
  transaction calling ``liquidatePosition`` (selector ``0xde2ea948``). Both are kind
  ``liquidation`` here; the second is told apart from a trader's close only by that selector.

Sizes, collateral, prices, fees and PnL are USD x 1e30. The state after each change is taken from
the Vault's own ``UpdatePosition`` / ``ClosePosition`` values, never recomputed.
"""

from __future__ import annotations

from typing import Any

from indexer.adapters.base import Adapter, AdapterContext
from indexer.types import AdapterOutput, ChangeColumns, Decoded, FundingColumns, LogMeta

EVENTS = ("IncreasePosition", "DecreasePosition", "LiquidatePosition", "UpdatePosition",
          "ClosePosition", "UpdateFundingRate")
#: ``liquidatePosition(address,address,address,bool,address)``.
LIQUIDATE_SELECTOR = "0xde2ea948"



def transactions_needed(decoded: Decoded, meta: LogMeta) -> list[str]:
    """Transactions of full closes: their selector says whether the Vault liquidated."""
    rows = [r for cols in decoded.events.get("ClosePosition", []) for r in cols.rows]
    return sorted({meta.tx_hash[r] for r in rows})


#: Position events in the order of their codes below: opens (0, 1), then closes (2, 3).
_PAIRED = ("IncreasePosition", "DecreasePosition", "UpdatePosition", "ClosePosition")


def to_changes(decoded: Decoded, meta: LogMeta, ctx: AdapterContext) -> AdapterOutput:
    """Column by column: funding and liquidations are copied over whole; an Increase/Decrease
    is paired with the Update/ClosePosition of its key in its transaction in one pass over the
    events in chain order, then the pairs become columns."""
    changes, funding, rejected = ChangeColumns(), FundingColumns(), []
    for cols in decoded.events.get("UpdateFundingRate", []):
        funding.row += cols.rows
        funding.market += cols.fields["token"]
        funding.rate += cols.fields["fundingRate"]
        funding.index += [None] * len(cols.rows)
        funding.current_rate += [None] * len(cols.rows)
    for cols in decoded.events.get("LiquidatePosition", []):
        f, n = cols.fields, len(cols.rows)
        changes.extend(
            row=cols.rows, position_key=f["key"], account=f["account"], market=f["indexToken"],
            index_token=f["indexToken"], collateral_token=f["collateralToken"],
            is_long=f["isLong"], kind=["liquidation"] * n, size_delta=[-v for v in f["size"]],
            collateral_delta=[-v for v in f["collateral"]], size_after=[0] * n,
            collateral_after=[0] * n, price=f["markPrice"], fee=[0] * n,
            realized_pnl=f["realisedPnl"], entry_price=[0] * n)

    events: list[tuple[int, int, dict[str, list[Any]], int]] = []
    for code, name in enumerate(_PAIRED):
        for cols in decoded.events.get(name, []):
            f = cols.fields
            events += [(row, code, f, i) for i, row in enumerate(cols.rows)]
    events.sort(key=lambda e: e[0])
    tx_hash = meta.tx_hash
    #: (tx, key) -> the Increase/DecreasePosition waiting for its Update/ClosePosition.
    pending: dict[tuple[str, str], tuple[int, int, dict[str, list[Any]], int]] = {}
    opens: list[tuple[int, int, dict[str, list[Any]], int]] = []
    states: list[tuple[dict[str, list[Any]], int]] = []
    kinds: list[str] = []
    for event in events:
        row, code, f, i = event
        tx = tx_hash[row]
        k = (tx, f["key"][i])
        if code < 2:
            previous = pending.pop(k, None)
            if previous is not None:
                rejected.append((previous[0], (f"{_PAIRED[previous[1]]} without UpdatePosition/"
                                               "ClosePosition before the next change of its key")))
            pending[k] = event
            continue
        opening = pending.pop(k, None)
        if opening is None:
            rejected.append((row, (f"{_PAIRED[code]} without a preceding Increase/DecreasePosition "
                                   "of the same key in its transaction")))
            continue
        if code == 3:  # ClosePosition
            if opening[1] != 1:
                rejected.append((row, "ClosePosition after IncreasePosition"))
                continue
            tx_obj = ctx.transactions.get(tx)
            if tx_obj is None:
                rejected.append((row, f"transaction {tx} of a full close was not fetched"))
                continue
            by_vault = (tx_obj.get("input") or "")[:10].lower() == LIQUIDATE_SELECTOR
            kinds.append("liquidation" if by_vault else "close")
        else:
            kinds.append("increase" if opening[1] == 0 else "decrease")
        opens.append(opening)
        states.append((f, i))
    for o_row, o_code, _, _ in pending.values():
        rejected.append((o_row, (f"{_PAIRED[o_code]} without UpdatePosition/ClosePosition in "
                                 "its transaction")))

    def opened(name: str) -> list[Any]:
        return [f[name][i] for _, _, f, i in opens]

    def after(name: str) -> list[Any]:
        return [f[name][i] for f, i in states]

    open_ = [k in ("increase", "decrease") for k in kinds]
    sign = [1 if code == 0 else -1 for _, code, _, _ in opens]
    market = opened("indexToken")
    changes.extend(
        row=[o[0] for o in opens], position_key=opened("key"), account=opened("account"),
        market=market, index_token=market, collateral_token=opened("collateralToken"),
        is_long=opened("isLong"), kind=kinds,
        size_delta=[s * v for s, v in zip(sign, opened("sizeDelta"), strict=True)],
        collateral_delta=[s * v for s, v in zip(sign, opened("collateralDelta"), strict=True)],
        size_after=[v if o else 0 for o, v in zip(open_, after("size"), strict=True)],
        collateral_after=[v if o else 0 for o, v in zip(open_, after("collateral"), strict=True)],
        price=opened("price"), fee=opened("fee"), realized_pnl=after("realisedPnl"),
        entry_price=[v if o else 0 for o, v in zip(open_, after("averagePrice"), strict=True)],
        funding_entry=[v if o else None
                       for o, v in zip(open_, after("entryFundingRate"), strict=True)])
    changes.sort_by_row()
    return AdapterOutput(changes, funding, sorted(rejected))


#: Raw USD amounts and prices are scaled by 1e30 (Vault.PRICE_PRECISION).
#: The Vault's liquidation rule reads three settings whose setters emit nothing.
ADAPTER = Adapter(roles=("vault",), events=EVENTS, usd_decimals=30, to_changes=to_changes,
                  transactions_needed=transactions_needed,
                  parameters=(("vault", "marginFeeBasisPoints"), ("vault", "liquidationFeeUsd"),
                              ("vault", "maxLeverage")))
