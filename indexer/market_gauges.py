"""The analytics an operator charts live, as Prometheus gauges on the daemon's ``/metrics``.

After each sync pass the daemon calls :meth:`MarketGauges.refresh` with a function that runs one
SELECT (``Store.query``); it reads the analytics views (``open_interest`` with ``market_assets``,
``asset_open_interest``, ``whale_concentration``, ``imbalance_episodes``) in one statement (one
consistent snapshot, :data:`SNAPSHOT_SQL`) and keeps the rendered lines, which
:meth:`MarketGauges.samples` hands to ``Metrics.render``. A refresh that fails keeps the
previous values (and counts the failure): the gauges never stop the sync loop.

Label sets are bounded, whatever the chain holds: per (chain, protocol) at most ``max_markets``
markets (the largest by open interest; the rest summed into ``market="other"``), at most
``max_assets`` assets (the rest into ``asset="other"``), label values are chain ids, protocol
names, assets and market symbols (or market addresses when a market has no symbol), cut to
``MAX_LABEL_CHARS``; never a wallet address. Amounts are USD as floats (the views' exact
DECIMAL(38,18) figures, rounded once to the nearest double).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

logger = logging.getLogger(__name__)

#: One SELECT in, its column names and rows out (``Store.query``).
Run = Callable[[str], tuple[list[str], list[tuple[Any, ...]]]]

PREFIX = "perp_indexer_"
#: Markets per (chain, protocol) with series of their own; the rest are summed into "other".
MAX_MARKETS = 50
#: Assets with series of their own in the cross-venue gauges; the rest are summed into "other".
MAX_ASSETS = 50
#: Longest label value kept (token symbols come from the chain: a contract may say anything).
MAX_LABEL_CHARS = 64
OTHER = "other"
SIDES = ("long", "short")
SCOPES = ("market", "asset")

#: Everything a refresh reads, as one SELECT: one statement is one snapshot of the database, so
#: the market, asset, concentration and episode figures always describe the same ledger.
#: ``kind`` says which of the four row shapes a row is; the columns it does not use are NULL.
#: An episode still running has no end hour (imbalance_episodes: end_hour is the first hour
#: after the run, NULL while it lasts).
SNAPSHOT_SQL = """
SELECT 'market' AS kind, o.chain_id::VARCHAR AS chain_id, o.protocol, o.market::VARCHAR AS market,
       m.asset, m.symbol, o.long_oi_usd AS long_usd, o.short_oi_usd AS short_usd,
       NULL::DOUBLE AS share, NULL::VARCHAR AS scope, NULL::VARCHAR AS side, NULL::BIGINT AS n
FROM open_interest o LEFT JOIN market_assets m USING (chain_id, protocol, market)
UNION ALL
SELECT 'asset', NULL, NULL, NULL, asset, NULL, sum(long_oi_usd)::DECIMAL(38,18),
       sum(short_oi_usd)::DECIMAL(38,18), NULL, NULL, NULL, NULL
FROM asset_open_interest WHERE asset IS NOT NULL GROUP BY asset
UNION ALL
SELECT 'top10', chain_id::VARCHAR, protocol, market::VARCHAR, NULL, NULL, NULL, NULL,
       top10_share, NULL, NULL, NULL
FROM whale_concentration WHERE top10_share IS NOT NULL
UNION ALL
SELECT 'episodes', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, scope, side, count(*)
FROM imbalance_episodes WHERE end_hour IS NULL GROUP BY scope, side
"""

#: name (without prefix), type, help: every metric this module renders.
METRICS: dict[str, tuple[str, str]] = {
    "open_interest_usd": (
        "gauge", "open interest in USD, as a float, per chain id, protocol, market and side "
                 f"(at most {MAX_MARKETS} markets per protocol, the rest summed as market=\"other\")"),
    "asset_open_interest_usd": (
        "gauge", "open interest in USD, as a float, per asset and side over every indexed venue "
                 f"(at most {MAX_ASSETS} assets, the rest summed as asset=\"other\")"),
    "market_skew": (
        "gauge", "(long - short) / (long + short) open interest per market, in [-1, 1]"),
    "asset_skew": (
        "gauge", "(long - short) / (long + short) open interest per asset over every venue"),
    "top10_share": (
        "gauge", "share of a protocol's open interest held by its 10 largest accounts, in [0, 1]"),
    "market_top10_share": (
        "gauge", "share of a market's open interest held by its 10 largest accounts, in [0, 1]"),
    "imbalance_episodes_open": (
        "gauge", "imbalance episodes running now (|skew| >= threshold up to the latest hour), "
                 "per scope (market or asset) and side"),
    "market_gauges_refresh_seconds": (
        "gauge", "seconds the last successful refresh of the analytics gauges took"),
    "market_gauges_refreshed_timestamp_seconds": (
        "gauge", "unix time of the last successful refresh of the analytics gauges"),
    "market_gauges_errors_total": (
        "counter", "refreshes of the analytics gauges that failed (previous values kept)"),
}


def _label(value: Any) -> str:
    text = "" if value is None else _clean(value)[:MAX_LABEL_CHARS]
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _float(value: Any) -> float:
    return float(value) if value is not None else 0.0


def _num(value: float) -> str:
    return repr(float(value))  # the shortest text that reads back as the same double


def _skew(long_: Decimal, short: Decimal) -> float | None:
    total = long_ + short
    return float((long_ - short) / total) if total > 0 else None


def _market_label(market: Any, symbol: Any, symbols: dict[str, int], used: set[str]) -> str:
    """The market's symbol; symbol@address when two markets of a venue share one (GMX v2
    pools); the address when it has none. Unique within the venue, at most MAX_LABEL_CHARS."""
    address = _clean(market)
    if symbol and symbols[str(symbol)] == 1:
        name = _clean(symbol)
    elif symbol:
        name = f"{_clean(symbol)[:16]}@{address}"
    else:
        name = address
    name = base = name[:MAX_LABEL_CHARS]
    n = 1
    while name in used:
        n += 1
        name = f"{base[:MAX_LABEL_CHARS - 8]}#{n}"
    used.add(name)
    return name


def _clean(value: Any) -> str:
    return "".join(c for c in str(value) if c.isprintable())


class _Lines:
    """Samples grouped by metric, rendered with HELP and TYPE once per metric."""

    def __init__(self) -> None:
        self.by_name: dict[str, list[str]] = {}

    def add(self, name: str, labels: dict[str, Any], value: float | None) -> None:
        if value is None or not math.isfinite(value):
            return
        shown = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        series = f"{PREFIX}{name}{{{shown}}}" if shown else f"{PREFIX}{name}"
        self.by_name.setdefault(name, []).append(f"{series} {_num(value)}")

    def render(self, names: Iterable[str]) -> list[str]:
        out: list[str] = []
        for name in names:
            kind, help_ = METRICS[name]
            out.append(f"# HELP {PREFIX}{name} {help_}")
            out.append(f"# TYPE {PREFIX}{name} {kind}")
            out.extend(self.by_name.get(name, []))
        return out


class MarketGauges:
    """Open interest, skew, concentration and open imbalance episodes as Prometheus samples."""

    def __init__(self, max_markets: int = MAX_MARKETS, max_assets: int = MAX_ASSETS) -> None:
        if max_markets < 1 or max_assets < 1:
            raise ValueError("max_markets and max_assets must be at least 1")
        self.max_markets = max_markets
        self.max_assets = max_assets
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()  # one refresh at a time
        self._lines: list[str] = []
        self._refresh_seconds: float | None = None
        self._refreshed_at: float | None = None
        self._errors = 0

    # -- reading the views -----------------------------------------------------------------------

    def refresh(self, run: Run) -> None:
        """Read the views with ``run`` (one SELECT: one snapshot) and replace every value at once.
        On failure the previous values stay, the error is logged and counted."""
        with self._refresh_lock:
            started = time.monotonic()
            try:
                lines = self._read(run)
            except Exception as e:  # noqa: BLE001 - a chart must never stop the sync loop
                logger.warning("analytics gauges not refreshed: %s", e)
                with self._lock:
                    self._errors += 1
                return
            took = time.monotonic() - started
            with self._lock:
                self._lines = lines
                self._refresh_seconds = took
                self._refreshed_at = time.time()

    def _read(self, run: Run) -> list[str]:
        columns, rows = run(SNAPSHOT_SQL)
        if columns[:1] != ["kind"]:
            raise ValueError(f"unexpected columns from the gauges' query: {columns}")
        kinds: dict[str, list[tuple[Any, ...]]] = {
            k: [] for k in ("market", "asset", "top10", "episodes")}
        for r in rows:
            kinds[r[0]].append(r)
        out = _Lines()
        market_labels = self._open_interest([r[1:8] for r in kinds["market"]], out)
        self._assets([(r[4], r[6], r[7]) for r in kinds["asset"]], out)
        self._concentration([(r[1], r[2], r[3], r[8]) for r in kinds["top10"]],
                            market_labels, out)
        self._episodes([(r[9], r[10], r[11]) for r in kinds["episodes"]], out)
        return out.render(n for n in METRICS if not n.startswith("market_gauges_"))

    def _open_interest(self, rows: list[tuple[Any, ...]], out: _Lines
                       ) -> dict[tuple[str, str, str], tuple[str, str]]:
        """Per-market OI and skew; returns (chain, protocol, market) -> (market label, asset)
        for the markets kept under the cap."""
        venues: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
        for row in rows:
            venues.setdefault((str(row[0]), str(row[1])), []).append(row)
        kept: dict[tuple[str, str, str], tuple[str, str]] = {}
        for (chain, protocol), markets in sorted(venues.items()):
            symbols: dict[str, int] = {}
            for r in markets:
                if r[4]:
                    symbols[str(r[4])] = symbols.get(str(r[4]), 0) + 1
            ranked = sorted(markets, key=lambda r: (-(Decimal(r[5] or 0) + Decimal(r[6] or 0)),
                                                    str(r[2])))
            rest_long = rest_short = Decimal(0)
            rest = 0
            used: set[str] = {OTHER}
            for i, (_, _, market, asset, symbol, long_, short_) in enumerate(ranked):
                long_d, short_d = Decimal(long_ or 0), Decimal(short_ or 0)
                if i >= self.max_markets:
                    rest_long += long_d
                    rest_short += short_d
                    rest += 1
                    continue
                name = _market_label(market, symbol, symbols, used)
                kept[(chain, protocol, str(market))] = (name, asset or "")
                base = {"chain_id": chain, "protocol": protocol, "market": name,
                        "asset": asset or ""}
                for side, v in zip(SIDES, (long_d, short_d), strict=True):
                    out.add("open_interest_usd", {**base, "side": side}, float(v))
                out.add("market_skew", base, _skew(long_d, short_d))
            if rest:
                base = {"chain_id": chain, "protocol": protocol, "market": OTHER, "asset": ""}
                for side, v in zip(SIDES, (rest_long, rest_short), strict=True):
                    out.add("open_interest_usd", {**base, "side": side}, float(v))
                out.add("market_skew", base, _skew(rest_long, rest_short))
        return kept

    def _assets(self, rows: list[tuple[Any, ...]], out: _Lines) -> None:
        ranked = sorted(((str(a), Decimal(lg or 0), Decimal(sh or 0)) for a, lg, sh in rows
                         if a is not None), key=lambda r: (-(r[1] + r[2]), r[0]))
        kept, rest = ranked[:self.max_assets], ranked[self.max_assets:]
        if rest:
            kept.append((OTHER, sum((r[1] for r in rest), Decimal(0)),
                         sum((r[2] for r in rest), Decimal(0))))
        for asset, long_, short in kept:
            for side, v in zip(SIDES, (long_, short), strict=True):
                out.add("asset_open_interest_usd", {"asset": asset, "side": side}, float(v))
            out.add("asset_skew", {"asset": asset}, _skew(long_, short))

    @staticmethod
    def _concentration(rows: list[tuple[Any, ...]],
                       markets: dict[tuple[str, str, str], tuple[str, str]], out: _Lines) -> None:
        for chain, protocol, market, share in sorted(rows, key=lambda r: tuple(map(str, r[:3]))):
            if market is None:
                out.add("top10_share", {"chain_id": chain, "protocol": protocol}, _float(share))
                continue
            kept = markets.get((str(chain), str(protocol), str(market)))
            if kept is not None:  # a market summed into "other" has no share of its own
                out.add("market_top10_share", {"chain_id": chain, "protocol": protocol,
                                               "market": kept[0], "asset": kept[1]},
                        _float(share))

    @staticmethod
    def _episodes(rows: list[tuple[Any, ...]], out: _Lines) -> None:
        counts = {(str(scope), str(side)): int(n) for scope, side, n in rows}
        for scope in SCOPES:
            for side in SIDES:
                out.add("imbalance_episodes_open", {"scope": scope, "side": side},
                        float(counts.get((scope, side), 0)))

    # -- rendering -------------------------------------------------------------------------------

    def samples(self) -> list[str]:
        """The Prometheus text lines (HELP, TYPE, samples) of the last successful refresh, and
        the refresh's own figures (always)."""
        with self._lock:
            lines = list(self._lines)
            took, at, errors = self._refresh_seconds, self._refreshed_at, self._errors
        meta = _Lines()
        meta.add("market_gauges_refresh_seconds", {}, took)
        meta.add("market_gauges_refreshed_timestamp_seconds", {}, at)
        meta.add("market_gauges_errors_total", {}, float(errors))
        return lines + meta.render(n for n in METRICS if n.startswith("market_gauges_"))
