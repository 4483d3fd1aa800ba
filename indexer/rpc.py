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
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import httpx
import msgspec
import tenacity

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


#: After failing over, go back to the first URL after this many seconds.
RECOVER_AFTER = 60.0
#: Bounds of the adaptive pause between requests to an endpoint that rate-limits us.
_PACE_MIN, _PACE_MAX = 0.05, 5.0


def _log_retry(what: str, url: str, rs: tenacity.RetryCallState) -> None:
    logger.warning("rpc retry %s on %s: %s (attempt %d)", what, redact_url(url),
                   rs.outcome.exception() if rs.outcome else "?", rs.attempt_number)


class Rpc:
    """A JSON-RPC client for one chain, safe to call from several threads at once.

    Each endpoint has an adaptive pace: a rate-limit answer (HTTP 429 or a provider's JSON-RPC
    rate-limit error) doubles the pause between its requests, each success shrinks it back to
    none. After a failover the first URL is tried again once ``RECOVER_AFTER`` seconds passed.
    ``errors`` counts failures by (redacted endpoint, kind). A context manager: ``with Rpc(urls)
    as rpc:`` closes its connections.
    """

    def __init__(self, urls: Sequence[str], timeout: float = 30.0, max_attempts: int = 5, *,
                 backoff: Backoff = exponential_backoff,
                 recover_after: float = RECOVER_AFTER) -> None:
        """``backoff`` and ``recover_after`` are the retry timing (tests shorten them)."""
        if not urls:
            raise ValueError("at least one RPC URL is needed")
        self.urls = list(urls)
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.recover_after = recover_after
        self._active = 0
        self._switched_at = 0.0
        self._ids = 0
        self._lock = threading.Lock()
        self._pace = [0.0] * len(self.urls)
        self._last = [0.0] * len(self.urls)
        self.errors: Counter[tuple[str, str]] = Counter()
        self._client = httpx.Client(timeout=timeout, headers={"Content-Type": "application/json"})

    @property
    def endpoint(self) -> str:
        """The endpoint in use, redacted."""
        return redact_url(self.urls[self._active])

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Rpc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -----------------------------------------------------------------------------

    def _post_paced(self, index: int, body: bytes, decode: Any = None,
                    max_bytes: int | None = None, get: _Get | None = None) -> Any:
        wait = self._last[index] + self._pace[index] - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last[index] = time.monotonic()
        try:
            reply = self._post_once(self.urls[index], body, decode, max_bytes, get)
        except _Transient as e:
            with self._lock:
                self.errors[(redact_url(self.urls[index]), e.kind)] += 1
            if e.rate_limited:
                self._pace[index] = min(max(self._pace[index] * 2, _PACE_MIN), _PACE_MAX)
            raise
        self._pace[index] = self._pace[index] * 0.8 if self._pace[index] > 0.01 else 0.0
        return reply

    def _post_once(self, url: str, body: bytes, decode: Any = None,
                   max_bytes: int | None = None, get: _Get | None = None) -> Any:
        try:
            if get is None:
                request = self._client.stream("POST", url, content=body)
            else:
                path, params, headers = get
                request = self._client.stream("GET", url.rstrip("/") + path, params=params,
                                              headers=headers)
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
            raise _Transient(f"timeout after {self.timeout:g}s ({type(e).__name__})",
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

    def _wait(self, retry_state: tenacity.RetryCallState) -> float:
        """The backoff, or the server's ``Retry-After`` when longer (at most a minute)."""
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        backoff = self.backoff(retry_state.attempt_number)
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            return max(min(exc.retry_after, 60.0), backoff)
        return backoff

    def _post(self, payload: Any, what: str, decode: Any = None,
              max_bytes: int | None = None, get: _Get | None = None) -> Any:
        body = _JSON_ENCODER.encode(payload) if get is None else b""
        last: Exception | None = None
        start = self._active
        if start and time.monotonic() - self._switched_at > self.recover_after:
            start = 0  # give the first URL another chance
        for shift in range(len(self.urls)):
            index = (start + shift) % len(self.urls)
            url = self.urls[index]
            retrying = tenacity.Retrying(
                stop=tenacity.stop_after_attempt(self.max_attempts),
                wait=self._wait,
                retry=tenacity.retry_if_exception_type(_Transient),
                reraise=True,
                before_sleep=partial(_log_retry, what, url),
            )
            try:
                result = retrying(self._post_paced, index, body, decode, max_bytes, get)
            except _Transient as e:
                last = e
                logger.error("rpc endpoint %s failed for %s: %s", redact_url(url), what, e)
                continue
            if index != self._active:
                logger.warning("rpc %s to %s", "back" if index == 0 else "failover",
                               redact_url(url))
                self._active = index
                self._switched_at = time.monotonic()
            return result
        shown = ", ".join(redact_url(u) for u in self.urls)
        raise RpcUnavailable(f"cannot reach RPC {shown} for {what} after "
                             f"{self.max_attempts} attempts each: {last}")

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
             decode: Any = None, max_bytes: int | None = None) -> Any:
        payload = {"jsonrpc": "2.0", "id": self._next_id(), "method": method,
                   "params": params if params is not None else []}
        return self._check(method, self._post(payload, method, decode, max_bytes))

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
        return int(self.call("eth_chainId"), 16)

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
