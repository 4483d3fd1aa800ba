"""EVM JSON-RPC as a kind of chain: the node's identity, head, finality tags and reorg window."""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator
from typing import Any

from indexer.config import ChainConfig
from indexer.engine.fetch import fetch_ahead
from indexer.engine.prepare import prepare
from indexer.engine.ranges import BlockRange
from indexer.engine.source import ScanState, Tuning
from indexer.errors import BlockMissing, ChainMismatch, RpcError
from indexer.rpc import Rpc
from indexer.store import Store

logger = logging.getLogger(__name__)

#: Fewest recent blocks whose hashes sync keeps, whatever `confirmations` or the node's tags say.
MIN_REORG_WINDOW = 64
#: Most: past this the tip path (one header per block) would dominate a catch-up.
MAX_REORG_WINDOW = 20_000


class EvmChain:
    """One EVM chain of the config, through its RPC client (failover over its URLs)."""

    #: Blocks can still reorganise near the head (the daemon keeps a reorg window).
    final = False

    def __init__(self, config: ChainConfig, rpc: Rpc) -> None:
        self.config = config
        self.rpc = rpc
        #: False once the node proved to have neither a finalized nor a safe block tag.
        self.finality_tags = True

    @classmethod
    def connect(cls, config: ChainConfig, tuning: Tuning = Tuning(),
                remembered: dict[str, dict[str, Any]] | None = None) -> EvmChain:
        """``remembered``: the endpoints' limits learnt by an earlier run (``learnt``)."""
        return cls(config, Rpc(config.rpc_urls, config.request_timeout, config.max_attempts,
                               backoff=tuning.backoff, recover_after=tuning.recover_after,
                               in_flight=config.requests_in_flight,
                               max_rate=config.requests_per_second, remembered=remembered))

    def learnt(self) -> dict[str, dict[str, Any]]:
        """The endpoints' learnt limits (see ``Rpc.learnt``)."""
        return self.rpc.learnt()

    @property
    def name(self) -> str:
        return self.config.name

    def check(self) -> None:
        got = self.rpc.fetch_chain_id()
        if got != self.config.chain_id:
            raise ChainMismatch(f"RPC {self.rpc.endpoint} serves chain id {got}, but chains."
                                f"{self.config.name}.chain_id is {self.config.chain_id}")

    def safe_head(self) -> int:
        """The finalized tag, or head - confirmations."""
        if self.config.use_finalized_tag:
            return self.rpc.fetch_head("finalized")
        return self.rpc.fetch_head() - self.config.confirmations

    def finalized_block(self) -> int | None:
        """The node's ``finalized`` (else ``safe``) block number; None where it has neither tag
        (remembered, so a node without them is asked once)."""
        if not self.finality_tags:
            return None
        for tag in ("finalized", "safe"):
            try:
                return self.rpc.fetch_head(tag)
            except (RpcError, BlockMissing):
                continue
        logger.info("%s: the node has no finalized/safe tag; the reorg window is `confirmations` "
                    "(%d blocks, at least %d)", self.config.name, self.config.confirmations,
                    MIN_REORG_WINDOW)
        self.finality_tags = False
        return None

    def reorg_window(self, head: int) -> int:
        """How many recent blocks can still reorganise: the distance from the head to the node's
        finalized (or safe) block where it has the tags, never less than ``confirmations`` or
        MIN_REORG_WINDOW, never more than MAX_REORG_WINDOW."""
        window = max(self.config.confirmations, MIN_REORG_WINDOW)
        final = self.finalized_block()
        if final is not None:
            window = max(window, head - final)
        return min(window, MAX_REORG_WINDOW)

    def ranges(self, state: ScanState, store: Store, lo: int, hi: int,
               stop: threading.Event | None = None) -> Generator[BlockRange, None, None]:
        return fetch_ahead(state, self.rpc, lo, hi, stop)

    def prepare(self, state: ScanState, store: Store, fetched: BlockRange) -> BlockRange:
        return prepare(state, self.rpc, store, fetched)

    def close(self) -> None:
        self.rpc.close()
