"""GMX v2 (gmx-synthetics) EventEmitter: decoded ``EventLog*`` -> normalized changes (pure).

Every GMX v2 event is an ``EventLog``/``EventLog1``/``EventLog2`` of the one EventEmitter, named
by its ``eventName`` and carrying an ``EventLogData`` key/value payload (decoded by
``indexer.eventdata``; fields are looked up by key name, accepting the old names of
protocols.md 2.4). What becomes what:

* ``PositionIncrease`` / ``PositionDecrease``: one ledger row each. Both carry the position's
  state after the trade (``sizeInUsd``, ``sizeInTokens``, ``collateralAmount``), so the state is
  never recomputed. A decrease with ``orderType`` 7 is a liquidation; one leaving ``sizeInUsd``
  0 is a close; a collateral-only deposit or withdrawal is an increase / decrease with a zero size
  delta.
* ``PositionFeesCollected`` of the same transaction and position: the change's fee
  (``totalCostAmount``, in collateral tokens, valued at ``collateralTokenPrice.min``).
* ``MarketCreated``: a market and its index, long and short tokens.
* ``OpenInterestUpdated`` / ``OpenInterestInTokensUpdated``: the protocol's own open interest per
  (market, collateral token, side), stored for reconciliation.

Units: USD amounts are USD x 1e30. GMX prices are per smallest token unit x 1e30, so the USD
price of a whole index token is ``executionPrice * 10**index_decimals`` (raw, 1e30); where the
index token's decimals are unknown the price columns are NULL. Collateral in USD is
``collateralAmount * collateralTokenPrice.min`` at the event (GMX values collateral at the min
price); the exact token amounts are kept too. ``realized_pnl`` is the PnL that change realised
(``basePnlUsd``; 0 for increases).
"""

from __future__ import annotations

from typing import Any

from indexer.adapters.base import Adapter, AdapterContext
from indexer.eventdata import EventData
from indexer.types import AdapterOutput, Change, ChangeColumns, Decoded, FundingColumns, LogMeta

EVENTS = ("EventLog", "EventLog1", "EventLog2")
#: The event names read (their keccak256 filters eth_getLogs on the second topic).
EVENT_NAMES = ("PositionIncrease", "PositionDecrease", "PositionFeesCollected", "MarketCreated",
               "OpenInterestUpdated", "OpenInterestInTokensUpdated")
#: ``Order.OrderType.Liquidation``.
LIQUIDATION_ORDER_TYPE = 7

_Row = tuple[int, str, EventData]


def _rows(decoded: Decoded) -> list[_Row]:
    """(row, eventName, eventData) of every decoded EventLog* in chain order."""
    out: list[_Row] = []
    for name in EVENTS:
        for cols in decoded.events.get(name, []):
            out.extend(zip(cols.rows, cols.fields["eventName"], cols.fields["eventData"],
                           strict=True))
    out.sort(key=lambda r: r[0])
    return out


def _get(items: dict[str, Any], *names: str) -> Any:
    """The value under the first of ``names`` present (GMX renamed keys across versions)."""
    for n in names:
        if n in items:
            return items[n]
    raise KeyError(" / ".join(names))


def _markets_in(rows: list[_Row], known: dict[str, tuple[str, str, str]]
                ) -> dict[str, tuple[str, str, str]]:
    markets = dict(known)
    for _, name, d in rows:
        if name == "MarketCreated":
            a = d.address
            try:
                markets[a["marketToken"]] = (a["indexToken"], a["longToken"], a["shortToken"])
            except KeyError:
                pass  # reported by to_changes
    return markets


def tokens_needed(decoded: Decoded, meta: LogMeta, ctx: AdapterContext) -> list[str]:
    """Index and collateral tokens of this batch's position events with unknown decimals."""
    rows = _rows(decoded)
    markets = _markets_in(rows, ctx.markets)
    wanted: set[str] = set()
    for _, name, d in rows:
        if name in ("PositionIncrease", "PositionDecrease"):
            market = d.address.get("market")
            if market in markets:
                wanted.add(markets[market][0])
            if "collateralToken" in d.address:
                wanted.add(d.address["collateralToken"])
    return sorted(wanted - set(ctx.decimals))


def to_changes(decoded: Decoded, meta: LogMeta, ctx: AdapterContext) -> AdapterOutput:
    out = AdapterOutput(ChangeColumns(), FundingColumns(), [])
    rows = _rows(decoded)
    markets = _markets_in(rows, ctx.markets)
    fees: dict[tuple[str, str, str], int] = {}
    for row, name, d in rows:
        if name == "PositionFeesCollected":
            try:
                key = (meta.tx_hash[row], d.bytes32["orderKey"], d.bytes32["positionKey"])
                fees[key] = d.uint["totalCostAmount"] * d.uint["collateralTokenPrice.min"]
            except KeyError as e:
                out.rejected.append((row, f"{name} lacks key {e}"))
    for row, name, d in rows:
        try:
            if name in ("PositionIncrease", "PositionDecrease"):
                _position(out.changes, row, name, d, meta, markets, ctx.decimals, fees)
            elif name == "MarketCreated":
                a = d.address
                out.markets.append(row, a["marketToken"], a["indexToken"], a["longToken"],
                                   a["shortToken"])
            elif name in ("OpenInterestUpdated", "OpenInterestInTokensUpdated"):
                oi = out.open_interest
                values = (d.address["market"], d.address["collateralToken"], d.bool["isLong"],
                          d.int["delta"], d.uint["nextValue"])
                oi.row.append(row)
                oi.market.append(values[0])
                oi.collateral_token.append(values[1])
                oi.is_long.append(values[2])
                oi.unit.append("usd" if name == "OpenInterestUpdated" else "tokens")
                oi.delta.append(values[3])
                oi.next_value.append(values[4])
        except KeyError as e:
            out.rejected.append((row, f"{name} lacks key {e}"))
    return out


def _position(ch: ChangeColumns, row: int, name: str, d: EventData, meta: LogMeta,
              markets: dict[str, tuple[str, str, str]], decimals: dict[str, int | None],
              fees: dict[tuple[str, str, str], int]) -> None:
    """Append one PositionIncrease/PositionDecrease (raises KeyError on a missing key)."""
    a, u, i = d.address, d.uint, d.int
    market, collateral_token = a["market"], a["collateralToken"]
    index_token = markets[market][0] if market in markets else None
    index_dec = decimals.get(index_token) if index_token else None
    coll_dec = decimals.get(collateral_token)
    increase = name == "PositionIncrease"
    size_after = u["sizeInUsd"]
    if increase:
        kind = "increase"
        coll_delta = i["collateralDeltaAmount"]
        pnl = 0
    else:
        if u["orderType"] == LIQUIDATION_ORDER_TYPE:
            kind = "liquidation"
        else:
            kind = "close" if size_after == 0 else "decrease"
        coll_delta = -u["collateralDeltaAmount"]
        pnl = i["basePnlUsd"]
    sign = 1 if increase else -1
    coll_price = u["collateralTokenPrice.min"]
    size_tokens = u["sizeInTokens"]
    price = entry = None
    if index_dec is not None:
        price = u["executionPrice"] * 10**index_dec
        entry = size_after * 10**index_dec // size_tokens if size_tokens else 0
    key = d.bytes32["positionKey"]
    ch.add(Change(
        row=row, position_key=key, account=a["account"], market=market,
        collateral_token=collateral_token, is_long=d.bool["isLong"], kind=kind,
        size_delta=sign * u["sizeDeltaUsd"], collateral_delta=coll_delta * coll_price,
        size_after=size_after, collateral_after=u["collateralAmount"] * coll_price,
        price=price, fee=fees.get((meta.tx_hash[row], d.bytes32["orderKey"], key), 0),
        realized_pnl=pnl, entry_price=entry, index_token=index_token,
        size_delta_tokens=sign * _get(u, "sizeDeltaInTokens", "baseSizeDeltaInTokens"),
        size_after_tokens=size_tokens, collateral_delta_tokens=coll_delta,
        collateral_after_tokens=u["collateralAmount"], index_decimals=index_dec,
        collateral_decimals=coll_dec))


ADAPTER = Adapter(roles=("event_emitter",), events=EVENTS, event_names=EVENT_NAMES,
                  usd_decimals=30, to_changes=to_changes, tokens_needed=tokens_needed)
