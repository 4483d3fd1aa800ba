"""What the daemon tells whoever watches it (telemetry, logs): events, never decisions. The
engine calls an ``Observer``; the default one ignores everything (``metrics.Metrics`` is one
that counts)."""

from __future__ import annotations


class Observer:
    """The daemon's events, per source (by name). Every method does nothing here."""

    def head(self, source: str, number: int, timestamp: int) -> None:
        """The node's head, at the start of a pass."""

    def range_done(self, source: str, hi: int, hi_time: int | None, rows: int, logs: int,
                   quarantined: int, refetched: int, request_blocks: int) -> None:
        """A range was committed."""

    def pass_done(self, source: str, checkpoint: int | None, checkpoint_time: int | None) -> None:
        """A catch-up pass of the source ended."""

    def reorg(self, sources: list[str], depth: int) -> None:
        """A reorg of ``depth`` blocks was rolled back for these sources (one chain)."""

    def problem(self, source: str, kind: str, message: str) -> None:
        """A pass failed and will be tried again (kind: chain_moved, node_behind, error)."""

    def imbalance(self, scope: str, label: str, side: str, skew: float) -> None:
        """An imbalance episode opened (scope: market or asset)."""

    def imbalances_open(self, skews: dict[str, float]) -> None:
        """The episodes open now: label -> skew."""
