"""The fetch and prepare stages of a CometBFT source: ranges of whole blocks with their ABCI
events, then the chain state the adapter names, then the pure adapter.

Each range is ``max_block_range`` blocks (``block`` and ``block_results`` per height, in
JSON-RPC batches of ``batch_size`` requests, ``requests_in_flight`` batches at once ahead of the
consumer). The first block must link to the stored checkpoint's block and every block to the one
before it: a node that serves another history is stopped here, before anything is written.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator
from typing import TYPE_CHECKING

from indexer.abci import decode_events
from indexer.adapters.base import AdapterContext
from indexer.engine.fetch import log_bytes
from indexer.engine.listing import list_markets
from indexer.engine.prepare import to_range_rows
from indexer.engine.ranges import BlockRange
from indexer.engine.source import ScanState
from indexer.errors import RpcError
from indexer.store import Store
from indexer.types import LogMeta

if TYPE_CHECKING:
    from indexer.chains.cometbft import CometChain

logger = logging.getLogger(__name__)


def fetch_ranges(state: ScanState, chain: CometChain, lo: int, hi: int, parent: str | None,
                 stop: threading.Event | None = None) -> Generator[BlockRange, None, None]:
    """The ranges covering [lo, hi] in order. ``parent``: the stored hash of block ``lo - 1``
    (None when nothing is stored below ``lo``)."""
    types = set(state.source.abi.names)
    size = state.source.chain.max_block_range
    for blocks in chain.blocks_ahead(lo, hi, types, size):
        first = blocks[0]
        if parent is not None and first.parent_hash != parent:
            raise RpcError("block", None, f"block {first.height} does not link to the stored "
                           f"block {first.height - 1} (its last_block_id is {first.parent_hash}"
                           f", stored {parent}): the node serves another history")
        parent = blocks[-1].hash
        records = [r for b in blocks for r in b.records]
        yield BlockRange(first.height, blocks[-1].height, blocks[-1].header, records,
                         len(blocks), log_bytes(records), len(records))
        if stop is not None and stop.is_set():
            return


def prepare_blocks(state: ScanState, chain: CometChain, store: Store, fetched: BlockRange
                   ) -> BlockRange:
    """The fetched range with its rows (its records dropped): the events decoded, the positions'
    prior state and the chain state the adapter names read, then the adapter."""
    source = state.source
    adapter = source.adapter
    records = fetched.logs
    meta = LogMeta.from_logs(records)
    decoded = decode_events(records, source.abi)
    previous = {}
    if adapter.keys_needed is not None:
        keys = adapter.keys_needed(decoded, meta)
        if keys:
            previous = store.load_previous(source.name, keys, fetched.lo, adapter.usd_decimals)
    if adapter.carried_from_history is not None and state.carried_through != fetched.lo - 1:
        # a new run, or a replay: what the adapter carried is rebuilt as of this range's start
        state.carried = adapter.carried_from_history(
            store.load_open_histories(source.name, fetched.lo))
    ctx = AdapterContext(source.chain.chain_id, {}, {}, state.markets, state.decimals, previous,
                         open_interest=store.load_open_interest(source.name, fetched.lo),
                         open_interest_from=source.chain.open_interest_from,
                         carried=state.carried)
    if adapter.state_needed is not None:
        queries = {name: (path, key) for name, path, key in adapter.state_queries}
        for name, height in adapter.state_needed(decoded, meta, ctx, fetched.hi):
            path, key = queries[name]
            ctx.chain_state[(name, height)] = chain.state_list(path, key, height)
    if adapter.markets_in_state is not None:
        for market, (name, decimals) in adapter.markets_in_state(ctx.chain_state).items():
            if market not in state.decimals:
                logger.info("%s: market %s (%s) from block %d", source.name, market, name,
                            fetched.lo)
            state.decimals[market] = decimals
            state.markets[market] = (name, "", "")
            state.symbols[name] = name
    out = adapter.to_changes(decoded, meta, ctx)
    state.carried_through = fetched.hi
    rows = to_range_rows(source, records, meta, decoded, out)
    assert rows.markets is not None, "to_range_rows always gives the markets' columns"
    rows.markets = list_markets(state, chain.rpc, fetched.lo, rows.changes, rows.markets)
    end = fetched.end
    rows.blocks = [(fetched.hi, end["hash"], end["parentHash"], int(end["timestamp"], 16))]
    fetched.rows, fetched.logs = rows, []
    return fetched
