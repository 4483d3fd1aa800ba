"""The daemon's HTTP service: analysts' read-only SQL on the live database, the live report, and
the operator's /metrics and /health, on one port (standard library server, a thread a request).

    POST /query            the SQL in the body (text, or JSON {"sql": ...}); GET /query?sql=...
                           ?format=json|jsonl|csv|arrow (default json), ?max_rows=N, ?timeout=S
    GET  /report           the live report page (redraws every few seconds)
    GET  /report/data.json what it draws
    GET  /metrics          Prometheus text exposition
    GET  /health           JSON; HTTP 200 when every source finished a pass recently, else 503
    GET  /                 this list, as JSON

Queries run through :class:`indexer.store.ReadOnlyQueries`: one read-only statement each, on a
cursor of its own, seeing every range committed before it began. ``json`` is one document
``{"columns", "types", "rows", "row_count"}`` with exact decimals as strings; ``arrow`` is an
Arrow IPC stream sent as it is read (for large results). Off loopback every request needs
``Authorization: Bearer <token>``, the token coming from the environment (``TOKEN_ENV``).
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import json
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from indexer.errors import ConfigError, StoreError
from indexer.metrics import Metrics
from indexer.results import json_value, write_rows
from indexer.store import (
    QueryRefused,
    QueryTimeout,
    ReadOnlyQueries,
    ResultTooLarge,
    Store,
    write_arrow_stream,
)

logger = logging.getLogger(__name__)

#: The environment variable holding the token clients must send when the service is off loopback.
TOKEN_ENV = "PERP_INDEXER_TOKEN"
#: Formats /query answers in.
FORMATS = ("json", "jsonl", "csv", "arrow")
#: The largest SQL text accepted.
MAX_SQL_BYTES = 1_000_000
#: Queries that run at once; more wait for a free slot (up to the query timeout).
MAX_CONCURRENT = 8
#: Seconds the live report's data is reused before it is read again (many viewers, one read).
REPORT_CACHE_SECONDS = 2.0

_CONTENT_TYPES = {"json": "application/json", "jsonl": "application/x-ndjson",
                  "csv": "text/csv; charset=utf-8",
                  "arrow": "application/vnd.apache.arrow.stream"}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def service_token(file: str, host: str) -> str | None:
    """The token clients must send: required (ConfigError if unset) off loopback."""
    token = os.environ.get(TOKEN_ENV) or None
    if token is None and not is_loopback(host):
        raise ConfigError(file, "metrics_host", host,
                          f"a loopback address (127.0.0.1), or set {TOKEN_ENV} in the "
                          "environment: off loopback every request must carry "
                          "'Authorization: Bearer <token>' (put TLS in front, see README)")
    return token


@dataclass
class Service:
    """What the HTTP handler serves; built by the command that owns the store."""

    queries: ReadOnlyQueries
    metrics: Metrics | None = None
    token: str | None = None
    #: the report's data from a run function (indexer.report.report_data), and its page
    report_data: Callable[[Callable[[str], tuple[list[str], list[tuple[Any, ...]]]]],
                          dict[str, Any]] | None = None
    report_page: Callable[..., str] | None = None

    def __post_init__(self) -> None:
        self.slots = threading.BoundedSemaphore(MAX_CONCURRENT)
        self._report_lock = threading.Lock()
        self._report: tuple[float, bytes] | None = None

    def run_rows(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Columns and rows of ``sql`` (the report's reads), through the same guard."""
        with self.queries.run(sql) as result:
            return result.columns, list(result.rows())

    def report_json(self) -> bytes:
        assert self.report_data is not None
        with self._report_lock:
            if self._report is None or time.monotonic() - self._report[0] > REPORT_CACHE_SECONDS:
                data = self.report_data(self.run_rows)
                self._report = (time.monotonic(), json.dumps(data).encode())
            return self._report[1]


class _Handler(BaseHTTPRequestHandler):
    service: Service
    server_version = "perp-indexer"

    # -- routing ---------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def _route(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        params = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        if not self._authorised(params):
            self._error(401, "unauthorised", f"send 'Authorization: Bearer <token>' (the "
                        f"daemon's {TOKEN_ENV})")
            return
        path = url.path.rstrip("/") or "/"
        try:
            if path == "/query" and method in ("GET", "POST"):
                self._query(method, params)
            elif method != "GET":
                self._error(405, "method", f"{method} {path}: only GET here")
            elif path == "/metrics" and self.service.metrics is not None:
                self._send(200, "text/plain; version=0.0.4; charset=utf-8",
                           self.service.metrics.render().encode())
            elif path in ("/health", "/healthz") and self.service.metrics is not None:
                h = self.service.metrics.health()
                self._send(200 if h["healthy"] else 503, "application/json",
                           json.dumps(h).encode())
            elif path == "/report" and self.service.report_page is not None:
                page = self.service.report_page(json.loads(self.service.report_json()),
                                                live_url=self._with_token("/report/data.json",
                                                                          params))
                self._send(200, "text/html; charset=utf-8", page.encode())
            elif path == "/report/data.json" and self.service.report_data is not None:
                self._send(200, "application/json", self.service.report_json())
            elif path == "/":
                self._send(200, "application/json", json.dumps({"endpoints": [
                    "POST /query", "GET /query?sql=", "GET /report", "GET /report/data.json",
                    "GET /metrics", "GET /health"]}).encode())
            else:
                self._error(404, "not_found", f"no {path} here: try /query, /report, /metrics "
                            "or /health")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away
        except StoreError as e:
            self._error(500, "failed", str(e))

    def _authorised(self, params: dict[str, str]) -> bool:
        token = self.service.token
        if token is None:
            return True
        given = self.headers.get("Authorization", "")
        sent = given[7:] if given.startswith("Bearer ") else params.get("token", "")
        return hmac.compare_digest(sent.encode(), token.encode())

    def _with_token(self, path: str, params: dict[str, str]) -> str:
        # a browser cannot add a header to the page's own reads: the token it came with goes on
        return path + ("?token=" + urllib.parse.quote(params["token"]) if "token" in params
                       else "")

    # -- /query ----------------------------------------------------------------------------------

    def _query(self, method: str, params: dict[str, str]) -> None:
        sql = params.get("sql", "")
        if method == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_SQL_BYTES:
                self._error(413, "refused", f"the SQL is {length:,} bytes; at most "
                            f"{MAX_SQL_BYTES:,} are read")
                return
            body = self.rfile.read(length).decode("utf-8", errors="replace")
            if self.headers.get("Content-Type", "").startswith("application/json"):
                try:
                    body = json.loads(body)["sql"]
                except (ValueError, KeyError, TypeError):
                    self._error(400, "refused", 'a JSON body must be {"sql": "..."}')
                    return
            sql = body
        fmt = params.get("format", "json")
        if fmt not in FORMATS:
            self._error(400, "refused", f"format={fmt}: one of {', '.join(FORMATS)}")
            return
        try:
            max_rows = int(params["max_rows"]) if "max_rows" in params else None
            timeout = float(params["timeout"]) if "timeout" in params else None
        except ValueError:
            self._error(400, "refused", "max_rows must be an integer and timeout a number")
            return
        queries = self.service.queries
        if not self.service.slots.acquire(timeout=queries.limits.timeout):
            self._error(503, "busy", f"{MAX_CONCURRENT} queries are running; try again")
            return
        streaming = False
        try:
            with queries.run(sql, max_rows, timeout, stream=fmt == "arrow") as result:
                if fmt == "arrow":
                    streaming = True
                    self.send_response(200)
                    self.send_header("Content-Type", _CONTENT_TYPES[fmt])
                    self.send_header("Connection", "close")  # the body ends with the stream
                    self.end_headers()
                    write_arrow_stream(result, self.wfile.write)
                    return
                out = io.StringIO()
                limit = queries.limits.max_bytes
                if fmt == "json":
                    rows = [[json_value(v) for v in row] for row in result.rows()]
                    json.dump({"columns": result.columns, "types": result.types,
                               "row_count": len(rows), "rows": rows}, out)
                else:
                    write_rows(result.columns, result.rows(), fmt, out)
                answer = out.getvalue().encode()
                if len(answer) > limit:
                    raise ResultTooLarge(f"the answer is {len(answer):,} bytes, over the limit "
                                         f"of {limit:,}: add a LIMIT, or use format=arrow")
                self._send(200, _CONTENT_TYPES[fmt], answer)
        except (QueryRefused, ResultTooLarge, QueryTimeout, StoreError) as e:
            if streaming:
                # the answer has begun: cutting it is the only signal left, and the reader's
                # Arrow stream ends without its end-of-stream mark
                logger.info("a streamed query stopped: %s", e)
                self.close_connection = True
                return
            status, kind = ((400, "refused") if isinstance(e, QueryRefused) else
                            (413, "too_large") if isinstance(e, ResultTooLarge) else
                            (504, "timeout") if isinstance(e, QueryTimeout) else
                            (400, "failed"))
            self._error(status, kind, str(e))
        finally:
            self.service.slots.release()

    # -- answers ---------------------------------------------------------------------------------

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, kind: str, message: str) -> None:
        self._send(status, "application/json",
                   json.dumps({"error": message, "kind": kind}).encode())

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


def _report_data(run: Callable[[str], tuple[list[str], list[tuple[Any, ...]]]]
                 ) -> dict[str, Any]:
    from indexer import report  # loaded at the first /report: the page inlines plotly.js

    return report.report_data(run)


def _report_page(data: dict[str, Any], live_url: str | None = None) -> str:
    from indexer import report

    return report.render_page(data, live_url=live_url)


def serve(service: Service, host: str, port: int) -> ThreadingHTTPServer:
    """Serve on host:port from a daemon thread (port 0: any free port, see
    ``server.server_address``); OSError if the port is taken."""
    handler = type("ServiceHandler", (_Handler,), {"service": service})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="service", daemon=True).start()
    return server


def open_service(store: Store, metrics: Metrics | None, file: str, host: str, port: int,
                 limits: Any = None) -> ThreadingHTTPServer:
    """Lock the store's database down for analysts' SQL and serve it (with the live report)."""
    token = service_token(file, host)
    queries = store.read_only_queries(limits)
    server = serve(Service(queries, metrics, token, _report_data, _report_page), host, port)
    server.queries = queries  # type: ignore[attr-defined]  # closed with the server
    return server


def stop(server: ThreadingHTTPServer) -> None:
    """Stop serving and close the service's cursors (before the store closes)."""
    server.shutdown()
    server.server_close()
    queries = getattr(server, "queries", None)
    if queries is not None:
        queries.close()
