"""CometBFT as a kind of chain (dYdX v4): the node's network, its head, blocks with their ABCI
events from ``block`` and ``block_results``, and the chain's state at a height over Cosmos REST.

Blocks are final once committed (instant finality): there is no reorg window, and a stored block
whose hash the node no longer gives is not a reorg but a node serving another chain. Two node
faults are caught rather than indexed: an answer for another height than asked, and a block
whose ``last_block_id`` is not the hash of the block before it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any

from indexer.abci import block_records
from indexer.config import ChainConfig
from indexer.engine import blocks
from indexer.engine.ranges import BlockRange
from indexer.engine.source import ScanState, Tuning
from indexer.errors import BlockMissing, ChainMismatch, RpcError
from indexer.rpc import Log, Rpc
from indexer.store import Store

logger = logging.getLogger(__name__)

#: Items per page of a REST list query (the Cosmos default is 100).
PAGE_LIMIT = 100
#: Texts of CometBFT errors meaning "not (yet) here" (rpc/core/blocks.go, env.go getHeight).
_NOT_YET = ("must be less than or equal to the current blockchain height",)
_NOT_KEPT = ("is not available, lowest height is", "could not find results for height")


def block_time(rfc3339: str) -> int:
    """Unix seconds of a CometBFT time (``2024-04-08T12:00:00.123456789Z``)."""
    text = rfc3339.rstrip("Z")
    whole, _, _ = text.partition(".")
    return int(datetime.fromisoformat(whole + "+00:00").timestamp())


class CometBlock:
    """One block as the engine needs it: height, hash, parent hash, time, its event records."""

    __slots__ = ("height", "hash", "parent_hash", "time", "records")

    def __init__(self, height: int, hash_: str, parent_hash: str, time: int,
                 records: list[Log]) -> None:
        self.height, self.hash, self.parent_hash = height, hash_, parent_hash
        self.time, self.records = time, records

    @property
    def header(self) -> dict[str, Any]:
        """The block as the store's checkpoint and ``blocks`` rows take a header."""
        return {"number": hex(self.height), "hash": self.hash, "parentHash": self.parent_hash,
                "timestamp": hex(self.time)}


#: Heights this close to the node's latest may lack results for a moment: CometBFT saves a block
#: before FinalizeBlock runs and its results after, so "no results" there means "not yet".
TIP_RACE = 2


def _height_error(e: RpcError, height: int, latest: int | None = None) -> Exception:
    text = str(e)
    if any(t in text for t in _NOT_YET):
        return BlockMissing(f"the node has no block {height} yet ({text})")
    if latest is not None and height >= latest - TIP_RACE and any(t in text for t in _NOT_KEPT):
        return BlockMissing(f"the node has no results for block {height} yet ({text})")
    if any(t in text for t in _NOT_KEPT):
        return RpcError(e.method, e.code, f"the node does not keep block {height} or its results "
                        f"({text}); history needs an archive node that keeps ABCI responses "
                        "([storage] discard_abci_responses = false)")
    return e


def _unlinked(block: CometBlock, before: CometBlock) -> str:
    return (f"block {block.height} does not link to block {before.height}: its last_block_id "
            f"is {block.parent_hash}, the node gave {before.hash} for {before.height} (a broken "
            "node)")


class CometChain:
    """One CometBFT chain of the config, through its RPC and REST clients (failover over each
    list of URLs)."""

    #: Committed blocks never change: no reorg window, every block is safe to index.
    final = True

    def __init__(self, config: ChainConfig, rpc: Rpc, rest: Rpc) -> None:
        self.config, self.rpc, self.rest = config, rpc, rest

    @classmethod
    def connect(cls, config: ChainConfig, tuning: Tuning = Tuning(),
                remembered: dict[str, dict[str, Any]] | None = None) -> CometChain:
        def client(urls: Sequence[str]) -> Rpc:
            return Rpc(urls, config.request_timeout, config.max_attempts,
                       backoff=tuning.backoff, recover_after=tuning.recover_after,
                       in_flight=config.requests_in_flight, max_rate=config.requests_per_second,
                       remembered=remembered)

        return cls(config, client(config.rpc_urls), client(config.rest_urls))

    def learnt(self) -> dict[str, dict[str, Any]]:
        """Both clients' endpoints' learnt limits (see ``Rpc.learnt``)."""
        return {**self.rpc.learnt(), **self.rest.learnt()}

    @property
    def name(self) -> str:
        return self.config.name

    def status(self, first: bool = False) -> dict[str, Any]:
        """The node's status; ``first``: its first request (see ``rpc.FIRST_TIMEOUT``)."""
        reply = self.rpc.call("status", {}, first=first)
        if not isinstance(reply, dict) or "sync_info" not in reply:
            raise RpcError("status", None, f"malformed status reply {str(reply)[:200]}")
        return reply

    def check(self) -> None:
        got = self.status(first=True).get("node_info", {}).get("network")
        if got != self.config.network:
            raise ChainMismatch(f"RPC {self.rpc.endpoint} serves network {got!r}, but chains."
                                f"{self.config.name}.network is {self.config.network!r}")

    def safe_head(self) -> int:
        """The latest committed height (final: CometBFT commits are never undone)."""
        return int(self.status()["sync_info"]["latest_block_height"])

    def head(self) -> tuple[int, int]:
        """(latest height, its time)."""
        info = self.status()["sync_info"]
        return int(info["latest_block_height"]), block_time(info["latest_block_time"])

    # -- the engine's stages ---------------------------------------------------------------

    def ranges(self, state: ScanState, store: Store, lo: int, hi: int,
               stop: threading.Event | None = None) -> Generator[BlockRange, None, None]:
        parent = store.load_block_hash(self.config.chain_id, lo - 1)
        return blocks.fetch_ranges(state, self, lo, hi, parent, stop)

    def prepare(self, state: ScanState, store: Store, fetched: BlockRange) -> BlockRange:
        return blocks.prepare_blocks(state, self, store, fetched)

    # -- blocks --------------------------------------------------------------------------------

    def fetch_blocks(self, lo: int, hi: int, types: set[str]) -> list[CometBlock]:
        """Blocks [lo, hi] with their events of ``types``: ``block`` and ``block_results`` of
        each height, in JSON-RPC batches of at most ``batch_size`` requests (CometBFT refuses
        larger ones: ``[rpc] max_request_batch_size``, 10 by default). Each answer must be for
        the height asked."""
        calls: list[tuple[str, dict[str, Any]]] = []
        for h in range(lo, hi + 1):
            calls += [("block", {"height": str(h)}), ("block_results", {"height": str(h)})]
        replies = self.rpc.batch(calls, chunk=max(2, self.config.batch_size // 2 * 2),
                                 return_errors=True)
        out: list[CometBlock] = []
        for i, h in enumerate(range(lo, hi + 1)):
            block, results = replies[2 * i], replies[2 * i + 1]
            for reply in (block, results):
                if isinstance(reply, RpcError):
                    raise _height_error(reply, h, self.safe_head())
            out.append(self._block(h, block, results, types))
        return out

    def _block(self, height: int, block: Any, results: Any, types: set[str]) -> CometBlock:
        try:
            header = block["block"]["header"]
            got = (int(header["height"]), int(results["height"]))
            if got != (height, height):
                raise RpcError("block", None, f"asked for height {height}, the node answered "
                               f"with block {got[0]} and results {got[1]} (a broken node)")
            hash_ = str(block["block_id"]["hash"])
            parent = str((header.get("last_block_id") or {}).get("hash") or "")
            time = block_time(str(header["time"]))
            txs = (block["block"].get("data") or {}).get("txs") or []
        except (KeyError, TypeError, ValueError) as e:
            raise RpcError("block", None, f"malformed block {height} ({e!r})") from None
        return CometBlock(height, hash_, parent, time,
                          block_records(height, time, hash_, txs, results, types))

    def block_hash(self, height: int) -> str:
        reply = self.rpc.call("block", {"height": str(height)})
        return str(reply["block_id"]["hash"])

    def blocks_ahead(self, lo: int, hi: int, types: set[str], size: int
                     ) -> Generator[list[CometBlock], None, None]:
        """Runs of ``size`` consecutive blocks covering [lo, hi] in order, each checked to link
        to the one before it. Batches of ``batch_size // 2`` heights are fetched concurrently,
        ``requests_in_flight`` of them ahead of the consumer (bounded, so memory is too)."""
        per = max(1, self.config.batch_size // 2)
        depth = max(1, self.config.requests_in_flight)
        pool = ThreadPoolExecutor(depth, thread_name_prefix=f"blocks-{self.name}")
        pending: deque[Future[list[CometBlock]]] = deque()
        run: list[CometBlock] = []
        last: CometBlock | None = None
        try:
            while pending or lo <= hi:
                while lo <= hi and len(pending) < depth:
                    end = min(hi, lo + per - 1)
                    pending.append(pool.submit(self.fetch_blocks, lo, end, types))
                    lo = end + 1
                for block in pending.popleft().result():
                    if last is not None and block.parent_hash != last.hash:
                        raise RpcError("block", None, _unlinked(block, last))
                    run.append(block)
                    last = block
                    if len(run) == size:
                        yield run
                        run = []
            if run:
                yield run
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    # -- state ---------------------------------------------------------------------------------

    def state_list(self, path: str, key: str, height: int) -> list[dict[str, Any]]:
        """Every item of a paged Cosmos REST list query (``/dydxprotocol/perpetuals/perpetual``
        -> its ``perpetual`` list) as of ``height``."""
        items: list[dict[str, Any]] = []
        page_key = ""
        while True:
            params = {"pagination.limit": str(PAGE_LIMIT)}
            if page_key:
                params["pagination.key"] = page_key
            reply = self.rest.get(path, params, {"x-cosmos-block-height": str(height)})
            if not isinstance(reply, dict) or not isinstance(reply.get(key), list):
                raise RpcError("GET", None, f"{path} at height {height}: no {key!r} list in "
                               f"{str(reply)[:200]}")
            items += reply[key]
            page_key = ((reply.get("pagination") or {}).get("next_key")) or ""
            if not page_key:
                return items

    def close(self) -> None:
        self.rpc.close()
        self.rest.close()
