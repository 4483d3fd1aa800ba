"""Running the daemon for real, on the recording of the unmodified GMX v1 contracts: it follows a
growing head through kill -9, catches logs a provider lost (logsBloom check), sizes its reorg
window from the node's finalized tag, serves /metrics and /health and `status` shows the same,
and an RPC URL's API key appears nowhere (logs, errors, metrics, status, database)."""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import time
import urllib.request

import pytest

from indexer.bloom import may_match
from indexer.devnet.chain import free_port
from indexer.store import Store
from tests.faultproxy import FaultProxy
from tests.helpers import GMX_V1_DATA, dump, fetch_health, run_cli, start_sync, write_config
from tests.helpers import GMX_V1_VAULT as VAULT

pytestmark = pytest.mark.replay

LAST = 1289  # the recording's last block (checked against the clean run in each test)


def test_bloom_matches_every_recorded_block_with_our_logs(gmx_v1_logs):
    with gzip.open(GMX_V1_DATA / "gmx_v1_blocks.jsonl.gz", "rt") as f:
        blooms = {int(b["number"], 16): b["logsBloom"] for b in map(json.loads, f)}
    ours = [lg for lg in gmx_v1_logs if lg["address"].lower() == VAULT.lower()]
    topics = sorted({lg["topics"][0] for lg in ours})
    with_logs = {int(lg["blockNumber"], 16) for lg in ours}
    assert len(with_logs) > 100
    assert all(may_match(blooms[n], [VAULT.lower()], [topics]) for n in with_logs)
    # no false positive in this recording, and another address or topic is not matched
    assert not any(may_match(blooms[n], [VAULT.lower()], [topics])
                   for n in blooms if n not in with_logs)
    some = min(with_logs)
    assert not may_match(blooms[some], ["0x" + "11" * 20], [topics])
    assert not may_match(blooms[some], [VAULT.lower()], [["0x" + "22" * 32]])


def test_logs_a_provider_lost_are_fetched_again_from_the_blooms(gmx_v1_clean, tmp_path):
    """30 % of range getLogs answers come back empty (a provider whose log index lags its
    blocks). At the tip every header is fetched anyway: blocks whose logsBloom matches but got no
    log are asked again by hash, and the result equals the clean run."""
    node, want = gmx_v1_clean
    assert want["checkpoints"][0][4] == LAST
    proxy = FaultProxy(node.url, lose_logs=0.3, seed=4)
    try:
        # a window wider than the recording: every block goes through the tip path
        cfg = write_config(tmp_path / "c.yaml", proxy.url, VAULT, 0, max_block_range=50,
                           confirmations=5000)
        assert run_cli("sync", "--config", str(cfg), "--once") == 0
    finally:
        proxy.stop()
    assert proxy.injected["lost_logs"] >= 10
    assert dump(tmp_path / "db.duckdb") == want


def test_reorg_window_follows_the_finalized_tag(gmx_v1_clean, tmp_path, replay_factory):
    """A node whose finalized block is 300 behind: sync keeps every block hash of those 300."""
    _, want = gmx_v1_clean
    assert want["checkpoints"][0][4] == LAST
    node = replay_factory("--finalized-lag", "300")
    cfg = write_config(tmp_path / "c.yaml", node.url, VAULT, 0, max_block_range=100)
    assert run_cli("sync", "--config", str(cfg), "--once") == 0
    store = Store(tmp_path / "db.duckdb", read_only=True)
    try:
        (kept,) = store.query("SELECT count(*) FROM blocks WHERE number > ?", [LAST - 300])[1]
        (below,) = store.query("SELECT count(*) FROM blocks WHERE number <= ?", [LAST - 300])[1]
    finally:
        store.close()
    assert kept == (300,)
    assert below[0] < 20  # below the window only range ends are kept
    assert dump(tmp_path / "db.duckdb") == want


def test_kill_9_of_the_daemon_following_a_growing_head(gmx_v1_clean, tmp_path, replay_factory):
    """The node's head grows 120 blocks/s from block 300; the daemon follows it and is killed
    with SIGKILL at random moments, four times; restarted, it ends equal to the clean run."""
    _, want = gmx_v1_clean
    assert want["checkpoints"][0][4] == LAST
    node = replay_factory("--head", "300", "--grow-per-sec", "120")
    cfg = write_config(tmp_path / "c.yaml", node.url, VAULT, 0, max_block_range=25,
                       poll_interval=0.2)
    rng = random.Random(8)
    kills = 0
    for _ in range(4):
        proc = start_sync(cfg)
        time.sleep(rng.uniform(1.2, 2.5))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=30)
    assert kills == 4
    last = want["checkpoints"][0][4]  # the recording's last block
    proc = start_sync(cfg, "--until", str(last))
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert dump(tmp_path / "db.duckdb") == want


def test_metrics_health_status_and_no_secret_anywhere(gmx_v1_clean, tmp_path, capsys):
    """A daemon behind a faulty proxy, its URL carrying an API key in the path and the query:
    /metrics and /health report lag, range size, rows, errors by endpoint and kind; `status`
    shows the same table; the key is in no output, metric, log line or database file."""
    node, want = gmx_v1_clean
    assert want["checkpoints"][0][4] == LAST
    proxy = FaultProxy(node.url, rate=0.2, seed=2, kinds=("429", "503", "drop", "truncated"))
    secret = "sk_live_9f8e7d6c5b4a"
    port = free_port()
    url = f"{proxy.url}/v3/{secret}?apikey={secret}"
    cfg = write_config(tmp_path / "c.yaml", url, VAULT, 0, max_block_range=50,
                       poll_interval=0.2, metrics_port=port, max_attempts=10)
    proc = start_sync(cfg, verbose=True)
    try:
        deadline = time.monotonic() + 120
        health = None
        while time.monotonic() < deadline:
            health = fetch_health("127.0.0.1", port)
            if health and health["healthy"] and \
                    health["protocols"]["gmx_v1_dev"]["checkpoint_block"] == LAST:
                break
            assert proc.poll() is None
            time.sleep(0.2)
        assert health and health["healthy"], health
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            assert r.status == 200
        capsys.readouterr()
        assert run_cli("status", "--config", str(cfg)) == 0
        status = capsys.readouterr().out
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        proxy.stop()
    assert proc.returncode == 0, out
    p = health["protocols"]["gmx_v1_dev"]
    assert p["lag_blocks"] == 0 and p["lag_seconds"] == 0 and p["range_size"] >= 1
    assert p["rows_written"] == len(want["position_changes"])
    endpoint = f"{proxy.url}/***"
    kinds = {e["kind"] for e in health["rpc_errors"] if e["endpoint"] == endpoint}
    assert kinds >= {"http_429", "http_503"}, health["rpc_errors"]
    assert 'perp_indexer_head_lag_blocks{protocol="gmx_v1_dev",chain="dev"} 0' in metrics
    assert f'perp_indexer_checkpoint_block{{protocol="gmx_v1_dev",chain="dev"}} {LAST}' in metrics
    assert f'perp_indexer_rpc_errors_total{{endpoint="{endpoint}",kind="http_503"}}' in metrics
    for name in ("head_lag_seconds", "reorgs_total", "reorg_max_depth_blocks",
                 "getlogs_range_blocks", "rows_written_per_second", "quarantined_logs_total",
                 "up"):
        assert f"perp_indexer_{name}" in metrics
    flat = " ".join(status.split())
    assert " healthy " in f" {flat} " and "unhealthy" not in flat
    assert "http_503" in flat and endpoint in flat
    assert "rpc retry" in out  # the faults were logged ...
    for text in (out, metrics, json.dumps(health), status):
        assert secret not in text  # ... without the key
    for f in tmp_path.iterdir():
        if f.is_file():
            assert secret.encode() not in f.read_bytes() or f.suffix == ".yaml", f
    assert dump(tmp_path / "db.duckdb") == want
