"""The value that flows through the stages: one block range of one source."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from indexer.rpc import Log
    from indexer.store import RangeRows


@dataclass(slots=True)
class BlockRange:
    """Blocks [lo, hi] of one source. ``fetch`` fills the logs and the end header, ``prepare``
    turns the logs into ``rows`` (and drops them), ``commit`` sets ``written``."""

    lo: int
    hi: int
    #: The header of block ``hi`` (its hash becomes the checkpoint's).
    end: dict[str, Any]
    logs: list[Log] = field(default_factory=list)
    #: Blocks one eth_getLogs request covered when the range was fetched.
    request_blocks: int = 0
    #: About the JSON size of ``logs`` (see ``fetch.log_bytes``).
    log_bytes: int = 0
    #: Logs fetched (kept once ``logs`` is dropped).
    log_count: int = 0
    #: Logs the range request missed and the logsBloom check fetched again (tip path only).
    refetched: int = 0
    #: What ``prepare`` made of the logs, ready to commit.
    rows: RangeRows | None = None
    #: Ledger rows the commit wrote.
    written: int = 0
    #: The cluster's staged file the range was read from, and its log count (recorded with the
    #: commit: see ``indexer.cluster``).
    staged: tuple[str, int] | None = None

    @property
    def blocks(self) -> int:
        return self.hi - self.lo + 1

    @property
    def end_time(self) -> int:
        return int(self.end["timestamp"], 16)

    @property
    def quarantined(self) -> int:
        return len(self.rows.quarantine) if self.rows is not None else 0
