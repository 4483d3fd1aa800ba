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

from indexer.adapters.base import AdapterContext, EventRow, event_rows
from indexer.types import AdapterOutput, ChangeColumns, Decoded, FundingColumns, LogMeta

ROLES = ("vault",)
EVENTS = ("IncreasePosition", "DecreasePosition", "LiquidatePosition", "UpdatePosition",
          "ClosePosition", "UpdateFundingRate")
#: Raw USD amounts and prices are scaled by 1e30 (Vault.PRICE_PRECISION).
USD_DECIMALS = 30
#: ``liquidatePosition(address,address,address,bool,address)``.
LIQUIDATE_SELECTOR = "0xde2ea948"



def transactions_needed(decoded: Decoded, meta: LogMeta) -> list[str]:
    """Transactions of full closes: their selector says whether the Vault liquidated."""
    rows = [r for cols in decoded.events.get("ClosePosition", []) for r in cols.rows]
    return sorted({meta.tx_hash[r] for r in rows})


def to_changes(decoded: Decoded, meta: LogMeta, ctx: AdapterContext) -> AdapterOutput:
    changes, funding, rejected = ChangeColumns(), FundingColumns(), []
    #: (tx, key) -> the Increase/DecreasePosition waiting for its Update/ClosePosition.
    pending: dict[tuple[str, str], EventRow] = {}
    for row, name, f in event_rows(decoded, EVENTS):
        tx = meta.tx_hash[row]
        if name == "UpdateFundingRate":
            funding.row.append(row)
            funding.market.append(f["token"])
            funding.rate.append(f["fundingRate"])
        elif name in ("IncreasePosition", "DecreasePosition"):
            previous = pending.pop((tx, f["key"]), None)
            if previous is not None:
                rejected.append((previous[0], (f"{previous[1]} without UpdatePosition/"
                                               "ClosePosition before the next change of its key")))
            pending[(tx, f["key"])] = (row, name, f)
        elif name == "LiquidatePosition":
            changes.append(
                row=row, position_key=f["key"], account=f["account"], market=f["indexToken"],
                index_token=f["indexToken"],
                collateral_token=f["collateralToken"], is_long=f["isLong"], kind="liquidation",
                size_delta=-f["size"], collateral_delta=-f["collateral"], size_after=0,
                collateral_after=0, price=f["markPrice"], fee=0, realized_pnl=f["realisedPnl"],
                entry_price=0)
        else:  # UpdatePosition / ClosePosition: the state after the pending change
            opening = pending.pop((tx, f["key"]), None)
            if opening is None:
                rejected.append((row, (f"{name} without a preceding Increase/DecreasePosition "
                                       "of the same key in its transaction")))
                continue
            o_row, o_name, o = opening
            closing = name == "ClosePosition"
            if closing and o_name != "DecreasePosition":
                rejected.append((row, "ClosePosition after IncreasePosition"))
                continue
            if closing:
                tx_obj = ctx.transactions.get(tx)
                if tx_obj is None:
                    rejected.append((row, f"transaction {tx} of a full close was not fetched"))
                    continue
                by_vault = (tx_obj.get("input") or "")[:10].lower() == LIQUIDATE_SELECTOR
                kind = "liquidation" if by_vault else "close"
            else:
                kind = "increase" if o_name == "IncreasePosition" else "decrease"
            sign = 1 if o_name == "IncreasePosition" else -1
            changes.append(
                row=o_row, position_key=o["key"], account=o["account"], market=o["indexToken"],
                index_token=o["indexToken"],
                collateral_token=o["collateralToken"], is_long=o["isLong"], kind=kind,
                size_delta=sign * o["sizeDelta"], collateral_delta=sign * o["collateralDelta"],
                size_after=0 if closing else f["size"],
                collateral_after=0 if closing else f["collateral"],
                price=o["price"], fee=o["fee"], realized_pnl=f["realisedPnl"],
                entry_price=0 if closing else f["averagePrice"])
    for o_row, o_name, _ in pending.values():
        rejected.append((o_row, f"{o_name} without UpdatePosition/ClosePosition in its transaction"))
    return AdapterOutput(changes, funding, sorted(rejected))
