"""Exceptions of perp-indexer.

    IndexerError
    ├── RetryableError            transient: the caller may try again later
    │   ├── RpcUnavailable        transport failure, HTTP 5xx/429, timeouts (after our own retries)
    │   ├── RangeTooLarge         a provider refused an eth_getLogs range or result size
    │   ├── BlockMissing          the node lacks a block (it lags, or a backend behind a balancer)
    │   └── ChainMoved            the chain reorganised while a range was being fetched
    └── FatalError                retrying cannot help
        ├── ConfigError           bad config / CLI input: names file, key, value and expectation (exit 2)
        ├── AbiError              an ABI file is malformed or lacks an event an adapter handles (exit 2)
        ├── RpcError              the node answered with a JSON-RPC error we cannot work around
        ├── ChainMismatch         the node serves another chain than the config says (exit 2)
        └── StoreError            the database cannot be used (locked, wrong schema)

Only ``cli.py`` turns these into exit codes.
"""

from __future__ import annotations


class IndexerError(Exception):
    """Base class of every error this package raises on purpose."""


class RetryableError(IndexerError):
    """A transient failure: the same request may succeed later."""


class FatalError(IndexerError):
    """A failure that retrying cannot fix."""


class ConfigError(FatalError):
    """A config or usage error; the message names where, what and what was expected."""

    def __init__(self, file: str, key: str, value: object, expected: str) -> None:
        self.file, self.key, self.value, self.expected = file, key, value, expected
        shown = "(missing)" if value is _MISSING else repr(value)
        super().__init__(f"{file}: {key}: got {shown}, expected {expected}")


_MISSING = object()
MISSING = _MISSING


class AbiError(FatalError):
    """An ABI file is malformed or lacks what an adapter needs."""


class ChainMismatch(FatalError):
    """The RPC endpoint serves a different chain id than the config declares."""


class RpcUnavailable(RetryableError):
    """The endpoint could not be reached or kept failing (URL shown redacted)."""


class RangeTooLarge(RetryableError):
    """A provider refused an eth_getLogs range (too many blocks or too many results).

    ``suggested`` is a block count the provider said it would accept, when its message names one.
    """

    def __init__(self, message: str, suggested: int | None = None) -> None:
        self.suggested = suggested
        super().__init__(message)


class AnswerTooLarge(RangeTooLarge):
    """An answer grew past the byte budget it was read with; it was dropped unread."""

    def __init__(self, size: int, limit: int, complete: bool) -> None:
        self.size, self.limit, self.complete = size, limit, complete
        super().__init__(f"answer of {'' if complete else 'over '}{size:,} bytes is over the "
                         f"{limit:,}-byte budget per request (max_memory_mb)")


class BlockMissing(RetryableError):
    """The node answered ``null`` for a block: it is behind (never taken for a reorg)."""

    def __init__(self, number: int | str) -> None:
        self.number = number
        super().__init__(f"the node does not have block {number} (lagging node or load-balanced "
                         "backend); waiting for it")


class ChainMoved(RetryableError):
    """Headers and logs of one range disagree: the chain reorganised while it was fetched."""


class RpcError(FatalError):
    """The node answered a request with a JSON-RPC error."""

    def __init__(self, method: str, code: int | None, message: str) -> None:
        self.method, self.code, self.rpc_message = method, code, message
        super().__init__(f"{method} failed: {message} (code {code})")


class StoreError(FatalError):
    """The DuckDB database cannot be opened or used as asked."""


def redact_url(url: str) -> str:
    """Show an RPC URL without anything that may be a secret: keep scheme, host and port only.

    ``https://arb-mainnet.g.alchemy.com/v2/KEY`` -> ``https://arb-mainnet.g.alchemy.com/***``;
    user:password@ is dropped too. Local endpoints are treated the same (a local proxy to a paid
    provider carries its key just as well).
    """
    import re

    m = re.match(r"^(\w+://)(?:[^@/]*@)?([^/?#]*)(.*)$", url)
    if not m:
        return "***"
    scheme, host, rest = m.groups()
    return f"{scheme}{host}/***" if rest.strip("/") else f"{scheme}{host}"
