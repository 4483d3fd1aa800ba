"""Plans eth_getLogs block ranges: adaptive size, shrinking on provider caps, growing back."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from indexer.errors import RangeTooLarge

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class RangeSizer:
    """The block count of the next eth_getLogs request.

    Halves (or takes the provider's suggestion) on :class:`RangeTooLarge`; doubles back toward
    ``max_size`` after ``grow_after`` successes in a row.
    """

    max_size: int
    size: int = 0
    grow_after: int = 3
    _streak: int = 0

    def __post_init__(self) -> None:
        self.size = self.size or self.max_size

    def end_for(self, lo: int, limit: int) -> int:
        return min(limit, lo + self.size - 1)

    def shrink(self, error: RangeTooLarge, tried: int) -> None:
        if tried <= 1:
            raise RangeTooLarge(f"{error} (even a single block is refused; raise the provider's "
                                "result cap or use another endpoint)")
        new = error.suggested if error.suggested and error.suggested < tried else tried // 2
        self.size = max(1, new)
        self._streak = 0
        logger.info("getLogs range shrunk to %d blocks: %s", self.size, error)

    def succeeded(self) -> None:
        self._streak += 1
        if self._streak >= self.grow_after and self.size < self.max_size:
            self.size = min(self.max_size, self.size * 2)
            self._streak = 0
