"""Perpetual Protocol v2 "Curie" ClearingHouse: decoded events -> normalized changes (pure).

A taker position is (trader, base token). ``PositionChanged`` carries only the trade
(``exchangedPositionSize``, signed: + buys base, i.e. goes long) and the position's open
notional after it, so the size after a change is the size before plus the exchanged size: the
state before a batch comes from the store (``keys_needed`` / ``ctx.previous``) and is threaded
through the batch in chain order. What becomes what (protocols.md 6):

* ``PositionChanged``: one ledger row; kind from the sizes before and after (a flip from long to
  short is one ``increase`` of the new side, see ``signed_change``).
* A liquidation is two ``PositionChanged`` in one transaction, the trader's (size reduced) and
  the liquidator's (taking the position over), then ``PositionLiquidated``: the trader's row
  is kind ``liquidation``; the liquidator's is an ordinary change of the liquidator's position.
  ``PositionLiquidated`` itself adds no row (its size is already in the trader's change).
* ``PositionClosed`` (``quitMarket`` on a closed market): the position goes to 0, kind
  ``close``.

Units: all amounts are 1e18 (base tokens and the quote, USD). The price of a change is its
average execution price ``|exchangedPositionNotional| / |exchangedPositionSize|`` (the pool's
price after the swap, from ``sqrtPriceAfterX96``, when no size was exchanged). USD size is the
base size at that price, the convention of protocols tracking size in tokens; the exact size in
base tokens is in the token columns. Entry price is ``|openNotional| / |size|``. Realised PnL is
cumulative per position (the sum of the changes' ``realizedPnl``). Margin is account-wide in
Perp v2 (the Vault), so the collateral columns are NULL. Maker (liquidity) positions move with
other traders' swaps without ``PositionChanged`` and are not covered.
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

EVENTS = ("PositionChanged", "PositionLiquidated", "PositionClosed")
#: vTokens (base and quote) all have 18 decimals.
BASE_DECIMALS = 18
_ONE = 10**18
#: AccountBalance._DUST: taker sizes below it are 0 to the protocol.
DUST = 10


def keys_needed(decoded: Decoded, meta: LogMeta) -> list[str]:
    """Every position a PositionChanged / PositionClosed of the batch touches."""
    keys: set[str] = set()
    for name in ("PositionChanged", "PositionClosed"):
        for cols in decoded.events.get(name, []):
            keys.update(map(address_pair_key, cols.fields["trader"], cols.fields["baseToken"]))
    return sorted(keys)


def _sqrt_price(sqrt_x96: int) -> int:
    """Price 1e18 from a Uniswap v3 ``sqrtPriceX96`` (quote per base, both 18 decimals)."""
    return sqrt_x96 * sqrt_x96 * _ONE >> 192


def to_changes(decoded: Decoded, meta: LogMeta, ctx: AdapterContext) -> AdapterOutput:
    changes, rejected = ChangeColumns(), []
    rows = event_rows(decoded, EVENTS)
    #: (tx, trader, base token) of every PositionLiquidated, and whether a change matched it.
    liquidated = {(meta.tx_hash[r], f["trader"], f["baseToken"]): r
                  for r, name, f in rows if name == "PositionLiquidated"}
    matched: set[tuple[str, str, str]] = set()
    #: key -> (signed size, cumulative realised PnL), from the store then this batch.
    state = {k: (p.size_tokens if p.is_long else -p.size_tokens, p.realized_pnl or 0)
             for k, p in ctx.previous.items()}
    for row, name, f in rows:
        if name == "PositionLiquidated":
            continue
        trader, base = f["trader"], f["baseToken"]
        key = address_pair_key(trader, base)
        before, pnl = state.get(key, (0, 0))
        if name == "PositionChanged":
            exchanged = f["exchangedPositionSize"]
            after = before + exchanged
            if abs(after) < DUST:
                # AccountBalance reports a taker size under 10 wei as 0 (and deletes the entry
                # when the open notional is dust too); a dust size kept beside a larger
                # notional is dropped here, off by under 10 wei on that key's next change
                after = 0
            if exchanged:
                price = abs(f["exchangedPositionNotional"]) * _ONE // abs(exchanged)
            else:
                price = _sqrt_price(f["sqrtPriceAfterX96"])
            kind, is_long, delta = signed_change(before, after)
            tag = (meta.tx_hash[row], trader, base)
            if tag in liquidated and tag not in matched:
                kind = "liquidation"
                matched.add(tag)
            fee, open_notional = f["fee"], f["openNotional"]
        else:  # PositionClosed: quitMarket of a closed market, the position goes to 0
            before = f["closedPositionSize"] or before
            after, price = 0, f["closedPrice"]
            kind, is_long, delta = signed_change(before, 0)
            fee, open_notional = 0, 0
        pnl += f["realizedPnl"]
        state[key] = (after, pnl)
        if before == 0 and after == 0:
            rejected.append((row, (f"{name} of {key} changes no position (size 0 before and "
                                  "after): is the start block before the position was opened?")))
            continue
        changes.add(Change(
            row=row, position_key=key, account=trader, market=base, index_token=base,
            collateral_token=None, is_long=is_long, kind=kind,
            size_delta=at_price(delta, price, BASE_DECIMALS), collateral_delta=None,
            size_after=at_price(abs(after), price, BASE_DECIMALS), collateral_after=None, price=price, fee=fee,
            realized_pnl=pnl, entry_price=abs(open_notional) * _ONE // abs(after) if after else 0,
            size_delta_tokens=delta, size_after_tokens=abs(after), index_decimals=BASE_DECIMALS))
    for tag, row in liquidated.items():
        if tag not in matched:
            rejected.append((row, (f"PositionLiquidated of trader {tag[1]} on {tag[2]} without the "
                                  "trader's PositionChanged in its transaction")))
    return AdapterOutput(changes, FundingColumns(), sorted(rejected))


ADAPTER = Adapter(roles=("clearing_house",), events=EVENTS, usd_decimals=18,
                  to_changes=to_changes, keys_needed=keys_needed)
