"""The seam for the kind of chain.

A kind of chain is what the engine asks of a node: its identity, how far is safe to index, the
ranges of a source's events (fetch and prepare), and what finality means there. EVM JSON-RPC
(``evm.EvmChain``: ``eth_getLogs`` ranges, block hashes kept over a reorg window, logsBloom
checks) and CometBFT (``cometbft.CometChain``, dYdX v4: ABCI events in ``block_results``, state
over Cosmos REST, instant finality) are the two kinds. Past the seam everything is chain-agnostic: an adapter's
output (``indexer.types.AdapterOutput``), the store's ``RangeRows``, the ledger and the views.
docs/architecture.md draws it.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Protocol

from indexer.config import ChainConfig
from indexer.rpc import Rpc

if TYPE_CHECKING:
    from indexer.engine.ranges import BlockRange
    from indexer.engine.source import ScanState
    from indexer.store import Store


class Chain(Protocol):
    """What backfill and the daemon need of a kind of chain."""

    config: ChainConfig
    #: The node's client (JSON-RPC; its errors feed the metrics).
    rpc: Rpc
    #: True where committed blocks never change (no reorg window).
    final: bool

    @property
    def name(self) -> str:
        """The chain's name in the config."""

    def ranges(self, state: ScanState, store: Store, lo: int, hi: int,
               stop: threading.Event | None = None) -> Generator[BlockRange, None, None]:
        """The fetch stage: ranges covering [lo, hi] in order, fetched ahead."""

    def prepare(self, state: ScanState, store: Store, fetched: BlockRange) -> BlockRange:
        """The prepare stage: a fetched range with the rows to commit."""

    def check(self) -> None:
        """Fail (ChainMismatch) when the node serves another chain than the config names."""

    def safe_head(self) -> int:
        """The newest block backfill may index (final, or deep enough not to change)."""

    def learnt(self) -> dict[str, dict[str, Any]]:
        """The endpoints' limits learnt so far, by endpoint key (kept between runs)."""

    def close(self) -> None:
        """Release the node connections."""
