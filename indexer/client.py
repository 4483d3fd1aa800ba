"""Query a running perp-indexer daemon from Python (a notebook, a script): results as Arrow.

    >>> from indexer.client import connect
    >>> db = connect()                       # the daemon on 127.0.0.1:9464 (or connect(config=...))
    >>> oi = db.sql("SELECT * FROM open_interest")
    >>> oi.df()                              # pandas        (oi.pl(): polars, oi.arrow(): Arrow)

Every query is one read-only statement, answered from the live database as of the moment it
starts (see :mod:`indexer.service`). Amounts arrive exact, as Arrow decimal128 (pandas shows
them as ``decimal.Decimal``). Errors raise :class:`QueryError` with the service's message.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from indexer.errors import IndexerError
from indexer.results import arrow_rows
from indexer.store import read_arrow_stream

#: The daemon's default address (the config's ``metrics_host``/``metrics_port``).
DEFAULT_URL = "http://127.0.0.1:9464"
#: Where clients read the token a service off loopback asks for.
TOKEN_ENV = "PERP_INDEXER_TOKEN"


class QueryError(IndexerError):
    """The service refused or could not run a query (``kind``: refused, too_large, timeout,
    failed, unauthorised, busy), or it could not be reached (``kind``: unreachable)."""

    def __init__(self, message: str, kind: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind, self.status = kind, status


class Answer:
    """A query's result: an Arrow table, with pandas and polars at hand."""

    def __init__(self, table: Any) -> None:
        self._table = table

    @property
    def columns(self) -> list[str]:
        return list(self._table.column_names)

    def arrow(self) -> Any:
        """The result as a ``pyarrow.Table``."""
        return self._table

    def df(self) -> Any:
        """The result as a pandas DataFrame (pandas must be installed)."""
        return self._table.to_pandas()

    def pl(self) -> Any:
        """The result as a polars DataFrame (polars must be installed)."""
        import polars  # optional: only for those who ask for polars

        return polars.from_arrow(self._table)

    def fetchall(self) -> list[tuple[Any, ...]]:
        """Rows as tuples of Python values (Decimal for amounts)."""
        return arrow_rows(self._table)

    def __len__(self) -> int:
        return int(self._table.num_rows)

    def __repr__(self) -> str:
        return f"<Answer {len(self)} rows: {', '.join(self.columns)}>"


class Connection:
    """A running daemon's query service."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None,
                 timeout: float = 300.0) -> None:
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self.timeout = timeout

    def sql(self, sql: str, max_rows: int | None = None) -> Answer:
        """Run one read-only statement; the whole result, as Arrow."""
        params = {"format": "arrow"}
        if max_rows is not None:
            params["max_rows"] = str(max_rows)
        with self._open("/query?" + urllib.parse.urlencode(params), sql.encode()) as r:
            try:
                return Answer(read_arrow_stream(r))
            except IndexerError:
                raise
            except Exception as e:  # pyarrow's error for a stream the service cut
                raise QueryError(f"the answer stopped before its end ({e}): the query passed "
                                 "the service's time limit, or the daemon stopped", "failed"
                                 ) from None

    def text(self, sql: str, fmt: str = "json", max_rows: int | None = None) -> bytes:
        """The answer as the service writes it: json, jsonl or csv."""
        params = {"format": fmt, **({"max_rows": str(max_rows)} if max_rows else {})}
        with self._open("/query?" + urllib.parse.urlencode(params), sql.encode()) as r:
            return bytes(r.read())

    def health(self) -> dict[str, Any]:
        with self._open("/health", None, ok=(200, 503)) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def available(self) -> bool:
        """Whether a service answers at this address (quickly: for choosing a path)."""
        try:
            with self._open("/", None, timeout=2.0):
                return True
        except QueryError as e:
            return e.kind != "unreachable"

    def _open(self, path: str, body: bytes | None, ok: tuple[int, ...] = (200,),
              timeout: float | None = None) -> Any:
        request = urllib.request.Request(self.url + path, data=body,
                                         method="POST" if body is not None else "GET")
        if body is not None:
            request.add_header("Content-Type", "text/plain; charset=utf-8")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            return urllib.request.urlopen(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as e:
            if e.code in ok:
                return e
            try:
                answer = json.loads(e.read())
                message, kind = answer["error"], answer["kind"]
            except (ValueError, KeyError, TypeError):
                message, kind = f"HTTP {e.code} {e.reason}", "failed"
            finally:
                e.close()
            raise QueryError(message, kind, e.code) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise QueryError(f"no perp-indexer service answers at {self.url} ({reason}): is "
                             "`perp-indexer sync` (or the demo) running?", "unreachable"
                             ) from None


def connect(url: str | None = None, token: str | None = None,
            config: str | Path | None = None) -> Connection:
    """The service at ``url``, or the one a config's daemon serves (``metrics_host`` and
    ``metrics_port``), or the default local one. The token defaults to $PERP_INDEXER_TOKEN."""
    if url is None and config is not None:
        from indexer.config import load_config

        cfg = load_config(config, need_rpc=False)
        url = f"http://{cfg.metrics_host}:{cfg.metrics_port}"
    return Connection(url or DEFAULT_URL, token)
