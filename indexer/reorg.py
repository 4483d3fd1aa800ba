"""Pure reorg logic: find the common ancestor of the stored hash chain and the node's."""

from __future__ import annotations

from collections.abc import Callable

from indexer.errors import FatalError


class ReorgTooDeep(FatalError):
    """The chain diverged below the oldest block we kept: we cannot roll back safely."""


def find_ancestor(stored: Callable[[int], str | None], fetch_hash: Callable[[int], str],
                  start: int, floor: int) -> int:
    """Walk back from ``start`` to the highest block whose stored hash equals the node's.

    ``stored(n)`` is our hash of block n (None if not kept); ``fetch_hash(n)`` the node's. Cases:
    same hash -> that block is the ancestor; different -> go one lower; not kept (below the
    window) or below ``floor`` -> ReorgTooDeep.
    """
    n = start
    while n >= floor:
        ours = stored(n)
        if ours is None:
            break
        if ours == fetch_hash(n):
            return n
        n -= 1
    raise ReorgTooDeep(f"chain reorganised below block {n + 1}, deeper than the kept window of "
                       "block hashes; stopping without writing (re-backfill from an earlier block)")
