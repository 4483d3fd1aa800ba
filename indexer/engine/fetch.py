"""The fetch stage of an EVM source: a range's logs by eth_getLogs, in requests the sizer sizes,
several ahead of the consumer, joined into ranges, with markets announced on the way."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from itertools import pairwise

from indexer.abi import decode_logs
from indexer.engine.ranges import BlockRange
from indexer.engine.source import ScanState
from indexer.errors import RangeTooLarge, RpcError
from indexer.rpc import Log, Rpc
from indexer.types import LogMeta

logger = logging.getLogger(__name__)

#: Answers joined into one range at most (see :func:`fetch_ahead`): bounds the blocks a range
#: spans on a sparse chain, where every answer is light.
JOIN_MAX = 8


def checked(logs: list[Log], addresses: list[str], lo: int, hi: int) -> list[Log]:
    """Drop ``removed`` logs; a log outside the filter means a broken node: fail loudly."""
    if any(lg.removed for lg in logs):
        logs = [lg for lg in logs if not lg.removed]
    wanted = set(addresses)
    outside = sorted(a for a in {lg.address for lg in logs} if a.lower() not in wanted)
    blocks = sorted(int(n, 16) for n in {lg.block_number for lg in logs})
    bad = [n for n in blocks[:1] + blocks[-1:] if not lo <= n <= hi]
    if outside or bad:
        what = f"address {outside[0]}" if outside else f"block {bad[0]}"
        raise RpcError("eth_getLogs", None, f"node returned a log outside the filter ({what}, "
                                            f"asked for blocks {lo}..{hi})")
    return logs


def chain_order(logs: list[Log]) -> list[Log]:
    """Logs sorted by (block, log index); nodes send them so, then only the check is paid."""
    keys = [(int(lg.block_number, 16), int(lg.log_index, 16)) for lg in logs]
    if all(a < b for a, b in pairwise(keys)):
        return logs
    return [lg for _, lg in sorted(zip(keys, logs, strict=True), key=lambda kv: kv[0])]


def log_bytes(logs: list[Log]) -> int:
    """About the JSON size of ``logs``: what the sizer's memory budget counts."""
    return sum(len(lg.data) for lg in logs) + 400 * len(logs)


def _request(state: ScanState, rpc: Rpc, addresses: list[str], lo: int, limit: int
             ) -> tuple[int, list[Log]]:
    """One eth_getLogs request from ``lo`` toward ``limit`` as the sizer sizes it, shrinking
    on provider caps and on answers over the byte budget; returns (end covered, its logs)."""
    source = state.source
    while True:
        hi = state.sizer.end_for(lo, limit)
        try:
            logs = rpc.fetch_logs(addresses, source.topics, lo, hi, source.response_bytes)
        except RangeTooLarge as e:
            state.sizer.shrink(e, hi - lo + 1)
            continue
        state.sizer.succeeded(hi - lo + 1, log_bytes(logs))
        return hi, checked(logs, addresses, lo, hi)


def fetch_logs(state: ScanState, rpc: Rpc, lo: int, limit: int) -> tuple[int, list[Log]]:
    """Fetch logs from ``lo`` up to at most ``limit`` (see :func:`_request`).

    Returns the end block actually covered (whole blocks only) and its logs, in chain order.
    For adapters whose markets are contracts found at run time (``markets_added``), a market
    announced inside the range is fetched too, from its announcement block to the range end.
    """
    hi, logs = _request(state, rpc, state.addresses, lo, limit)
    if state.source.adapter.scans_markets:
        logs = _add_new_markets(state, rpc, logs, hi)
    return hi, chain_order(logs)


def _fetch_span(state: ScanState, rpc: Rpc, addresses: list[str], lo: int, hi: int) -> list[Log]:
    """All logs of ``addresses`` in exactly [lo, hi], in as many requests as it takes."""
    out: list[Log] = []
    while lo <= hi:
        end, logs = _request(state, rpc, addresses, lo, hi)
        out += logs
        lo = end + 1
    return out


def fetch_range(state: ScanState, rpc: Rpc, lo: int, limit: int, header: bool = True
                ) -> BlockRange:
    """One range from ``lo`` toward ``limit``: its logs and (with ``header``) the header of its
    last block."""
    blocks = state.sizer.size
    hi, logs = fetch_logs(state, rpc, lo, limit)
    end = rpc.fetch_block(hi) if header else {}
    return BlockRange(lo, hi, end, logs, blocks, log_bytes(logs), len(logs))


def fetch_ahead(state: ScanState, rpc: Rpc, lo: int, hi: int,
                stop: threading.Event | None = None) -> Generator[BlockRange, None, None]:
    """The ranges covering [lo, hi] in order, each fetched while earlier ones are prepared and
    committed: as many requests as the endpoints take (``Rpc.capacity``, at most
    ``requests_in_flight``) run on threads ahead of the consumer. At most that many answers
    wait, each bounded by the byte budget (backpressure, not an unbounded queue).

    Consecutive answers are joined into one range of about ``response_bytes`` of logs (at most
    ``JOIN_MAX`` answers, or fewer once ``stop`` is set): the sizer keeps answers small (see
    ``scanner.REQUEST_BYTES``), a commit has a fixed cost. Adapters whose fetch depends on the
    ranges before it (``markets_added``: a market found in one range is fetched in the next)
    fetch one answer at a time, and each is a range."""
    if state.source.adapter.scans_markets:
        return _answers(state, rpc, lo, hi, headers=True)
    # only a joined range's last block needs its header: one request per range, not per answer
    answers = _answers(state, rpc, lo, hi, headers=False)
    return _join_answers(answers, state.source.response_bytes, stop, rpc)


def _join_answers(answers: Generator[BlockRange, None, None], budget: int,
                  stop: threading.Event | None, rpc: Rpc) -> Generator[BlockRange, None, None]:
    batch: list[BlockRange] = []
    size = 0
    with closing(answers):
        for fetched in answers:
            batch.append(fetched)
            size += fetched.log_bytes
            if size * 10 >= budget * 7 or len(batch) >= JOIN_MAX or (stop and stop.is_set()):
                yield joined(batch, rpc)
                batch, size = [], 0
        if batch:
            yield joined(batch, rpc)


def joined(batch: list[BlockRange], rpc: Rpc) -> BlockRange:
    """Consecutive fetched ranges as one, with the header of its last block."""
    last = batch[-1]
    end = last.end or rpc.fetch_block(last.hi)
    if len(batch) == 1:
        last.end = end
        return last
    logs: list[Log] = []
    for f in batch:
        logs += f.logs
    return BlockRange(batch[0].lo, last.hi, end, logs, last.request_blocks,
                      sum(f.log_bytes for f in batch), len(logs))


def _answers(state: ScanState, rpc: Rpc, lo: int, hi: int, headers: bool
             ) -> Generator[BlockRange, None, None]:
    """The answers covering [lo, hi] in order, as many fetched ahead as the endpoints take now
    (their learnt windows, at most ``requests_in_flight``; one at a time for adapters that
    discover markets)."""
    source = state.source
    depth = 1 if source.adapter.scans_markets else source.chain.requests_in_flight
    if depth <= 1:
        while lo <= hi:
            fetched = fetch_range(state, rpc, lo, hi, headers)
            yield fetched
            lo = fetched.hi + 1
        return
    pool = ThreadPoolExecutor(depth, thread_name_prefix=f"fetch-{source.name}")
    #: (planned end, the fetch of the range from its start toward that end), in chain order.
    pending: deque[tuple[int, Future[BlockRange]]] = deque()
    try:
        while pending or lo <= hi:
            while lo <= hi and len(pending) < min(depth, rpc.capacity()):
                end = state.sizer.end_for(lo, hi)
                pending.append((end, pool.submit(fetch_range, state, rpc, lo, end, headers)))
                lo = end + 1
            end, future = pending.popleft()
            fetched = future.result()
            if fetched.hi < end:  # the range shrank (a cap, or an answer over the budget)
                pending.appendleft((end, pool.submit(fetch_range, state, rpc, fetched.hi + 1,
                                                     end, headers)))
            yield fetched
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _add_new_markets(state: ScanState, rpc: Rpc, logs: list[Log], hi: int) -> list[Log]:
    """Fetch the logs of markets announced in ``logs`` (and in what that brings), from the
    block of each announcement to ``hi``."""
    source = state.source
    assert source.adapter.markets_added is not None
    fetched = set(state.addresses)
    todo = logs
    while True:
        decoded = decode_logs(todo, source.abi)
        found: dict[str, int] = {}
        for row, market in source.adapter.markets_added(decoded, LogMeta.from_logs(todo)):
            if market not in fetched:
                block = int(todo[row].block_number, 16)
                found[market] = min(block, found.get(market, block))
        if not found:
            return logs
        todo = []
        for market, block in sorted(found.items()):
            logger.info("%s: new market %s from block %d", source.name, market, block)
            todo += _fetch_span(state, rpc, [market], block, hi)
            fetched.add(market)
        logs = logs + todo
