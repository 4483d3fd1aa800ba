"""A replay node: serves a recording of ``tests.dydx_chain.simulator`` as a dYdX node would, on one
port: CometBFT 0.38 JSON-RPC (``status``, ``block``, ``block_results``, ``header``, ``health``;
POST ``/`` single or batched, and the URI form ``GET /block?height=N``) and the Cosmos REST
(gRPC-gateway) queries the indexer reads, at the height of the ``x-cosmos-block-height`` header.

What it copies from CometBFT (cometbft/cometbft v0.38.17): ``rpc/core/env.go`` ``getHeight`` for
the height errors; ``state/errors.go`` ``ErrNoABCIResponsesForHeight`` ("could not find results
for height #H") for a height whose results were not kept; ``rpc/jsonrpc/server/
http_json_handler.go`` and ``http_server.go``: errors are ``-32603 Internal error`` with the text
in ``data``, answered with HTTP 200 inside a batch; a batch is answered with an array, except
that a batch whose answers number exactly one is answered with that one object (the server
writes ``res[0]`` when ``len(res) == 1``); a batch longer than ``max_request_batch_size`` (10 by
default) gets one ``-32600`` error; notifications (no ``id``) get no answer; URI requests answer
with ``id: -1`` and HTTP 500 on error.

REST errors (assumed gRPC-gateway renderings of cosmos-sdk 0.50 errors): a height above the head
is HTTP 500 ``{"code": 2, "message": "codespace sdk code 26: invalid height: cannot query with
height in the future; please provide a valid height", "details": []}`` (baseapp
``CreateQueryContext``; the message as initia-labs/rollytics ``indexer/util/query.go`` matches it
on a 500), not the 400/code 3 the brief guessed; a height below the first recorded state is HTTP
500 code 2 "failed to load state at height H; version does not exist (latest height: HEAD)";
an unknown id is HTTP 404 code 5. Lists page like cosmos-sdk ``types/query`` ``Paginate``:
``pagination.key`` (base64 of the next store key, the id as 4 big-endian bytes, as
``lib.Uint32ToKey``), ``pagination.limit`` (default ``page_size``), ``pagination.offset``,
``pagination.count_total``; ``next_key`` is null on the last page.

``requests`` counts, under a lock: ``http`` every HTTP request, ``batch`` every batched POST,
each JSON-RPC method by name per call answered (inside batches too), and the REST queries as
``perpetuals``, ``perpetual``, ``clob_pairs``, ``clob_pair``, ``node_info``. A request a fault
answered counts only under ``http`` (and ``faults``).
"""

from __future__ import annotations

import argparse
import base64
import bisect
import hashlib
import json
import random
import re
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

#: CometBFT config ``rpc.max_request_batch_size`` default.
MAX_REQUEST_BATCH_SIZE = 10
COMETBFT_VERSION = "0.38.6"
_HEIGHT_LINE = re.compile(r'^\{"height":\s*(\d+),')


@dataclass(frozen=True)
class Faults:
    """Provider faults, all off by default.

    ``error_rate``: that share of HTTP requests gets HTTP 503 (a seeded RNG, ``seed``);
    ``rate_limit_every``: every Nth HTTP request gets HTTP 429 with ``Retry-After: 0``;
    ``lie_height``: asked for that height, the node answers with the block / results / header of
    the height before (a node answering for a height it has not got); ``broken_link_at``: that
    block's ``last_block_id.hash`` is wrong (a chain that does not link); ``drop_results_at``:
    ``block_results`` of that height fails as on a node that did not keep it; ``hang_after``:
    after that many HTTP requests, every further one is accepted and never answered."""

    error_rate: float = 0.0
    rate_limit_every: int = 0
    lie_height: int | None = None
    broken_link_at: int | None = None
    drop_results_at: int | None = None
    hang_after: int | None = None
    seed: int = 0


class RpcError(Exception):
    """A JSON-RPC error: code, message, data."""

    def __init__(self, code: int, message: str, data: str = "") -> None:
        super().__init__(data or message)
        self.code, self.message, self.data = code, message, data

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data:
            error["data"] = self.data
        return error


class RestError(Exception):
    """A gRPC-gateway error: HTTP status and the gRPC status JSON."""

    def __init__(self, http_status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.http_status, self.code, self.message = http_status, code, message


class Recording:
    """A simulator folder: block lines by height (parsed when asked for), state by height."""

    def __init__(self, folder: Path) -> None:
        self.lines: dict[int, str] = {}
        with (folder / "blocks.jsonl").open() as blocks:
            for line in blocks:
                match = _HEIGHT_LINE.match(line)
                if match is None:
                    raise ValueError(f"{folder / 'blocks.jsonl'}: a line without a height")
                self.lines[int(match.group(1))] = line
        if not self.lines:
            raise ValueError(f"{folder}: no blocks")
        self.first, self.last = min(self.lines), max(self.lines)
        self.state_heights: list[int] = []
        self.states: list[dict[str, Any]] = []
        with (folder / "state.jsonl").open() as states:
            for line in states:
                doc = json.loads(line)
                self.state_heights.append(int(doc["height"]))
                self.states.append(doc)
        first = self.block(self.first)
        self.network = str(first["block"]["block"]["header"]["chain_id"])

    def block(self, height: int) -> dict[str, Any]:
        """{"height", "block", "block_results"} of a height (a fresh copy, free to change)."""
        doc: dict[str, Any] = json.loads(self.lines[height])
        return doc

    def state(self, height: int) -> dict[str, Any] | None:
        """The perpetuals and CLOB pairs after ``height``: the last state line at or below it."""
        i = bisect.bisect_right(self.state_heights, height) - 1
        return self.states[i] if i >= 0 else None


def _page(items: list[dict[str, Any]], ids: list[int], query: dict[str, list[str]],
          default_limit: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One page of a list query and its ``pagination`` (cosmos-sdk ``query.Paginate``)."""
    def one(name: str) -> str:
        return (query.get(f"pagination.{name}") or [""])[0]

    key, offset_text, limit_text = one("key"), one("offset"), one("limit")
    count_total = one("count_total").lower() == "true"
    if key and offset_text:
        raise RestError(400, 3, "invalid request, either offset or key is expected, got both")
    try:
        limit = int(limit_text) if limit_text else 0
        offset = int(offset_text) if offset_text else 0
    except ValueError:
        raise RestError(400, 3, "type mismatch, parameter: pagination.limit") from None
    limit = limit or default_limit
    start = offset
    if key:
        try:
            raw = base64.b64decode(key.replace("-", "+").replace("_", "/") + "==")
        except ValueError:
            raise RestError(400, 3, "invalid pagination.key") from None
        wanted = int.from_bytes(raw[:4].rjust(4, b"\0"), "big")
        start = next((i for i, item_id in enumerate(ids) if item_id >= wanted), len(ids))
    page = items[start:start + limit]
    after = start + limit
    next_key = (base64.b64encode(ids[after].to_bytes(4, "big")).decode()
                if after < len(ids) else None)
    total = str(len(items)) if count_total and not key else "0"
    return page, {"next_key": next_key, "total": total}


class ReplayNode:
    """Serves a recording on 127.0.0.1 (``url``), head ``head`` (default: the last height),
    until ``close()``; a context manager."""

    def __init__(self, folder: Path, *, head: int | None = None, page_size: int = 2,
                 faults: Faults = Faults(), max_batch_size: int = MAX_REQUEST_BATCH_SIZE,
                 port: int = 0) -> None:
        self.recording = Recording(Path(folder))
        self.head = self.recording.last
        if head is not None:
            self.set_head(head)
        self.page_size, self.faults, self.max_batch_size = page_size, faults, max_batch_size
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._random = random.Random(faults.seed)
        self._node_id = hashlib.sha256(self.recording.network.encode()).hexdigest()[:40]
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.node = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="dydx-replay-node")
        self._thread.start()

    def set_head(self, height: int) -> None:
        """Make ``height`` the latest block (a chain that grows, or a node that lags)."""
        if not self.recording.first <= height <= self.recording.last:
            raise ValueError(f"head {height} is outside the recording "
                             f"{self.recording.first}..{self.recording.last}")
        self.head = height

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ReplayNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def count(self, name: str) -> None:
        with self._lock:
            self.requests[name] += 1

    def fault(self) -> tuple[str, int] | None:
        """The fault this HTTP request meets, if any: ("hang"|"429"|"503", number)."""
        with self._lock:
            self.requests["http"] += 1
            number = self.requests["http"]
            faults = self.faults
            kind = None
            if faults.hang_after is not None and number > faults.hang_after:
                kind = "hang"
            elif faults.rate_limit_every and number % faults.rate_limit_every == 0:
                kind = "429"
            elif faults.error_rate and self._random.random() < faults.error_rate:
                kind = "503"
            if kind is not None:
                self.requests["faults"] += 1
                return kind, number
        return None

    def wait_closing(self) -> None:
        self._closing.wait()

    # ----------------------------------------------------------------------------- JSON-RPC

    def _height(self, params: Any) -> int:
        """The ``height`` parameter as CometBFT's ``getHeight`` checks it (none: the head)."""
        value = params.get("height") if isinstance(params, dict) else (
            params[0] if isinstance(params, list) and params else None)
        if value is None or value == "":
            return self.head
        try:
            height = int(str(value).strip('"'))
        except ValueError:
            raise RpcError(-32602, "Invalid params",
                           f"error converting json params to arguments: {value!r} is not an "
                           "integer") from None
        if height <= 0:
            raise RpcError(-32603, "Internal error",
                           f"height must be greater than 0, but got {height}")
        if height > self.head:
            raise RpcError(-32603, "Internal error",
                           f"height {height} must be less than or equal to the current "
                           f"blockchain height {self.head}")
        if height < self.recording.first:
            raise RpcError(-32603, "Internal error",
                           f"height {height} is not available, lowest height is "
                           f"{self.recording.first}")
        return height

    def _served_block(self, height: int) -> dict[str, Any]:
        served = height - 1 if height == self.faults.lie_height else height
        doc = self.recording.block(max(served, self.recording.first))
        if served == self.faults.broken_link_at:
            header = doc["block"]["block"]["header"]
            header["last_block_id"]["hash"] = hashlib.sha256(
                b"not the parent" + header["height"].encode()).hexdigest().upper()
        return doc

    def call(self, method: str, params: Any) -> Any:
        """The result of one JSON-RPC call (raises RpcError)."""
        if method == "health":
            return {}
        if method == "status":
            return self._status()
        if method not in ("block", "block_results", "header"):
            raise RpcError(-32601, "Method not found")
        height = self._height(params)
        if method == "block_results" and height == self.faults.drop_results_at:
            raise RpcError(-32603, "Internal error",
                           f"could not find results for height #{height}")
        doc = self._served_block(height)
        if method == "block":
            return doc["block"]
        if method == "header":
            return {"header": doc["block"]["block"]["header"]}
        return doc["block_results"]

    def _status(self) -> dict[str, Any]:
        latest = self.recording.block(self.head)["block"]
        earliest = self.recording.block(self.recording.first)["block"]
        validator = latest["block"]["header"]["proposer_address"]
        return {
            "node_info": {
                "protocol_version": {"p2p": "8", "block": "11", "app": "0"},
                "id": self._node_id, "listen_addr": "tcp://0.0.0.0:26656",
                "network": self.recording.network, "version": COMETBFT_VERSION,
                "channels": "40202122233038606100", "moniker": "dydx-replay",
                "other": {"tx_index": "on", "rpc_address": "tcp://0.0.0.0:26657"}},
            "sync_info": {
                "latest_block_hash": latest["block_id"]["hash"],
                "latest_app_hash": latest["block"]["header"]["app_hash"],
                "latest_block_height": str(self.head),
                "latest_block_time": latest["block"]["header"]["time"],
                "earliest_block_hash": earliest["block_id"]["hash"],
                "earliest_app_hash": earliest["block"]["header"]["app_hash"],
                "earliest_block_height": str(self.recording.first),
                "earliest_block_time": earliest["block"]["header"]["time"],
                "catching_up": False},
            "validator_info": {
                "address": validator,
                "pub_key": {"type": "tendermint/PubKeyEd25519",
                            "value": base64.b64encode(hashlib.sha256(validator.encode())
                                                      .digest()).decode()},
                "voting_power": "0"},
        }

    def json_rpc(self, body: bytes) -> tuple[int, Any]:
        """(HTTP status, JSON body or None) for a POST to ``/``."""
        try:
            doc = json.loads(body)
        except ValueError as e:
            return 500, {"jsonrpc": "2.0", "error": RpcError(
                -32700, "Parse error", f"error unmarshaling request: {e}").body()}
        batch = isinstance(doc, list)
        requests = doc if batch else [doc]
        if batch:
            self.count("batch")
            if len(requests) > self.max_batch_size:
                return 200, {"jsonrpc": "2.0", "error": RpcError(
                    -32600, "Invalid Request", "batch request exceeds maximum "
                    f"({self.max_batch_size}) allowed number of requests").body()}
        responses = []
        for request in requests:
            if not isinstance(request, dict) or request.get("id") is None:
                continue  # a notification: no answer
            method = str(request.get("method", ""))
            response: dict[str, Any] = {"jsonrpc": "2.0", "id": request["id"]}
            try:
                response["result"] = self.call(method, request.get("params") or {})
                self.count(method)
            except RpcError as e:
                response["error"] = e.body()
                if e.code != -32601:
                    self.count(method)
            responses.append(response)
        if not responses:
            return 200, None
        return 200, responses[0] if len(responses) == 1 else responses

    def uri_rpc(self, method: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        """(HTTP status, JSON body) for ``GET /<method>?height=N``."""
        params = {k: v[0] for k, v in query.items()}
        try:
            result = self.call(method, params)
        except RpcError as e:
            status = 404 if e.code == -32601 else 500
            return status, {"jsonrpc": "2.0", "id": -1, "error": e.body()}
        self.count(method)
        return 200, {"jsonrpc": "2.0", "id": -1, "result": result}

    # --------------------------------------------------------------------------------- REST

    def rest(self, path: str, query: dict[str, list[str]], height_header: str | None
             ) -> dict[str, Any]:
        """The gRPC-gateway JSON of a REST query (raises RestError)."""
        route, ident = _route(path)
        if route is None:
            raise RestError(404, 5, "Not Found")
        self.count(route)
        if route == "node_info":
            return self._node_info()
        height = self.head
        if height_header not in (None, "", "0"):
            try:
                height = int(str(height_header))
            except ValueError:
                raise RestError(400, 3, f"Baseapp.RegisterGRPCServer: invalid height header "
                                f'"x-cosmos-block-height": {height_header!r}') from None
        if height > self.head:
            raise RestError(500, 2, "codespace sdk code 26: invalid height: cannot query with "
                            "height in the future; please provide a valid height")
        state = self.recording.state(height)
        if state is None or height < 1:
            raise RestError(500, 2, f"codespace sdk code 38: not found: failed to load state at "
                            f"height {height}; version does not exist (latest height: "
                            f"{self.head})")
        name = "perpetuals" if route.startswith("perpetual") else "clob_pairs"
        items = state[name]
        ids = [int(x["params"]["id"] if name == "perpetuals" else x["id"]) for x in items]
        field = "perpetual" if name == "perpetuals" else "clob_pair"
        if ident is not None:
            for item_id, item in zip(ids, items, strict=True):
                if item_id == ident:
                    return {field: item}
            raise RestError(404, 5, f"{field.replace('_', ' ')} {ident} does not exist")
        page, pagination = _page(items, ids, query, self.page_size)
        return {field: page, "pagination": pagination}

    def _node_info(self) -> dict[str, Any]:
        return {
            "default_node_info": {
                "protocol_version": {"p2p": "8", "block": "11", "app": "0"},
                "default_node_id": self._node_id, "listen_addr": "tcp://0.0.0.0:26656",
                "network": self.recording.network, "version": COMETBFT_VERSION,
                "channels": base64.b64encode(bytes.fromhex("40202122233038606100")).decode(),
                "moniker": "dydx-replay",
                "other": {"tx_index": "on", "rpc_address": "tcp://0.0.0.0:26657"}},
            "application_version": {
                "name": "dydxprotocol", "app_name": "dydxprotocold", "version": "4.0.0",
                "git_commit": "", "build_tags": "", "go_version": "go version go1.22 linux/amd64",
                "build_deps": [], "cosmos_sdk_version": "v0.50.4"},
        }


_ROUTES = (
    (re.compile(r"^/dydxprotocol/perpetuals/perpetual/?$"), "perpetuals"),
    (re.compile(r"^/dydxprotocol/perpetuals/perpetual/(\d+)$"), "perpetual"),
    (re.compile(r"^/dydxprotocol/clob/clob_pair/?$"), "clob_pairs"),
    (re.compile(r"^/dydxprotocol/clob/clob_pair/(\d+)$"), "clob_pair"),
    (re.compile(r"^/cosmos/base/tendermint/v1beta1/node_info$"), "node_info"),
)


def _route(path: str) -> tuple[str | None, int | None]:
    for pattern, name in _ROUTES:
        match = pattern.match(path)
        if match:
            return name, int(match.group(1)) if match.groups() else None
    return None, None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    node: ReplayNode


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any, headers: tuple[tuple[str, str], ...] = ()) -> None:
        data = b"" if body is None else (body if isinstance(body, bytes)
                                         else json.dumps(body).encode())
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if body is not None
                         and not isinstance(body, bytes) else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _faulted(self) -> bool:
        hit = self.server.node.fault()
        if hit is None:
            return False
        kind, _ = hit
        if kind == "hang":
            self.server.node.wait_closing()
            self.close_connection = True
        elif kind == "429":
            self._send(429, b"Too Many Requests", (("Retry-After", "0"),))
        else:
            self._send(503, b"Service Unavailable")
        return True

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self._faulted():
            return
        if urlsplit(self.path).path != "/":
            self._send(404, b"404 page not found")
            return
        status, doc = self.server.node.json_rpc(body)
        self._send(status, doc)

    def do_GET(self) -> None:
        if self._faulted():
            return
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        node = self.server.node
        if parts.path in ("/status", "/block", "/block_results", "/header", "/health"):
            status, doc = node.uri_rpc(parts.path[1:], query)
            self._send(status, doc)
            return
        try:
            doc = node.rest(parts.path, query, self.headers.get("x-cosmos-block-height"))
        except RestError as e:
            self._send(e.http_status, {"code": e.code, "message": e.message, "details": []})
            return
        self._send(200, doc)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a simulated dYdX recording.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--head", type=int, default=None)
    args = parser.parse_args(argv)
    node = ReplayNode(args.folder, head=args.head, port=args.port)
    print(f"serving {args.folder} at {node.url} (head {node.head})", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        node.close()


if __name__ == "__main__":
    main()
