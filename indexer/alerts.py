"""Imbalance alerts: the daemon watches every market's and asset's skew after each pass and, when
|skew| reaches the threshold on a side where it was not, logs it, tells its observer and POSTs a
JSON alert to the configured webhook. The webhook is best effort: it is sent on a thread of its
own with a timeout, and a failure is logged, never raised (an alert never stops the indexer)."""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from indexer.observer import Observer
from indexer.store import Store

logger = logging.getLogger(__name__)

#: Seconds a webhook POST may take.
WEBHOOK_TIMEOUT = 5.0

#: Current skew per market and per asset (the asset's over its venues).
_SKEWS = """
SELECT 'market' AS scope, o.chain_id, o.protocol, o.market, a.asset, o.long_oi_usd,
       o.short_oi_usd, o.skew
FROM open_interest o LEFT JOIN market_assets a USING (chain_id, protocol, market)
UNION ALL
SELECT 'asset', NULL, NULL, NULL, a.asset, sum(o.long_oi_usd), sum(o.short_oi_usd),
       ((sum(o.long_oi_usd) - sum(o.short_oi_usd))
        / nullif(sum(o.long_oi_usd) + sum(o.short_oi_usd), 0))::DOUBLE
FROM open_interest o JOIN market_assets a USING (chain_id, protocol, market)
WHERE a.asset IS NOT NULL GROUP BY a.asset
"""


@dataclass(frozen=True, slots=True)
class Imbalance:
    scope: str  # market | asset
    chain_id: int | None
    protocol: str | None
    market: str | None
    asset: str | None
    side: str  # long | short
    skew: float
    long_oi_usd: str
    short_oi_usd: str

    @property
    def label(self) -> str:
        if self.scope == "asset":
            return f"asset {self.asset}"
        return f"{self.protocol} market {self.market}" + (f" ({self.asset})" if self.asset else "")


def post_json(url: str, body: dict[str, Any], timeout: float = WEBHOOK_TIMEOUT) -> None:
    """POST ``body`` as JSON; any failure is logged."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"},
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310 (config URL)
            reply.read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        logger.warning("imbalance alert webhook %s failed: %s (the alert is in the log and on "
                       "/metrics)", url, getattr(e, "reason", e))


class ImbalanceWatch:
    """Episodes opening between two looks at the store. The first look (at start) only learns
    which are open already: a restart does not repeat their alerts. A look after which nothing
    was committed (:meth:`changed` not called) reads nothing: skews have not moved."""

    def __init__(self, threshold: float, webhook: str = "", observer: Observer | None = None
                 ) -> None:
        self.threshold = threshold
        self.webhook = webhook
        self.observer = observer or Observer()
        self.open: dict[tuple[Any, ...], str] = {}
        self.primed = False
        self.stale = True
        self.sent: list[threading.Thread] = []

    def changed(self) -> None:
        """Rows were committed: the next look reads the skews again."""
        self.stale = True

    def check(self, store: Store) -> list[Imbalance]:
        """Read the skews; returns the episodes that opened since the last check (alerted)."""
        if not self.stale:
            return []
        self.stale = False
        now: dict[tuple[Any, ...], Imbalance] = {}
        for scope, chain_id, protocol, market, asset, lg, sh, skew in store.con.execute(
                _SKEWS).fetchall():
            if skew is None or abs(skew) < self.threshold:
                continue
            key = (scope, chain_id, protocol, market, asset)
            now[key] = Imbalance(scope, chain_id, protocol, market, asset,
                                 "long" if skew > 0 else "short", skew, str(lg), str(sh))
        opened = [i for k, i in now.items() if self.primed and self.open.get(k) != i.side]
        if not self.primed:
            logger.info("%d imbalance episode(s) open at start (|skew| >= %g)", len(now),
                        self.threshold)
        self.open = {k: i.side for k, i in now.items()}
        self.primed = True
        for i in opened:
            logger.warning("imbalance episode opened: %s, %s side, skew %+.3f (threshold %g)",
                           i.label, i.side, i.skew, self.threshold)
            self.observer.imbalance(i.scope, i.label, i.side, i.skew)
            if self.webhook:
                body = {"event": "imbalance_episode_opened", "scope": i.scope,
                        "chain_id": i.chain_id, "protocol": i.protocol, "market": i.market,
                        "asset": i.asset, "side": i.side, "skew": i.skew,
                        "long_oi_usd": i.long_oi_usd, "short_oi_usd": i.short_oi_usd,
                        "threshold": self.threshold,
                        "at": datetime.now(UTC).isoformat(timespec="seconds")}
                t = threading.Thread(target=post_json, args=(self.webhook, body), daemon=True,
                                     name="imbalance-webhook")
                t.start()
                self.sent = [s for s in self.sent if s.is_alive()] + [t]
        self.observer.imbalances_open({i.label: i.skew for i in now.values()})
        return opened

    def wait_sent(self, timeout: float = WEBHOOK_TIMEOUT + 1) -> None:
        """Let alerts still being sent finish (at shutdown)."""
        for t in self.sent:
            t.join(timeout)
