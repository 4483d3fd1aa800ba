"""JSON-RPC over HTTP: the only module that talks to nodes (and the only httpx importer).

Retries transient failures (transport errors, timeouts, HTTP 429/5xx, garbled bodies) with
exponential backoff and jitter, honouring ``Retry-After``; fails over to the next configured URL
when one keeps failing. Provider errors that mean "this eth_getLogs range is too large / returns
too many results" become :class:`RangeTooLarge` with the provider's suggested size, so the
scanner can shrink (``provider_errors`` reads the texts). URLs only ever appear redacted.

Replies are parsed with msgspec (the only importer); eth_getLogs answers go straight into typed
:class:`Log` structs, faster than stdlib JSON objects and smaller in memory
(docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import msgspec
import tenacity

from indexer.endpoints import Endpoints, endpoint_key
from indexer.errors import (
    AnswerTooLarge,
    BlockMissing,
    ChainMoved,
    RpcError,
    RpcUnavailable,
    redact_url,
)
from indexer.provider_errors import parse_range_error, rate_limit_reply

logger = logging.getLogger(__name__)

_RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}


class Log(msgspec.Struct, rename="camel", gc=False):
    """One log as eth_getLogs returns it (hex strings as the node sends them)."""

    address: str
    topics: list[str]
    data: str
    block_number: str
    block_hash: str
    transaction_hash: str
    log_index: str
    #: Not sent by every node (then the pipeline reads the block's timestamp).
    block_timestamp: str | None = None
    removed: bool = False


class _LogsReply(msgspec.Struct):
    result: list[Log] | None | msgspec.UnsetType = msgspec.UNSET
    error: Any = None


_LOGS_DECODER = msgspec.json.Decoder(_LogsReply)
_JSON_DECODER = msgspec.json.Decoder()
_JSON_ENCODER = msgspec.json.Encoder()


def as_logs(logs: Sequence[dict[str, Any]]) -> list[Log]:
    """Logs given as JSON objects (e.g. a recording or an EIP-234 batch answer) as :class:`Log`;
    RpcError naming the field when one is not a log."""
    try:
        return msgspec.convert(list(logs), list[Log])
    except msgspec.ValidationError as e:
        raise RpcError("eth_getLogs", None, f"malformed log in reply: {e}") from None


def _decode_logs_reply(content: bytes) -> Any:
    """A getLogs reply into {"result": [Log...]} / {"error": ...} (the shape ``_check`` reads)."""
    try:
        reply = _LOGS_DECODER.decode(content)
    except msgspec.ValidationError:
        generic = _JSON_DECODER.decode(content)  # a batch, or a reply that is no log list
        if isinstance(generic, dict) and isinstance(generic.get("result"), list):
            generic["result"] = as_logs(generic["result"])
        return generic
    out: dict[str, Any] = {}
    if reply.result is not msgspec.UNSET:
        out["result"] = reply.result
    if reply.error is not None:
        out["error"] = reply.error
    return out


def _read_body(resp: httpx.Response, max_bytes: int | None) -> bytes:
    """The body, refused with AnswerTooLarge as soon as it is known to exceed ``max_bytes``
    (from Content-Length, else while it streams in), so an answer never outgrows the budget."""
    length = resp.headers.get("Content-Length", "")
    if max_bytes is not None and length.isdigit() and int(length) > max_bytes:
        raise AnswerTooLarge(int(length), max_bytes, True)
    chunks, size = [], 0
    for chunk in resp.iter_bytes():
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            raise AnswerTooLarge(size, max_bytes, False)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _Transient(Exception):
    """Internal: a failure worth retrying on the same endpoint."""

    def __init__(self, reason: str, kind: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        #: timeout | transport | http_<status> | invalid_json | rate_limited
        self.kind = kind
        self.retry_after = retry_after
        #: This attempt's number on its endpoint.
        self.attempt = 1

    @property
    def rate_limited(self) -> bool:
        return self.kind in ("rate_limited", "http_429")


#: A REST GET: (path, query parameters, headers).
_Get = tuple[str, dict[str, str], dict[str, str]]

#: Seconds to wait before retry number n (1, 2, ...) of a request.
Backoff = Callable[[int], float]


def exponential_backoff(attempt: int) -> float:
    """0.25 s doubling up to 15 s, plus up to 0.5 s of jitter."""
    return min(0.25 * 2 ** (attempt - 1) + random.uniform(0, 0.5), 15.0)


#: After failing over, an endpoint left out is tried again after this many seconds.
RECOVER_AFTER = 60.0
#: What one rate-limit refusal counts for against ``max_attempts``: a provider refuses now and
#: then by design, and the limiter slows down for it (a request gives up after four times as
#: many refusals as other failures).
REFUSAL_WEIGHT = 0.25
#: A node's first answer (``check``) is awaited this long, FIRST_ATTEMPTS times: a node that
#: takes connections but never answers is reported within about half a minute.
FIRST_TIMEOUT, FIRST_ATTEMPTS = 10.0, 2


class Rpc:
    """A JSON-RPC client for one chain, safe to call from several threads at once.

    Its endpoints (the chain's URLs) are used at once, each within the limits learnt from its
    answers: requests in flight and requests a second (:mod:`indexer.endpoints`). A transient
    failure is retried, on the endpoint expected to answer soonest; an endpoint that keeps
    failing is left out for ``recover_after`` seconds. ``errors`` counts failures by
    (redacted endpoint, kind). ``remembered``/:meth:`learnt`: the limits between runs. A
    context manager: ``with Rpc(urls) as rpc:`` closes its connections.
    """

    def __init__(self, urls: Sequence[str], timeout: float = 30.0, max_attempts: int = 5, *,
                 backoff: Backoff = exponential_backoff,
                 recover_after: float = RECOVER_AFTER, in_flight: int = 8,
                 max_rate: float | None = None,
                 remembered: dict[str, dict[str, Any]] | None = None) -> None:
        """``backoff`` and ``recover_after`` are the retry timing (tests shorten them);
        ``in_flight`` the most requests at once, ``max_rate`` a known requests-a-second limit
        of each endpoint."""
        if not urls:
            raise ValueError("at least one RPC URL is needed")
        self.urls = list(urls)
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.endpoints = Endpoints([redact_url(u) for u in self.urls],
                                   [endpoint_key(u) for u in self.urls], in_flight, max_rate,
                                   recover_after, remembered)
        #: The endpoint that answered last.
        self._active = 0
        self._ids = 0
        self._lock = threading.Lock()
        self.errors: Counter[tuple[str, str]] = Counter()
        limits = httpx.Limits(max_connections=in_flight + 4, max_keepalive_connections=in_flight + 4)
        self._client = httpx.Client(timeout=timeout, limits=limits,
                                    headers={"Content-Type": "application/json"})

    @property
    def endpoint(self) -> str:
        """The endpoint that answered last, redacted."""
        return redact_url(self.urls[self._active])

    def capacity(self) -> int:
        """Requests worth having in flight now (see ``Endpoints.capacity``)."""
        return self.endpoints.capacity()

    def learnt(self) -> dict[str, dict[str, Any]]:
        """The endpoints' learnt limits, to remember for the next run."""
        return self.endpoints.learnt()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Rpc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -----------------------------------------------------------------------------

    def _post_once(self, url: str, body: bytes, decode: Any = None,
                   max_bytes: int | None = None, get: _Get | None = None,
                   timeout: float | None = None) -> Any:
        timeout = timeout or self.timeout
        try:
            if get is None:
                request = self._client.stream("POST", url, content=body, timeout=timeout)
            else:
                path, params, headers = get
                request = self._client.stream("GET", url.rstrip("/") + path, params=params,
                                              headers=headers, timeout=timeout)
            with request as resp:
                if resp.status_code in _RETRYABLE_HTTP:
                    ra = resp.headers.get("Retry-After")
                    retry_after = float(ra) if ra and ra.replace(".", "", 1).isdigit() else None
                    raise _Transient(f"HTTP {resp.status_code}", f"http_{resp.status_code}",
                                     retry_after)
                if resp.status_code >= 400:
                    said = _read_body(resp, 2_000)[:300].decode("utf-8", "replace") if get else ""
                    raise RpcError("http", resp.status_code,
                                   f"HTTP {resp.status_code} from {redact_url(url)}"
                                   + (f" for {get[0]}: {said}" if get else ""))
                content = _read_body(resp, max_bytes)
        except httpx.TimeoutException as e:
            raise _Transient(f"timeout after {timeout:g}s ({type(e).__name__})",
                             "timeout") from None
        except httpx.TransportError as e:
            raise _Transient(f"{type(e).__name__}: {e}", "transport") from None
        try:
            reply = (decode or _JSON_DECODER.decode)(content)
        except msgspec.DecodeError:
            raise _Transient(f"invalid JSON body ({len(content)} bytes)",
                             "invalid_json") from None
        limited = rate_limit_reply(reply)
        if limited is not None:
            raise _Transient(f"rate limited: {limited[:200]}", "rate_limited")
        return reply

    def _post(self, payload: Any, what: str, decode: Any = None,
              max_bytes: int | None = None, get: _Get | None = None,
              first: bool = False) -> Any:
        """Send one request, retried on transient failures: each endpoint up to
        ``max_attempts`` times (``FIRST_ATTEMPTS`` of ``FIRST_TIMEOUT`` for a node's
        ``first`` request), on the endpoint the limiter picks for each attempt."""
        body = _JSON_ENCODER.encode(payload) if get is None else b""
        attempts = min(self.max_attempts, FIRST_ATTEMPTS) if first else self.max_attempts
        timeout = min(self.timeout, FIRST_TIMEOUT) if first else self.timeout
        tries: defaultdict[int, float] = defaultdict(float)  # attempts spent per endpoint
        calls = len(payload) if isinstance(payload, list) else 1  # a provider counts each
        failed: list[_Transient] = []

        def attempt() -> Any:
            ep = self.endpoints.acquire(frozenset(i for i, n in tries.items() if n >= attempts),
                                        calls=calls)
            if ep is None:
                raise self._unavailable(what, attempts, timeout, first, failed[-1])
            started = time.monotonic()
            try:
                reply = self._post_once(self.urls[ep.index], body, decode, max_bytes, get,
                                        timeout)
            except _Transient as e:
                self.endpoints.release(ep, e.kind, time.monotonic() - started, e.retry_after,
                                       calls)
                with self._lock:
                    self.errors[(ep.name, e.kind)] += 1
                # a refusal is the limiter's to pace: it counts as a fraction of an attempt
                tries[ep.index] += REFUSAL_WEIGHT if e.rate_limited else 1
                e.attempt = math.ceil(tries[ep.index])
                failed.append(e)
                if tries[ep.index] >= attempts:
                    logger.error("rpc endpoint %s failed for %s: %s", ep.name, what, e)
                else:
                    logger.warning("rpc retry %s on %s: %s (attempt %d)", what, ep.name, e,
                                   e.attempt)
                raise
            except BaseException:
                self.endpoints.release(ep, "ok", time.monotonic() - started, calls=calls)
                raise
            self.endpoints.release(ep, "ok", time.monotonic() - started, calls=calls)
            if ep.index != self._active:
                logger.warning("rpc %s to %s", "back" if ep.index == 0 else "failover", ep.name)
                self._active = ep.index
            return reply

        retrying = tenacity.Retrying(retry=tenacity.retry_if_exception_type(_Transient),
                                     wait=self._wait, stop=tenacity.stop_never, reraise=True)
        return retrying(attempt)

    def _wait(self, retry_state: tenacity.RetryCallState) -> float:
        """The backoff before the next attempt; none after a refusal, which the limiter paces
        (the endpoint's learnt rate, its ``Retry-After``)."""
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if not isinstance(exc, _Transient) or exc.rate_limited:
            return 0.0
        return self.backoff(exc.attempt)

    def _unavailable(self, what: str, attempts: int, timeout: float, first: bool,
                     last: _Transient) -> RpcUnavailable:
        shown = ", ".join(redact_url(u) for u in self.urls)
        if first and last.kind == "timeout":
            return RpcUnavailable(f"no answer from RPC {shown} to {what} within {timeout:g} s "
                                  f"({attempts} attempts each): the node takes connections but "
                                  "does not answer (overloaded, still starting, or not a "
                                  "JSON-RPC endpoint)")
        return RpcUnavailable(f"cannot reach RPC {shown} for {what} after {attempts} attempts "
                              f"each: {last}")

    def _next_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids

    @staticmethod
    def _check(method: str, reply: Any) -> Any:
        if not isinstance(reply, dict):
            raise RpcError(method, None, f"malformed reply {str(reply)[:200]}")
        err = reply.get("error")
        if err is not None:
            code = err.get("code") if isinstance(err, dict) else None
            message = str(err.get("message", err)) if isinstance(err, dict) else str(err)
            data = err.get("data") if isinstance(err, dict) else None
            if method == "eth_getLogs":
                ranged = parse_range_error(code, message, data)
                if ranged is not None:
                    raise ranged
            if isinstance(data, str) and data and data not in message:
                message = f"{message}: {data}"  # CometBFT puts the reason in ``data``
            raise RpcError(method, code, message)
        if "result" not in reply:
            raise RpcError(method, None, f"reply without result: {str(reply)[:200]}")
        return reply["result"]

    # -- public calls --------------------------------------------------------------------------

    def get(self, path: str, params: dict[str, str] | None = None,
            headers: dict[str, str] | None = None) -> Any:
        """A REST GET of ``path`` on the endpoint in use (a Cosmos gRPC-gateway query), with the
        same retries, pacing and failover as JSON-RPC calls; the decoded JSON body."""
        return self._post(None, f"GET {path}", get=(path, params or {}, headers or {}))

    def call(self, method: str, params: list[Any] | dict[str, Any] | None = None,
             decode: Any = None, max_bytes: int | None = None, first: bool = False) -> Any:
        """One call. ``first``: the node's first request (a short timeout, few attempts: see
        ``FIRST_TIMEOUT``)."""
        payload = {"jsonrpc": "2.0", "id": self._next_id(), "method": method,
                   "params": params if params is not None else []}
        return self._check(method, self._post(payload, method, decode, max_bytes, first=first))

    def batch(self, calls: Sequence[tuple[str, list[Any] | dict[str, Any]]], chunk: int = 100,
              return_errors: bool = False) -> list[Any]:
        """Send calls as JSON-RPC batches of at most ``chunk``; results in call order.

        With ``return_errors``, a call the node answers with a JSON-RPC error (e.g. an eth_call
        that reverts) gives its RpcError in place of the result instead of raising."""
        results: list[Any] = []
        for start in range(0, len(calls), chunk):
            part = calls[start:start + chunk]
            first = self._next_id()
            with self._lock:
                self._ids += len(part)
            payload = [{"jsonrpc": "2.0", "id": first + i, "method": m, "params": p}
                       for i, (m, p) in enumerate(part)]
            reply = self._post(payload, f"batch of {len(part)} {part[0][0]}")
            if isinstance(reply, dict):
                if len(part) == 1 and reply.get("id") == first:  # CometBFT unwraps a batch of 1
                    reply = [reply]
                else:  # the whole batch was refused
                    self._check(part[0][0], reply)
                    raise RpcError(part[0][0], None, "batch answered with a single object")
            by_id = {r.get("id"): r for r in reply if isinstance(r, dict)}
            for i, (method, _) in enumerate(part):
                if first + i not in by_id:
                    raise RpcError(method, None, "batch reply lacks an answer")
                try:
                    results.append(self._check(method, by_id[first + i]))
                except RpcError as e:
                    if not return_errors:
                        raise
                    results.append(e)
        return results

    def fetch_chain_id(self) -> int:
        """The node's chain id; the first request made of a node (see ``FIRST_TIMEOUT``)."""
        return int(self.call("eth_chainId", first=True), 16)

    def fetch_head(self, tag: str = "latest") -> int:
        if tag == "latest":
            return int(self.call("eth_blockNumber"), 16)
        return int(self.fetch_tagged(tag)["number"], 16)

    def fetch_tagged(self, tag: str) -> dict[str, Any]:
        """The header of block ``tag`` (latest, safe, finalized); BlockMissing if it has none."""
        block = self.call("eth_getBlockByNumber", [tag, False])
        if block is None:
            raise BlockMissing(tag)
        return block  # type: ignore[no-any-return]

    def fetch_block(self, number: int) -> dict[str, Any]:
        block = self.call("eth_getBlockByNumber", [hex(number), False])
        if block is None:
            raise BlockMissing(number)
        return block  # type: ignore[no-any-return]

    def fetch_blocks(self, numbers: Sequence[int]) -> list[dict[str, Any]]:
        blocks = self.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
        for n, b in zip(numbers, blocks, strict=True):
            if b is None:
                raise BlockMissing(n)
        return blocks

    def fetch_logs(self, addresses: Sequence[str], topics: list[Any], lo: int, hi: int,
                   max_bytes: int | None = None) -> list[Log]:
        """The logs of [lo, hi]. With ``max_bytes``, a multi-block answer larger than that is
        dropped as it arrives and raises :class:`AnswerTooLarge` (a RangeTooLarge: the scanner
        splits the range); one block's answer is always read whole."""
        flt = {"address": list(addresses), "topics": topics, "fromBlock": hex(lo), "toBlock": hex(hi)}
        result = self.call("eth_getLogs", [flt], _decode_logs_reply, max_bytes if hi > lo else None)
        if not isinstance(result, list):
            raise RpcError("eth_getLogs", None, f"expected a list of logs, got {type(result).__name__}")
        return result

    def fetch_block_logs(self, block_hashes: Sequence[str], addresses: Sequence[str],
                         topics: list[Any]) -> list[list[Log]]:
        """The logs matching the filter in each block given by hash (EIP-234), one batch."""
        flt = {"address": list(addresses), "topics": topics}
        replies = self.batch([("eth_getLogs", [{**flt, "blockHash": h}]) for h in block_hashes],
                             return_errors=True)
        for h, r in zip(block_hashes, replies, strict=True):
            if isinstance(r, RpcError):  # geth/anvil "unknown block": reorganised away
                raise ChainMoved(f"block {h} is no longer known to the node ({r.rpc_message}): "
                                 "the chain reorganised")
            if not isinstance(r, list):
                raise RpcError("eth_getLogs", None, f"expected a list of logs for block {h}, got "
                                                    f"{type(r).__name__}")
        return [as_logs(r) for r in replies]

    def fetch_transactions(self, hashes: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Transactions by hash; a missing one is an error (never silently skipped)."""
        txs = self.batch([("eth_getTransactionByHash", [h]) for h in hashes])
        out = {}
        for h, tx in zip(hashes, txs, strict=True):
            if tx is None:
                raise RpcError("eth_getTransactionByHash", None, f"transaction {h} not found")
            out[h] = tx
        return out
