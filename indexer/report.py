"""One self-contained HTML page of charts over the analytics views (``perp-indexer report``, and the
daemon's live ``/report``).

:func:`report_data` reads the views through a ``run`` function (one read-only SQL statement per
call: :meth:`indexer.store.Store.query`, the CLI's reader, or the query service's guarded runner)
and returns JSON-ready data; :func:`render_page` turns that data into HTML; :func:`build_report`
does both. The page carries everything it needs: the plotly.js that the ``plotly`` PyPI package
ships is inlined (read as a file, plotly's Python API is not used), so it opens offline. Given a
``live_url`` the page fetches fresh data from it every few seconds and redraws in place, keeping
the reader's selection.

Charts, each per asset (over its venues) and per market, chosen in one selector (docs/report.md):
long vs short open interest (``market_hourly``), skew with imbalance episodes shaded
(``market_hourly``, ``imbalance_episodes``), funding and borrow rates (``funding_rates_hourly``,
``asset_funding_rates_hourly``), the liquidation cascade (``liquidation_map``), liquidations per
hour (``liquidations_hourly``), volume against OI change, coloured by OI regime
(``volume_hourly``, ``oi_regimes_hourly``), top-10 concentration
over time (``whale_concentration_at`` at up to 12 blocks) and the biggest wallets (open positions
per account; ``wallet_exposure`` for the table over every market).

The time charts of a selection share one axis, which skips stretches of more than two days where
nothing of the selection was indexed (venues on chains indexed over different periods).

After drawing, the page writes what it drew to ``document.body.dataset.charts`` (chart id ->
points drawn) and any script error to ``document.body.dataset.errors``: the headless-browser test
reads them from the DOM.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib import resources
from typing import Any

Run = Callable[[str], tuple[list[str], list[tuple[Any, ...]]]]

#: Charts of the page, in order: id -> (title, the views it draws).
CHARTS: dict[str, tuple[str, str]] = {
    "oi": ("Open interest: long vs short", "market_hourly"),
    "skew": ("Skew, imbalance episodes shaded", "market_hourly, imbalance_episodes"),
    "funding": ("Funding / borrow rate (APR)", "funding_rates_hourly, asset_funding_rates_hourly"),
    "liqmap": ("Liquidation map: OI liquidated by a move from the mark", "liquidation_map"),
    "liquidations": ("Liquidations per hour (size closed)", "liquidations_hourly"),
    "volume": ("Volume vs OI change", "volume_hourly, oi_regimes_hourly"),
    "concentration": ("Top-10 accounts' share of open interest", "whale_concentration_at(b)"),
    "wallets": ("Biggest wallets (open size)", "positions, wallet_asset_exposure"),
}
#: The table under the charts, over every market (not per selection).
WALLET_TABLE = "wallet_table"
#: Blocks at which top-10 concentration is sampled per chain: each sample rebuilds open
#: positions from the ledger, so a few spread over the history keep the page fast.
CONCENTRATION_SAMPLES = 12
#: Time series points per line at most: a long history is bucketed into several hours per point
#: so that the page stays small and quick however long the ledger is.
MAX_POINTS = 1500
TOP_WALLETS = 10


def _plain(v: Any) -> Any:
    """A JSON value for a SQL value: amounts to float (drawing only), times to UTC text."""
    if isinstance(v, Decimal):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, datetime):
        if v.tzinfo is not None:
            v = v.astimezone(UTC).replace(tzinfo=None)
        return v.strftime("%Y-%m-%d %H:%M:%S")  # plotly reads this as a date (times are UTC)
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _dicts(run: Run, sql: str) -> list[dict[str, Any]]:
    cols, rows = run(sql)
    return [{c: _plain(v) for c, v in zip(cols, r, strict=True)} for r in rows]


def _market_key(chain_id: Any, protocol: Any, market: Any) -> str:
    # the volume query builds the same keys in SQL ('m:' || chain_id || ...)
    return f"m:{chain_id}:{protocol}:{market}"


def _asset_key(asset: Any) -> str:
    return f"a:{asset}"


def _sql_text(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def report_data(run: Run) -> dict[str, Any]:
    """Every chart's data, JSON-ready, read with ``run`` (one read-only statement per call).

    A chart whose query fails (an older database, a refused statement) is left empty and its
    error kept in ``errors``, so one view cannot take the whole page down."""
    errors: dict[str, str] = {}

    def read(name: str, sql: str) -> list[dict[str, Any]]:
        try:
            return _dicts(run, sql)
        except Exception as e:  # noqa: BLE001 - any reader's error: shown on the page, not raised
            errors[name] = str(e).splitlines()[0] if str(e) else type(e).__name__
            return []

    data: dict[str, Any] = {"generated_at": _plain(datetime.now(UTC)), "errors": errors}

    # what is indexed: per source, the checkpoint block and the ledger's time span
    data["sources"] = read("sources", """
        SELECT c.chain_id, c.protocol, c.source, c.start_block, c.block_number,
               l.first_time, l.last_time, coalesce(l.changes, 0) AS changes
        FROM checkpoints c LEFT JOIN (
            SELECT source, min(block_time) AS first_time, max(block_time) AS last_time,
                   count(*) AS changes
            FROM position_changes GROUP BY source) l USING (source)
        ORDER BY c.chain_id, c.protocol, c.source""")
    # hours a series can hold: each chain's span, summed (chains indexed over different periods
    # are not one long span: the page skips the time between them, see axis() in the page)
    span = read("span", """
        SELECT sum(hours) AS hours FROM (
            SELECT date_diff('hour', min(block_time), max(block_time)) + 1 AS hours
            FROM position_changes GROUP BY chain_id)""")
    hours = int((span[0]["hours"] if span else None) or 0)
    # hours per point: 1 until the history is longer than MAX_POINTS hours
    step = max(1, math.ceil(hours / MAX_POINTS))
    data["bucket_hours"] = step
    bucket = f"time_bucket(INTERVAL '{step} hours', hour)"

    # the selector's entries: assets (over their venues) then markets, largest OI first
    markets = read("markets", """
        SELECT o.chain_id, o.protocol, o.market, a.asset, a.symbol, o.long_oi_usd,
               o.short_oi_usd, o.total_oi_usd, o.skew
        FROM (SELECT DISTINCT chain_id, protocol, market FROM position_changes) m
        LEFT JOIN open_interest o USING (chain_id, protocol, market)
        LEFT JOIN market_assets a USING (chain_id, protocol, market)
        WHERE o.market IS NOT NULL
        UNION ALL
        SELECT m.chain_id, m.protocol, m.market, a.asset, a.symbol, 0, 0, 0, NULL
        FROM (SELECT DISTINCT chain_id, protocol, market FROM position_changes) m
        LEFT JOIN market_assets a USING (chain_id, protocol, market)
        WHERE NOT EXISTS (SELECT 1 FROM open_interest o WHERE o.chain_id = m.chain_id
                          AND o.protocol = m.protocol AND o.market = m.market)""")
    scopes: list[dict[str, Any]] = []
    asset_oi: dict[str, dict[str, float]] = defaultdict(lambda: {"long": 0.0, "short": 0.0})
    for m in markets:
        if m["asset"] is not None:
            asset_oi[m["asset"]]["long"] += m["long_oi_usd"] or 0.0
            asset_oi[m["asset"]]["short"] += m["short_oi_usd"] or 0.0
    for asset, a_oi in sorted(asset_oi.items(), key=lambda kv: (-(kv[1]["long"] + kv[1]["short"]),
                                                              kv[0])):
        scopes.append({"key": _asset_key(asset), "kind": "asset", "asset": asset,
                       "label": f"{asset} (all venues)", "long_oi_usd": a_oi["long"],
                       "short_oi_usd": a_oi["short"]})
    for m in sorted(markets, key=lambda m: (-(m["total_oi_usd"] or 0.0), str(m["market"]))):
        name = m["symbol"] or m["asset"] or str(m["market"])[:10]
        short = str(m["market"])
        short = short[:6] + "…" + short[-4:] if len(short) > 14 else short
        scopes.append({"key": _market_key(m["chain_id"], m["protocol"], m["market"]),
                       "kind": "market", "asset": m["asset"], "chain_id": m["chain_id"],
                       "protocol": m["protocol"], "market": m["market"],
                       "label": f"{name} · {m['protocol']} · chain {m['chain_id']} · {short}",
                       "long_oi_usd": m["long_oi_usd"] or 0.0,
                       "short_oi_usd": m["short_oi_usd"] or 0.0})
    data["scopes"] = scopes
    charts: dict[str, dict[str, Any]] = {cid: {} for cid in CHARTS}
    data["charts"] = charts

    def series(chart: str, key: str) -> dict[str, list[Any]]:
        return charts[chart].setdefault(key, defaultdict(list))

    # open interest and skew: per market, and per asset summed over its venues (SQL sums)
    oi_rows = read("oi", f"""
        WITH b AS (
            SELECT chain_id, protocol, market, asset, {bucket} AS t,
                   arg_max(long_oi_usd, hour) AS l, arg_max(short_oi_usd, hour) AS s
            FROM market_hourly GROUP BY ALL)
        SELECT 'market' AS scope, chain_id, protocol, market, asset, t, l, s FROM b
        UNION ALL
        SELECT 'asset', NULL, NULL, NULL, asset, t, sum(l), sum(s) FROM b
        WHERE asset IS NOT NULL GROUP BY asset, t
        ORDER BY t""")
    for r in oi_rows:
        key = (_asset_key(r["asset"]) if r["scope"] == "asset"
               else _market_key(r["chain_id"], r["protocol"], r["market"]))
        oi = series("oi", key)
        oi["t"].append(r["t"])
        oi["long"].append(r["l"])
        oi["short"].append(r["s"])
        total = (r["l"] or 0.0) + (r["s"] or 0.0)
        sk = series("skew", key)
        sk["t"].append(r["t"])
        sk["skew"].append(((r["l"] or 0.0) - (r["s"] or 0.0)) / total if total > 0 else None)
    for r in read("skew", """
            SELECT scope, chain_id, protocol, market, asset, side, start_hour, end_hour,
                   peak_skew, hours
            FROM imbalance_episodes ORDER BY start_hour"""):
        key = (_asset_key(r["asset"]) if r["scope"] == "asset"
               else _market_key(r["chain_id"], r["protocol"], r["market"]))
        charts["skew"].setdefault(key, defaultdict(list))
        charts["skew"][key].setdefault("episodes", []).append(
            {"side": r["side"], "start": r["start_hour"], "end": r["end_hour"],
             "peak": r["peak_skew"], "hours": r["hours"]})

    # funding: per market the market's own rows (GMX v1: the market is the collateral token
    # whose borrow rate it is); per asset the OI-weighted view
    for r in read("funding", f"""
            SELECT 'market' AS scope, chain_id, protocol, market, {bucket} AS t,
                   avg(long_rate_apr) AS l, avg(short_rate_apr) AS s, any_value(kind) AS kind
            FROM funding_rates_hourly GROUP BY ALL
            UNION ALL
            SELECT 'asset', NULL, NULL, asset, {bucket}, avg(long_rate_apr), avg(short_rate_apr),
                   NULL
            FROM asset_funding_rates_hourly GROUP BY ALL
            ORDER BY t"""):
        key = (_asset_key(r["market"]) if r["scope"] == "asset"
               else _market_key(r["chain_id"], r["protocol"], r["market"]))
        f = series("funding", key)
        f["t"].append(r["t"])
        f["long"].append(r["l"])
        f["short"].append(r["s"])
        if r["kind"]:
            charts["funding"][key]["kind"] = r["kind"]

    for r in read("liqmap", """
            SELECT scope, chain_id, protocol, market, asset, move_pct, long_liquidated_usd,
                   short_liquidated_usd, unpriced_oi_usd
            FROM liquidation_map ORDER BY move_pct"""):
        key = (_asset_key(r["asset"]) if r["scope"] == "asset"
               else _market_key(r["chain_id"], r["protocol"], r["market"]))
        lm = series("liqmap", key)
        lm["move"].append(r["move_pct"])
        lm["long"].append(r["long_liquidated_usd"])
        lm["short"].append(r["short_liquidated_usd"])
        charts["liqmap"][key]["unpriced"] = r["unpriced_oi_usd"]

    for r in read("liquidations", f"""
            WITH b AS (
                SELECT chain_id, protocol, market, asset, {bucket} AS t,
                       sum(size_usd) FILTER (WHERE is_long) AS l,
                       sum(size_usd) FILTER (WHERE NOT is_long) AS s,
                       sum(liquidations) AS n
                FROM liquidations_hourly GROUP BY ALL)
            SELECT 'market' AS scope, chain_id, protocol, market, asset, t, l, s, n FROM b
            UNION ALL
            SELECT 'asset', NULL, NULL, NULL, asset, t, sum(l), sum(s), sum(n) FROM b
            WHERE asset IS NOT NULL GROUP BY asset, t
            ORDER BY t"""):
        key = (_asset_key(r["asset"]) if r["scope"] == "asset"
               else _market_key(r["chain_id"], r["protocol"], r["market"]))
        lq = series("liquidations", key)
        lq["t"].append(r["t"])
        lq["long"].append(r["l"] or 0.0)
        lq["short"].append(r["s"] or 0.0)
        lq["count"].append(r["n"])

    # volume (bars, coloured by the hour's OI regime) against the OI change of every hour:
    # oi_regimes_hourly has a row for each hour of market_hourly, quiet hours too, so the line
    # does not join two trading hours across a quiet stretch; volume_hourly only has hours
    # with changes. The regime is an hour's: with several hours per point it is left out.
    regime = "any_value(regime)" if step == 1 else "NULL"
    for r in read("volume", f"""
            WITH v AS (
                SELECT 'm:' || chain_id || ':' || protocol || ':' || market AS key, hour,
                       volume_usd AS v, trades AS n, oi_change_usd AS d0
                FROM volume_hourly WHERE hour IS NOT NULL
                UNION ALL
                SELECT 'a:' || asset, hour, sum(volume_usd), sum(trades), sum(oi_change_usd)
                FROM volume_hourly WHERE hour IS NOT NULL AND asset IS NOT NULL
                GROUP BY asset, hour),
            r AS (
                SELECT CASE scope WHEN 'asset' THEN 'a:' || asset
                       ELSE 'm:' || chain_id || ':' || protocol || ':' || market END AS key,
                       hour, oi_change_usd AS d, regime
                FROM oi_regimes_hourly WHERE scope = 'market' OR asset IS NOT NULL)
            SELECT key, {bucket} AS t, sum(v) AS v, sum(n) AS n,
                   sum(coalesce(d, d0, 0)) AS d, {regime} AS regime
            FROM v FULL JOIN r USING (key, hour)
            WHERE key IS NOT NULL
            GROUP BY ALL ORDER BY t"""):
        v = series("volume", r["key"])
        v["t"].append(r["t"])
        v["volume"].append(r["v"] or 0.0)
        v["oi_change"].append(r["d"])
        v["trades"].append(r["n"] or 0)
        v["regime"].append(r["regime"])

    _concentration(read, data, charts)
    _wallets(read, scopes, charts)
    data["wallet_table"] = read(WALLET_TABLE, f"""
        SELECT account, gross_usd, net_usd, open_positions, protocols, chains, liquidations,
               realized_pnl_usd, last_activity
        FROM wallet_exposure WHERE gross_usd > 0
        ORDER BY gross_usd DESC, account LIMIT {TOP_WALLETS}""")
    # defaultdicts to plain dicts (json.dumps takes either; this keeps the data tidy)
    data["charts"] = {cid: {k: dict(v) for k, v in per.items()} for cid, per in charts.items()}
    return data


def _concentration(read: Callable[[str, str], list[dict[str, Any]]], data: dict[str, Any],
                   charts: dict[str, dict[str, Any]]) -> None:
    """Top-10 share at up to CONCENTRATION_SAMPLES blocks per chain, evenly spread over the
    chain's ledger in time. Block numbers are per chain, so each chain gets its own samples;
    one statement per chain (a UNION ALL of the macro at each block). An asset's line per venue:
    the macro ranks accounts per market, not per asset over venues."""
    samples = read("concentration", f"""
        WITH t AS (
            SELECT chain_id, block_number, block_time,
                   epoch(block_time) - epoch(min(block_time) OVER (PARTITION BY chain_id)) AS s,
                   epoch(max(block_time) OVER (PARTITION BY chain_id))
                   - epoch(min(block_time) OVER (PARTITION BY chain_id)) AS span
            FROM position_changes WHERE block_time IS NOT NULL)
        SELECT chain_id, max(block_number) AS block, max(block_time) AS time
        FROM t
        GROUP BY chain_id,
                 least({CONCENTRATION_SAMPLES - 1},
                       floor(s / nullif(span, 0) * {CONCENTRATION_SAMPLES}))
        ORDER BY chain_id, block""")
    by_chain: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for s in samples:
        by_chain[s["chain_id"]].append(s)
    assets = {(s["chain_id"], s["protocol"], s["market"]): s.get("asset")
              for s in data["scopes"] if s["kind"] == "market"}
    for chain_id, blocks in by_chain.items():
        sql = "\nUNION ALL\n".join(
            f"SELECT {int(b['block'])} AS block, {_sql_text(str(b['time']))} AS time, "
            f"protocol, market, top10_share, accounts, open_interest_usd "
            f"FROM whale_concentration_at({int(b['block'])}) "
            f"WHERE chain_id = {int(chain_id)} AND market IS NOT NULL" for b in blocks)
        for r in read("concentration", f"SELECT * FROM ({sql}) ORDER BY block"):
            key = _market_key(chain_id, r["protocol"], r["market"])
            c = charts["concentration"].setdefault(key, {"lines": {}})
            line = c["lines"].setdefault("top-10 share", defaultdict(list))
            line["t"].append(r["time"])
            line["share"].append(r["top10_share"])
            line["accounts"].append(r["accounts"])
            asset = assets.get((chain_id, r["protocol"], r["market"]))
            if asset is not None:
                a = charts["concentration"].setdefault(_asset_key(asset), {"lines": {}})
                name = f"{r['protocol']} · chain {chain_id}"
                line = a["lines"].setdefault(name, defaultdict(list))
                line["t"].append(r["time"])
                line["share"].append(r["top10_share"])
                line["accounts"].append(r["accounts"])
    for per in charts["concentration"].values():
        per["lines"] = {k: dict(v) for k, v in per["lines"].items()}


def _wallets(read: Callable[[str, str], list[dict[str, Any]]], scopes: list[dict[str, Any]],
             charts: dict[str, dict[str, Any]]) -> None:
    """The TOP_WALLETS accounts by open size, long and short, per market and per asset."""
    rows = read("wallets", f"""
        WITH m AS (
            SELECT 'market' AS scope, chain_id, protocol, market, NULL AS asset, account,
                   coalesce(sum(size_usd) FILTER (WHERE is_long), 0) AS l,
                   coalesce(sum(size_usd) FILTER (WHERE NOT is_long), 0) AS s
            FROM positions WHERE status = 'open' GROUP BY ALL
            UNION ALL
            SELECT 'asset', NULL, NULL, NULL, asset, account, long_usd, short_usd
            FROM wallet_asset_exposure WHERE asset IS NOT NULL),
        r AS (
            SELECT *, row_number() OVER (PARTITION BY scope, chain_id, protocol, market, asset
                                         ORDER BY l + s DESC, account) AS rank
            FROM m WHERE l + s > 0)
        SELECT scope, chain_id, protocol, market, asset, account, l, s FROM r
        WHERE rank <= {TOP_WALLETS} ORDER BY rank""")
    for r in rows:
        key = (_asset_key(r["asset"]) if r["scope"] == "asset"
               else _market_key(r["chain_id"], r["protocol"], r["market"]))
        w = charts["wallets"].setdefault(key, defaultdict(list))
        w["account"].append(r["account"])
        w["long"].append(r["l"])
        w["short"].append(r["s"])


def _plotly_js() -> str:
    path = resources.files("plotly") / "package_data" / "plotly.min.js"
    return path.read_text(encoding="utf-8")


def _script_safe(text: str) -> str:
    """Text that cannot close the <script> element it sits in."""
    return text.replace("</", "<\\/")


def render_page(data: dict[str, Any], live_url: str | None = None,
                refresh_seconds: float = 10.0) -> str:
    """The HTML page drawing ``data`` (from :func:`report_data`). With ``live_url`` it fetches
    that URL's JSON every ``refresh_seconds`` and redraws, keeping the reader's selection."""
    config = {"live_url": live_url, "refresh_ms": int(max(1.0, refresh_seconds) * 1000),
              "charts": {cid: {"title": t, "source": s} for cid, (t, s) in CHARTS.items()}}
    cards = "\n".join(
        f'<section class="card" id="card-{cid}"><header><h2>{html.escape(t)}</h2>'
        f'<span class="src">{html.escape(s)}</span></header>'
        f'<div class="chart" id="{cid}"></div></section>' for cid, (t, s) in CHARTS.items())
    values = {"PLOTLY": _script_safe(_plotly_js()),
              "DATA": _script_safe(json.dumps(data, allow_nan=False)),
              "CONFIG": _script_safe(json.dumps(config)),
              "CARDS": cards, "MODE": "live" if live_url else "snapshot"}
    # one pass over the template: text put in (plotly.js, the data) is never searched again
    return re.sub(r"\{\{([A-Z]+)\}\}", lambda m: values[m.group(1)], _TEMPLATE)


def build_report(run: Run) -> str:
    """The self-contained page of the database ``run`` reads."""
    return render_page(report_data(run))


# The page; render_page fills its {{NAME}} placeholders.
_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>perp-indexer report</title>
<script>
// Record errors before anything else runs: the headless test reads them from the DOM.
(function () {
  var errors = [];
  function keep(msg) {
    errors.push(String(msg));
    if (document.body) document.body.dataset.errors = JSON.stringify(errors);
  }
  window.__reportErrors = errors;
  window.onerror = function (msg, src, line, col) { keep(msg + " (" + line + ":" + col + ")"); };
  window.addEventListener("unhandledrejection", function (e) { keep("unhandled: " + e.reason); });
  var original = console.error;
  console.error = function () {
    keep(Array.prototype.join.call(arguments, " "));
    return original.apply(console, arguments);
  };
})();
</script>
<script>{{PLOTLY}}</script>
<style>
  :root { --bg:#f5f6f8; --card:#fff; --ink:#1f2933; --muted:#6b7280; --line:#e5e7eb;
          --long:#16a34a; --short:#dc2626; --accent:#2563eb; }
  * { box-sizing: border-box; }
  body { margin:0; background:var(--bg); color:var(--ink);
         font:14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
  .top { background:#111827; color:#f9fafb; padding:18px 28px 14px; }
  .top h1 { margin:0; font-size:21px; font-weight:600; letter-spacing:.2px; }
  .top .meta { color:#9ca3af; font-size:12.5px; margin-top:4px; }
  .top .meta b { color:#e5e7eb; font-weight:500; }
  .bar { display:flex; flex-wrap:wrap; align-items:center; gap:18px; padding:14px 28px;
         background:var(--card); border-bottom:1px solid var(--line); }
  .bar label { font-weight:600; }
  .bar select { font-size:14px; padding:6px 10px; min-width:360px; border:1px solid #cbd5e1;
                border-radius:6px; background:#fff; }
  .kpi { display:flex; gap:22px; flex-wrap:wrap; }
  .kpi div { font-size:12px; color:var(--muted); }
  .kpi b { display:block; font-size:17px; color:var(--ink); font-weight:600; }
  .kpi .long b { color:var(--long); } .kpi .short b { color:var(--short); }
  .status { margin-left:auto; font-size:12px; color:var(--muted); }
  .status .dot { display:inline-block; width:8px; height:8px; border-radius:50%;
                 background:#9ca3af; margin-right:6px; }
  .status.live .dot { background:var(--long); }
  main { display:grid; grid-template-columns:repeat(2, minmax(0, 1fr)); gap:16px;
         padding:16px 28px 28px; }
  .card { background:var(--card); border:1px solid var(--line); border-radius:8px;
          padding:12px 14px 6px; min-width:0; }
  .card header { display:flex; justify-content:space-between; align-items:baseline; gap:10px; }
  .card h2 { margin:0; font-size:14.5px; font-weight:600; }
  .card .src { font:11.5px ui-monospace, SFMono-Regular, Menlo, monospace; color:var(--muted); }
  .card .note { font-size:12px; color:var(--muted); min-height:16px; }
  .chart { height:330px; position:relative; }
  .empty { position:absolute; inset:0; display:flex; align-items:center; justify-content:center;
           color:var(--muted); font-size:15px; background:repeating-linear-gradient(135deg,
           #fafafa, #fafafa 10px, #f3f4f6 10px, #f3f4f6 20px); border-radius:6px; }
  .wide { grid-column:1 / -1; }
  table { width:100%; border-collapse:collapse; font-size:13px; }
  th, td { padding:6px 10px; border-bottom:1px solid var(--line); text-align:right;
           white-space:nowrap; }
  th { color:var(--muted); font-weight:600; font-size:12px; text-transform:uppercase;
       letter-spacing:.3px; }
  td.acct, th.acct { text-align:left; font-family:ui-monospace, SFMono-Regular, Menlo, monospace; }
  td.pos { color:var(--long); } td.neg { color:var(--short); }
  .errors { margin:0 28px; padding:10px 14px; background:#fef2f2; color:#991b1b;
            border:1px solid #fecaca; border-radius:6px; font-size:12.5px; display:none; }
  footer { padding:0 28px 24px; color:var(--muted); font-size:12px; }
</style>
</head>
<body data-mode="{{MODE}}">
<div class="top">
  <h1>perp-indexer · open interest, funding and liquidations</h1>
  <div class="meta" id="meta"></div>
</div>
<div class="bar">
  <label for="scope">Asset / market</label>
  <select id="scope"></select>
  <div class="kpi" id="kpi"></div>
  <div class="status" id="status"><span class="dot"></span><span id="status-text"></span></div>
</div>
<div class="errors" id="errors"></div>
<main>
{{CARDS}}
<section class="card wide" id="card-wallet_table"><header><h2>Largest wallets, every market</h2>
<span class="src">wallet_exposure</span></header><div id="wallet_table"></div></section>
</main>
<footer>Amounts in USD as the protocols value them (docs/sql.md); times in UTC. Generated by
perp-indexer; the chart library (plotly.js) is inlined, so this page opens offline.</footer>
<script>
var DATA = {{DATA}};
var CONFIG = {{CONFIG}};
(function () {
  "use strict";
  var LONG = "#16a34a", SHORT = "#dc2626", ACCENT = "#2563eb", GREY = "#6b7280";
  var drawn = {};
  var selected = null;

  function usd(v) {
    if (v === null || v === undefined) return "–";
    var a = Math.abs(v), s = v < 0 ? "-$" : "$";
    if (a >= 1e9) return s + (a / 1e9).toFixed(2) + "B";
    if (a >= 1e6) return s + (a / 1e6).toFixed(2) + "M";
    if (a >= 1e3) return s + (a / 1e3).toFixed(1) + "K";
    return s + a.toFixed(2);
  }
  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c];
    });
  }
  function base(extra) {
    var layout = {
      margin: {l: 64, r: 18, t: 8, b: 44},
      paper_bgcolor: "#fff", plot_bgcolor: "#fff",
      font: {family: "-apple-system, Segoe UI, Roboto, Arial, sans-serif", size: 12, color: "#1f2933"},
      legend: {orientation: "h", x: 0, y: 1.12, font: {size: 11.5}},
      hovermode: "x unified",
      // a live redraw keeps the reader's zoom; choosing another selection resets it
      uirevision: selected,
      xaxis: timeX(),
      shapes: breakLines(),
      yaxis: {gridcolor: "#eef0f2", zerolinecolor: "#cbd5e1", tickprefix: "$", exponentformat: "B", separatethousands: true}
    };
    for (var k in extra) {
      // a linear x axis (liquidation map, wallets) replaces the time axis: nothing of the
      // date range may stay in it (Plotly.react fails on a redraw diffing range: null)
      var replace = k === "xaxis" && extra[k].type === "linear";
      if (!replace && typeof extra[k] === "object" && extra[k] !== null && !Array.isArray(extra[k]) && layout[k]) {
        for (var j in extra[k]) layout[k][j] = extra[k][j];
      } else layout[k] = extra[k];
    }
    return layout;
  }
  // no mode bar: it would sit on the legends; drag zooms, a double click resets
  var PLOT_CONFIG = {displayModeBar: false, responsive: true};

  function points(traces) {
    var n = 0;
    traces.forEach(function (t) {
      var xs = t.x || t.y || [];
      for (var i = 0; i < xs.length; i++) {
        var y = t.y ? t.y[i] : xs[i];
        if (y !== null && y !== undefined) n++;
      }
    });
    return n;
  }
  function draw(id, traces, layout, emptyText) {
    var el = document.getElementById(id);
    var n = traces ? points(traces) : 0;
    drawn[id] = n;
    var old = el.querySelector(".empty");
    if (n === 0) {
      if (el.classList.contains("js-plotly-plot")) Plotly.purge(el);
      el.innerHTML = "";
      var d = document.createElement("div");
      d.className = "empty";
      // with nothing selected (an empty database) every chart says the same
      d.textContent = (selected !== null && emptyText) || "no data yet";
      el.appendChild(d);
      return;
    }
    if (old) old.remove();
    Plotly.react(el, traces, layout, PLOT_CONFIG);
  }
  // The time axis every time chart of the selection shares: one range, so the charts line
  // up, and breaks over stretches where nothing of the selection was indexed (an asset's
  // venues on chains indexed over different periods), so the data is not squeezed to slivers.
  var HOUR = 3600 * 1000, GAP = 48 * HOUR;
  var axis = {range: null, breaks: [], skipped: [], ticks: null};
  function ms(t) { return Date.parse(String(t).replace(" ", "T") + "Z"); }
  function text(m) { return new Date(m).toISOString().slice(0, 19).replace("T", " "); }
  function timeAxis() {
    var ts = [];
    ["oi", "skew", "funding", "liquidations", "volume"].forEach(function (c) {
      var d = per(c);
      if (d && d.t) ts = ts.concat(d.t);
    });
    var conc = per("concentration");
    if (conc && conc.lines) Object.keys(conc.lines).forEach(function (k) { ts = ts.concat(conc.lines[k].t); });
    var xs = ts.filter(function (t) { return t; }).map(ms).filter(isFinite).sort(function (a, b) { return a - b; });
    axis = {range: null, breaks: [], skipped: [], ticks: null};
    if (!xs.length) return;
    var pad = (DATA.bucket_hours || 1) * HOUR;  // a bar is a bucket wide: keep the whole bar
    axis.range = [text(xs[0] - pad), text(xs[xs.length - 1] + pad)];
    var segments = [[xs[0] - pad, null]];
    for (var i = 1; i < xs.length; i++) {
      if (xs[i] - xs[i - 1] > GAP) {
        axis.breaks.push({bounds: [text(xs[i - 1] + pad), text(xs[i] - pad)]});
        axis.skipped.push(text(xs[i - 1]).slice(0, 10) + " → " + text(xs[i]).slice(0, 10));
        segments[segments.length - 1][1] = xs[i - 1] + pad;
        segments.push([xs[i] - pad, null]);
      }
    }
    segments[segments.length - 1][1] = xs[xs.length - 1] + pad;
    // the ticks are set here, about 8 over what is shown: plotly's automatic ones span the
    // breaks too (a tick a year for venues years apart), and on a chart of a few bars they
    // sit on the bars only; set here, every time chart of the page has the same ticks
    axis.ticks = ticksOver(segments);
  }
  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  function ticksOver(segments) {
    var shown = segments.reduce(function (a, s) { return a + s[1] - s[0]; }, 0);
    var steps = [1, 2, 3, 6, 12, 24, 48, 96, 168, 336, 720, 2160, 8760];
    var step = steps[steps.length - 1] * HOUR;
    for (var i = 0; i < steps.length; i++) {
      if (shown / (steps[i] * HOUR) <= 8) { step = steps[i] * HOUR; break; }
    }
    var vals = [], labels = [], lastDay = null, before = 0, lastPos = -Infinity;
    segments.forEach(function (s) {
      for (var t = Math.ceil(s[0] / step) * step; t <= s[1]; t += step) {
        var pos = before + t - s[0];  // where the tick is drawn, in shown time
        if (pos - lastPos < 0.7 * step) continue;  // too close to the last segment's last tick
        lastPos = pos;
        var d = new Date(t), day = MONTHS[d.getUTCMonth()] + " " + d.getUTCDate() + ", " + d.getUTCFullYear();
        var hm = ("0" + d.getUTCHours()).slice(-2) + ":" + ("0" + d.getUTCMinutes()).slice(-2);
        var label = step >= 24 * HOUR ? day : (day !== lastDay ? hm + "<br>" + day : hm);
        lastDay = day;
        vals.push(text(t));
        labels.push(label);
      }
      before += s[1] - s[0];
    });
    return {vals: vals, labels: labels};
  }
  // a line trace cut where the axis breaks: a line across the break would invent a trend
  function cut(x) {
    var keys = Array.prototype.slice.call(arguments, 1);
    var out = {x: []};
    keys.forEach(function (k) { out[k[0]] = []; });
    for (var i = 0; i < x.length; i++) {
      if (i > 0 && ms(x[i]) - ms(x[i - 1]) > GAP) {
        out.x.push(text((ms(x[i]) + ms(x[i - 1])) / 2));
        keys.forEach(function (k) { out[k[0]].push(null); });
      }
      out.x.push(x[i]);
      keys.forEach(function (k) { out[k[0]].push(k[1][i]); });
    }
    return out;
  }
  // the break as a dashed line, so a reader sees where the axis jumps
  function breakLines() {
    return axis.breaks.map(function (b) {
      return {type: "line", xref: "x", yref: "paper", x0: b.bounds[0], x1: b.bounds[0], y0: 0, y1: 1,
              line: {color: "#9ca3af", width: 1.5, dash: "dash"}};
    });
  }
  function timeX() {
    var x = {type: "date", range: axis.range, autorange: !axis.range, rangebreaks: axis.breaks,
             gridcolor: "#f0f1f3", linecolor: "#d1d5db", title: {text: ""}};
    if (axis.ticks) {
      x.tickmode = "array";
      x.tickvals = axis.ticks.vals;
      x.ticktext = axis.ticks.labels;
      x.tickangle = 0;
    }
    return x;
  }
  // a bar covers its bucket [t, t + bucket), as the hour it sums, not a bucket centred on t
  function barsOverBuckets(trace) {
    var w = (DATA.bucket_hours || 1) * HOUR;
    trace.width = trace.x.map(function () { return 0.9 * w; });
    trace.offset = 0.05 * w;
    return trace;
  }
  function per(chart) {
    var c = (DATA.charts || {})[chart] || {};
    return c[selected] || null;
  }
  function scopeOf(key) {
    var s = DATA.scopes || [];
    for (var i = 0; i < s.length; i++) if (s[i].key === key) return s[i];
    return null;
  }

  function drawOI() {
    var d = per("oi");
    if (!d) return draw("oi", null);
    var c = cut(d.t, ["long", d.long], ["short", d.short]);
    draw("oi", [
      {x: c.x, y: c.long, name: "long OI", type: "scatter", mode: "lines", line: {color: LONG, width: 2, shape: "hv"},
       fill: "tozeroy", fillcolor: "rgba(22,163,74,0.10)", hovertemplate: "%{y:$,.0f}"},
      {x: c.x, y: c.short, name: "short OI", type: "scatter", mode: "lines", line: {color: SHORT, width: 2, shape: "hv"},
       fill: "tozeroy", fillcolor: "rgba(220,38,38,0.08)", hovertemplate: "%{y:$,.0f}"}
    ], base({}));
    setNote("oi", axis.skipped.length ? "time axis skips " + axis.skipped.join(", ") +
            " (dashed line): nothing of this selection was indexed then" : "");
  }
  function drawSkew() {
    var d = per("skew");
    if (!d || !d.t) return draw("skew", null);
    var last = d.t.length ? d.t[d.t.length - 1] : null;
    var shapes = (d.episodes || []).map(function (e) {
      return {type: "rect", xref: "x", yref: "paper", x0: e.start, x1: e.end || last, y0: 0, y1: 1,
              fillcolor: e.side === "long" ? "rgba(22,163,74,0.13)" : "rgba(220,38,38,0.13)",
              line: {width: 0}, layer: "below"};
    });
    var c = cut(d.t, ["skew", d.skew]);
    var colors = c.skew.map(function (v) { return v === null ? GREY : (v >= 0 ? LONG : SHORT); });
    draw("skew", [
      {x: c.x, y: c.skew, name: "skew (long − short) / total", type: "scatter", mode: "lines+markers",
       line: {color: ACCENT, width: 1.6}, marker: {size: 4, color: colors}, hovertemplate: "%{y:+.1%}"},
      {x: [null], y: [null], name: "long imbalance", type: "scatter", mode: "markers",
       marker: {symbol: "square", size: 12, color: "rgba(22,163,74,0.35)"}, hoverinfo: "skip"},
      {x: [null], y: [null], name: "short imbalance", type: "scatter", mode: "markers",
       marker: {symbol: "square", size: 12, color: "rgba(220,38,38,0.35)"}, hoverinfo: "skip"}
    ], base({shapes: shapes.concat(breakLines()), yaxis: {tickprefix: "", tickformat: "+.0%", range: [-1.05, 1.05], zeroline: true}}));
    var note = (d.episodes || []).length + " imbalance episode(s) shaded";
    setNote("skew", note);
  }
  function drawFunding() {
    var d = per("funding");
    if (!d) return draw("funding", null, null,
                        "no funding rows for this selection (see docs/report.md)");
    var kind = d.kind ? " (" + d.kind + ")" : "";
    var c = cut(d.t, ["long", d.long], ["short", d.short]);
    draw("funding", [
      {x: c.x, y: c.long, name: "longs pay" + kind, type: "scatter", mode: "lines",
       line: {color: LONG, width: 2, shape: "hv"}, hovertemplate: "%{y:.2%}"},
      {x: c.x, y: c.short, name: "shorts pay" + kind, type: "scatter", mode: "lines",
       line: {color: SHORT, width: 2, shape: "hv", dash: "dot"}, hovertemplate: "%{y:.2%}"}
    ], base({yaxis: {tickprefix: "", tickformat: ".1%", title: {text: "APR", font: {size: 11, color: GREY}}}}));
  }
  function drawLiqMap() {
    var d = per("liqmap");
    if (!d || !d.move) return draw("liqmap", null);
    var any = d.long.some(function (v) { return v > 0; }) || d.short.some(function (v) { return v > 0; });
    if (!any) return draw("liqmap", null, null, "no open position with a liquidation price");
    var xl = d.move.map(function (m) { return -m; });
    draw("liqmap", [
      {x: xl, y: d.long, name: "longs liquidated by a fall", type: "bar", marker: {color: LONG},
       hovertemplate: "price %{x}%: %{y:$,.0f}<extra>longs</extra>"},
      {x: d.move, y: d.short, name: "shorts liquidated by a rise", type: "bar", marker: {color: SHORT},
       hovertemplate: "price +%{x}%: %{y:$,.0f}<extra>shorts</extra>"}
    ], base({bargap: 0.08, hovermode: "closest", shapes: [],
             xaxis: {type: "linear", gridcolor: "#f0f1f3", linecolor: "#d1d5db", ticksuffix: "%", title: {text: "price move from the mark (cumulative)", font: {size: 11, color: GREY}}}}));
    setNote("liqmap", d.unpriced > 0 ? usd(d.unpriced) + " open OI without a liquidation price is left out" : "");
  }
  function drawLiquidations() {
    var d = per("liquidations");
    if (!d) return draw("liquidations", null, null, "no liquidations for this selection");
    draw("liquidations", [
      barsOverBuckets({x: d.t, y: d.long, name: "longs liquidated", type: "bar", marker: {color: LONG}, hovertemplate: "%{y:$,.0f}"}),
      barsOverBuckets({x: d.t, y: d.short, name: "shorts liquidated", type: "bar", marker: {color: SHORT}, hovertemplate: "%{y:$,.0f}"})
    ], base({barmode: "stack", legend: {traceorder: "normal"}}));
    var n = d.count.reduce(function (a, b) { return a + (b || 0); }, 0);
    setNote("liquidations", n + " liquidation(s), " + (DATA.bucket_hours || 1) + " h per bar");
  }
  // the OI regime of each hour (oi_regimes_hourly): what moved OI with price
  var REGIMES = [["new_longs", "new longs (OI ↑, price ↑)", "rgba(22,163,74,0.7)"],
                 ["new_shorts", "new shorts (OI ↑, price ↓)", "rgba(220,38,38,0.7)"],
                 ["short_covering", "short covering (OI ↓, price ↑)", "rgba(134,239,172,0.95)"],
                 ["long_unwinding", "long unwinding (OI ↓, price ↓)", "rgba(252,165,165,0.95)"],
                 ["flat", "flat", "rgba(37,99,235,0.45)"]];
  function drawVolume() {
    var d = per("volume");
    if (!d) return draw("volume", null);
    var traces = [];
    var hasRegime = d.regime.some(function (r) { return r; });
    var groups = hasRegime ? REGIMES : [[null, "volume", "rgba(37,99,235,0.55)"]];
    groups.forEach(function (g) {
      var x = [], y = [];
      for (var i = 0; i < d.t.length; i++) {
        var r = d.regime[i] || "flat";
        if (d.volume[i] > 0 && (g[0] === null || r === g[0])) { x.push(d.t[i]); y.push(d.volume[i]); }
      }
      if (x.length) traces.push(barsOverBuckets({x: x, y: y, name: g[1], type: "bar", marker: {color: g[2]},
                                                 hovertemplate: "%{y:$,.0f}"}));
    });
    var c = cut(d.t, ["oi_change", d.oi_change]);
    traces.push({x: c.x, y: c.oi_change, name: "OI change", type: "scatter", mode: "lines",
                 line: {color: "#111827", width: 1.6, shape: "hv"}, hovertemplate: "%{y:$,.0f}"});
    draw("volume", traces, base({barmode: "overlay", bargap: 0, legend: {orientation: "h", x: 0, y: 1.2, font: {size: 10.5}}}));
    var trades = d.trades.reduce(function (a, b) { return a + (b || 0); }, 0);
    setNote("volume", trades + " trade(s); bars coloured by the hour's OI regime" +
            (hasRegime ? "" : " (not shown: several hours per bar)"));
  }
  function drawConcentration() {
    var d = per("concentration");
    if (!d || !d.lines) return draw("concentration", null);
    var palette = [ACCENT, "#7c3aed", "#0891b2", "#f59e0b", "#db2777", GREY];
    var traces = Object.keys(d.lines).map(function (name, i) {
      var l = d.lines[name];
      return {x: l.t, y: l.share, name: name, type: "scatter", mode: "lines+markers",
              line: {color: palette[i % palette.length], width: 2}, marker: {size: 6},
              customdata: l.accounts, hovertemplate: "%{y:.1%} (%{customdata} accounts)"};
    });
    draw("concentration", traces, base({yaxis: {tickprefix: "", tickformat: ".0%", rangemode: "tozero"}}));
  }
  function drawWallets() {
    var d = per("wallets");
    if (!d) return draw("wallets", null, null, "no open positions for this selection");
    var acct = d.account.map(function (a) { return a.slice(0, 8) + "…" + a.slice(-4); }).reverse();
    draw("wallets", [
      {y: acct, x: d.long.slice().reverse(), name: "long", type: "bar", orientation: "h",
       marker: {color: LONG}, hovertemplate: "%{x:$,.0f}"},
      {y: acct, x: d.short.slice().reverse(), name: "short", type: "bar", orientation: "h",
       marker: {color: SHORT}, hovertemplate: "%{x:$,.0f}"}
    ], base({barmode: "stack", hovermode: "y unified", shapes: [], legend: {traceorder: "normal"}, margin: {l: 110, r: 18, t: 8, b: 36},
             xaxis: {type: "linear", gridcolor: "#f0f1f3", linecolor: "#d1d5db", tickprefix: "$", exponentformat: "B",
                     separatethousands: true, title: {text: ""}},
             yaxis: {tickprefix: "", type: "category",
                     tickfont: {family: "ui-monospace, Menlo, monospace", size: 11}}}));
  }
  function drawWalletTable() {
    var rows = DATA.wallet_table || [];
    drawn.wallet_table = rows.length;
    var el = document.getElementById("wallet_table");
    if (!rows.length) {
      el.innerHTML = '<div class="chart" style="height:80px"><div class="empty">no data yet</div></div>';
      return;
    }
    var h = '<table><thead><tr><th class="acct">account</th><th>gross open</th><th>net (long − short)</th>' +
            '<th>open positions</th><th>protocols</th><th>chains</th><th>liquidations</th>' +
            '<th>realised PnL</th><th>last activity (UTC)</th></tr></thead><tbody>';
    rows.forEach(function (r) {
      var cls = function (v) { return v > 0 ? "pos" : (v < 0 ? "neg" : ""); };
      h += "<tr><td class='acct'>" + esc(r.account) + "</td><td>" + usd(r.gross_usd) +
           "</td><td class='" + cls(r.net_usd) + "'>" + usd(r.net_usd) + "</td><td>" + esc(r.open_positions) +
           "</td><td>" + esc(r.protocols) + "</td><td>" + esc(r.chains) + "</td><td>" + esc(r.liquidations) +
           "</td><td class='" + cls(r.realized_pnl_usd) + "'>" + usd(r.realized_pnl_usd) + "</td><td>" +
           esc(r.last_activity || "–") + "</td></tr>";
    });
    el.innerHTML = h + "</tbody></table>";
  }
  function setNote(id, text) {
    var card = document.getElementById("card-" + id);
    var n = card.querySelector(".note");
    if (!n) {
      n = document.createElement("div");
      n.className = "note";
      card.appendChild(n);
    }
    n.textContent = text || "";
  }

  function header() {
    var src = DATA.sources || [];
    var parts = src.map(function (s) {
      return "<b>" + esc(s.source) + "</b> (" + esc(s.protocol) + ", chain " + esc(s.chain_id) +
             "): blocks " + esc(s.start_block) + "–" + esc(s.block_number) +
             (s.first_time ? ", " + esc(s.first_time) + " → " + esc(s.last_time) + " UTC" : "") +
             ", " + esc(s.changes) + " position changes";
    });
    // one line per source: what is indexed, then when the page's data was read
    document.getElementById("meta").innerHTML =
      (parts.length ? parts : ["nothing indexed yet"]).map(function (p) { return "<div>" + p + "</div>"; }).join("") +
      "<div>data read " + esc(DATA.generated_at || "") + " UTC · amounts in USD, times in UTC</div>";
    var errs = DATA.errors || {};
    var keys = Object.keys(errs);
    var box = document.getElementById("errors");
    box.style.display = keys.length ? "block" : "none";
    box.textContent = keys.map(function (k) { return k + ": " + errs[k]; }).join(" · ");
  }
  function selector() {
    var sel = document.getElementById("scope");
    var scopes = DATA.scopes || [];
    var keys = scopes.map(function (s) { return s.key; });
    if (selected === null || keys.indexOf(selected) < 0) {
      var wanted = decodeURIComponent((location.hash || "").slice(1));
      selected = keys.indexOf(wanted) >= 0 ? wanted : (keys[0] || null);
    }
    var h = "";
    [["asset", "Assets (all venues)"], ["market", "Markets"]].forEach(function (g) {
      var opts = scopes.filter(function (s) { return s.kind === g[0]; });
      if (!opts.length) return;
      h += '<optgroup label="' + esc(g[1]) + '">';
      opts.forEach(function (s) {
        h += '<option value="' + esc(s.key) + '"' + (s.key === selected ? " selected" : "") + ">" +
             esc(s.label) + "</option>";
      });
      h += "</optgroup>";
    });
    sel.innerHTML = h || "<option>no data yet</option>";
    sel.disabled = !scopes.length;
  }
  function kpi() {
    var s = scopeOf(selected);
    var el = document.getElementById("kpi");
    if (!s) { el.innerHTML = ""; return; }
    var l = s.long_oi_usd || 0, sh = s.short_oi_usd || 0, t = l + sh;
    var skew = t > 0 ? ((l - sh) / t * 100) : null;
    el.innerHTML = '<div class="long">long OI<b>' + usd(l) + '</b></div>' +
                   '<div class="short">short OI<b>' + usd(sh) + '</b></div>' +
                   "<div>skew<b>" + (skew === null ? "–" : (skew >= 0 ? "+" : "") + skew.toFixed(1) + "%") + "</b></div>";
  }
  function drawAll() {
    header();
    selector();
    kpi();
    timeAxis();
    var steps = [drawOI, drawSkew, drawFunding, drawLiqMap, drawLiquidations, drawVolume,
                 drawConcentration, drawWallets, drawWalletTable];
    steps.forEach(function (f) {
      try { f(); } catch (e) { console.error(f.name + " failed: " + (e && e.stack || e)); }
    });
    document.body.dataset.charts = JSON.stringify(drawn);
    document.body.dataset.errors = JSON.stringify(window.__reportErrors);
    document.body.dataset.selected = selected || "";
  }

  document.getElementById("scope").addEventListener("change", function (e) {
    selected = e.target.value;
    history.replaceState(null, "", "#" + encodeURIComponent(selected));
    drawAll();
  });

  var statusText = document.getElementById("status-text");
  if (CONFIG.live_url) {
    document.getElementById("status").classList.add("live");
    statusText.textContent = "live · every " + Math.round(CONFIG.refresh_ms / 1000) + " s";
    var refresh = function () {
      fetch(CONFIG.live_url, {cache: "no-store"}).then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      }).then(function (d) {
        DATA = d;
        drawAll();
        statusText.textContent = "live · updated " + new Date().toISOString().slice(11, 19) + " UTC";
      }).catch(function (e) {
        // a missed refresh is not a page error: the daemon may be restarting; try again later
        statusText.textContent = "live · refresh failed (" + e.message + "), retrying";
      }).then(function () { setTimeout(refresh, CONFIG.refresh_ms); });
    };
    setTimeout(refresh, CONFIG.refresh_ms);
  } else {
    statusText.textContent = "snapshot";
  }
  drawAll();
})();
</script>
</body>
</html>
"""
