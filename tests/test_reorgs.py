"""Reorg scenarios on anvil (evm_snapshot / evm_revert, anvil_reorg, anvil_mine), each ending with
the same check: the database equals a clean run's over the final canonical chain (every table of
``dump``: ledger, positions, OI, markets, funding, quarantine, checkpoints). A reorg that cannot
be undone, and a node that merely lags, must not write anything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from indexer.chains.evm import MIN_REORG_WINDOW, EvmChain
from indexer.config import load_config
from indexer.daemon import sync
from indexer.devnet.chain import Anvil, free_port
from indexer.devnet.simulator import Simulator, deploy_vault
from indexer.engine.source import build_source
from indexer.rpc import Rpc
from indexer.store import Store
from tests.faultproxy import FaultProxy
from tests.helpers import ROOT, dump, fetch_health, run_cli, start_sync, write_config

pytestmark = pytest.mark.anvil


def sync_once(cfg: Path) -> int:
    return run_cli("sync", "--config", str(cfg), "--once")


def assert_equals_clean_run(tmp_path: Path, cfg: Path, db: str = "db.duckdb") -> dict:
    """Index the final chain from scratch with the same config into clean.duckdb; compare."""
    clean = tmp_path / "clean.yaml"
    clean.write_text(cfg.read_text().replace(f"database: {db}", "database: clean.duckdb"))
    assert sync_once(clean) == 0
    ours, want = dump(tmp_path / db), dump(tmp_path / "clean.duckdb")
    for table in want:
        assert ours[table] == want[table], table
    assert want["position_changes"], "the scenario must leave events to compare"
    return ours


def reorg_rows(db: Path) -> list[tuple]:
    store = Store(db, read_only=True)
    try:
        return store.query("SELECT old_tip, ancestor, depth FROM reorgs ORDER BY detected_at")[1]
    finally:
        store.close()


def changes_between(db: Path, lo: int, hi: int) -> int:
    store = Store(db, read_only=True)
    try:
        return store.query("SELECT count(*) FROM position_changes WHERE block_number "
                           "BETWEEN ? AND ?", [lo, hi])[1][0][0]
    finally:
        store.close()


def mine(anvil: Anvil, blocks: int) -> None:
    anvil.rpc.call("anvil_mine", [hex(blocks)])


def test_reorg_replacing_blocks_with_events_while_the_daemon_runs(tmp_path, gmx_v1_chain):
    """Two protocols on one chain, a running daemon: the chain is reverted and a different,
    longer history is traded. The daemon first sees a node without its checkpoint block (waits,
    it is not a reorg yet), then a longer branch: it rolls both protocols back to the common
    ancestor in one transaction and replays. /health reports the reorg and its depth."""
    anvil, vault, sim = gmx_v1_chain
    vault2 = deploy_vault(anvil)
    sim2 = Simulator(anvil.rpc, vault2, anvil.accounts, seed=12, traders=30)
    sim2.setup()
    sim.run(20)
    sim2.run(15)
    port = free_port()
    second = f"""  - name: second_vault
    adapter: gmx_v1
    chain: dev
    contracts:
      vault: {{ address: "{vault2}", start_block: 0 }}
"""
    cfg = write_config(tmp_path / "c.yaml", anvil.url, vault, 0, poll_interval=0.2,
                       metrics_port=port, protocol_extra=second)
    proc = start_sync(cfg)
    try:
        def caught_up(reorgs: int = 0) -> dict:
            head = anvil.rpc.fetch_head()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                h = fetch_health("127.0.0.1", port)
                if h and all(p["checkpoint_block"] == head and p["reorgs"] >= reorgs
                             for p in h["protocols"].values()):
                    return h
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.1)
            raise AssertionError(f"daemon did not reach block {head}: {h}")

        caught_up()
        snap = anvil.rpc.call("evm_snapshot")
        ancestor = anvil.rpc.fetch_head()
        sim.run(15)
        sim2.run(10)
        old_tip = anvil.rpc.fetch_head()
        caught_up()
        assert anvil.rpc.call("evm_revert", [snap]) is True
        # the daemon polls a node below its checkpoint: it waits (not a reorg), as /health says
        deadline = time.monotonic() + 30
        while not any(p["node_behind"] for p in (fetch_health("127.0.0.1", port) or {}).get(
                "protocols", {}).values()):
            assert time.monotonic() < deadline, "the daemon never reported the node behind it"
            time.sleep(0.05)
        sim.ids.clear()
        sim.rng.seed(99)
        sim.run(25)  # a longer, different branch
        sim2.rng.seed(98)
        sim2.run(10)
        assert anvil.rpc.fetch_head() > old_tip
        health = caught_up(reorgs=1)
        for p in health["protocols"].values():
            assert p["reorg_max_depth"] == old_tip - ancestor, p
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "not a reorg" in out  # the node below our checkpoint was waited for
    assert f"to common ancestor {ancestor}" in " ".join(out.split())
    ((tip, anc, depth),) = reorg_rows(tmp_path / "db.duckdb")  # one rollback for both protocols
    assert (tip, anc, depth) == (old_tip, ancestor, old_tip - ancestor)
    ours = assert_equals_clean_run(tmp_path, cfg)
    assert {r[0] for r in ours["checkpoints"]} == {31337}
    assert len(ours["checkpoints"]) == 2


def test_reorg_removing_events(tmp_path, gmx_v1_chain):
    """The last 12 blocks, full of trades, are replaced by 12 empty ones (anvil_reorg): their
    changes are gone, the positions they touched are recomputed from what is left."""
    anvil, vault, sim = gmx_v1_chain
    sim.run(45)
    cfg = write_config(tmp_path / "c.yaml", anvil.url, vault, 0)
    assert sync_once(cfg) == 0
    head = anvil.rpc.fetch_head()
    assert changes_between(tmp_path / "db.duckdb", head - 11, head) > 0
    anvil.rpc.call("anvil_reorg", [12, []])
    assert anvil.rpc.fetch_head() == head
    assert sync_once(cfg) == 0
    assert reorg_rows(tmp_path / "db.duckdb") == [(head, head - 12, 12)]
    assert changes_between(tmp_path / "db.duckdb", head - 11, head) == 0
    assert_equals_clean_run(tmp_path, cfg)


def test_reorg_adding_events(tmp_path, gmx_v1_chain):
    """Empty blocks are indexed, then replaced by a longer branch full of trades."""
    anvil, vault, sim = gmx_v1_chain
    sim.run(25)
    snap = anvil.rpc.call("evm_snapshot")
    ancestor = anvil.rpc.fetch_head()
    mine(anvil, 15)
    cfg = write_config(tmp_path / "c.yaml", anvil.url, vault, 0)
    assert sync_once(cfg) == 0
    assert changes_between(tmp_path / "db.duckdb", ancestor + 1, ancestor + 15) == 0
    assert anvil.rpc.call("evm_revert", [snap]) is True
    sim.run(20)
    assert sync_once(cfg) == 0
    assert reorg_rows(tmp_path / "db.duckdb") == [(ancestor + 15, ancestor, 15)]
    assert changes_between(tmp_path / "db.duckdb", ancestor + 1, ancestor + 15) > 0
    assert_equals_clean_run(tmp_path, cfg)


def test_reorg_while_the_daemon_is_down(tmp_path, gmx_v1_chain, capsys):
    """The daemon stops; the chain reorganises (blocks with events replaced by others with other
    events); on restart it re-verifies its stored tip before anything else, rolls back, replays."""
    anvil, vault, sim = gmx_v1_chain
    sim.run(25)
    snap = anvil.rpc.call("evm_snapshot")
    ancestor = anvil.rpc.fetch_head()
    sim.run(25)
    cfg = write_config(tmp_path / "c.yaml", anvil.url, vault, 0)
    assert sync_once(cfg) == 0
    assert anvil.rpc.call("evm_revert", [snap]) is True
    sim.ids.clear()
    sim.rng.seed(99)
    sim.run(35)
    assert sync_once(cfg) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"to common ancestor {ancestor}" in err
    assert_equals_clean_run(tmp_path, cfg)


def test_reorg_inside_a_range_being_fetched(tmp_path, gmx_v1_chain, capsys):
    """The chain reorganises between the headers and the eth_getLogs of a range: the range is
    abandoned unwritten (ChainMoved), the pass retried, the reorg rolled back."""
    anvil, vault, sim = gmx_v1_chain
    sim.run(30)
    cfg_path = write_config(tmp_path / "c.yaml", anvil.url, vault, 0, max_block_range=8)
    assert sync_once(cfg_path) == 0
    sim.run(20)  # below the 64-block window: all of it goes through the tip path
    cfg = load_config(cfg_path)
    state = build_source(cfg, cfg.protocols[0]).new_state()
    rpc = Rpc([anvil.url])
    real = rpc.fetch_logs
    fired = []

    def fetch_logs(addresses, topics, lo, hi, max_bytes=None):
        head = anvil.rpc.fetch_head()
        if not fired and lo > head - 15:
            fired.append((lo, hi))
            # after headers, before logs; deep enough to replace 5 blocks already stored,
            # whatever the ranges' alignment
            anvil.rpc.call("anvil_reorg", [head - lo + 6, []])
        return real(addresses, topics, lo, hi, max_bytes)

    rpc.fetch_logs = fetch_logs
    store = Store(cfg.database)
    try:
        sync([state], {"dev": EvmChain(state.source.chain, rpc)}, store, None, True,
             str(cfg_path), threading.Event())
    finally:
        store.close()
        rpc.close()
    assert fired
    err = " ".join(capsys.readouterr().err.split())
    assert "while its range was fetched; trying again" in err
    assert "to common ancestor" in err
    assert_equals_clean_run(tmp_path, cfg_path)


def test_reorg_deeper_than_the_window_stops_without_writing(tmp_path, gmx_v1_chain):
    """History is replaced more than the kept window deep: sync exits with code 3 and a clear
    message, and the database is untouched."""
    anvil, vault, sim = gmx_v1_chain
    sim.run(20)
    snap = anvil.rpc.call("evm_snapshot")
    sim.run(10)
    mine(anvil, MIN_REORG_WINDOW * 2)
    cfg = write_config(tmp_path / "c.yaml", anvil.url, vault, 0)
    assert sync_once(cfg) == 0
    before = dump(tmp_path / "db.duckdb")
    assert anvil.rpc.call("evm_revert", [snap]) is True
    sim.rng.seed(5)
    sim.run(10)
    mine(anvil, MIN_REORG_WINDOW * 3)
    code = subprocess.run([sys.executable, "-m", "indexer", "sync", "--config", str(cfg),
                           "--once"], check=False, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "300"})
    assert code.returncode == 3, code.stderr
    assert "deeper than the kept window" in " ".join(code.stderr.split())
    assert dump(tmp_path / "db.duckdb") == before
    assert reorg_rows(tmp_path / "db.duckdb") == []


def test_a_lagging_node_is_not_taken_for_a_reorg(tmp_path, gmx_v1_chain):
    """After indexing from a node at the tip, the daemon is pointed at a node 8 blocks behind
    (older head, null for newer blocks): nothing is rolled back or written; back on a node at
    the tip it carries on, equal to a clean run."""
    anvil, vault, sim = gmx_v1_chain
    sim.run(40)
    cfg = write_config(tmp_path / "c.yaml", anvil.url, vault, 0)
    assert sync_once(cfg) == 0
    before = dump(tmp_path / "db.duckdb")
    lagging = FaultProxy(anvil.url, behind=8)
    try:
        slow = write_config(tmp_path / "slow.yaml", lagging.url, vault, 0)
        assert sync_once(slow) == 0
        assert dump(tmp_path / "db.duckdb") == before
        sim.run(5)  # the node is still behind our checkpoint - 3
        assert sync_once(slow) == 0
        assert dump(tmp_path / "db.duckdb") == before
        sim.run(20)  # now the lagging node is past our checkpoint: it is used
        assert sync_once(slow) == 0
        assert dump(tmp_path / "db.duckdb")["checkpoints"][0][4] == anvil.rpc.fetch_head() - 8
    finally:
        lagging.stop()
    assert reorg_rows(tmp_path / "db.duckdb") == []
    assert sync_once(cfg) == 0
    assert_equals_clean_run(tmp_path, cfg)
