"""The report page in a real headless Chromium (the Debian package; no playwright): built from a
backfill of the GMX v1 recording and the Synthetix recording (served as chain 10) into one
database, it draws every chart with no script error for an asset over both venues and for
markets of each protocol, opens offline, and leaves a screenshot in artifacts/report.png. Which
charts must be empty for a selection, and point counts, are computed with SQL here. The empty
database's page shows "no data yet" without an error. Unit tests read a small hand-written
ledger, a failing reader and data that tries to close the page's script element."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from indexer.report import CHARTS, WALLET_TABLE, build_report, render_page, report_data
from indexer.store import RangeRows, Store
from tests.helpers import GMX_V1_DATA, SHARED, ReplayNode, run_cli, write_config

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
#: Without these flags Chromium tries many network services (refused here) and slows down.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=15000"]


def chromium(tmp: Path, url: str, *extra: str) -> str:
    """Chromium's stdout for ``url`` (with --dump-dom: the DOM after the scripts ran)."""
    assert Path(CHROMIUM).exists(), "Debian chromium is needed (scripts/test installs it)"
    profile = tmp / "chromium-profile"
    profile.mkdir(exist_ok=True)
    out = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, url],
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def markers(dom: str) -> dict[str, Any]:
    """The body's data-* attributes the page writes after drawing."""
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    attrs = {k: html.unescape(v) for k, v in re.findall(r'data-([a-z]+)="([^"]*)"', body.group(1))}
    assert "charts" in attrs, f"the page did not finish drawing: {body.group(0)[:500]}"
    return {"charts": json.loads(attrs["charts"]), "errors": json.loads(attrs.get("errors", "[]")),
            "selected": attrs.get("selected", ""), "walk": attrs.get("walk", "[]")}


def assert_offline(page: str) -> None:
    """No script, stylesheet or image is loaded from the network."""
    tags = re.findall(r"<(?:script|link|img|iframe)\b[^>]*>", page, flags=re.I)
    for tag in tags:
        assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", tag, re.I), tag


#: Appended to a page: choose each entry of the selector in turn, after the first draw, and
#: record what each drew in data-walk.
WALK = """<script>
setTimeout(function () {
  var sel = document.getElementById("scope"), walk = [];
  for (var i = 0; i < sel.options.length; i++) {
    sel.value = sel.options[i].value;
    sel.dispatchEvent(new Event("change"));
    walk.push({key: sel.value, charts: JSON.parse(document.body.dataset.charts)});
  }
  document.body.dataset.walk = JSON.stringify(walk);
}, 200);
</script>"""


def one(store: Store, sql: str) -> Any:
    return store.query(sql)[1][0][0]


SYNTHETIX_DATA = SHARED / "data" / "synthetix_devnet"
SYNTHETIX_CHAIN = 10  # the recording is served as another chain: its blocks are not GMX's


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GMX v1 (chain 31337) and Synthetix Perps v2 (chain 10) backfilled into one database:
    six markets of three assets, each asset on two venues."""
    tmp = tmp_path_factory.mktemp("report")
    truth = json.loads((GMX_V1_DATA / "gmx_v1_truth.json").read_text())
    node = ReplayNode(GMX_V1_DATA, "gmx_v1")
    try:
        cfg = write_config(tmp / "gmx.yaml", node.url, truth["contracts"]["Vault"],
                           truth["deploymentBlock"], max_block_range=150)
        assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 0
    finally:
        node.stop()
    truth = json.loads((SYNTHETIX_DATA / "synthetix_truth.json").read_text())
    node = ReplayNode(SYNTHETIX_DATA, "synthetix", "--chain-id", str(SYNTHETIX_CHAIN))
    try:
        settings = truth["contracts"]["PerpsV2MarketSettings"]
        cfg = write_config(
            tmp / "snx.yaml", node.url, truth["contracts"]["FuturesMarketManager"],
            truth["deploymentBlock"], adapter="synthetix_perps_v2", chain_id=SYNTHETIX_CHAIN,
            protocol_extra=f'      market_settings: {{ address: "{settings}", '
                           f'start_block: {truth["deploymentBlock"]} }}\n')
        assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 0
    finally:
        node.stop()
    return tmp / "db.duckdb"


def scope_filter(key: str) -> str:
    """The SQL condition of a selector key (``a:<asset>`` or ``m:<chain>:<protocol>:<market>``)
    on a view with chain_id, protocol, market and asset columns."""
    if key.startswith("a:"):
        return f"asset = '{key[2:]}'"
    chain_id, protocol, market = key[2:].split(":")
    return f"chain_id = {int(chain_id)} AND protocol = '{protocol}' AND market = '{market}'"


def empty_charts(store: Store, key: str) -> set[str]:
    """The charts the views leave empty for a selection, read straight from the views."""
    where, asset = scope_filter(key), key.startswith("a:")
    kind = "asset" if asset else "market"
    funding = one(store, f"""
        SELECT count(long_rate_apr) + count(short_rate_apr)
        FROM {"asset_funding_rates_hourly" if asset else "funding_rates_hourly"} WHERE {where}""")
    counts = {
        "oi": one(store, f"SELECT count(*) FROM market_hourly WHERE {where}"),
        "skew": one(store, f"SELECT count(*) FROM market_hourly WHERE {where} AND total_oi_usd > 0"),
        "funding": funding,
        "liqmap": one(store, f"""SELECT count(*) FROM liquidation_map WHERE scope = '{kind}'
                                 AND {where} AND long_liquidated_usd + short_liquidated_usd > 0"""),
        "liquidations": one(store, f"SELECT count(*) FROM liquidations_hourly WHERE {where}"),
        "volume": one(store, f"SELECT count(*) FROM volume_hourly WHERE {where}"),
        "wallets": one(store, f"""SELECT count(*) FROM position_risk WHERE {where}"""),
    }
    return {chart for chart, n in counts.items() if n == 0}


@pytest.mark.replay
def test_report_draws_every_chart(db: Path, tmp_path: Path) -> None:
    with Store(db, read_only=True) as store:
        page = build_report(store.query)
        data = report_data(store.query)
        assert data["errors"] == {}
        json.dumps(data, allow_nan=False)  # JSON-ready
        # the page opens on the asset with the most open interest (over its venues)
        asset, top_oi, venues = store.query("""
            SELECT a.asset, sum(o.total_oi_usd) AS oi, count(DISTINCT o.chain_id) FROM open_interest o
            JOIN market_assets a USING (chain_id, protocol, market)
            GROUP BY a.asset ORDER BY oi DESC LIMIT 1""")[1][0]
        assert top_oi > 0 and venues == 2  # over both recordings
        # the GMX market with the most liquidations, and Synthetix's largest market
        gmx = "m:{}:{}:{}".format(*store.query("""
            SELECT chain_id, protocol, market FROM position_changes
            WHERE kind = 'liquidation' AND protocol = 'gmx_v1'
            GROUP BY ALL ORDER BY count(*) DESC, market LIMIT 1""")[1][0])
        snx = "m:{}:{}:{}".format(*store.query("""
            SELECT chain_id, protocol, market FROM open_interest WHERE protocol = 'synthetix_perps_v2'
            ORDER BY total_oi_usd DESC, market LIMIT 1""")[1][0])
        views = {f"a:{asset}": empty_charts(store, f"a:{asset}"),
                 gmx: empty_charts(store, gmx), snx: empty_charts(store, snx)}
        hours = {k: one(store, f"SELECT count(DISTINCT hour) FROM market_hourly WHERE {scope_filter(k)}")
                 for k in views}
        moves = one(store, f"SELECT count(*) FROM liquidation_map WHERE scope = 'asset' "
                           f"AND asset = '{asset}'")
        wallets = one(store, "SELECT count(*) FROM wallet_exposure WHERE gross_usd > 0")
        markets = store.query("SELECT DISTINCT chain_id, protocol, market FROM position_changes")[1]
    # the asset view has every chart; the Synthetix market has its own funding rates
    assert views[f"a:{asset}"] == set() and views[snx] == set()
    # every market with changes is in the selector and has an OI line
    keys = {s["key"] for s in data["scopes"]}
    assert {f"m:{c}:{p}:{m}" for c, p, m in markets} <= keys
    assert all(f"m:{c}:{p}:{m}" in data["charts"]["oi"] for c, p, m in markets)
    assert data["bucket_hours"] == 1  # each recording spans about a day and a half
    assert_offline(page)
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")

    for key, empty in views.items():
        # the first view is the default one; the others are chosen by the URL's fragment, as
        # the selector writes it
        url = path.as_uri() + ("" if key.startswith("a:") else "#" + quote(key, safe=""))
        seen = markers(chromium(tmp_path, url, "--dump-dom"))
        assert seen["errors"] == [], (key, seen["errors"])
        assert seen["selected"] == key
        assert set(seen["charts"]) == set(CHARTS) | {WALLET_TABLE}
        drawn_empty = {c for c, n in seen["charts"].items() if n == 0}
        # what the SQL leaves empty is shown empty ("no ... for this selection"), and the rest
        # is drawn; GMX v1's rates are per collateral token, so a market can have none
        assert drawn_empty == empty, (key, seen["charts"], empty)
        assert seen["charts"]["oi"] == 2 * hours[key]  # a long and a short point each hour
        assert seen["charts"][WALLET_TABLE] == min(10, wallets)
        if key.startswith("a:"):
            assert seen["charts"]["liqmap"] == 2 * moves  # moves of 1..50 % each way

    # every entry of the selector, chosen in turn as a reader would (Plotly.react redraws the
    # same charts each time): no error, and each selection's charts drawn
    walked = tmp_path / "walk.html"
    walked.write_text(page.replace("</body>", WALK + "</body>"), encoding="utf-8")
    seen = markers(chromium(tmp_path, walked.as_uri(), "--dump-dom"))
    assert seen["errors"] == []
    walk = json.loads(seen["walk"])
    assert [w["key"] for w in walk] == [s["key"] for s in data["scopes"]]
    assert all(w["charts"]["oi"] > 0 and w["charts"]["volume"] > 0 for w in walk), walk

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    chromium(tmp_path, path.as_uri(), f"--screenshot={shot}", "--window-size=1400,2400")
    assert shot.exists() and shot.stat().st_size > 50_000


@pytest.mark.replay
def test_live_page_redraws_keeping_the_selection(db: Path, tmp_path: Path) -> None:
    """The live page (as the daemon serves it) starts from empty data, fetches the real data
    from its URL and redraws, keeping the market chosen in the URL."""
    with Store(db, read_only=True) as store:
        data = report_data(store.query)
    empty = {**data, "scopes": [], "charts": {}, "wallet_table": []}
    market = next(s["key"] for s in data["scopes"] if s["kind"] == "market")
    body = json.dumps(data).encode()
    page = render_page(empty, live_url="/report/data.json", refresh_seconds=1).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            kind, content = (("application/json", body) if self.path.startswith("/report/data")
                             else ("text/html; charset=utf-8", page))
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/report#{quote(market, safe='')}"
        seen = markers(chromium(tmp_path, url, "--dump-dom"))
    finally:
        server.shutdown()
        server.server_close()
    assert seen["errors"] == []
    assert seen["selected"] == market
    assert seen["charts"]["oi"] > 0 and seen["charts"][WALLET_TABLE] > 0


def test_empty_database_page(tmp_path: Path) -> None:
    db = tmp_path / "empty.duckdb"
    Store(db).close()  # the schema and views, no rows
    with Store(db, read_only=True) as store:
        assert one(store, "SELECT count(*) FROM position_changes") == 0
        page = build_report(store.query)
    assert_offline(page)
    path = tmp_path / "empty.html"
    path.write_text(page, encoding="utf-8")
    dom = chromium(tmp_path, path.as_uri(), "--dump-dom")
    seen = markers(dom)
    assert seen["errors"] == []
    assert seen["charts"] == {c: 0 for c in [*CHARTS, WALLET_TABLE]}
    shown = re.sub(r"<script\b.*?</script>", "", dom, flags=re.S)  # the elements, not the code
    assert shown.count('<div class="empty">no data yet</div>') == len(CHARTS) + 1  # + the table


def test_chromium_is_installed() -> None:
    # the browser tests must run, never skip: say plainly when the browser is missing
    assert shutil.which(CHROMIUM) or Path(CHROMIUM).exists()


# --- unit tests: report_data over a small ledger written through the store's own commit path

T0 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
USD = 10**18


def commit(store: Store, chain_id: int, protocol: str, asset: str,
           rows: list[tuple[int, int, str, str, bool, str, int, int, int]]) -> None:
    """Rows (block, hour, market, account, is_long, kind, size delta, size after, price) of one
    source; every market is of ``asset``. (The pattern of tests/unit/test_analytics_views.py.)"""
    changes: dict[str, list[Any]] = {
        "block_number": [r[0] for r in rows],
        "block_time": [T0 + 3600 * r[1] + 60 for r in rows],
        "tx_hash": [f"0x{r[0]:064x}" for r in rows], "log_index": [0] * len(rows),
        "position_key": [f"{r[2]}/{r[3]}/{r[4]}" for r in rows],
        "account": [r[3] for r in rows], "market": [r[2] for r in rows],
        "is_long": [r[4] for r in rows], "kind": [r[5] for r in rows],
        "size_delta": [r[6] * USD for r in rows], "size_after": [r[7] * USD for r in rows],
        "collateral_delta": [0] * len(rows), "collateral_after": [0] * len(rows),
        "price": [r[8] * USD for r in rows], "fee": [0] * len(rows),
        "liquidation_price": [None] * len(rows)}
    markets = sorted({r[2] for r in rows})
    n = len(markets)
    listed = {"block_number": [0] * n, "log_index": [0] * n, "market": markets,
              "index_token": [None] * n, "long_token": [None] * n, "short_token": [None] * n,
              "name": [None] * n, "found_by": ["trade"] * n, "symbol": [None] * n,
              "asset": [asset] * n}
    rr = RangeRows(chain_id, protocol, f"{protocol}_test", 18, changes, {}, [], [], listed, None)
    store.commit_range(rr, 0, max(r[0] for r in rows), "0x00", 0)


@pytest.mark.unit
def test_report_data_of_a_small_ledger(tmp_path: Path) -> None:
    with Store(tmp_path / "db.duckdb") as store:
        commit(store, 1, "gmx_v1", "ETH", [
            (1, 0, "X", "a", True, "increase", 400, 400, 2000),
            (2, 0, "X", "b", False, "increase", 100, 100, 2000),
            (3, 2, "X", "a", True, "decrease", -150, 250, 2100),
            (4, 3, "X", "b", False, "liquidation", -100, 0, 2300)])
        # (market_hourly runs to each chain's latest hour: Synthetix trades in hour 3 too)
        commit(store, 10, "synthetix_perps_v2", "ETH", [
            (1, 1, "Y", "c", False, "increase", 300, 300, 2050),
            (2, 3, "Y", "d", True, "increase", 50, 50, 2250)])
        data = report_data(store.query)
        json.dumps(data, allow_nan=False)
    assert data["errors"] == {}
    # the asset first (its OI over both venues), then the markets by OI
    assert [(s["key"], s["long_oi_usd"], s["short_oi_usd"]) for s in data["scopes"]] == [
        ("a:ETH", 300.0, 300.0), ("m:10:synthetix_perps_v2:Y", 50.0, 300.0),
        ("m:1:gmx_v1:X", 250.0, 0.0)]
    oi = data["charts"]["oi"]["m:1:gmx_v1:X"]
    assert oi["t"] == ["2026-01-01 00:00:00", "2026-01-01 01:00:00", "2026-01-01 02:00:00",
                       "2026-01-01 03:00:00"]
    assert oi["long"] == [400.0, 400.0, 250.0, 250.0]  # hour 1 carried
    assert oi["short"] == [100.0, 100.0, 100.0, 0.0]
    asset = data["charts"]["oi"]["a:ETH"]
    assert asset["long"] == [400.0, 400.0, 250.0, 300.0]
    assert asset["short"] == [100.0, 400.0, 400.0, 300.0]
    assert data["charts"]["skew"]["a:ETH"]["skew"] == [(400 - 100) / 500, 0.0,
                                                       (250 - 400) / 650, 0.0]
    liq = data["charts"]["liquidations"]["m:1:gmx_v1:X"]
    assert (liq["long"], liq["short"], liq["count"]) == ([0.0], [100.0], [1])
    vol = data["charts"]["volume"]["m:1:gmx_v1:X"]
    assert vol["volume"] == [500.0, 0.0, 150.0, 100.0]  # hour 1: no trade, OI change 0
    assert vol["oi_change"] == [500.0, 0.0, -150.0, -100.0]
    # hours 2 and 3: OI down with the price up (2000 -> 2100 -> 2300), the view's
    # short_covering; hour 0 has no hour before it, hour 1 no change: flat
    assert vol["regime"] == ["flat", "flat", "short_covering", "short_covering"]
    wallets = data["charts"]["wallets"]["a:ETH"]
    assert wallets["account"] == ["c", "a", "d"] and wallets["short"] == [300.0, 0.0, 0.0]
    assert [w["account"] for w in data["wallet_table"]] == ["c", "a", "d"]
    assert [s["changes"] for s in data["sources"]] == [4, 2]


@pytest.mark.unit
def test_a_failing_reader_leaves_every_chart_empty_and_says_why() -> None:
    def run(sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        raise RuntimeError("Catalog Error: Table with name market_hourly does not exist!\nmore")

    data = report_data(run)
    assert set(data["errors"]) >= {"oi", "skew", "funding", "liqmap", "liquidations", "volume",
                                   "wallets", WALLET_TABLE}
    assert all(e == "Catalog Error: Table with name market_hourly does not exist!"
               for e in data["errors"].values())
    assert all(per == {} for per in data["charts"].values()) and data["scopes"] == []
    page = render_page(data)
    assert "Catalog Error" in page and page.count("</script>") == 3


@pytest.mark.unit
def test_data_cannot_close_the_script_element() -> None:
    data = {"sources": [], "scopes": [], "charts": {}, "errors": {},
            "wallet_table": [{"account": "</script><script>alert(1)</script>", "gross_usd": 1.0}]}
    page = render_page(data, live_url="/report/data.json", refresh_seconds=3)
    # three script elements (the error recorder, plotly.js, the page): none closed early
    assert page.count("</script>") == 3 and "alert(1)" in page
    assert '"refresh_ms": 3000' in page and 'data-mode="live"' in page
