"""`perp-indexer demo` runs end to end (headless, short) and leaves a queryable database."""

from __future__ import annotations

import pytest
from rich.console import Console

from indexer.devnet.demo import render
from indexer.store import Store
from tests.helpers import run_cli

pytestmark = pytest.mark.anvil


def test_demo_runs_and_indexes(tmp_path, monkeypatch):
    db = tmp_path / "demo.duckdb"
    monkeypatch.setenv("DEMO_DATABASE", str(db))
    assert run_cli("demo", "--duration", "8", "--no-ui", "--traders", "12") == 0
    store = Store(db, read_only=True)
    try:
        _, rows = store.query("SELECT protocol, count(*) FROM position_changes GROUP BY ALL")
        _, cp = store.query("SELECT source, block_number FROM checkpoints")
        _, assets = store.query("SELECT DISTINCT protocol, asset FROM market_assets")
        _, priced = store.query("SELECT count(*) FROM position_risk WHERE protocol = 'gmx_v1' "
                                "AND liquidation_price_method = 'exact'")
        console = Console(width=160, record=True)
        console.print(render(store, 0, {}, {}))
        screen = console.export_text()
    finally:
        store.close()
    # every market of every protocol has its asset: the demo's names and its config's assets
    assert {p for p, _ in assets} == {"gmx_v1", "gmx_v2", "perp_v2", "synthetix_perps_v2",
                                      "gtrade"}
    assert all(a in ("ETH", "BTC", "LINK", "SOL") for _, a in assets), assets
    assert priced[0][0] > 0  # the test vault's settings, read with eth_call
    assert "Assets across venues" in screen and "Liquidation map" in screen
    rows, cp = dict(rows), dict(cp)
    for protocol in ("gmx_v1", "gmx_v2", "perp_v2", "synthetix_perps_v2", "gtrade"):  # all
        assert rows.get(protocol, 0) > 0, protocol
    for source in ("gmx_v1_devnet", "gmx_v2_devnet", "perp_v2_devnet", "synthetix_devnet"):
        assert cp[source] > 0, source
