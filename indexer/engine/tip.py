"""Checks of a range fetched at the tip of an EVM chain, against the headers kept for it: every
log from the blocks we hold, and no log a block's ``logsBloom`` promises left out."""

from __future__ import annotations

import logging
from typing import Any

from indexer.bloom import may_match
from indexer.engine.fetch import chain_order, checked, fetch_logs, log_bytes
from indexer.engine.ranges import BlockRange
from indexer.engine.source import ScanState
from indexer.errors import ChainMoved
from indexer.rpc import Log, Rpc

logger = logging.getLogger(__name__)


def complete_from_blooms(state: ScanState, rpc: Rpc, logs: list[Log],
                         headers: dict[int, dict[str, Any]], lo: int, hi: int
                         ) -> tuple[list[Log], int]:
    """The completeness check: a block whose ``logsBloom`` may hold our events but that got no
    log from the range request is fetched again by hash. Returns the logs (with any found that
    way, in chain order) and how many were added; a bloom false positive adds nothing."""
    with_logs = {int(lg.block_number, 16) for lg in logs}
    addresses = state.addresses
    topics = state.source.topics
    suspects = [n for n in range(lo, hi + 1) if n not in with_logs and n in headers
                and may_match(headers[n]["logsBloom"], addresses, topics)]
    if not suspects:
        return logs, 0
    replies = rpc.fetch_block_logs([headers[n]["hash"] for n in suspects], addresses, topics)
    found: list[Log] = []
    for n, reply in zip(suspects, replies, strict=True):
        got = checked(reply, addresses, n, n)
        if got:
            logger.warning("%s: eth_getLogs returned nothing for block %d but its logsBloom "
                           "matches and a request by block hash returned %d logs; kept them "
                           "(the provider served an incomplete range)", state.source.name, n,
                           len(got))
            found += got
    return (chain_order(logs + found), len(found)) if found else (logs, 0)


def check_against_headers(rpc: Rpc, logs: list[Log], headers: dict[int, dict[str, Any]],
                          hi: int) -> None:
    """Logs must come from the blocks whose headers we hold, and block ``hi`` must still be the
    one we fetched: otherwise the chain moved during the fetch (ChainMoved; sync retries)."""
    for log in logs:
        n = int(log.block_number, 16)
        if n in headers and headers[n]["hash"] != log.block_hash:
            raise ChainMoved(f"a log of block {n} has hash {log.block_hash} but its header "
                             f"{headers[n]['hash']}: the chain reorganised during the fetch")
    now = rpc.fetch_block(hi)["hash"]
    if now != headers[hi]["hash"]:
        raise ChainMoved(f"block {hi} changed from {headers[hi]['hash']} to {now} while its "
                         "range was fetched")


def fetch_at_tip(state: ScanState, rpc: Rpc, lo: int, limit: int,
                 headers: dict[int, dict[str, Any]]) -> BlockRange:
    """The range from ``lo`` toward ``limit`` at the tip, whose ``headers`` are held: its logs
    checked against them (ChainMoved if the chain moved) and completed from the blooms."""
    blocks = state.sizer.size
    hi, logs = fetch_logs(state, rpc, lo, limit)
    check_against_headers(rpc, logs, headers, hi)
    logs, refetched = complete_from_blooms(state, rpc, logs, headers, lo, hi)
    return BlockRange(lo, hi, headers[hi], logs, blocks, log_bytes(logs), len(logs), refetched)
