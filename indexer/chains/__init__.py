"""The seam for the kind of chain.

A kind of chain is what the engine asks of a node: its identity, how far is safe to index, the
ranges of a source's events, and what finality means there. EVM JSON-RPC (``evm.EvmChain``:
``eth_getLogs`` ranges, block hashes kept over a reorg window, logsBloom checks) is the one kind
today; a CometBFT source (dYdX v4: events in ``block_results``, instant finality) is the next,
beside it, without touching EVM code. Past the seam everything is chain-agnostic: an adapter's
output (``indexer.types.AdapterOutput``), the store's ``RangeRows``, the ledger and the views.
docs/architecture.md draws it.
"""

from __future__ import annotations

from typing import Protocol


class Chain(Protocol):
    """What backfill and the daemon need of a kind of chain."""

    def check(self) -> None:
        """Fail (ChainMismatch) when the node serves another chain than the config names."""

    def safe_head(self) -> int:
        """The newest block backfill may index (final, or deep enough not to change)."""

    def close(self) -> None:
        """Release the node connections."""
