"""What every adapter module provides, and the context it receives.

An adapter module defines:

* ``ROLES``: the contract roles it reads (keys under ``contracts:`` in the config);
* ``EVENTS``: the ABI event names it handles (checked against the ABI at start-up);
* ``USD_DECIMALS``: the scale of its raw USD integers (GMX: 30);
* ``transactions_needed(decoded, meta) -> list[str]``: hashes of transactions whose input it
  needs to classify changes (may be empty);
* ``to_changes(decoded, meta, ctx) -> AdapterOutput``: pure, no I/O.
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
