"""What the sync daemon reports about itself: Prometheus metrics and health.

``Metrics`` collects figures from the sync loop (thread-safe), renders them in the Prometheus
text format with the analytics gauges (:mod:`indexer.market_gauges`), and builds the health JSON
``{"healthy": bool, "protocols": {...}, "rpc_errors": [...]}``. :mod:`indexer.service` serves
both (``/metrics``, ``/health``). Nothing here ever holds an RPC URL unredacted: endpoints are
given already redacted.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from indexer.market_gauges import MarketGauges
from indexer.observer import Observer

#: Window over which ``rows_per_second`` is averaged.
RATE_WINDOW = 60.0


@dataclass(slots=True)
class ProtocolFigures:
    chain: str
    head_block: int | None = None
    head_time: int | None = None
    checkpoint_block: int | None = None
    checkpoint_time: int | None = None
    range_size: int = 0
    rows_written: int = 0
    logs_fetched: int = 0
    quarantined: int = 0
    logs_refetched: int = 0
    reorgs: int = 0
    reorg_last_depth: int = 0
    reorg_max_depth: int = 0
    node_behind: int = 0
    chain_moved: int = 0
    last_success: float | None = None
    last_error: str | None = None
    #: (monotonic time, rows) of the ranges written in the last RATE_WINDOW seconds
    _rows: deque[tuple[float, int]] = field(default_factory=deque, repr=False)

    @property
    def lag_blocks(self) -> int | None:
        if self.head_block is None or self.checkpoint_block is None:
            return None
        return max(self.head_block - self.checkpoint_block, 0)

    @property
    def lag_seconds(self) -> int | None:
        if self.head_time is None or self.checkpoint_time is None:
            return None
        return max(self.head_time - self.checkpoint_time, 0)


class Metrics(Observer):
    """The daemon's observer that counts: figures per source, plus the RPC error counters read at render time."""

    def __init__(self, chains: dict[str, str], stale_after: float,
                 rpc_errors: Callable[[], dict[tuple[str, str], int]] = dict) -> None:
        """``chains``: protocol name -> chain name; a protocol whose last successful pass is
        older than ``stale_after`` seconds makes the daemon unhealthy."""
        self._lock = threading.Lock()
        self.protocols = {p: ProtocolFigures(c) for p, c in chains.items()}
        self.stale_after = stale_after
        self.rpc_errors = rpc_errors
        self.started = time.time()
        self.imbalance_alerts = 0
        self.imbalance_skews: dict[str, float] = {}
        self.market_gauges = MarketGauges()

    # -- updates from the sync loop --------------------------------------------------------------

    def head(self, source: str, number: int, timestamp: int) -> None:
        with self._lock:
            f = self.protocols[source]
            f.head_block, f.head_time = number, timestamp

    def range_done(self, source: str, hi: int, hi_time: int | None, rows: int, logs: int,
                   quarantined: int, refetched: int, request_blocks: int) -> None:
        now = time.monotonic()
        with self._lock:
            f = self.protocols[source]
            f.checkpoint_block = hi
            if hi_time is not None:
                f.checkpoint_time = hi_time
            f.rows_written += rows
            f.logs_fetched += logs
            f.quarantined += quarantined
            f.logs_refetched += refetched
            f.range_size = request_blocks
            f._rows.append((now, rows))

    def pass_done(self, source: str, checkpoint: int | None, checkpoint_time: int | None) -> None:
        with self._lock:
            f = self.protocols[source]
            if checkpoint is not None:
                f.checkpoint_block = checkpoint
            if checkpoint_time is not None:
                f.checkpoint_time = checkpoint_time
            f.last_success = time.time()
            f.last_error = None

    def reorg(self, sources: list[str], depth: int) -> None:
        with self._lock:
            for p in sources:
                f = self.protocols[p]
                f.reorgs += 1
                f.reorg_last_depth = depth
                f.reorg_max_depth = max(f.reorg_max_depth, depth)

    def problem(self, source: str, kind: str, message: str) -> None:
        """A pass that could not finish: kind is node_behind, chain_moved or error."""
        with self._lock:
            f = self.protocols[source]
            if kind == "node_behind":
                f.node_behind += 1
            elif kind == "chain_moved":
                f.chain_moved += 1
            f.last_error = message[:300]

    def imbalance(self, scope: str, label: str, side: str, skew: float) -> None:
        with self._lock:
            self.imbalance_alerts += 1

    def imbalances_open(self, skews: dict[str, float]) -> None:
        with self._lock:
            self.imbalance_skews = dict(skews)

    @staticmethod
    def _rate(f: ProtocolFigures, now: float) -> float:
        """Rows written per second over the last RATE_WINDOW (forgetting older ranges)."""
        while f._rows and f._rows[0][0] < now - RATE_WINDOW:
            f._rows.popleft()
        span = max(now - f._rows[0][0], 1.0) if f._rows else RATE_WINDOW
        return sum(r for _, r in f._rows) / span

    # -- reading ---------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        now = time.time()
        with self._lock:
            protocols = {}
            healthy = True
            for name, f in self.protocols.items():
                fresh = f.last_success is not None and now - f.last_success <= self.stale_after
                healthy = healthy and fresh
                d = {k: v for k, v in asdict(f).items() if not k.startswith("_")}
                d.update(lag_blocks=f.lag_blocks, lag_seconds=f.lag_seconds, fresh=fresh,
                         rows_per_second=self._rate(f, time.monotonic()))
                protocols[name] = d
        errors = [{"endpoint": e, "kind": k, "count": n}
                  for (e, k), n in sorted(self.rpc_errors().items())]
        return {"healthy": healthy, "uptime_seconds": round(now - self.started, 1),
                "protocols": protocols, "rpc_errors": errors}

    def render(self) -> str:
        """The Prometheus text format."""
        h = self.health()
        out: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[dict[str, str], Any]]
                   ) -> None:
            out.append(f"# HELP perp_indexer_{name} {help_}")
            out.append(f"# TYPE perp_indexer_{name} {kind}")
            for labels, value in samples:
                if value is None:
                    continue
                shown = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
                out.append(f"perp_indexer_{name}{{{shown}}} {_number(value)}")

        ps = h["protocols"]

        def per(key: str) -> list[tuple[dict[str, str], Any]]:
            return [({"protocol": p, "chain": d["chain"]}, d[key]) for p, d in ps.items()]

        metric("up", "gauge", "1 when every protocol finished a sync pass recently",
               [({}, int(h["healthy"]))])
        metric("head_block", "gauge", "latest block number reported by the node", per("head_block"))
        metric("checkpoint_block", "gauge", "highest block indexed", per("checkpoint_block"))
        metric("head_lag_blocks", "gauge", "head block minus checkpoint block", per("lag_blocks"))
        metric("head_lag_seconds", "gauge", "head block time minus checkpoint block time",
               per("lag_seconds"))
        metric("getlogs_range_blocks", "gauge", "current eth_getLogs range size in blocks",
               per("range_size"))
        metric("rows_written_total", "counter", "position_changes rows written",
               per("rows_written"))
        metric("rows_written_per_second", "gauge",
               f"position_changes rows written per second over the last {RATE_WINDOW:.0f}s",
               per("rows_per_second"))
        metric("logs_fetched_total", "counter", "logs fetched", per("logs_fetched"))
        metric("quarantined_logs_total", "counter", "logs sent to the quarantine table",
               per("quarantined"))
        metric("logs_refetched_total", "counter",
               "logs a range request missed that the logsBloom check fetched again",
               per("logs_refetched"))
        metric("reorgs_total", "counter", "chain reorganisations rolled back", per("reorgs"))
        metric("reorg_last_depth_blocks", "gauge", "depth of the last reorg",
               per("reorg_last_depth"))
        metric("reorg_max_depth_blocks", "gauge", "deepest reorg since start",
               per("reorg_max_depth"))
        metric("node_behind_total", "counter",
               "passes skipped because the node lacked a block we indexed (lagging node)",
               per("node_behind"))
        metric("chain_moved_total", "counter",
               "ranges abandoned because the chain reorganised while they were fetched",
               per("chain_moved"))
        metric("last_success_timestamp_seconds", "gauge", "unix time of the last finished pass",
               per("last_success"))
        metric("rpc_errors_total", "counter", "failed RPC requests by endpoint and kind",
               [({"endpoint": e["endpoint"], "kind": e["kind"]}, e["count"])
                for e in h["rpc_errors"]])
        with self._lock:
            alerts, skews = self.imbalance_alerts, dict(self.imbalance_skews)
        metric("imbalance_alerts_total", "counter", "imbalance episodes that opened since start",
               [({}, alerts)])
        metric("imbalance_skew", "gauge",
               "skew of each market and asset in an imbalance episode now (|skew| >= threshold)",
               [({"episode": label}, skew) for label, skew in sorted(skews.items())])
        out.extend(self.market_gauges.samples())
        return "\n".join(out) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.6g}" if value != int(value) or abs(value) >= 1e15 else str(int(value))
    return str(value)
