"""One block range of one protocol, from the node to the store: fetch -> decode -> adapt -> store."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field, fields
from itertools import pairwise
from types import ModuleType
from typing import Any

from indexer import adapters
from indexer.abi import AbiEvents, decode_logs, decode_values, encode_call, keccak, load_abi_dir
from indexer.adapters.base import AdapterContext
from indexer.bloom import may_match
from indexer.config import ChainConfig, Config, ProtocolConfig
from indexer.errors import AbiError, ChainMoved, RangeTooLarge, RpcError
from indexer.rpc import Log, Rpc
from indexer.scanner import MAX_BYTES, REQUEST_BYTES, RangeSizer
from indexer.store import RangeRows, Store
from indexer.types import LogMeta

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Plan:
    """What to scan for one protocol entry, resolved once at start-up."""

    proto: ProtocolConfig
    chain: ChainConfig
    adapter: ModuleType
    abi: AbiEvents
    #: The configured contracts' addresses (see ``addresses`` for all log sources).
    contracts: list[str]
    #: eth_getLogs topics filter: [[topic0 of every handled event version]] (plus, for
    #: adapters reading one generic event, [[keccak256 of each event name]]).
    topics: list[Any]
    sizer: RangeSizer = field(init=False)
    #: Markets known so far: address -> (index, long, short token); config, then events.
    markets: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    #: Token decimals known so far (config first, then read from the token contracts).
    decimals: dict[str, int | None] = field(default_factory=dict)

    #: ``store.rollbacks`` when ``markets`` last read the stored markets (-1: not yet); a
    #: rollback since then (of any protocol on the chain) makes them stale.
    markets_generation: int = -1
    #: False once the node proved to have neither a finalized nor a safe block tag.
    finality_tags: bool = True
    #: Bytes of logs one eth_getLogs answer may hold (a larger one is dropped and its range
    #: split) and one range joins answers up to (see :func:`response_budget`).
    response_bytes: int = MAX_BYTES
    #: Ledger rows a commit gathers while catching up (see :data:`COMMIT_ROWS`; 0: each range
    #: is committed alone).
    commit_rows: int = 0

    def __post_init__(self) -> None:
        self.sizer = RangeSizer(self.chain.max_block_range,
                                max_bytes=min(self.response_bytes, REQUEST_BYTES))
        self.decimals.update({t.address: t.decimals for t in self.proto.tokens.values()})
        self.load_markets(None)

    def load_markets(self, store: Store | None) -> None:
        """Markets from the config, then those stored from events (again after a rollback)."""
        self.markets.clear()
        self.markets.update({m.address: (m.index_token, m.long_token, m.short_token)
                             for m in self.proto.markets.values()})
        if store is not None:
            self.markets.update(store.load_markets(self.proto.name))
        self.markets_generation = store.rollbacks if store is not None else -1

    def refresh_markets(self, store: Store) -> None:
        """Load the stored markets if not yet done or if a rollback made them stale."""
        if self.markets_generation != store.rollbacks:
            self.load_markets(store)

    @property
    def scans_markets(self) -> bool:
        """Whether markets are contracts emitting their own logs (a factory pattern)."""
        return bool(getattr(self.adapter, "SCAN_MARKETS", False))

    @property
    def addresses(self) -> list[str]:
        """Every address whose logs are fetched: the configured contracts, plus the markets
        found so far for adapters whose markets log themselves (Synthetix proxies)."""
        if not self.scans_markets:
            return self.contracts
        return self.contracts + sorted(set(self.markets) - set(self.contracts))


#: Ledger rows a commit aims at while catching up: consecutive prepared ranges with fewer are
#: committed together (see :func:`merge_prepared`), for a commit has a fixed cost (measured on
#: GMX v2 rows: 17 us a row committed 8,000 at a time, 11-12 us from 24,000 up to 96,000). A
#: GMX v2 range of the byte budget holds about 10,000 (its logs are large), a GMX v1 one 50,000.
COMMIT_ROWS = 25_000
#: Memory the rows gathered for one commit take, in MB (measured with tracemalloc: about 1 KB
#: a ledger row of GMX v1 or v2 once its range is adapted; 1.2 KB counted).
COMMIT_MB = COMMIT_ROWS * 1_200 // 1_000_000
#: Share of ``max_memory_mb`` given to DuckDB's own memory limit (it spills to disk beyond).
DUCKDB_SHARE = 4
#: What Python, the libraries and the decoders' working set take besides the logs held, in MB.
BASE_MB = 200


def response_budget(max_memory_mb: int, in_flight: int) -> int:
    """Bytes of logs one getLogs answer may hold under the memory ceiling: what is left after
    DuckDB's share, the base and the rows gathered for a commit is split over the answers held
    at once: those in flight, and the one being decoded and stored, which counts four times (its
    JSON while it is parsed, the logs, their decoded columns and the rows built from them)."""
    left = max_memory_mb - max_memory_mb // DUCKDB_SHARE - BASE_MB - COMMIT_MB
    return max(left, 50) * 1_000_000 // (in_flight + 4)


def build_plan(cfg: Config, proto: ProtocolConfig) -> Plan:
    """Resolve adapter, ABI and filters; config and ABI problems raise ConfigError / AbiError."""
    index = cfg.protocols.index(proto)
    adapter = adapters.load(proto.adapter, cfg.file, f"protocols[{index}].adapter")
    adapters.check_roles(adapter, [c.role for c in proto.contracts], cfg.file,
                         f"protocols[{index}].contracts")
    try:
        abi = load_abi_dir(proto.abi_dir)
    except AbiError as e:
        raise AbiError(f"{cfg.file}: protocols[{index}] ({proto.name}): {e}") from None
    adapters.check_events(adapter, abi.names, str(proto.abi_dir))
    topics: list[Any] = [abi.topics_for(set(adapter.EVENTS))]
    if getattr(adapter, "EVENT_NAMES", None):
        topics.append(sorted("0x" + keccak(n.encode()).hex() for n in adapter.EVENT_NAMES))
    chain = cfg.chains[proto.chain]
    return Plan(proto, chain, adapter, abi, list(dict.fromkeys(c.address for c in proto.contracts)),
                topics, response_bytes=response_budget(cfg.max_memory_mb, chain.requests_in_flight),
                commit_rows=COMMIT_ROWS)


@dataclass(frozen=True, slots=True)
class RangeResult:
    lo: int
    hi: int
    logs: int
    changes: int
    quarantined: int
    #: Logs the range request missed and the logsBloom check fetched again (tip path only).
    refetched: int = 0
    #: Block count of the eth_getLogs requests when the range was fetched.
    range_size: int = 0
    #: Timestamp of block ``hi``.
    hi_time: int | None = None


def _checked(logs: list[Log], addresses: list[str], lo: int, hi: int) -> list[Log]:
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


def _chain_order(logs: list[Log]) -> list[Log]:
    """Logs sorted by (block, log index); nodes send them so, then only the check is paid."""
    keys = [(int(lg.block_number, 16), int(lg.log_index, 16)) for lg in logs]
    if all(a < b for a, b in pairwise(keys)):
        return logs
    return [lg for _, lg in sorted(zip(keys, logs, strict=True), key=lambda kv: kv[0])]


def log_bytes(logs: list[Log]) -> int:
    """About the JSON size of ``logs``: what the sizer's memory budget counts."""
    return sum(len(lg.data) for lg in logs) + 400 * len(logs)


def _request(plan: Plan, rpc: Rpc, addresses: list[str], lo: int, limit: int
             ) -> tuple[int, list[Log]]:
    """One eth_getLogs request from ``lo`` toward ``limit`` as the sizer sizes it, shrinking
    on provider caps and on answers over the byte budget; returns (end covered, its logs)."""
    while True:
        hi = plan.sizer.end_for(lo, limit)
        try:
            logs = rpc.fetch_logs(addresses, plan.topics, lo, hi, plan.response_bytes)
        except RangeTooLarge as e:
            plan.sizer.shrink(e, hi - lo + 1)
            continue
        plan.sizer.succeeded(hi - lo + 1, log_bytes(logs))
        return hi, _checked(logs, addresses, lo, hi)


def fetch_logs(plan: Plan, rpc: Rpc, lo: int, limit: int) -> tuple[int, list[Log]]:
    """Fetch logs from ``lo`` up to at most ``limit`` (see :func:`_request`).

    Returns the end block actually covered (whole blocks only) and its logs, in chain order.
    For adapters whose markets are contracts found at run time (``SCAN_MARKETS``), a market
    announced inside the range is fetched too, from its announcement block to the range end.
    """
    hi, logs = _request(plan, rpc, plan.addresses, lo, limit)
    if plan.scans_markets:
        logs = _add_new_markets(plan, rpc, logs, hi)
    return hi, _chain_order(logs)


def _fetch_span(plan: Plan, rpc: Rpc, addresses: list[str], lo: int, hi: int) -> list[Log]:
    """All logs of ``addresses`` in exactly [lo, hi], in as many requests as it takes."""
    out: list[Log] = []
    while lo <= hi:
        end, logs = _request(plan, rpc, addresses, lo, hi)
        out += logs
        lo = end + 1
    return out


@dataclass(frozen=True, slots=True)
class Fetched:
    """One range's logs, fetched ahead of its decoding and storing."""

    lo: int
    hi: int
    logs: list[Log]
    #: The header of block ``hi`` (its hash becomes the checkpoint's).
    end: dict[str, Any]
    #: The sizer's block count when the range was planned.
    range_size: int
    #: About the JSON size of ``logs`` (see :func:`log_bytes`).
    size: int


def _fetch_range(plan: Plan, rpc: Rpc, lo: int, limit: int) -> Fetched:
    size = plan.sizer.size
    hi, logs = fetch_logs(plan, rpc, lo, limit)
    return Fetched(lo, hi, logs, rpc.fetch_block(hi), size, log_bytes(logs))


def fetch_ahead(plan: Plan, rpc: Rpc, lo: int, hi: int,
                stop: threading.Event | None = None) -> Iterator[Fetched]:
    """The ranges covering [lo, hi] in order, each fetched while earlier ones are decoded and
    stored: up to ``requests_in_flight`` requests run on threads ahead of the consumer. At most
    that many answers wait, each bounded by the byte budget (backpressure, not an unbounded
    queue).

    Consecutive answers are joined into one range of about ``response_bytes`` of logs (at most
    ``JOIN_MAX`` answers, or fewer once ``stop`` is set): the sizer keeps answers small (see
    ``scanner.REQUEST_BYTES``), a commit has a fixed cost. Adapters whose fetch depends on the
    ranges before it (``SCAN_MARKETS``: a market found in one range is fetched in the next) fetch
    one answer at a time, and each is a range."""
    answers = _answers(plan, rpc, lo, hi)
    if plan.scans_markets:
        return answers
    return _join_answers(answers, plan.response_bytes, stop)


#: Answers joined into one range at most (see :func:`fetch_ahead`): bounds the blocks a range
#: spans on a sparse chain, where every answer is light.
JOIN_MAX = 8


def _join_answers(answers: Iterator[Fetched], budget: int, stop: threading.Event | None
                  ) -> Iterator[Fetched]:
    batch: list[Fetched] = []
    size = 0
    with closing(answers):
        for fetched in answers:
            batch.append(fetched)
            size += fetched.size
            if size * 10 >= budget * 7 or len(batch) >= JOIN_MAX or (stop and stop.is_set()):
                yield _merged(batch)
                batch, size = [], 0
        if batch:
            yield _merged(batch)


def _merged(batch: list[Fetched]) -> Fetched:
    if len(batch) == 1:
        return batch[0]
    logs: list[Log] = []
    for f in batch:
        logs += f.logs
    last = batch[-1]
    return Fetched(batch[0].lo, last.hi, logs, last.end, last.range_size,
                   sum(f.size for f in batch))


def _answers(plan: Plan, rpc: Rpc, lo: int, hi: int) -> Iterator[Fetched]:
    """The answers covering [lo, hi] in order, ``requests_in_flight`` of them fetched ahead
    (one at a time for ``SCAN_MARKETS`` adapters)."""
    depth = 1 if plan.scans_markets else plan.chain.requests_in_flight
    if depth <= 1:
        while lo <= hi:
            fetched = _fetch_range(plan, rpc, lo, hi)
            yield fetched
            lo = fetched.hi + 1
        return
    pool = ThreadPoolExecutor(depth, thread_name_prefix=f"fetch-{plan.proto.name}")
    #: (planned end, the fetch of the range from its start toward that end), in chain order.
    pending: deque[tuple[int, Future[Fetched]]] = deque()
    try:
        while pending or lo <= hi:
            while lo <= hi and len(pending) < depth:
                end = plan.sizer.end_for(lo, hi)
                pending.append((end, pool.submit(_fetch_range, plan, rpc, lo, end)))
                lo = end + 1
            end, future = pending.popleft()
            fetched = future.result()
            if fetched.hi < end:  # the range shrank (a cap, or an answer over the budget)
                pending.appendleft((end, pool.submit(_fetch_range, plan, rpc, fetched.hi + 1,
                                                     end)))
            yield fetched
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _add_new_markets(plan: Plan, rpc: Rpc, logs: list[Log], hi: int
                     ) -> list[Log]:
    """Fetch the logs of markets announced in ``logs`` (and in what that brings), from the
    block of each announcement to ``hi``."""
    fetched = set(plan.addresses)
    todo = logs
    while True:
        decoded = decode_logs(todo, plan.abi)
        found: dict[str, int] = {}
        for row, market in plan.adapter.markets_added(decoded, LogMeta.from_logs(todo)):
            if market not in fetched:
                block = int(todo[row].block_number, 16)
                found[market] = min(block, found.get(market, block))
        if not found:
            return logs
        todo = []
        for market, block in sorted(found.items()):
            logger.info("%s: new market %s from block %d", plan.proto.name, market, block)
            todo += _fetch_span(plan, rpc, [market], block, hi)
            fetched.add(market)
        logs = logs + todo


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


def to_range_rows(plan: Plan, rpc: Rpc, logs: list[Log], store: Store | None = None,
                  lo: int = 0) -> RangeRows:
    """Decode and adapt one range's logs (fetching what the adapter needs), ready to store.

    ``store`` and ``lo`` (the range's first block) serve adapters that need the positions'
    state before the range (``keys_needed``)."""
    meta = LogMeta.from_logs(logs)
    missing = sorted({meta.block_number[i] for i, t in enumerate(meta.block_time) if t < 0})
    if missing:  # some nodes leave blockTimestamp out of logs
        times = {int(b["number"], 16): int(b["timestamp"], 16) for b in rpc.fetch_blocks(missing)}
        meta.block_time = [t if t >= 0 else times[b]
                           for t, b in zip(meta.block_time, meta.block_number, strict=True)]
    decoded = decode_logs(logs, plan.abi)
    needed = plan.adapter.transactions_needed(decoded, meta)
    txs = rpc.fetch_transactions(needed) if needed else {}
    contracts: dict[str, tuple[str, ...]] = {}
    for c in plan.proto.contracts:
        contracts[c.role] = (*contracts.get(c.role, ()), c.address)
    keys_needed = getattr(plan.adapter, "keys_needed", None)
    previous = {}
    if keys_needed is not None:
        keys = keys_needed(decoded, meta)
        if keys and store is None:
            raise AssertionError(f"adapter {plan.proto.adapter} needs the store for prior state")
        if keys:
            previous = store.load_previous(plan.proto.name, keys, lo, plan.adapter.USD_DECIMALS)
    token_ids = {t.id: t.address for t in plan.proto.tokens.values() if t.id is not None}
    ctx = AdapterContext(plan.chain.chain_id, contracts, txs, plan.markets, plan.decimals,
                         previous, token_ids)
    tokens_needed = getattr(plan.adapter, "tokens_needed", None)
    if tokens_needed is not None:
        unknown = tokens_needed(decoded, meta, ctx)
        if unknown:
            plan.decimals.update(read_decimals(rpc, unknown))
    out = plan.adapter.to_changes(decoded, meta, ctx)
    ch = out.changes
    rows = ch.row
    changes: dict[str, list[Any]] = {
        "block_number": [meta.block_number[r] for r in rows],
        "block_time": [meta.block_time[r] for r in rows],
        "tx_hash": [meta.tx_hash[r] for r in rows],
        "log_index": [meta.log_index[r] for r in rows],
    }
    for f in fields(ch):
        if f.name != "row":
            changes[f.name] = getattr(ch, f.name)
    f = out.funding
    funding = {"block_number": [meta.block_number[r] for r in f.row],
               "block_time": [meta.block_time[r] for r in f.row],
               "log_index": [meta.log_index[r] for r in f.row], "market": f.market, "rate": f.rate}
    m = out.markets
    markets = {"block_number": [meta.block_number[r] for r in m.row],
               "log_index": [meta.log_index[r] for r in m.row], "market": m.market,
               "index_token": m.index_token, "long_token": m.long_token,
               "short_token": m.short_token, "name": m.name}
    oi = out.open_interest
    open_interest = {"block_number": [meta.block_number[r] for r in oi.row],
                     "block_time": [meta.block_time[r] for r in oi.row],
                     "log_index": [meta.log_index[r] for r in oi.row], "market": oi.market,
                     "collateral_token": oi.collateral_token, "is_long": oi.is_long,
                     "unit": oi.unit, "delta": oi.delta, "next_value": oi.next_value}
    quarantine = [(meta.block_number[r], meta.tx_hash[r], meta.log_index[r], meta.address[r],
                   logs[r].topics, logs[r].data, reason)
                  for r, reason in sorted(decoded.failures + out.rejected)]
    for q in quarantine:
        logger.warning("quarantined log %s#%s: %s", q[1], q[2], q[6])
    return RangeRows(plan.chain.chain_id, plan.proto.adapter, plan.proto.name,
                     plan.adapter.USD_DECIMALS, changes, funding, quarantine, [], markets,
                     open_interest)


def complete_from_blooms(plan: Plan, rpc: Rpc, logs: list[Log],
                         headers: dict[int, dict[str, Any]], lo: int, hi: int
                         ) -> tuple[list[Log], int]:
    """The completeness check: a block whose ``logsBloom`` may hold our events but that got no
    log from the range request is fetched again by hash. Returns the logs (with any found that
    way, in chain order) and how many were added; a bloom false positive adds nothing."""
    with_logs = {int(lg.block_number, 16) for lg in logs}
    addresses = plan.addresses
    suspects = [n for n in range(lo, hi + 1) if n not in with_logs and n in headers
                and may_match(headers[n]["logsBloom"], addresses, plan.topics)]
    if not suspects:
        return logs, 0
    replies = rpc.fetch_block_logs([headers[n]["hash"] for n in suspects], addresses, plan.topics)
    found: list[Log] = []
    for n, reply in zip(suspects, replies, strict=True):
        got = _checked(reply, addresses, n, n)
        if got:
            logger.warning("%s: eth_getLogs returned nothing for block %d but its logsBloom "
                           "matches and a request by block hash returned %d logs; kept them "
                           "(the provider served an incomplete range)", plan.proto.name, n,
                           len(got))
            found += got
    return (_chain_order(logs + found), len(found)) if found else (logs, 0)


def _check_against_headers(rpc: Rpc, logs: list[Log],
                           headers: dict[int, dict[str, Any]], hi: int) -> None:
    """Logs must come from the blocks whose headers we hold, and block ``hi`` must still be the
    one we fetched: otherwise the chain moved during the fetch (ChainMoved; sync retries)."""
    for log in logs:
        n = int(log.block_number, 16)
        if n in headers and headers[n]["hash"] != log.block_hash:
            raise ChainMoved(f"a log of block {n} has hash {log.block_hash} but its header "
                             f"{headers[n]['hash']}: the chain reorganised during the fetch")
    now = rpc.fetch_block(hi)["hash"]
    if now != headers[hi]["hash"]:
        raise ChainMoved(f"block {hi} changed from {headers[hi]['hash']} to {now} while its "
                         "range was fetched")


@dataclass(slots=True)
class Prepared:
    """One range decoded and adapted, ready to commit (see :func:`prepare_range`)."""

    lo: int
    hi: int
    rows: RangeRows
    end: dict[str, Any]
    logs: int
    refetched: int
    range_size: int


def process_range(plan: Plan, rpc: Rpc, store: Store, lo: int, limit: int, start_block: int,
                  headers: dict[int, dict[str, Any]] | None = None,
                  fetched: Fetched | None = None) -> RangeResult:
    """Index [lo, hi] (hi <= limit, chosen by the adaptive sizer) and commit it with its checkpoint.

    ``headers`` (sync at the tip) are the block headers of the range: their hashes are kept for
    reorg detection, every log must agree with them (else ChainMoved, nothing written) and
    their logsBloom drives the completeness check. ``fetched``: the range's logs, already
    fetched (see :func:`fetch_ahead`).
    """
    plan.refresh_markets(store)
    return commit_prepared(store, prepare_range(plan, rpc, store, lo, limit, headers, fetched),
                           start_block)


def prepare_range(plan: Plan, rpc: Rpc, store: Store, lo: int, limit: int,
                  headers: dict[int, dict[str, Any]] | None = None,
                  fetched: Fetched | None = None) -> Prepared:
    """Everything :func:`process_range` does before the commit. It reads the store only for
    adapters with ``keys_needed`` (see :func:`reads_store`). Markets the range announces are
    known to the plan from here on (later ranges are adapted with them)."""
    if fetched is not None:
        assert fetched.lo == lo and headers is None, (fetched.lo, lo)
        hi, logs, size = fetched.hi, fetched.logs, fetched.range_size
    else:
        hi, logs = fetch_logs(plan, rpc, lo, limit)
        size = plan.sizer.size
    refetched = 0
    if headers is not None:
        _check_against_headers(rpc, logs, headers, hi)
        logs, refetched = complete_from_blooms(plan, rpc, logs, headers, lo, hi)
    rows = to_range_rows(plan, rpc, logs, store, lo)
    if headers is not None:
        rows.blocks = [(n, h["hash"], h["parentHash"], int(h["timestamp"], 16))
                       for n, h in sorted(headers.items()) if lo <= n <= hi]
        end = headers[hi]
    else:
        end = fetched.end if fetched is not None else rpc.fetch_block(hi)
        rows.blocks = [(hi, end["hash"], end["parentHash"], int(end["timestamp"], 16))]
    m = rows.markets or {}
    for i, market in enumerate(m.get("market", [])):
        plan.markets[market] = (m["index_token"][i], m["long_token"][i], m["short_token"][i])
    return Prepared(lo, hi, rows, end, len(logs), refetched, size)


def merge_prepared(batch: list[Prepared]) -> Prepared:
    """Consecutive prepared ranges of one source as one (committed in one transaction)."""
    if len(batch) == 1:
        return batch[0]
    first, last = batch[0], batch[-1]
    rows = first.rows
    merged = RangeRows(rows.chain_id, rows.protocol, rows.source, rows.usd_decimals,
                       _concat([p.rows.changes for p in batch]),
                       _concat([p.rows.funding for p in batch]),
                       [q for p in batch for q in p.rows.quarantine],
                       [b for p in batch for b in p.rows.blocks],
                       _concat([p.rows.markets for p in batch]),
                       _concat([p.rows.open_interest for p in batch]))
    return Prepared(first.lo, last.hi, merged, last.end, sum(p.logs for p in batch),
                    sum(p.refetched for p in batch), last.range_size)


def _concat(parts: list[dict[str, list[Any]] | None]) -> dict[str, list[Any]] | None:
    """Column dicts of the same columns joined row-wise (None: no rows)."""
    present = [p for p in parts if p is not None]
    if not present:
        return None
    out: dict[str, list[Any]] = {}
    for name in present[0]:
        column: list[Any] = []
        for p in present:
            column += p[name]
        out[name] = column
    return out


def reads_store(plan: Plan) -> bool:
    """Whether :func:`prepare_range` reads the store (the state of positions before the range):
    then a range can only be prepared once the one before it is committed."""
    return getattr(plan.adapter, "keys_needed", None) is not None


def commit_prepared(store: Store, p: Prepared, start_block: int) -> RangeResult:
    """Commit a prepared range with its checkpoint (one transaction)."""
    written = store.commit_range(p.rows, p.lo, p.hi, p.end["hash"], start_block)
    return RangeResult(p.lo, p.hi, p.logs, written, len(p.rows.quarantine), p.refetched,
                       p.range_size, int(p.end["timestamp"], 16))
