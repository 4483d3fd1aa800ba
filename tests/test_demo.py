"""`perp-indexer demo` runs end to end (headless, short) and leaves a queryable database."""

from __future__ import annotations

import pytest

from indexer.store import Store
from tests.conftest import run_cli

pytestmark = pytest.mark.anvil


def test_demo_runs_and_indexes(tmp_path, monkeypatch):
    db = tmp_path / "demo.duckdb"
    monkeypatch.setenv("DEMO_DATABASE", str(db))
    assert run_cli("demo", "--duration", "6", "--no-ui", "--traders", "12") == 0
    store = Store(db, read_only=True)
    try:
        _, rows = store.query("SELECT protocol, count(*) FROM position_changes GROUP BY ALL")
        _, cp = store.query("SELECT source, block_number FROM checkpoints")
    finally:
        store.close()
    rows, cp = dict(rows), dict(cp)
    assert rows.get("gmx_v1", 0) > 0 and rows.get("gmx_v2", 0) > 0  # both simulators indexed
    assert cp["gmx_v1_devnet"] > 0 and cp["gmx_v2_devnet"] > 0
