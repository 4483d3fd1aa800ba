"""The report page in a real headless Chromium (the Debian package; no playwright): built from a
backfill of the GMX v1 recording, it draws every chart with no script error, for an asset and
for a market, opens offline, and leaves a screenshot in artifacts/report.png. The empty
database's page shows "no data yet" without an error. Expected counts come from SQL here."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from indexer.report import CHARTS, WALLET_TABLE, build_report, render_page, report_data
from indexer.store import Store
from tests.helpers import GMX_V1_DATA, run_cli, write_config

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
            "selected": attrs.get("selected", "")}


def assert_offline(page: str) -> None:
    """No script, stylesheet or image is loaded from the network."""
    tags = re.findall(r"<(?:script|link|img|iframe)\b[^>]*>", page, flags=re.I)
    for tag in tags:
        assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", tag, re.I), tag


def one(store: Store, sql: str) -> Any:
    return store.query(sql)[1][0][0]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers import ReplayNode

    tmp = tmp_path_factory.mktemp("report")
    truth = json.loads((GMX_V1_DATA / "gmx_v1_truth.json").read_text())
    node = ReplayNode(GMX_V1_DATA, "gmx_v1")
    try:
        cfg = write_config(tmp / "c.yaml", node.url, truth["contracts"]["Vault"],
                           truth["deploymentBlock"], max_block_range=150)
        assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 0
    finally:
        node.stop()
    return tmp / "db.duckdb"


@pytest.mark.replay
def test_report_draws_every_chart(db: Path, tmp_path: Path) -> None:
    with Store(db, read_only=True) as store:
        page = build_report(store.query)
        data = report_data(store.query)
        assert data["errors"] == {}
        json.dumps(data)  # JSON-ready
        # the page opens on the asset with the most open interest (over its venues)
        asset, top_oi = store.query("""
            SELECT a.asset, sum(o.total_oi_usd) AS oi FROM open_interest o
            JOIN market_assets a USING (chain_id, protocol, market)
            GROUP BY a.asset ORDER BY oi DESC LIMIT 1""")[1][0]
        assert top_oi > 0
        # the market with the most liquidations, for the second view
        chain_id, protocol, market = store.query("""
            SELECT chain_id, protocol, market FROM position_changes WHERE kind = 'liquidation'
            GROUP BY ALL ORDER BY count(*) DESC, market LIMIT 1""")[1][0]
        hours = one(store, f"SELECT count(DISTINCT hour) FROM market_hourly WHERE asset = '{asset}'")
        market_hours = one(store, f"SELECT count(*) FROM market_hourly WHERE market = '{market}'")
        wallets = one(store, "SELECT count(*) FROM wallet_exposure WHERE gross_usd > 0")
        market_funding = one(store, f"""
            SELECT count(long_rate_apr) + count(short_rate_apr) FROM funding_rates_hourly
            WHERE chain_id = {chain_id} AND protocol = '{protocol}' AND market = '{market}'""")
        asset_liquidations = one(store, "SELECT count(*) FROM liquidations_hourly "
                                        f"WHERE asset = '{asset}'")
        asset_funding = one(store, "SELECT count(long_rate_apr) FROM asset_funding_rates_hourly "
                                   f"WHERE asset = '{asset}'")
    assert data["bucket_hours"] == 1  # the recording spans a day and a half: one point an hour
    assert asset_liquidations > 0 and asset_funding > 0
    assert_offline(page)
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")

    # the asset view (the default)
    seen = markers(chromium(tmp_path, path.as_uri(), "--dump-dom"))
    assert seen["errors"] == []
    assert seen["selected"] == f"a:{asset}"
    assert set(seen["charts"]) == set(CHARTS) | {WALLET_TABLE}
    assert all(n > 0 for n in seen["charts"].values()), seen["charts"]
    assert seen["charts"]["oi"] == 2 * hours  # a long and a short point each hour
    assert seen["charts"]["liqmap"] == 2 * 50  # moves of 1..50 % each way
    assert seen["charts"][WALLET_TABLE] == min(10, wallets)

    # a market's view, chosen by the URL's fragment as the selector writes it
    key = f"m:{chain_id}:{protocol}:{market}"
    seen = markers(chromium(tmp_path, path.as_uri() + "#" + quote(key, safe=""), "--dump-dom"))
    assert seen["errors"] == []
    assert seen["selected"] == key
    assert seen["charts"]["oi"] == 2 * market_hours
    for chart, n in seen["charts"].items():
        # GMX v1's rates are per collateral token: a market whose index token is nobody's
        # collateral has none, and the page says so instead of drawing
        assert n > 0 or (chart == "funding" and market_funding == 0), (chart, seen["charts"])

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
    assert dom.count("no data yet") >= len(CHARTS)


def test_chromium_is_installed() -> None:
    # the browser tests must run, never skip: say plainly when the browser is missing
    assert shutil.which(CHROMIUM) or Path(CHROMIUM).exists()
