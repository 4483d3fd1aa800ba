"""Synthetix Perps v2 (Optimism): decoded market and manager events -> normalized changes (pure).

Each market is its own proxy contract emitting its events; the FuturesMarketManager announces
markets with ``MarketAdded``, so markets are found at run time (``markets_added``): the fetch stage
fetches a new market's logs from the block that added it. A position is (market, account);
its key is ``keccak256(abi.encode(market, account))``. What becomes what (protocols.md 3):

* ``PositionModified`` (both versions, with and without ``skew``): one ledger row. It carries
  the position's signed size after (``size``, + long / - short, base units 1e18), the trade
  (``tradeSize``) and the margin after, so the state is never recomputed; kind from the sizes
  before (``size - tradeSize``) and after (a flip is one ``increase`` of the new side). A margin
  transfer on an open position (``tradeSize`` 0) is an increase / decrease of size 0 by the
  direction of the margin change. Margin movements while the account has no position are not
  position changes and add no row.
* ``PositionLiquidated`` (both versions; and perps v1's with indexed arguments): a
  ``liquidation`` row of the liquidated size at the liquidation price, the fees summed. The
  market also emits a ``PositionModified`` with size 0 just before it in the same transaction;
  that one is folded into the liquidation row.
* ``FundingRecomputed``: the market's cumulative ``funding`` per base unit, in
  ``funding_updates``.
* ``MarketAdded``: the market proxy and its ``marketKey`` (e.g. ``sETHPERP``) as its name.
* PerpsV2MarketSettings' ``ParameterUpdated`` (per market key) and global fee events (from the
  optional ``market_settings`` contract): ``protocol_parameters`` rows, as emitted (1e18).

Units: 1e18 throughout (sUSD counted as USD). USD size is the size at the change's
``lastPrice`` (the fill price), the convention of protocols tracking size in tokens. The
collateral columns hold the position's margin (sUSD, no token address recorded); margin left in
the market after a close or while no position is open belongs to no position (collateral 0 on
the closing row; the next opening's collateral delta is its whole margin). Realised PnL and
entry price are not reported by the events and stay NULL.
"""

from __future__ import annotations

from indexer.adapters.base import (
    Adapter,
    AdapterContext,
    address_pair_key,
    at_price,
    event_rows,
    signed_change,
)
from indexer.types import AdapterOutput, Change, ChangeColumns, Decoded, FundingColumns, LogMeta

#: PerpsV2MarketSettings' global settings events -> the parameter names stored.
GLOBAL_SETTINGS = {"MinKeeperFeeUpdated": "minKeeperFee", "MaxKeeperFeeUpdated": "maxKeeperFee",
                   "LiquidationFeeRatioUpdated": "liquidationFeeRatio",
                   "KeeperLiquidationFeeUpdated": "keeperLiquidationFee"}
EVENTS = ("PositionModified", "PositionLiquidated", "FundingRecomputed", "MarketAdded",
          "ParameterUpdated", *GLOBAL_SETTINGS)
BASE_DECIMALS = 18


def markets_added(decoded: Decoded, meta: LogMeta) -> list[tuple[int, str]]:
    return [(row, f["market"]) for row, _, f in event_rows(decoded, ("MarketAdded",))]


def keys_needed(decoded: Decoded, meta: LogMeta) -> list[str]:
    """Positions whose margin before the batch is needed for the margin deltas."""
    rows = event_rows(decoded, ("PositionModified", "PositionLiquidated"))
    return sorted({address_pair_key(meta.address[r], f["account"]) for r, _, f in rows})


def _key_name(word: str) -> str:
    """A bytes32 ``marketKey`` as text (``sETHPERP``); hex where it is not printable ASCII."""
    raw = bytes.fromhex(word[2:]).rstrip(b"\0")
    text = raw.decode("ascii", "replace")
    return text if text.isprintable() and "\ufffd" not in text else word


def to_changes(decoded: Decoded, meta: LogMeta, ctx: AdapterContext) -> AdapterOutput:
    out = AdapterOutput(ChangeColumns(), FundingColumns(), [])
    rows = event_rows(decoded, EVENTS)
    liquidations = {(meta.tx_hash[r], meta.address[r], f["account"])
                    for r, name, f in rows if name == "PositionLiquidated"}
    #: key -> margin after the latest change (0 while the account holds no position).
    margin = {k: p.collateral or 0 for k, p in ctx.previous.items()}
    for row, name, f in rows:
        market = meta.address[row]
        if name == "ParameterUpdated":
            out.parameters.append((row, _key_name(f["marketKey"]), _key_name(f["parameter"]),
                                   f["value"]))
            continue
        if name in GLOBAL_SETTINGS:
            (value,) = f.values()
            out.parameters.append((row, None, GLOBAL_SETTINGS[name], value))
            continue
        if name == "MarketAdded":
            out.markets.append(row, f["market"], name=_key_name(f["marketKey"]))
            continue
        if name == "FundingRecomputed":
            out.funding.append(row, market, f["funding"], f["index"], f.get("fundingRate"))
            continue
        account = f["account"]
        key = address_pair_key(market, account)
        if name == "PositionLiquidated":
            before, after, price = f["size"], 0, f["price"]
            fee = f["fee"] if "fee" in f else (
                f["flaggerFee"] + f["liquidatorFee"] + f["stakersFee"])
            kind, is_long, delta = "liquidation", before > 0, -abs(before)
            margin_after, funding_entry = 0, None
        else:  # PositionModified
            after, trade = f["size"], f["tradeSize"]
            before = after - trade
            if after == 0 and trade == 0 and (meta.tx_hash[row], market, account) in liquidations:
                continue  # the liquidation's own PositionModified: the liquidation row has it
            if before == 0 and after == 0:  # margin moved while no position is open
                continue
            margin_after = f["margin"] if after else 0
            price, fee = f["lastPrice"], f["fee"]
            funding_entry = f["fundingIndex"] if after else None
            kind, is_long, delta = signed_change(before, after)
            if trade == 0:
                kind = "increase" if margin_after >= margin.get(key, 0) else "decrease"
        margin_before = margin.get(key, 0)
        margin[key] = margin_after
        out.changes.add(Change(
            row=row, position_key=key, account=account, market=market, index_token=None,
            collateral_token=None, is_long=is_long, kind=kind,
            size_delta=at_price(delta, price, BASE_DECIMALS),
            collateral_delta=margin_after - margin_before,
            size_after=at_price(abs(after), price, BASE_DECIMALS), collateral_after=margin_after,
            price=price, fee=fee, realized_pnl=None, entry_price=None,
            size_delta_tokens=delta, size_after_tokens=abs(after), index_decimals=BASE_DECIMALS,
            funding_entry=funding_entry))
    return out


#: Markets are contracts announced by ``MarketAdded`` (``markets_added``): their logs are
#: fetched too.
#: The optional ``market_settings`` contract (PerpsV2MarketSettings) gives the parameters of the
#: liquidation rule (``position_risk``).
ADAPTER = Adapter(roles=("futures_market_manager",), events=EVENTS, usd_decimals=18,
                  to_changes=to_changes, keys_needed=keys_needed, markets_added=markets_added,
                  optional_roles=("market_settings",))
