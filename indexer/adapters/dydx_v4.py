"""dYdX v4 (its own CometBFT chain): ABCI ``match`` events -> normalized changes (pure).

Every change of a perpetual position emits one ``match`` event (x/clob: order matches and
liquidations in process_single_match.go, deleveraging and final settlement in deleveraging.go);
nothing else changes a position's size and genesis has no subaccounts, so the running sum of
``match`` deltas from the first block is every subaccount's exact position (dydx_v4.md 0.2).
What becomes what:

* ``match``: two ledger rows, the taker's and the maker's. ``account`` is the subaccount's owner;
  the position key is ``owner/number/perpetual_id``, so each subaccount (cross or isolated,
  numbers 0..) holds its own positions. The kind comes from the signed size before and after
  (a flip is one ``increase`` of the new side); the taker of an ``is_liquidation`` match and the
  liquidated side (the taker) of an ``is_deleverage`` match get ``liquidation``, except when the
  perpetual's CLOB pair is in final settlement at that height: then the market was wound down,
  not the account, and the row is a ``close`` / ``decrease``.
* Sizes are in base quantums (``size = quantums x 10^atomic_resolution``, so the base decimals
  are ``-atomic_resolution``); USD from the fill's notional, in quote quantums (USDC, 1e-6):
  ``|maker quote delta + maker fee + maker builder fee|``, the fill's ``bigFillQuoteQuantums``
  (the maker is never the liquidation order; deleverages have no fees). USD is scaled 1e18.
* The entry price is the weighted average price of the fills that opened or added to the
  position, weighted by their sizes (the Indexer's ``sumOpen``: every size opened since the
  position was opened), kept through reductions, restarted by a flip, whose whole fill opens the
  new side (the official Indexer's rule: ``dydx_subaccount_update_handler.sql`` opens a new
  position, ``dydx_update_perpetual_position_aggregate_fields.sql`` averages). ``sumOpen`` is
  carried from batch to batch (``carried_from_history`` rebuilds it from the ledger).
* Fees: the side's order fee plus its builder fee; the liquidated taker's is the insurance fund
  delta (it pays that instead of a taker fee). Maker fees may be negative (rebates).
* ``settled_funding``: the funding a subaccount paid (positive) or received, in
  ``funding_payments``. Before v4.0.0 the subaccount number was keyed ``subaccount`` as well
  (the decoder names the second one ``subaccount#2``); both forms are read.
* ``new_epoch`` of the ``funding-tick`` epoch: each perpetual's funding index at that height
  (chain state, read by the prepare stage) in ``funding_updates``, and, from the configured
  ``open_interest_from`` height, each perpetual's ``open_interest`` (long base quantums) in
  ``protocol_open_interest``: the chain's own figure to reconcile the ledger with.

A ``match`` lacking a field, with a non-integer amount, with taker and maker deltas that do not
offset, or on a perpetual the chain does not list, is rejected to the quarantine with the reason.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from indexer.adapters.base import Adapter, AdapterContext, event_rows, signed_change
from indexer.types import (
    AdapterOutput,
    Change,
    ChangeColumns,
    Decoded,
    FundingColumns,
    LogMeta,
    Payment,
)

EVENTS = ("match", "settled_funding", "new_epoch")
#: USD precision of the ledger rows (quote quantums are 1e-6 USD: x 1e12).
USD_DECIMALS = 18
_QUOTE_TO_USD = 10**12
#: The epoch whose start settles funding (hourly on mainnet; x/epochs, genesis ``epochs``).
FUNDING_TICK = "funding-tick"
#: The chain-state list queries the adapter reads at heights it names (name, REST path, key).
STATE_QUERIES = (("perpetuals", "/dydxprotocol/perpetuals/perpetual", "perpetual"),
                 ("clob_pairs", "/dydxprotocol/clob/clob_pair", "clob_pair"))
FINAL_SETTLEMENT = "STATUS_FINAL_SETTLEMENT"


class Malformed(ValueError):
    """An event that cannot be read (the reason goes to the quarantine)."""


def _int(f: dict[str, Any], key: str) -> int:
    value = f.get(key)
    if value is None:
        raise Malformed(f"lacks {key}")
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        raise Malformed(f"{key} is {text[:40]!r}, not an integer") from None


def _optional_int(f: dict[str, Any], key: str) -> int:
    """A field added by a later chain version (builder fees): absent means 0."""
    return 0 if f.get(key) in (None, "") else _int(f, key)


def _bool(f: dict[str, Any], key: str) -> bool:
    value = f.get(key)
    if value not in ("true", "false"):
        raise Malformed(f"{key} is {value!r}, not true or false")
    return value == "true"


def position_key(owner: str, number: int, perpetual: int) -> str:
    return f"{owner}/{number}/{perpetual}"


def _pow10(exponent: int) -> Fraction:
    return Fraction(10) ** exponent


def _fill_sides(f: dict[str, Any]) -> list[tuple[str, int, int, int, bool]]:
    """(owner, number, base delta, fee in quote quantums, liquidated) of taker and maker."""
    liquidation, deleverage = _bool(f, "is_liquidation"), _bool(f, "is_deleverage")
    taker_fee = (_int(f, "insurance_fund_delta_quote_quantums") if liquidation
                 else _int(f, "taker_order_fee_quote_quantums"))
    sides = [(str(f.get("taker_subaccount") or ""), _int(f, "taker_subaccount_number"),
              _int(f, "taker_perpetual_quantums_delta_base_quantums"),
              taker_fee + _optional_int(f, "taker_builder_fee_quantums"),
              liquidation or deleverage),
             (str(f.get("maker_subaccount") or ""), _int(f, "maker_subaccount_number"),
              _int(f, "maker_perpetual_quantums_delta_base_quantums"),
              _int(f, "maker_order_fee_quote_quantums")
              + _optional_int(f, "maker_builder_fee_quantums"), False)]
    for owner, *_ in sides:
        if not owner:
            raise Malformed("lacks a subaccount owner")
    if sides[0][2] != -sides[1][2] or sides[0][2] == 0:
        raise Malformed(f"taker delta {sides[0][2]} and maker delta {sides[1][2]} do not offset")
    return sides


def _notional(f: dict[str, Any]) -> int:
    """The fill's quote quantums (see the module's docstring)."""
    return abs(_int(f, "maker_quote_balance_delta_quote_quantums")
               + _int(f, "maker_order_fee_quote_quantums")
               + _optional_int(f, "maker_builder_fee_quantums"))


def keys_needed(decoded: Decoded, meta: LogMeta) -> list[str]:
    keys: set[str] = set()
    for _, _, f in event_rows(decoded, ("match",)):
        for side in ("taker", "maker"):
            owner, number, perp = (f.get(f"{side}_subaccount"), f.get(f"{side}_subaccount_number"),
                                   f.get("perpetual_id"))
            if owner and number is not None and perp is not None:
                keys.add(f"{owner}/{number}/{perp}")
    return sorted(keys)


def state_needed(decoded: Decoded, meta: LogMeta, ctx: AdapterContext, hi: int
                 ) -> list[tuple[str, int]]:
    """The chain state the batch needs: the perpetuals at each funding tick, the CLOB pairs at
    each deleveraging height (final settlement or not), the perpetuals at the range's end when
    a match names a perpetual not known yet (its atomic resolution and ticker)."""
    wanted: set[tuple[str, int]] = set()
    for row, _, f in event_rows(decoded, ("new_epoch",)):
        if f.get("epoch_info_name") == FUNDING_TICK:
            wanted.add(("perpetuals", meta.block_number[row]))
    for row, _, f in event_rows(decoded, ("match",)):
        if f.get("is_deleverage") == "true":
            wanted.add(("clob_pairs", meta.block_number[row]))
        perp = str(f.get("perpetual_id"))
        if perp not in ctx.decimals or perp not in ctx.markets:
            wanted.add(("perpetuals", hi))
    return sorted(wanted, key=lambda w: (w[1], w[0]))


def markets_in_state(state: dict[tuple[str, int], list[dict[str, Any]]]
                     ) -> dict[str, tuple[str, int]]:
    """Perpetual id -> (ticker, base decimals = -atomic_resolution) from perpetuals read."""
    out: dict[str, tuple[str, int]] = {}
    for (name, _), items in sorted(state.items(), key=lambda kv: kv[0][1]):
        if name != "perpetuals":
            continue
        for item in items:
            params = item.get("params") or {}
            out[str(int(params["id"]))] = (str(params.get("ticker") or ""),
                                           -int(params.get("atomic_resolution", 0)))
    return out


def _opened(before: int, after: int, fill: int, sum_open: int) -> int:
    """sumOpen after a fill of ``fill`` quantums taking the size from ``before`` to ``after``."""
    if after == 0:
        return 0
    if before == 0 or (before > 0) != (after > 0):
        return fill  # opened, or flipped: the whole fill opens the new position
    if abs(after) > abs(before):
        return sum_open + fill
    return sum_open


def carried_from_history(histories: dict[str, list[tuple[bool, int]]]) -> dict[str, Any]:
    """sumOpen of each open position, replayed from its changes (size before and after each
    gives the fill: a flip's fill is the old size plus the new)."""
    out: dict[str, Any] = {}
    for key, changes in histories.items():
        before, sum_open = 0, 0
        for is_long, size in changes:
            after = size if is_long else -size
            flip = before != 0 and after != 0 and (before > 0) != (after > 0)
            fill = abs(before) + abs(after) if flip else abs(abs(after) - abs(before))
            sum_open = _opened(before, after, fill, sum_open)
            before = after
        out[key] = sum_open
    return out


def _settling(ctx: AdapterContext, height: int) -> set[str]:
    """Perpetual ids whose CLOB pair is in final settlement at ``height``."""
    pairs = ctx.chain_state.get(("clob_pairs", height), [])
    return {str((p.get("perpetual_clob_metadata") or {}).get("perpetual_id"))
            for p in pairs if p.get("status") == FINAL_SETTLEMENT}


def to_changes(decoded: Decoded, meta: LogMeta, ctx: AdapterContext) -> AdapterOutput:
    out = AdapterOutput(ChangeColumns(), FundingColumns(), [])
    #: key -> (signed base quantums, entry price as an exact USD-1e18 amount per whole unit)
    held: dict[str, tuple[int, Fraction]] = {
        k: (p.size_tokens if p.is_long else -p.size_tokens, Fraction(p.entry_price or 0))
        for k, p in ctx.previous.items()}
    open_interest = dict(ctx.open_interest)
    for row, name, f in event_rows(decoded, EVENTS):
        try:
            if name == "match":
                _match(out, row, f, meta, ctx, held)
            elif name == "settled_funding":
                _settled(out, row, f)
            elif f.get("epoch_info_name") == FUNDING_TICK:
                _funding_tick(out, row, meta.block_number[row], ctx, open_interest)
        except Malformed as e:
            out.rejected.append((row, f"{name} event {e}"))
    return out


def _match(out: AdapterOutput, row: int, f: dict[str, Any], meta: LogMeta, ctx: AdapterContext,
           held: dict[str, tuple[int, Fraction]]) -> None:
    perp = str(_int(f, "perpetual_id"))
    decimals = ctx.decimals.get(perp)
    if decimals is None:
        raise Malformed(f"names perpetual {perp}, which the chain does not list")
    sides = _fill_sides(f)
    notional = _notional(f)
    ticker = ctx.markets.get(perp, ("", "", ""))[0] or None
    settling = perp in _settling(ctx, meta.block_number[row]) if _bool(f, "is_deleverage") \
        else False
    fill = abs(sides[0][2])
    #: USD (1e18) of one base quantum at this fill, exact
    unit_usd = Fraction(notional * _QUOTE_TO_USD, fill)
    price = unit_usd * _pow10(decimals)  # per whole base unit
    for owner, number, delta, fee, liquidated in sides:
        key = position_key(owner, number, int(perp))
        before, entry = held.get(key, (0, Fraction(0)))
        after = before + delta
        kind, is_long, size_delta = signed_change(before, after)
        sum_open = int(ctx.carried.get(key, 0))
        opened = _opened(before, after, fill, sum_open)
        if after == 0:
            entry = Fraction(0)
        elif before == 0 or (before > 0) != (after > 0):
            entry = price  # opened, or flipped: a new position at this fill
        elif abs(after) > abs(before):  # added to: weighted by everything opened so far
            entry = (entry * sum_open + price * fill) / opened
        # the stored (truncated) entry is what the next fill averages with, in this batch as in
        # the next: the result does not depend on where ranges start
        entry = Fraction(int(entry))
        held[key] = (after, entry)
        ctx.carried[key] = opened
        if liquidated and not settling:
            kind = "liquidation"
        out.changes.add(Change(
            row=row, position_key=key, account=owner, market=perp, collateral_token=None,
            is_long=is_long, kind=kind, size_delta=int(size_delta * unit_usd),
            collateral_delta=None, size_after=int(abs(after) * unit_usd), collateral_after=None,
            price=int(price), fee=fee * _QUOTE_TO_USD, realized_pnl=None,
            entry_price=int(entry), index_token=ticker, size_delta_tokens=size_delta,
            size_after_tokens=abs(after), index_decimals=decimals))


def _settled(out: AdapterOutput, row: int, f: dict[str, Any]) -> None:
    owner = str(f.get("subaccount") or "")
    # before v4.0.0 the number came as a second `subaccount` attribute
    number = _int(f, "subaccount_number") if f.get("subaccount_number") is not None \
        else _int(f, "subaccount#2")
    perp = _int(f, "perpetual_id")
    if not owner:
        raise Malformed("lacks subaccount")
    paid = _int(f, "funding_paid_quote_quantums")
    out.payments.append(Payment(row, owner, position_key(owner, number, perp), str(perp),
                                paid * _QUOTE_TO_USD))


def _funding_tick(out: AdapterOutput, row: int, height: int, ctx: AdapterContext,
                  open_interest: dict[str, int]) -> None:
    for item in ctx.chain_state.get(("perpetuals", height), []):
        params = item.get("params") or {}
        perp = str(int(params["id"]))
        out.funding.append(row, perp, int(item.get("funding_index") or 0))
        # below v5.0.0 the state has no open_interest, yet the REST answer shows "0": read it
        # only from the configured height (None: never)
        if ctx.open_interest_from is None or height < ctx.open_interest_from \
                or item.get("open_interest") is None:
            continue
        value = int(item["open_interest"])
        out.open_interest.row.append(row)
        out.open_interest.market.append(perp)
        out.open_interest.collateral_token.append("")
        out.open_interest.is_long.append(True)
        out.open_interest.unit.append("tokens")
        out.open_interest.delta.append(value - open_interest.get(perp, 0))
        out.open_interest.next_value.append(value)
        open_interest[perp] = value


#: Events come from every block (no contracts); ``state_needed`` names the chain state read
#: with the Cosmos REST queries of ``STATE_QUERIES``.
ADAPTER = Adapter(roles=(), events=EVENTS, usd_decimals=USD_DECIMALS, to_changes=to_changes,
                  keys_needed=keys_needed, state_queries=STATE_QUERIES,
                  state_needed=state_needed, markets_in_state=markets_in_state,
                  carried_from_history=carried_from_history)
