"""A fault-injecting JSON-RPC proxy, put in front of a node (anvil, the replay node) in tests.

It forwards every request upstream, except that a seeded fraction of them meet a fault of a
chosen kind, and it can enforce a provider's eth_getLogs range or result cap, answering with
that provider's own error text (``PROVIDER_ERRORS``). ``injected`` counts what it did.

Fault kinds: ``429`` (no Retry-After), ``429_retry_after``, ``500``, ``502``, ``503``, ``hang``
(answers only after ``hang`` seconds, past the client's timeout), ``drop`` (closes the
connection without answering), ``truncated`` (half the JSON body), ``invalid_json`` (an HTML
error page with status 200), ``rate_limit_jsonrpc`` (status 200 and a JSON-RPC rate-limit error,
as Alchemy sends), ``stale_head`` (``eth_blockNumber`` answered 5 blocks behind, as a lagging
node does).

Beside random faults: ``behind=N`` serves the chain as a node N blocks behind would (an older
head, ``null`` for newer blocks, logs only up to its head), and ``lose_logs=P`` answers a
fraction P of range eth_getLogs requests with no logs at all (a provider whose index lags its
blocks), which only the logsBloom check can catch.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from indexer.devnet.chain import free_port
from indexer.rpc import Rpc

KINDS = ("429", "429_retry_after", "500", "502", "503", "hang", "drop", "truncated",
         "invalid_json", "rate_limit_jsonrpc", "stale_head")

#: provider -> (lo, hi, cap) -> (code, message, data) of its eth_getLogs range/result-cap error.
#: Sources for each text are listed in tests/test_rpc_faults.py.
PROVIDER_ERRORS: dict[str, Callable[[int, int, int], tuple[int, str, Any]]] = {
    "infura_results": lambda lo, hi, cap: (
        -32005, (f"query returned more than 10000 results. Try with this block range "
                f"[{hex(lo)}, {hex(lo + cap - 1)}]."), {"from": hex(lo), "to": hex(lo + cap - 1),
                                                        "limit": 10000}),
    "infura_range": lambda lo, hi, cap: (
        -32602, f"range {hi - lo + 1} exceeds limit of {cap}", None),
    "alchemy": lambda lo, hi, cap: (
        -32600, (f"You can make eth_getLogs requests with up to a {cap} block range. Based on "
                f"your parameters, this block range should work: [{hex(lo)}, {hex(lo + cap - 1)}]"),
        None),
    "alchemy_size": lambda lo, hi, cap: (
        -32602, "Log response size exceeded. Please reduce query block range.", None),
    "quicknode": lambda lo, hi, cap: (
        -32614, f"eth_getLogs is limited to a {cap:,} range", None),
    "geth_fork": lambda lo, hi, cap: (-32000, f"exceed maximum block range: {cap}", None),
    "erigon": lambda lo, hi, cap: (
        -32000, f"query block range exceeds server limit, narrow your filter: {cap}", None),
    "reth_results": lambda lo, hi, cap: (
        -32602, f"query exceeds max results 20000, retry with the range {lo}-{lo + cap - 1}",
        None),
    "block_range_too_high": lambda lo, hi, cap: (-32600, "block range too high", None),
}


class FaultProxy:
    def __init__(self, upstream: str, *, rate: float = 0.0, kinds: tuple[str, ...] = KINDS,
                 seed: int = 1, hang: float = 2.0, range_cap: int = 0,
                 provider: str = "infura_range", behind: int = 0, lose_logs: float = 0.0
                 ) -> None:
        unknown = set(kinds) - set(KINDS)
        if unknown or provider not in PROVIDER_ERRORS:
            raise ValueError(f"unknown fault kinds {sorted(unknown)} or provider {provider}")
        self.upstream = Rpc([upstream], timeout=30, max_attempts=1)
        self.rate, self.kinds, self.hang = rate, kinds, hang
        self.range_cap, self.provider = range_cap, provider
        self.behind, self.lose_logs = behind, lose_logs
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.injected: Counter[str] = Counter()
        self.requests = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.upstream.close()

    def _pick(self) -> str | None:
        with self.lock:
            self.requests += 1
            if self.rate and self.rng.random() < self.rate:
                kind = self.rng.choice(self.kinds)
                self.injected[kind] += 1
                return kind
        return None

    def _capped(self, call: dict[str, Any]) -> dict[str, Any] | None:
        """The provider's error reply when ``call`` is an eth_getLogs over the range cap."""
        if not self.range_cap or call.get("method") != "eth_getLogs":
            return None
        flt = call["params"][0]
        lo, hi = int(flt["fromBlock"], 16), int(flt["toBlock"], 16)
        if hi - lo + 1 <= self.range_cap:
            return None
        with self.lock:
            self.injected[f"cap_{self.provider}"] += 1
        code, message, data = PROVIDER_ERRORS[self.provider](lo, hi, self.range_cap)
        err: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            err["data"] = data
        return {"jsonrpc": "2.0", "id": call.get("id"), "error": err}

    def _lagging(self, call: dict[str, Any]) -> tuple[Any] | None:
        """(result,) where a lagging node or a lossy index answers differently, else None."""
        method, params = call.get("method"), call.get("params") or []
        if method == "eth_getLogs" and "blockHash" not in params[0] and self.lose_logs:
            with self.lock:
                lose = self.rng.random() < self.lose_logs
                self.injected["lost_logs"] += lose
            if lose:
                return ([],)
        if not self.behind:
            return None
        head = int(self.upstream.call("eth_blockNumber"), 16) - self.behind
        if method == "eth_blockNumber":
            return (hex(head),)
        if method == "eth_getBlockByNumber":
            tag = params[0]
            number = head if tag in ("latest", "safe", "finalized") else int(tag, 16)
            if number > head:
                return (None,)
            return (self.upstream.call(method, [hex(number), *params[1:]]),)
        if method == "eth_getLogs" and "blockHash" not in params[0]:
            flt = dict(params[0])
            if int(flt["fromBlock"], 16) > head:
                return ([],)
            flt["toBlock"] = hex(min(int(flt["toBlock"], 16), head))
            return (self.upstream.call(method, [flt]),)
        return None

    def _answer(self, payload: Any, stale: bool) -> Any:
        calls = payload if isinstance(payload, list) else [payload]
        out: list[Any] = [None] * len(calls)
        forward = []
        for i, call in enumerate(calls):
            capped = self._capped(call)
            if capped is not None:
                out[i] = capped
                continue
            try:
                lagging = self._lagging(call)
            except Exception as e:  # noqa: BLE001 - relay the node's error as it came
                out[i] = self._error(call, e)
                continue
            if lagging is not None:
                out[i] = {"jsonrpc": "2.0", "id": call.get("id"), "result": lagging[0]}
            else:
                forward.append(i)
        if forward:  # one upstream batch for the rest, as fast as the node itself
            try:
                results = self.upstream.batch(
                    [(calls[i]["method"], calls[i].get("params") or []) for i in forward],
                    return_errors=True)
            except Exception as e:  # noqa: BLE001
                results = [e] * len(forward)
            for i, result in zip(forward, results, strict=True):
                call = calls[i]
                if isinstance(result, Exception):
                    out[i] = self._error(call, result)
                    continue
                if stale and call["method"] == "eth_blockNumber":
                    result = hex(max(int(result, 16) - 5, 0))
                out[i] = {"jsonrpc": "2.0", "id": call.get("id"), "result": result}
        return out if isinstance(payload, list) else out[0]

    @staticmethod
    def _error(call: dict[str, Any], e: Exception) -> dict[str, Any]:
        code = getattr(e, "code", None) or -32000
        return {"jsonrpc": "2.0", "id": call.get("id"),
                "error": {"code": code, "message": getattr(e, "rpc_message", str(e))}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None
                      ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                kind = proxy._pick()
                if kind in ("429", "500", "502", "503"):
                    return self._send(int(kind), b"")
                if kind == "429_retry_after":
                    return self._send(429, b"", {"Retry-After": "0.2"})
                if kind == "drop":
                    self.close_connection = True
                    return None
                if kind == "invalid_json":
                    return self._send(200, b"<html><body>502 Bad Gateway</body></html>")
                payload = json.loads(body)
                if kind == "rate_limit_jsonrpc":
                    calls = payload if isinstance(payload, list) else [payload]
                    errs = [{"jsonrpc": "2.0", "id": c.get("id"), "error": {
                        "code": 429, "message": "Your app has exceeded its compute units per "
                                                "second capacity."}} for c in calls]
                    reply: Any = errs if isinstance(payload, list) else errs[0]
                    return self._send(200, json.dumps(reply).encode())
                if kind == "hang":
                    time.sleep(proxy.hang)
                out = json.dumps(proxy._answer(payload, kind == "stale_head")).encode()
                if kind == "truncated":
                    out = out[:len(out) // 2]
                try:
                    self._send(200, out)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a hang past its timeout)
                return None

        return Handler
