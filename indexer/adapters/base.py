"""What every adapter module provides, and the context it receives.

An adapter module defines:

* ``ROLES``: the contract roles it reads (keys under ``contracts:`` in the config);
* ``EVENTS``: the ABI event names it handles (checked against the ABI at start-up);
* ``USD_DECIMALS``: the scale of its raw USD integers (GMX: 30);
* ``transactions_needed(decoded, meta) -> list[str]``: hashes of transactions whose input it
  needs to classify changes (may be empty);
* ``to_changes(decoded, meta, ctx) -> AdapterOutput``: pure, no I/O.

Optionally:

* ``EVENT_NAMES``: for protocols logging through one generic event (GMX v2 ``EventLog*``), the
  names whose ``keccak256`` goes in the second topic of the eth_getLogs filter;
* ``tokens_needed(decoded, meta, ctx) -> list[str]``: token addresses whose decimals the
  adapter needs and ``ctx.decimals`` lacks (the pipeline reads them from the chain).
* ``keys_needed(decoded, meta) -> list[str]``: position keys whose state before the batch the
  adapter needs, for protocols whose events carry only deltas (Perpetual v2); the pipeline
  loads it from the store into ``ctx.previous``.
* ``SCAN_MARKETS = True`` with ``markets_added(decoded, meta) -> [(row, market)]``: the
  protocol's markets are contracts announced at run time (Synthetix's market proxies, added by
  the FuturesMarketManager); their logs are fetched too, from the announcing block on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from indexer.abi import keccak
from indexer.types import Decoded, PreviousState


@dataclass(frozen=True, slots=True)
class AdapterContext:
    chain_id: int
    #: Contract role -> its lower-case address(es) (a role may list several deployments).
    contracts: dict[str, tuple[str, ...]]
    #: Transactions fetched for ``transactions_needed``: hash -> eth_getTransactionByHash object.
    transactions: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Known markets: address -> (index token, long token, short token), from the config and
    #: from market-creation events stored earlier.
    markets: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    #: Known token decimals: address -> decimals, or None where the token has no readable
    #: ``decimals()`` (e.g. GMX v2 synthetic index tokens not listed in the config).
    decimals: dict[str, int | None] = field(default_factory=dict)
    #: For adapters with ``keys_needed``: position key -> its state before the batch (keys
    #: never seen before are absent).
    previous: dict[str, PreviousState] = field(default_factory=dict)
    #: The protocol's own token numbers from the config's ``tokens:`` (``id``): id -> address.
    token_ids: dict[int, str] = field(default_factory=dict)


def address_pair_key(first: str, second: str) -> str:
    """``keccak256(abi.encode(first, second))`` of two 0x addresses, as 0x hex: the position
    key of protocols keyed by (account, market) (Synthetix, Perpetual v2)."""
    data = bytes(12) + bytes.fromhex(first[2:]) + bytes(12) + bytes.fromhex(second[2:])
    return "0x" + keccak(data).hex()


def signed_change(before: int, after: int) -> tuple[str, bool, int]:
    """Classify a change of a signed size (+ long, - short) from ``before`` to ``after``.

    Returns (kind, is_long, size delta) with the ledger's conventions: the delta is the change
    of the magnitude; a flip (long to short or back in one trade) is one ``increase`` of the
    new side by its full size, the old side closing with it; ``close`` has the old side.
    A change with equal sizes (a margin-only change) is an ``increase`` of 0; callers that
    know better relabel it.
    """
    if after == 0:
        return "close", before > 0, -abs(before)
    if before == 0 or (before > 0) != (after > 0):
        return "increase", after > 0, abs(after)
    delta = abs(after) - abs(before)
    return ("increase" if delta >= 0 else "decrease"), after > 0, delta


def at_price(tokens: int, price: int, token_decimals: int) -> int:
    """A signed token amount (smallest units) valued at ``price`` (raw USD per whole token),
    in raw USD, truncated toward zero."""
    value = abs(tokens) * price // 10**token_decimals
    return value if tokens >= 0 else -value


#: One decoded log: (row in the batch, event name, argument name -> value).
EventRow = tuple[int, str, dict[str, Any]]


def event_rows(decoded: Decoded, names: tuple[str, ...]) -> list[EventRow]:
    """The decoded logs of the events ``names`` (every version of each), in chain order."""
    out: list[EventRow] = []
    for name in names:
        for cols in decoded.events.get(name, []):
            fields = list(cols.fields)
            for i, row in enumerate(cols.rows):
                out.append((row, name, {n: cols.fields[n][i] for n in fields}))
    out.sort(key=lambda r: r[0])
    return out
