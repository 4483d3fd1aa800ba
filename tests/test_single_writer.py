"""One writer per database: while a daemon writes, at any moment of its life (before and after
it served reads), a second writer is refused with one line naming the holder, and the running
daemon carries on untouched."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from indexer.client import QueryError, connect
from indexer.devnet.chain import free_port
from tests.helpers import GMX_V1_VAULT as VAULT
from tests.helpers import ROOT, dump, run_cli, start_sync, write_config

pytestmark = pytest.mark.replay

LAST = 1289  # the recording's last block


def second_writer(argv: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "indexer", *argv], cwd=ROOT, text=True,
                          capture_output=True, timeout=60,
                          env={**os.environ, "COLUMNS": "400", **env})


def assert_refused(daemon_pid: int, *argv: str, **env: str) -> None:
    done = second_writer(argv, env)
    assert done.returncode == 1, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, done.stderr
    assert "in use by another writing process" in lines[0], lines[0]
    assert f"PID {daemon_pid}:" in lines[0] and "sync --config" in lines[0], lines[0]


def test_a_second_writer_is_refused_while_the_daemon_lives(gmx_v1_clean, tmp_path,
                                                           replay_factory, capsys):
    _, want = gmx_v1_clean
    assert want["checkpoints"][0][4] == LAST
    node = replay_factory("--head", "200", "--grow-per-sec", "60")
    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", node.url, VAULT, 0, max_block_range=40,
                       poll_interval=0.2, metrics_port=port)
    daemon = start_sync(cfg, "--until", str(LAST))
    try:
        # before it served anything: the daemon holds the database from its start
        deadline = time.monotonic() + 60
        while not (tmp_path / "db.duckdb").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert_refused(daemon.pid, "sync", "--config", str(cfg), "--once")

        # after it answered /health and served queries whose answers grow as it writes
        counts: list[int] = []
        while len(set(counts)) < 3 and time.monotonic() < deadline:
            assert daemon.poll() is None
            try:
                counts.append(connect(f"http://127.0.0.1:{port}").sql(
                    "SELECT count(*) FROM position_changes").fetchall()[0][0])
            except QueryError:
                pass  # not serving yet
            time.sleep(0.1)
        assert len(set(counts)) >= 3 and counts == sorted(counts), counts
        assert "gmx_v1_dev" in connect(f"http://127.0.0.1:{port}").health()["protocols"]
        capsys.readouterr()
        assert run_cli("query", "--config", str(cfg), "SELECT count(*) FROM positions") == 0
        assert_refused(daemon.pid, "backfill", "--config", str(cfg), "--no-progress")
        assert_refused(daemon.pid, "sync", "--config", str(cfg))
        # the demo's database is DEMO_DATABASE: refused before it starts a chain or clears data
        assert_refused(daemon.pid, "demo", "--no-ui", "--duration", "5",
                       DEMO_DATABASE=str(tmp_path / "db.duckdb"))
        assert daemon.poll() is None

        out, _ = daemon.communicate(timeout=300)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()
    assert daemon.returncode == 0, out
    assert "Traceback" not in out
    assert dump(tmp_path / "db.duckdb") == want
