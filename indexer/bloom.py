"""Block ``logsBloom`` tests: may a block hold a log matching our eth_getLogs filter?

A 2048-bit bloom per block sets, for the address and each topic of every log, the three bits named
by the low 11 bits of the first three byte pairs of the item's keccak256 (yellow paper, 4.3.1). A
block "may match" when the bloom holds one of our addresses and, for every topic position we
filter on, one of its values. False positives happen (blooms of busy blocks are dense); false
negatives never do, so a block that may match but for which getLogs returned nothing is fetched
again by hash (see ``engine.tip.complete_from_blooms``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from indexer.abi import keccak


@lru_cache(maxsize=4096)
def bloom_bits(item: bytes) -> int:
    """The bloom (as an int, bit i = 2^i) that ``item`` alone would set."""
    digest = keccak(item)
    bits = 0
    for i in (0, 2, 4):
        bits |= 1 << (((digest[i] << 8) | digest[i + 1]) & 2047)
    return bits


def _contains(bloom: int, item: bytes) -> bool:
    bits = bloom_bits(item)
    return bloom & bits == bits


def may_match(logs_bloom: str, addresses: Sequence[str], topics: list[Any]) -> bool:
    """Whether a block with ``logs_bloom`` (0x + 512 hex digits) may hold a log of one of
    ``addresses`` whose topics match ``topics`` (an eth_getLogs filter: per position a list of
    alternatives, or None for any)."""
    bloom = int(logs_bloom, 16)
    if not bloom:
        return False
    if not any(_contains(bloom, bytes.fromhex(a[2:])) for a in addresses):
        return False
    for alternatives in topics:
        if alternatives is None:
            continue
        options = [alternatives] if isinstance(alternatives, str) else alternatives
        if not any(_contains(bloom, bytes.fromhex(t[2:])) for t in options):
            return False
    return True
