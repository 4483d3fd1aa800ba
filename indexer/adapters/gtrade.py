"""gTrade (Gains Network) v9/v10 diamond: decoded trade events -> normalized changes (pure).

A position is one trade, ``(user, index)``; its key is ``keccak256(abi.encode(user, index))``.
The diamond's storage events carry the trade's state after each change, and the adapter follows
it (protocols.md 5; the gTrade bot keeps its open-trade book the same way):

* ``TradeStored``: a trade is stored with its whole ``Trade`` struct. ``tradeType`` 0 is an open
  position (an ``increase`` from 0); 1 and 2 are pending limit/stop orders, not positions, so
  they add no row (when one executes, the diamond stores a new trade and closes the order).
* ``TradePositionUpdated`` (both versions): collateral, leverage and open price after a size
  increase/decrease or a leverage update; ``TradeCollateralUpdated``: collateral after (e.g. a
  gov fee taken from it), leverage unchanged.
* ``TradeClosed``: the trade is closed. ``kind`` is ``liquidation`` when the transaction's
  ``LimitExecuted`` for that trade has ``orderType`` 6 (``LIQ_CLOSE``), else ``close``. A
  ``TradeClosed`` of a trade the indexer never saw open is recorded from its execution event's
  ``Trade`` when there is one (a trade opened before the start block); without one it closed a
  pending order and adds no row.

Units. Size is gTrade's ``positionSizeCollateral``, ``collateralAmount * leverage / 1e3``
(leverage has 3 decimals), in collateral-token units: that is how gTrade sums its open interest.
It goes in the token columns, with the collateral's decimals. USD amounts (18 decimals) value it
at the trade's ``collateralPriceUsd`` (1e8) of its ``TradeStored`` ``tradeInfo``, the price gTrade
itself converts the trade's OI to USD with. ``price`` is the pair price (1e10 on chain): the
execution's ``marketPrice`` for closes, ``openPrice`` otherwise; the entry price is
``openPrice``. Collateral tokens come from the config's ``tokens:`` by ``id`` (gTrade's
``collateralIndex``); a trade in an unlisted collateral is quarantined with the reason. Fees and
PnL are separate events not read here: ``fee`` is 0 and realised PnL NULL. The liquidation price
of an opening is the ``liqPrice`` of its execution event (the diamond's own number); later
changes do not report one (their events are not read), so it is NULL after them.

State across ranges comes from the store (``keys_needed``): size and collateral in tokens are
stored exactly, and leverage and collateral price are recovered from them exactly (leverage =
ceil(1e3 * size / collateral) for collateral of at least 1000 units; price likewise from the USD
size for sizes of at least 10**(decimals - 10) units).
"""

from __future__ import annotations

from dataclasses import dataclass

from indexer.abi import keccak
from indexer.adapters.base import Adapter, AdapterContext, event_rows
from indexer.types import AdapterOutput, Change, ChangeColumns, Decoded, FundingColumns, LogMeta

EVENTS = ("TradeStored", "TradePositionUpdated", "TradeCollateralUpdated", "TradeClosed",
          "MarketExecuted", "LimitExecuted")
USD_DECIMALS = 18
#: Trade struct fields (both versions share the first twelve).
PAIR, LEVERAGE, LONG, COLLATERAL_INDEX, TRADE_TYPE, COLLATERAL, OPEN_PRICE = 2, 3, 4, 6, 7, 8, 9
#: ``tradeInfo.collateralPriceUsd``.
INFO_COLLATERAL_PRICE = 5
LIQ_CLOSE = 6
#: Pair prices on chain have 10 decimals; USD here 18.
PRICE_SCALE = 10**8

_STATE_EVENTS = ("TradePositionUpdated", "TradeCollateralUpdated", "TradeClosed")


def trade_key(user: str, index: int) -> str:
    """``keccak256(abi.encode(user, index))`` as 0x hex."""
    return "0x" + keccak(bytes(12) + bytes.fromhex(user[2:]) + index.to_bytes(32, "big")).hex()


def keys_needed(decoded: Decoded, meta: LogMeta) -> list[str]:
    return sorted({trade_key(f["user"], f["index"]) for _, _, f in event_rows(decoded, _STATE_EVENTS)})


@dataclass(slots=True)
class _Trade:
    pair: str
    long: bool
    token: str
    decimals: int
    collateral: int
    leverage: int
    open_price: int
    #: collateral price in USD x 1e8
    collateral_price: int

    @property
    def size(self) -> int:
        return self.collateral * self.leverage // 1000

    def usd(self, amount: int) -> int:
        """A signed collateral-token amount in raw USD (18 decimals), truncated toward zero."""
        value = abs(amount) * self.collateral_price * 10**10 // 10**self.decimals
        return value if amount >= 0 else -value


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def to_changes(decoded: Decoded, meta: LogMeta, ctx: AdapterContext) -> AdapterOutput:
    out = AdapterOutput(ChangeColumns(), FundingColumns(), [])
    rows = event_rows(decoded, EVENTS)
    executions = {(meta.tx_hash[r], f["user"], f["index"]): (name, f)
                  for r, name, f in rows if name in ("MarketExecuted", "LimitExecuted")}
    trades: dict[str, _Trade] = {}
    for key, p in ctx.previous.items():
        d = ctx.decimals.get(p.collateral_token or "")
        if p.size_tokens and p.collateral_tokens and d is not None and p.market is not None:
            trades[key] = _Trade(
                p.market, p.is_long, p.collateral_token or "", d, p.collateral_tokens,
                _ceil_div(1000 * p.size_tokens, p.collateral_tokens),
                (p.entry_price or 0) // PRICE_SCALE,
                _ceil_div(p.size_usd * 10**d, p.size_tokens * 10**10))

    def from_struct(t: tuple, collateral_price: int) -> _Trade | str:
        token = ctx.token_ids.get(t[COLLATERAL_INDEX])
        if token is None:
            return (f"gTrade collateral index {t[COLLATERAL_INDEX]} is not in the config's "
                    f"tokens (add the collateral token with id: {t[COLLATERAL_INDEX]})")
        d = ctx.decimals.get(token)
        if d is None:
            return f"decimals of collateral token {token} are unknown (add decimals: in tokens)"
        return _Trade(str(t[PAIR]), t[LONG], token, d, t[COLLATERAL], t[LEVERAGE],
                      t[OPEN_PRICE], collateral_price)

    for row, name, f in rows:
        if name in ("MarketExecuted", "LimitExecuted"):
            continue
        user, index = f["user"], f["index"]
        key = trade_key(user, index)
        before = trades.get(key)
        price = None
        kind = None
        liquidation_price = None
        if name == "TradeStored":
            t = f["trade"]
            if t[TRADE_TYPE] != 0:
                continue  # a pending limit/stop order, not a position
            made = from_struct(t, f["tradeInfo"][INFO_COLLATERAL_PRICE])
            if isinstance(made, str):
                out.rejected.append((row, made))
                continue
            trade, before_size, before_coll = made, 0, 0
            _, ex = executions.get((meta.tx_hash[row], user, index), (None, None))
            if ex is not None and ex["liqPrice"]:
                liquidation_price = ex["liqPrice"] * PRICE_SCALE
        elif name == "TradeClosed":
            name_ex, ex = executions.get((meta.tx_hash[row], user, index), (None, None))
            if before is None:
                if ex is None or ex["t"][TRADE_TYPE] != 0:
                    continue  # a pending order closed (executed, cancelled or expired)
                made = from_struct(ex["t"], ex["collateralPriceUsd"])
                if isinstance(made, str):
                    out.rejected.append((row, made))
                    continue
                before = made
            trade = before
            before_size, before_coll = trade.size, trade.collateral
            liquidated = ex is not None and name_ex == "LimitExecuted" and \
                ex["orderType"] == LIQ_CLOSE
            kind = "liquidation" if liquidated else "close"
            if ex is not None:
                price = ex["marketPrice"] * PRICE_SCALE
            trade.collateral, trade.leverage = 0, 0
        else:
            if before is None:
                reason = f"{name}: trade {user} #{index} was not seen open (opened before the start block?)"
                out.rejected.append((row, reason))
                continue
            trade = before
            before_size, before_coll = trade.size, trade.collateral
            trade.collateral = f["collateralAmount"]
            if name == "TradePositionUpdated":
                trade.leverage, trade.open_price = f["leverage"], f["openPrice"]
        trades[key] = trade
        size, delta = trade.size, trade.size - before_size
        if kind is None:
            grows = delta > 0 or (delta == 0 and trade.collateral >= before_coll)
            kind = "increase" if grows else "decrease"
        out.changes.add(Change(
            row=row, position_key=key, account=user, market=trade.pair, index_token=None,
            collateral_token=trade.token, is_long=trade.long, kind=kind,
            size_delta=trade.usd(delta), collateral_delta=trade.usd(trade.collateral - before_coll),
            size_after=trade.usd(size), collateral_after=trade.usd(trade.collateral),
            price=price if price is not None else trade.open_price * PRICE_SCALE, fee=0,
            realized_pnl=None, entry_price=trade.open_price * PRICE_SCALE if size else 0,
            size_delta_tokens=delta, size_after_tokens=size,
            collateral_delta_tokens=trade.collateral - before_coll,
            collateral_after_tokens=trade.collateral, index_decimals=trade.decimals,
            collateral_decimals=trade.decimals, liquidation_price=liquidation_price))
    return out


ADAPTER = Adapter(roles=("diamond",), events=EVENTS, usd_decimals=USD_DECIMALS,
                  to_changes=to_changes, keys_needed=keys_needed)
