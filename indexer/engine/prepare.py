"""The prepare stage: a fetched range's logs decoded, the adapter's inputs gathered (the only
I/O here: block times, transactions, token decimals, positions' prior state), then the pure
adapter, then its output reshaped into the rows the store commits."""

from __future__ import annotations

import logging
from dataclasses import fields
from typing import Any

from indexer.abi import decode_logs, decode_values, encode_call
from indexer.adapters.base import AdapterContext
from indexer.engine.listing import list_markets, read_parameters
from indexer.engine.ranges import BlockRange
from indexer.engine.source import ScanState, Source
from indexer.errors import RpcError
from indexer.rpc import Log, Rpc
from indexer.store import RangeRows, Store
from indexer.types import AdapterOutput, Decoded, LogMeta

logger = logging.getLogger(__name__)


def read_decimals(rpc: Rpc, tokens: list[str]) -> dict[str, int | None]:
    """``decimals()`` of each token, in one batch; None where there is no readable answer
    (no contract, e.g. a GMX v2 synthetic index token, or a node without eth_call)."""
    call = encode_call("decimals()", [])
    out: dict[str, int | None] = {}
    try:
        replies = rpc.batch([("eth_call", [{"to": t, "data": call}, "latest"]) for t in tokens],
                            return_errors=True)
    except RpcError as e:
        logger.warning("cannot read token decimals (%s); their prices stay NULL", e)
        return dict.fromkeys(tokens)
    for token, reply in zip(tokens, replies, strict=True):
        value = None
        if isinstance(reply, str) and len(reply) == 66:
            (value,) = decode_values(["uint256"], reply)
            value = value if value <= 77 else None
        if value is None:
            logger.warning("token %s has no readable decimals(); add it under `tokens:` in the "
                           "config to get USD prices of its markets", token)
        out[token] = value
    return out


def _meta_with_times(rpc: Rpc, logs: list[Log]) -> LogMeta:
    meta = LogMeta.from_logs(logs)
    missing = sorted({meta.block_number[i] for i, t in enumerate(meta.block_time) if t < 0})
    if missing:  # some nodes leave blockTimestamp out of logs
        times = {int(b["number"], 16): int(b["timestamp"], 16) for b in rpc.fetch_blocks(missing)}
        meta.block_time = [t if t >= 0 else times[b]
                           for t, b in zip(meta.block_time, meta.block_number, strict=True)]
    return meta


def adapter_context(state: ScanState, rpc: Rpc, store: Store | None, decoded: Decoded,
                    meta: LogMeta, lo: int) -> AdapterContext:
    """What the adapter asked for, gathered: transactions, prior state from the store (read
    at ``lo``, the range's first block), token decimals from the chain (remembered)."""
    source = state.source
    adapter = source.adapter
    needed = adapter.transactions_needed(decoded, meta) if adapter.transactions_needed else []
    txs = rpc.fetch_transactions(needed) if needed else {}
    contracts: dict[str, tuple[str, ...]] = {}
    for c in source.config.contracts:
        contracts[c.role] = (*contracts.get(c.role, ()), c.address)
    previous = {}
    if adapter.keys_needed is not None:
        keys = adapter.keys_needed(decoded, meta)
        if keys:
            if store is None:
                raise AssertionError(f"adapter {source.config.adapter} needs the store")
            previous = store.load_previous(source.name, keys, lo, adapter.usd_decimals)
    token_ids = {t.id: t.address for t in source.config.tokens.values() if t.id is not None}
    ctx = AdapterContext(source.chain.chain_id, contracts, txs, state.markets, state.decimals,
                         previous, token_ids)
    if adapter.tokens_needed is not None:
        unknown = adapter.tokens_needed(decoded, meta, ctx)
        if unknown:
            state.decimals.update(read_decimals(rpc, unknown))
    return ctx


def to_range_rows(source: Source, logs: list[Log], meta: LogMeta, decoded: Decoded,
                  out: AdapterOutput) -> RangeRows:
    """The adapter's output (rows of the batch) as the store's columns (pure)."""

    def at(rows: list[int], name: str) -> list[Any]:
        column = getattr(meta, name)
        return [column[r] for r in rows]

    ch = out.changes
    changes: dict[str, list[Any]] = {
        "block_number": at(ch.row, "block_number"), "block_time": at(ch.row, "block_time"),
        "tx_hash": at(ch.row, "tx_hash"), "log_index": at(ch.row, "log_index")}
    for f in fields(ch):
        if f.name != "row":
            changes[f.name] = getattr(ch, f.name)
    fu = out.funding
    funding = {"block_number": at(fu.row, "block_number"), "block_time": at(fu.row, "block_time"),
               "log_index": at(fu.row, "log_index"), "market": fu.market, "rate": fu.rate,
               "index": fu.index, "current_rate": fu.current_rate}
    m = out.markets
    markets = {"block_number": at(m.row, "block_number"), "log_index": at(m.row, "log_index"),
               "market": m.market, "index_token": m.index_token, "long_token": m.long_token,
               "short_token": m.short_token, "name": m.name}
    oi = out.open_interest
    open_interest = {"block_number": at(oi.row, "block_number"),
                     "block_time": at(oi.row, "block_time"), "log_index": at(oi.row, "log_index"),
                     "market": oi.market, "collateral_token": oi.collateral_token,
                     "is_long": oi.is_long, "unit": oi.unit, "delta": oi.delta,
                     "next_value": oi.next_value}
    quarantine = [(meta.block_number[r], meta.tx_hash[r], meta.log_index[r], meta.address[r],
                   logs[r].topics, logs[r].data, reason)
                  for r, reason in sorted(decoded.failures + out.rejected)]
    for q in quarantine:
        logger.warning("quarantined log %s#%s: %s", q[1], q[2], q[6])
    parameters = [(meta.block_number[r], meta.log_index[r], market, name, value)
                  for r, market, name, value in out.parameters]
    payments = {"block_number": at([p.row for p in out.payments], "block_number"),
                "block_time": at([p.row for p in out.payments], "block_time"),
                "tx_hash": at([p.row for p in out.payments], "tx_hash"),
                "log_index": at([p.row for p in out.payments], "log_index"),
                "account": [p.account for p in out.payments],
                "position_key": [p.position_key for p in out.payments],
                "market": [p.market for p in out.payments],
                "amount": [p.amount for p in out.payments]}
    return RangeRows(source.chain.chain_id, source.config.adapter, source.name,
                     source.adapter.usd_decimals, changes, funding, quarantine, [], markets,
                     open_interest, parameters, payments)


def adapt(state: ScanState, rpc: Rpc, logs: list[Log], store: Store | None = None,
          lo: int = 0) -> RangeRows:
    """Decode and adapt one range's logs (gathering what the adapter needs), ready to store.
    ``store`` and ``lo`` serve adapters that read the positions' state before the range."""
    meta = _meta_with_times(rpc, logs)
    decoded = decode_logs(logs, state.source.abi)
    ctx = adapter_context(state, rpc, store, decoded, meta, lo)
    out = state.source.adapter.to_changes(decoded, meta, ctx)
    return to_range_rows(state.source, logs, meta, decoded, out)


def prepare(state: ScanState, rpc: Rpc, store: Store, fetched: BlockRange,
            headers: dict[int, dict[str, Any]] | None = None) -> BlockRange:
    """The fetched range with its rows (its logs dropped). It reads the store only for adapters
    that read prior state. Markets the range announces are known to ``state`` from here on.
    ``headers``: the tip path's headers of the range, whose hashes are all kept."""
    rows = adapt(state, rpc, fetched.logs, store, fetched.lo)
    assert rows.markets is not None, "to_range_rows always gives the markets' columns"
    rows.markets = list_markets(state, rpc, fetched.lo, rows.changes, rows.markets)
    rows.parameters = (rows.parameters or []) + read_parameters(state, rpc, fetched.lo,
                                                                fetched.hi)
    if headers is not None:
        rows.blocks = [(n, h["hash"], h["parentHash"], int(h["timestamp"], 16))
                       for n, h in sorted(headers.items()) if fetched.lo <= n <= fetched.hi]
    else:
        end = fetched.end
        rows.blocks = [(fetched.hi, end["hash"], end["parentHash"], int(end["timestamp"], 16))]
    state.add_markets(rows.markets)
    fetched.rows, fetched.logs = rows, []
    return fetched
