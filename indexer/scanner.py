"""Plans eth_getLogs block ranges: adaptive size, shrinking on provider caps, growing back."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from indexer.errors import AnswerTooLarge, RangeTooLarge

logger = logging.getLogger(__name__)


#: Block count of the first request: ranges start small and double while they stay light, so a
#: dense chain never starts with one huge answer.
FIRST_SIZE = 10
#: Bytes of log data per answer the sizer aims below by default: it bounds the memory one range
#: takes (a GMX v1 log is about 1 KB, a GMX v2 EventLog about 11 KB of JSON), whatever the chain's
#: density. ``engine.source`` derives it from ``max_memory_mb``.
MAX_BYTES = 100_000_000
#: Bytes of log data per answer the sizer aims below when the memory budget would allow more.
#: Small answers arrive sooner and hold less memory in flight, and a node spends less CPU a log
#: on them (docs/benchmarks.md). Consecutive answers are joined into one committed range
#: (``engine.fetch.fetch_ahead``): a commit has a fixed cost, so ranges stay large.
REQUEST_BYTES = 16_000_000


def fitting(blocks: int, size: int, budget: int) -> int:
    """Blocks of a range like one of ``blocks`` blocks that answered ``size`` bytes that should
    answer well under ``budget`` (70 % of it: density varies from block to block)."""
    return max(1, blocks * budget * 7 // (size * 10))


@dataclass(slots=True)
class RangeSizer:
    """The block count of the next eth_getLogs request.

    Starts at ``FIRST_SIZE`` (or ``max_size`` if smaller). Halves (or takes the provider's
    suggestion) on :class:`RangeTooLarge`; shrinks in proportion when an answer held more than
    ``max_bytes`` of logs; doubles back toward ``max_size`` after ``grow_after`` successes in a
    row that stayed under half of it.
    """

    max_size: int
    size: int = 0
    grow_after: int = 3
    max_bytes: int = MAX_BYTES
    _streak: int = 0

    def __post_init__(self) -> None:
        self.size = self.size or min(self.max_size, FIRST_SIZE)

    def end_for(self, lo: int, limit: int) -> int:
        return min(limit, lo + self.size - 1)

    def shrink(self, error: RangeTooLarge, tried: int) -> None:
        if tried <= 1:
            raise RangeTooLarge(f"{error} (even a single block is refused; raise the provider's "
                                "result cap or use another endpoint)")
        if isinstance(error, AnswerTooLarge) and error.complete:
            new = fitting(tried, error.size, min(error.limit, self.max_bytes))
        else:
            new = error.suggested if error.suggested and error.suggested < tried else tried // 2
        self.size = max(1, new)
        self._streak = 0
        logger.info("getLogs range shrunk to %d blocks: %s", self.size, error)

    def succeeded(self, blocks: int = 0, size: int = 0) -> None:
        """A request over ``blocks`` blocks returned logs of ``size`` bytes."""
        if size > self.max_bytes and blocks > 1:
            self.size = max(1, min(self.size, fitting(blocks, size, self.max_bytes)))
            self._streak = 0
            return
        self._streak += 1
        if self._streak >= self.grow_after and self.size < self.max_size and \
                size * 2 <= self.max_bytes:
            self.size = min(self.max_size, self.size * 2)
            self._streak = 0
