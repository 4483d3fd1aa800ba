"""`perp-indexer demo` runs end to end (headless, short), leaves a queryable database, and its
figures look like a market: plausible sizes, open interest and wallets, never negative."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from decimal import Decimal

import pytest
from rich.console import Console

from indexer.client import QueryError, connect
from indexer.devnet.demo import render
from indexer.store import Store
from tests.helpers import ROOT, run_cli

pytestmark = pytest.mark.anvil

PROTOCOLS = ("gmx_v1", "gmx_v2", "perp_v2", "synthetix_perps_v2", "gtrade")
SOURCES = ("gmx_v1_devnet", "gmx_v2_devnet", "perp_v2_devnet", "synthetix_devnet", "gtrade_devnet")
#: What no demo figure may exceed (USD): the simulators trade a few hundred dollars to a few
#: million per trade, so anything near these is a unit or decimals bug, not a market.
MAX_POSITION = Decimal(100_000_000)
MAX_MARKET_OI = Decimal(1_000_000_000)
MAX_WALLET = Decimal(200_000_000)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_demo_runs_and_indexes(tmp_path, monkeypatch):
    db = tmp_path / "demo.duckdb"
    monkeypatch.setenv("DEMO_DATABASE", str(db))
    # on the demo's own logger: the CLI replaces the root logger's handlers
    log = _Lines()
    demo_logger = logging.getLogger("indexer.devnet.demo")
    demo_logger.addHandler(log)
    try:
        assert run_cli("demo", "--duration", "8", "--no-ui", "--traders", "12") == 0
    finally:
        demo_logger.removeHandler(log)
    store = Store(db, read_only=True)
    try:
        _, rows = store.query("SELECT protocol, count(*) FROM position_changes GROUP BY ALL")
        _, cp = store.query("SELECT source, block_number FROM checkpoints")
        _, assets = store.query("SELECT DISTINCT protocol, asset FROM market_assets")
        _, priced = store.query("SELECT count(*) FROM position_risk WHERE protocol = 'gmx_v1' "
                                "AND liquidation_price_method = 'exact'")
        # the figures, straight from the tables
        _, negative = store.query(
            "SELECT protocol, position_key, size_usd, collateral_usd FROM positions "
            "WHERE size_usd < 0 OR collateral_usd < 0 OR size_tokens < 0")
        _, negative_changes = store.query(
            "SELECT protocol, tx_hash, size_after_usd FROM position_changes "
            "WHERE size_after_usd < 0 OR collateral_after_usd < 0")
        _, sizes = store.query(
            "SELECT protocol, count(*), min(size_usd), max(size_usd), sum(size_usd) "
            "FROM positions WHERE status = 'open' GROUP BY protocol")
        _, big = store.query("SELECT protocol, account, market, size_usd FROM positions "
                             "WHERE status = 'open' AND size_usd > ?", [MAX_POSITION])
        _, oi = store.query(
            "SELECT protocol, market, long_oi_usd, short_oi_usd, total_oi_usd FROM open_interest")
        _, wallets = store.query(
            "SELECT account, sum(size_usd) s FROM positions WHERE status = 'open' "
            "GROUP BY account ORDER BY s DESC")
        console = Console(width=160, height=100, record=True)
        console.print(render(store, 0, {}, {}))
        screen = console.export_text()
    finally:
        store.close()
    # every market of every protocol has its asset: the demo's names and its config's assets
    assert {p for p, _ in assets} == set(PROTOCOLS)
    assert all(a in ("ETH", "BTC", "LINK", "SOL") for _, a in assets), assets
    assert priced[0][0] > 0  # the test vault's settings, read with eth_call
    assert "Assets across venues" in screen and "Liquidation map" in screen
    rows, cp = dict(rows), dict(cp)
    for protocol in PROTOCOLS:  # all
        assert rows.get(protocol, 0) > 0, protocol
    for source in ("gmx_v1_devnet", "gmx_v2_devnet", "perp_v2_devnet", "synthetix_devnet"):
        assert cp[source] > 0, source

    # plausible figures: no negative size, no position over $100M, no market over $1B, no
    # wallet over $200M; every protocol has open positions of real-world sizes
    assert negative == [] and negative_changes == []
    assert big == [], big
    for protocol, market, long_oi, short_oi, total in oi:
        assert 0 <= long_oi and 0 <= short_oi, (protocol, market)
        assert total <= MAX_MARKET_OI, (protocol, market, total)
    assert wallets and wallets[0][1] <= MAX_WALLET, wallets[:3]
    by_protocol = {p: (n, lo, hi, total) for p, n, lo, hi, total in sizes}
    assert set(by_protocol) == set(PROTOCOLS), by_protocol
    for protocol, (n, _lo, hi, total) in by_protocol.items():
        assert n > 0 and hi >= 100, (protocol, by_protocol[protocol])
        assert total <= 10 * MAX_POSITION, (protocol, total)

    # --no-ui log lines name the protocol of each indexed range
    ranges = [m for m in log.lines if re.fullmatch(r"\w+ blocks \d+-\d+: \d+ logs, \d+ changes", m)]
    assert {m.split()[0] for m in ranges} == set(SOURCES), log.lines[:5]


def test_a_running_demo_is_queried_from_the_cli_and_python(tmp_path, monkeypatch, capsys):
    """As the README says: while the demo runs, another shell queries it (`--demo`), asks its
    status, and a notebook reads it as a DataFrame; all through the demo's query service."""
    db = tmp_path / "demo.duckdb"
    monkeypatch.setenv("DEMO_DATABASE", str(db))
    demo = subprocess.Popen([sys.executable, "-m", "indexer", "demo", "--no-ui", "--duration",
                             "60", "--traders", "8"], cwd=tmp_path, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        db_client = connect()  # the demo's port, as the README's snippet
        deadline = time.monotonic() + 90
        changes = 0
        while changes == 0 and time.monotonic() < deadline:
            assert demo.poll() is None, demo.communicate()[0]
            try:
                (changes,), = db_client.sql("SELECT count(*) FROM position_changes").fetchall()
            except QueryError:
                pass
            time.sleep(0.5)
        assert changes > 0
        frame = db_client.sql("SELECT protocol, total_oi_usd FROM open_interest").df()
        assert len(frame) > 0 and set(frame["protocol"]) <= set(PROTOCOLS)
        capsys.readouterr()
        assert run_cli("query", "--demo", "SELECT count(*) AS n FROM positions",
                       "--format", "csv") == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0] == "n" and int(out[1]) > 0
        assert run_cli("status", "--demo") == 0
        status = capsys.readouterr().out
        assert "gmx_v1_devnet" in status and "not running" not in status
    finally:
        demo.send_signal(signal.SIGINT)
        out, _ = demo.communicate(timeout=60)
    assert demo.returncode == 0, out[-3000:]
    assert "Traceback" not in out
