#!/usr/bin/env python3
"""A JSON-RPC proxy that behaves like a remote RPC provider, put in front of any node.

    .venv/bin/python scripts/provider_proxy.py --upstream http://127.0.0.1:8545 --port 8546 \\
        [--latency 0.08] [--jitter 0.02] [--range-cap 1000] [--result-cap 10000] [--rate 50]

What it adds to the node's answers:

- latency: ``latency ± jitter`` seconds (uniform, seeded) each way, before the request reaches
  the node and again before the answer leaves;
- a request-rate limit: a token bucket of ``rate`` calls per second holding at most ``burst``
  (default ``rate / 5``, at least 1). A JSON-RPC batch takes as many tokens as it has calls, as
  providers bill. Past the limit: HTTP 429 with ``Retry-After`` (seconds until enough tokens,
  rounded up to 0.1) and a JSON-RPC error body with code 429;
- an eth_getLogs block-range cap, answered with Alchemy's error text, and a result cap (more
  than ``result_cap`` logs in an answer), answered with Infura's, which suggests a range that
  fits. A cap of 0 (or a rate of 0) turns that behaviour off.

``stats()`` gives what it saw since the last ``reset()``: HTTP requests, calls (by method),
requests refused with 429, answers refused by each cap, and per-second timelines of accepted
calls and of refused requests.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import msgspec

#: Block tags that name the head (resolved by asking the node).
_HEAD_TAGS = ("latest", "safe", "finalized", "pending")
_DECODE = msgspec.json.Decoder()
_ENCODE = msgspec.json.Encoder()


def alchemy_range_error(lo: int, cap: int) -> tuple[int, str]:
    """Alchemy's answer to an eth_getLogs over its block-range cap (the text our client parses,
    see indexer/provider_errors.py)."""
    return -32600, (f"You can make eth_getLogs requests with up to a {cap} block range. Based on "
                    f"your parameters, this block range should work: [{hex(lo)}, "
                    f"{hex(lo + cap - 1)}]")


def infura_results_error(lo: int, hi: int, cap: int) -> tuple[int, str, dict[str, Any]]:
    """Infura's answer to an eth_getLogs with more than ``cap`` results; [lo, hi] is the range
    it suggests."""
    return -32005, (f"query returned more than {cap} results. Try with this block range "
                    f"[{hex(lo)}, {hex(hi)}]."), {"from": hex(lo), "to": hex(hi), "limit": cap}


class TokenBucket:
    """``rate`` tokens a second, at most ``capacity`` held. Thread safe."""

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate, self.capacity = rate, capacity
        self.tokens = capacity
        self.at = time.monotonic()
        self.lock = threading.Lock()

    def take(self, n: int) -> float:
        """Take ``n`` tokens: 0.0 if granted, else the seconds until they would be.

        A batch larger than the bucket passes once the bucket is full and leaves it in debt
        (it is billed whole, yet is not refused for ever)."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
            self.at = now
            need = min(n, self.capacity)
            if self.tokens >= need:
                self.tokens -= n
                return 0.0
            return (need - self.tokens) / self.rate


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # clients open many connections at once (one per request in flight)
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client hung up: no news
            super().handle_error(request, client_address)


class ProviderProxy:
    """The proxy on ``host`` (a free port unless ``port``), serving at ``.url`` until ``stop()``;
    also a context manager."""

    def __init__(self, upstream_url: str, *, latency: float = 0.08, jitter: float = 0.02,
                 range_cap: int = 1000, result_cap: int = 10000, rate: float = 50.0,
                 burst: float | None = None, seed: int = 1, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.upstream_url = upstream_url
        self.latency, self.jitter = latency, jitter
        self.range_cap, self.result_cap, self.rate = range_cap, result_cap, rate
        self.burst = burst if burst is not None else max(rate / 5, 1.0)
        self.bucket = TokenBucket(rate, self.burst) if rate > 0 else None
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self._head: tuple[float, int] = (0.0, 0)
        # one pooled client for all handler threads (httpx.Client is thread safe); as many
        # kept-alive connections as clients may have requests in flight
        self.client = httpx.Client(
            timeout=120.0, headers={"Content-Type": "application/json"},
            limits=httpx.Limits(max_connections=128, max_keepalive_connections=128))
        self.reset()
        self.server = _Server((host, port), self._handler())
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name="provider-proxy")
        self.thread.start()

    # -- life ---------------------------------------------------------------------------------

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.client.close()

    def __enter__(self) -> ProviderProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- counters -----------------------------------------------------------------------------

    def reset(self) -> None:
        """Zero the counters and start the timeline anew (the bucket is left as it is)."""
        with self.lock:
            self.started = time.monotonic()
            self.requests = self.calls = self.refused_429 = 0
            self.capped_range = self.capped_results = 0
            self.methods: Counter[str] = Counter()
            self.timeline: Counter[int] = Counter()
            self.refused_timeline: Counter[int] = Counter()
            self.max_block = -1

    def stats(self) -> dict[str, Any]:
        with self.lock:
            seconds = time.monotonic() - self.started
            last = max([*self.timeline, *self.refused_timeline], default=-1)
            return {"seconds": seconds, "requests": self.requests, "calls": self.calls,
                    "refused_429": self.refused_429, "capped_range": self.capped_range,
                    "capped_results": self.capped_results, "methods": dict(self.methods),
                    "timeline": [self.timeline.get(s, 0) for s in range(last + 1)],
                    "refused_timeline": [self.refused_timeline.get(s, 0)
                                         for s in range(last + 1)],
                    "max_block": self.max_block}

    def useful_share(self, warmup: float = 10.0, until: float | None = None) -> float | None:
        """Accepted calls per second after ``warmup`` seconds (up to ``until`` seconds after the
        reset, default now), as a share of the rate limit; None if the run was not longer than
        the warm-up by at least a second, or there is no limit."""
        with self.lock:
            end = until if until is not None else time.monotonic() - self.started
            if not self.rate or end < warmup + 1:
                return None
            first = math.ceil(warmup)
            accepted = sum(n for s, n in self.timeline.items() if s >= first)
            return accepted / (end - first) / self.rate

    # -- behaviour ----------------------------------------------------------------------------

    def _delay(self) -> None:
        with self.lock:
            d = self.rng.uniform(self.latency - self.jitter, self.latency + self.jitter)
        if d > 0:
            time.sleep(d)

    def _admit(self, calls: int) -> float:
        """0.0 if ``calls`` calls may go ahead now (and they are counted), else seconds to wait."""
        wait = self.bucket.take(calls) if self.bucket else 0.0
        with self.lock:
            self.requests += 1
            if wait:
                self.refused_429 += 1
                self.refused_timeline[int(time.monotonic() - self.started)] += 1
            else:
                self.calls += calls
                self.timeline[int(time.monotonic() - self.started)] += calls
        return wait

    def _block(self, tag: Any) -> int:
        if isinstance(tag, int):
            return tag
        if tag in (None, *_HEAD_TAGS):
            return self._head_number()
        if tag == "earliest":
            return 0
        return int(str(tag), 16)

    def _head_number(self) -> int:
        """The node's head, asked at most once a second (only tags in filters need it)."""
        at, head = self._head
        if time.monotonic() - at > 1.0:
            reply = self.client.post(self.upstream_url, content=_ENCODE.encode(
                {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}))
            head = int(_DECODE.decode(reply.content)["result"], 16)
            self._head = (time.monotonic(), head)
        return head

    def _log_range(self, call: Any) -> tuple[int, int] | None:
        """[lo, hi] of an eth_getLogs call over a block range (not one by blockHash)."""
        if not isinstance(call, dict) or call.get("method") != "eth_getLogs":
            return None
        params = call.get("params") or [{}]
        flt = params[0] if isinstance(params, list) and params else {}
        if not isinstance(flt, dict) or "blockHash" in flt:
            return None
        return self._block(flt.get("fromBlock")), self._block(flt.get("toBlock"))

    def _error(self, call: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
        err: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            err["data"] = data
        return {"jsonrpc": "2.0", "id": call.get("id") if isinstance(call, dict) else None,
                "error": err}

    def _over_results(self, call: Any, reply: Any, lo: int) -> dict[str, Any] | None:
        """The result-cap error for an eth_getLogs reply with more than ``result_cap`` logs."""
        logs = reply.get("result") if isinstance(reply, dict) else None
        if not isinstance(logs, list) or len(logs) <= self.result_cap:
            return None
        # the largest range from lo whose logs fit (one block, should even that not)
        first_out = int(logs[self.result_cap]["blockNumber"], 16)
        code, message, data = infura_results_error(lo, max(lo, first_out - 1), self.result_cap)
        with self.lock:
            self.capped_results += 1
        return self._error(call, code, message, data)

    def _served(self, ranges: list[tuple[int, int] | None]) -> None:
        his = [r[1] for r in ranges if r]
        if his:
            with self.lock:
                self.max_block = max(self.max_block, *his)

    def answer(self, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        """(HTTP status, body, extra headers) for one request, after the way in."""
        try:
            payload = _DECODE.decode(body)
        except msgspec.DecodeError:
            with self.lock:
                self.requests += 1
            return 400, _ENCODE.encode(self._error(None, -32700, "Parse error")), {}
        single = not isinstance(payload, list)
        calls = [payload] if single else payload
        wait = self._admit(len(calls))
        if wait:
            refused = [self._error(c, 429, "Too Many Requests") for c in calls]
            return 429, _ENCODE.encode(refused[0] if single else refused), {
                "Retry-After": f"{max(math.ceil(wait * 10) / 10, 0.1):.1f}"}
        with self.lock:
            self.methods.update(str(c.get("method")) if isinstance(c, dict) else "?"
                                for c in calls)
        ranges = [self._log_range(c) for c in calls]
        # calls over the range cap are answered here; the node answers the others
        answered: dict[int, dict[str, Any]] = {}
        for i, r in enumerate(ranges):
            if r and self.range_cap and r[1] - r[0] + 1 > self.range_cap:
                answered[i] = self._error(calls[i], *alchemy_range_error(r[0], self.range_cap))
                ranges[i] = None
        if answered:
            with self.lock:
                self.capped_range += len(answered)
            if single:
                return 200, _ENCODE.encode(answered[0]), {}
            body = _ENCODE.encode([c for i, c in enumerate(calls) if i not in answered])
        resp = self.client.post(self.upstream_url, content=body)
        if resp.status_code != 200:
            return resp.status_code, resp.content, {}
        check = bool(self.result_cap) and any(ranges)
        if single:
            # counting the log objects is much cheaper than decoding a large answer
            if not check or resp.content.count(b'"logIndex"') <= self.result_cap:
                self._served(ranges)
                return 200, resp.content, {}
            reply = _DECODE.decode(resp.content)
            return 200, _ENCODE.encode(self._over_results(payload, reply, ranges[0][0])
                                       or reply), {}
        if not answered and not check:
            self._served(ranges)
            return 200, resp.content, {}
        replies = _DECODE.decode(resp.content)
        if not isinstance(replies, list):  # the node refused the whole batch
            return 200, resp.content, {}
        by_id = {r.get("id"): r for r in replies if isinstance(r, dict)}
        out = []
        for i, call in enumerate(calls):
            if i in answered:
                out.append(answered[i])
                continue
            reply = by_id.get(call.get("id"))
            r = ranges[i]
            capped = self._over_results(call, reply, r[0]) if r else None
            if capped is None:
                self._served([r])
            out.append(capped or reply)
        return 200, _ENCODE.encode(out), {}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            # keep-alive, as clients of a real provider get
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy._delay()
                try:
                    status, out, headers = proxy.answer(body)
                except httpx.HTTPError as e:
                    status, out, headers = 502, _ENCODE.encode(proxy._error(
                        None, -32603, f"upstream: {type(e).__name__}: {e}")), {}
                except Exception as e:  # a request this proxy cannot read: say so, stay up
                    status, out, headers = 500, _ENCODE.encode(proxy._error(
                        None, -32603, f"proxy: {type(e).__name__}: {e}")), {}
                proxy._delay()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(out)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up waiting

        return Handler


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--upstream", required=True, help="the node's JSON-RPC URL")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0: a free port")
    ap.add_argument("--latency", type=float, default=0.08, help="seconds each way")
    ap.add_argument("--jitter", type=float, default=0.02, help="± seconds on the latency")
    ap.add_argument("--range-cap", type=int, default=1000, help="eth_getLogs blocks (0: none)")
    ap.add_argument("--result-cap", type=int, default=10000, help="logs an answer (0: none)")
    ap.add_argument("--rate", type=float, default=50.0, help="calls per second (0: no limit)")
    ap.add_argument("--burst", type=float, default=None, help="bucket size (default rate/5)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--report-every", type=float, default=10.0,
                    help="seconds between counter lines (0: only at exit)")
    args = ap.parse_args()
    proxy = ProviderProxy(args.upstream, latency=args.latency, jitter=args.jitter,
                          range_cap=args.range_cap, result_cap=args.result_cap, rate=args.rate,
                          burst=args.burst, seed=args.seed, host=args.host, port=args.port)
    print(f"provider proxy on {proxy.url} -> {args.upstream} (latency {args.latency}±"
          f"{args.jitter}s each way, {args.rate:g} calls/s, burst {proxy.burst:g}, range cap "
          f"{args.range_cap}, result cap {args.result_cap})", flush=True)

    def line() -> str:
        s = proxy.stats()
        s.pop("timeline")
        return json.dumps(s)

    try:
        while True:
            time.sleep(args.report_every or 3600)
            if args.report_every:
                print(line(), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        print(line(), flush=True)
        proxy.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
