"""What a prepared range adds besides its ledger rows: the markets it lists for the first time,
each with its asset, and the protocol parameters that changed without an event (read with
``eth_call`` at the range's end). The only I/O is those ``eth_call``s; answers are remembered
in the scan state."""

from __future__ import annotations

import logging
from typing import Any

from indexer import assets
from indexer.abi import decode_values, encode_call
from indexer.engine.source import ScanState
from indexer.errors import RpcError
from indexer.rpc import Rpc

logger = logging.getLogger(__name__)


def _text(reply: str) -> str | None:
    """A ``symbol()`` answer: an ABI string, or a bytes32 (older tokens such as MKR)."""
    try:
        if len(reply) == 66:
            raw = bytes.fromhex(reply[2:]).rstrip(b"\0")
        else:
            (raw,) = decode_values(["bytes"], "0x" + reply[2:])  # the same layout as a string
        text = raw.decode("utf-8")
    except (ValueError, UnicodeDecodeError, OverflowError):
        return None
    return text if text and text.isprintable() else None


def read_symbols(rpc: Rpc, tokens: list[str]) -> dict[str, str | None]:
    """``symbol()`` of each token, in one batch; None where there is no readable answer."""
    call = encode_call("symbol()", [])
    try:
        replies = rpc.batch([("eth_call", [{"to": t, "data": call}, "latest"]) for t in tokens],
                            return_errors=True)
    except RpcError as e:
        logger.warning("cannot read token symbols (%s); their markets' assets stay NULL", e)
        return {}  # not remembered: read again with the next range
    return {t: _text(r) if isinstance(r, str) and len(r) > 2 else None
            for t, r in zip(tokens, replies, strict=True)}


def _symbol_of(state: ScanState, market: str, index_token: str | None, name: str | None
               ) -> str | None:
    scheme = assets.SCHEMES.get(state.source.config.adapter, "token")
    configured = state.source.config.markets.get(market)
    if name:
        return name
    if configured is not None and configured.name:
        return configured.name
    if scheme == "perp_v2":
        return state.symbols.get(market)
    if index_token:
        return state.symbols.get(index_token)
    return None


def asset_of(state: ScanState, market: str, index_token: str | None, symbol: str | None
             ) -> str | None:
    """The config's ``assets:`` (by market, index token or symbol), else what the name says."""
    overrides = state.source.config.assets
    for key in (market, index_token, symbol):
        if key and key in overrides:
            return overrides[key]
    scheme = assets.SCHEMES.get(state.source.config.adapter, "token")
    configured = state.source.config.markets.get(market)
    if symbol is not None and configured is not None and symbol == configured.name:
        scheme = "pair"  # a configured market's name: ``ETH/USD``
    return assets.canonical(symbol, scheme)


def list_markets(state: ScanState, rpc: Rpc, lo: int, changes: dict[str, list[Any]],
                 announced: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The range's ``markets`` rows: the announced ones (``announced``, from the adapter), and
    each market first traded in it (at its first change), each with its symbol and asset.
    A market listed at or past ``lo``, the range's first block, is listed again (a replay of
    the range deletes it first)."""
    #: market -> (block, log index, index, long and short token, name)
    new: dict[str, tuple[int, int, str | None, str | None, str | None, str | None]] = {}
    for i, market in enumerate(announced["market"]):
        new.setdefault(market, (announced["block_number"][i], announced["log_index"][i],
                                announced["index_token"][i], announced["long_token"][i],
                                announced["short_token"][i], announced["name"][i]))
    for i, market in enumerate(changes["market"]):
        listed = state.listed.get(market)
        if market in new or (listed is not None and listed < lo):
            continue
        tokens = state.markets.get(market) or (None, None, None)
        new[market] = (changes["block_number"][i], changes["log_index"][i],
                       changes["index_token"][i] or tokens[0], tokens[1], tokens[2], None)
    scheme = assets.SCHEMES.get(state.source.config.adapter, "token")
    wanted = {m if scheme == "perp_v2" else v[2] for m, v in new.items()}
    unknown = sorted(t for t in wanted if t is not None and t not in state.symbols)
    if unknown:
        state.symbols.update(read_symbols(rpc, unknown))
    out: dict[str, list[Any]] = {k: [] for k in (
        "block_number", "log_index", "market", "index_token", "long_token", "short_token",
        "name", "found_by", "symbol", "asset")}
    announced_set = set(announced["market"])
    for market, (block, log_index, index, long_token, short_token, name) in new.items():
        symbol = _symbol_of(state, market, index, name)
        out["block_number"].append(block)
        out["log_index"].append(log_index)
        out["market"].append(market)
        out["index_token"].append(index)
        out["long_token"].append(long_token)
        out["short_token"].append(short_token)
        out["name"].append(name)
        out["found_by"].append("event" if market in announced_set else "trade")
        out["symbol"].append(symbol)
        out["asset"].append(asset_of(state, market, index, symbol))
        state.listed[market] = min(block, state.listed.get(market, block))
    return out


def _read_at(rpc: Rpc, calls: list[tuple[str, str]], block: int) -> dict[str, int | str]:
    """Getter name -> value at ``block`` for (name, contract) pairs, or why it is unreadable
    (a text: no contract there yet, a revert, a node without that block's state)."""
    if not calls:
        return {}
    try:
        replies: list[Any] = rpc.batch(
            [("eth_call", [{"to": to, "data": encode_call(f"{n}()", [])}, hex(block)])
             for n, to in calls], return_errors=True)
    except RpcError as e:
        replies = [e] * len(calls)
    return {name: int(reply, 16) if isinstance(reply, str) and len(reply) == 66
            else f"answer {reply!s:.80}"
            for (name, _), reply in zip(calls, replies, strict=True)}


def _first_block(rpc: Rpc, name: str, contract: str, low: int, high: int, value: int | None
                 ) -> int:
    """The first block in (low, high] where the getter answers ``value`` (any value: None),
    given that it does at ``high`` and not at ``low`` (bisection; one change assumed)."""
    while high - low > 1:
        mid = (low + high) // 2
        got = _read_at(rpc, [(name, contract)], mid)[name]
        hit = isinstance(got, int) and (value is None or got == value)
        low, high = (low, mid) if hit else (mid, high)
    return high


def read_parameters(state: ScanState, rpc: Rpc, lo: int, hi: int
                    ) -> list[tuple[int, int, str | None, str, int]]:
    """The adapter's event-less parameters, as rows where they change. Each is read at ``hi``;
    the block a value starts at is found by bisection (from ``lo`` for the first value, from
    the last known change after), so the rows do not depend on how blocks were split into
    ranges. The config's values win and are never read (they start at ``lo``). An unreadable
    parameter is logged and left out (the liquidation prices needing it stay NULL)."""
    source = state.source
    wanted = source.adapter.parameters
    if not wanted:
        return []
    contracts = {c.role: c.address for c in source.config.contracts}
    configured = source.config.parameters
    out: list[tuple[int, int, str | None, str, int]] = []

    def record(block: int, name: str, value: int) -> None:
        history = state.parameters.setdefault(name, [])
        if not history or history[-1][1] != value:
            history.append((block, value))
            out.append((block, -1, None, name, value))

    for role, name in wanted:
        state.parameters[name] = [p for p in state.parameters.get(name, []) if p[0] < lo]
        if name in configured:
            record(lo, name, configured[name])
            continue
        contract = contracts[role]
        value = _read_at(rpc, [(name, contract)], hi)[name]
        if isinstance(value, str):
            logger.warning("%s: cannot read %s() at block %d (%s); give it under `parameters:` "
                           "in the config", source.name, name, hi, value)
            continue
        history = state.parameters[name]
        if not history:  # its first value: since lo, or since it became readable
            first = _read_at(rpc, [(name, contract)], lo)[name]
            block = lo
            if isinstance(first, str):  # e.g. the contract is deployed later in the range
                block = _first_block(rpc, name, contract, lo, hi, None)
                first = _read_at(rpc, [(name, contract)], block)[name]
            record(block, name, int(first))
        if state.parameters[name][-1][1] != value:
            start = state.parameters[name][-1][0]
            record(_first_block(rpc, name, contract, start, hi, value), name, value)
    return out
