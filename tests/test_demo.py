"""`perp-indexer demo` runs end to end (headless, short) and leaves a queryable database."""

from __future__ import annotations

import pytest

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
    finally:
        store.close()
    rows, cp = dict(rows), dict(cp)
    for protocol in ("gmx_v1", "gmx_v2", "perp_v2", "synthetix_perps_v2", "gtrade"):  # all
        assert rows.get(protocol, 0) > 0, protocol
    for source in ("gmx_v1_devnet", "gmx_v2_devnet", "perp_v2_devnet", "synthetix_devnet"):
        assert cp[source] > 0, source
