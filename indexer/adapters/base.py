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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class AdapterContext:
    chain_id: int
    #: Contract role -> lower-case address.
    contracts: dict[str, str]
    #: Transactions fetched for ``transactions_needed``: hash -> eth_getTransactionByHash object.
    transactions: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Known markets: address -> (index token, long token, short token), from the config and
    #: from market-creation events stored earlier.
    markets: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    #: Known token decimals: address -> decimals, or None where the token has no readable
    #: ``decimals()`` (e.g. GMX v2 synthetic index tokens not listed in the config).
    decimals: dict[str, int | None] = field(default_factory=dict)
