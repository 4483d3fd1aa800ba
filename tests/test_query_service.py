"""The daemon's query service on anvil: while `sync` follows a chain that the simulator keeps
trading on, clients query it in a loop. Every answer is one consistent snapshot, refused
statements say why, and the daemon's final database equals a clean run's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from indexer.client import QueryError, connect
from indexer.devnet.chain import free_port
from tests.helpers import ROOT, dump, run_cli, write_config

pytestmark = pytest.mark.anvil

#: The ledger's OI deltas summed, the positions' OI (the open_interest view), the checkpoint
#: and the ledger's size: one statement, so one snapshot.
CONSISTENCY = """
SELECT (SELECT coalesce(sum(long_oi_delta_usd), 0) FROM position_changes) AS ledger_long,
       (SELECT coalesce(sum(short_oi_delta_usd), 0) FROM position_changes) AS ledger_short,
       (SELECT coalesce(sum(long_oi_usd), 0) FROM open_interest) AS view_long,
       (SELECT coalesce(sum(short_oi_usd), 0) FROM open_interest) AS view_short,
       (SELECT max(block_number) FROM checkpoints) AS checkpoint,
       (SELECT count(*) FROM position_changes) AS changes
"""

REFUSED = {
    "INSERT INTO positions SELECT * FROM positions LIMIT 1": "INSERT",
    "DELETE FROM position_changes": "DELETE",
    "SELECT * FROM read_csv('/etc/passwd')": "file system operations are disabled",
    "COPY positions TO '/tmp/stolen.csv'": "COPY",
    "ATTACH '/tmp/other.duckdb' AS other": "ATTACH",
    "SET threads = 1": "SET",
    "INSTALL httpfs": "this one is LOAD",
    "SELECT nextval('no_such_sequence')": "query failed",
    "SELECT 1; DROP TABLE positions": "one statement per query",
}


def test_clients_query_a_syncing_daemon_consistently(tmp_path, gmx_v1_chain, capsys):
    anvil, vault, sim = gmx_v1_chain
    sim.run(30)
    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", anvil.url, vault, 0, poll_interval=0.2,
                       metrics_port=port)
    daemon = subprocess.Popen([sys.executable, "-m", "indexer", "sync", "--config", str(cfg)],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stop = threading.Event()
    errors: list[str] = []
    answers: list[int] = [0, 0, 0, 0]
    db = connect(f"http://127.0.0.1:{port}")

    def trade() -> None:
        while not stop.is_set():
            sim.step()

    def client(i: int) -> None:
        mine = connect(f"http://127.0.0.1:{port}")
        last_checkpoint, last_changes = -1, -1
        while not stop.is_set():
            try:
                if i % 2:
                    row = mine.sql(CONSISTENCY).fetchall()[0]
                else:  # the JSON answer: exact decimals as strings
                    got = json.loads(mine.text(CONSISTENCY, "json"))
                    row = tuple(got["rows"][0])
                    row = (*[str(v) for v in row[:4]], row[4], row[5])
            except QueryError as e:
                if e.kind == "unreachable" and answers[i] == 0:
                    time.sleep(0.1)  # the daemon is still starting
                    continue
                errors.append(f"client {i}: {e}")
                return
            ledger_long, ledger_short, view_long, view_short, checkpoint, changes = row
            if (ledger_long, ledger_short) != (view_long, view_short):
                errors.append(f"client {i}: ledger OI {ledger_long}/{ledger_short} != view "
                              f"{view_long}/{view_short} in one answer")
            if checkpoint is not None:
                if checkpoint < last_checkpoint or changes < last_changes:
                    errors.append(f"client {i}: went back from block {last_checkpoint} to "
                                  f"{checkpoint}")
                last_checkpoint, last_changes = checkpoint, changes
            answers[i] += 1

    trader = threading.Thread(target=trade)
    clients = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    try:
        run_and_check(tmp_path, anvil, vault, cfg, daemon, db, stop, errors, answers, trader,
                      clients, capsys)
    finally:
        stop.set()
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()


def cfg_port(cfg) -> int:
    return int(next(line.split(":")[1] for line in cfg.read_text().splitlines()
                    if line.startswith("metrics_port")))


def run_and_check(tmp_path, anvil, vault, cfg, daemon, db, stop, errors, answers, trader,
                  clients, capsys) -> None:
    trader.start()
    for c in clients:
        c.start()
    try:
        time.sleep(10)
        # refusals, each with its reason, while the writer runs
        for sql, reason in REFUSED.items():
            with pytest.raises(QueryError) as refused:
                db.sql(sql)
            assert reason in str(refused.value), (sql, str(refused.value))
            assert refused.value.kind in ("refused", "failed"), (sql, refused.value.kind)
        # the command line uses the service and refuses the same way
        capsys.readouterr()
        assert run_cli("query", "--config", str(cfg), "SELECT count(*) AS n FROM positions",
                       "--format", "csv") == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0] == "n" and int(out[1]) > 0
        assert run_cli("query", "--config", str(cfg), "DELETE FROM positions") == 1
        assert "DELETE" in capsys.readouterr().err
        # the live report: its page, and the data it redraws from, read through the same guard
        with urllib.request.urlopen(f"http://127.0.0.1:{cfg_port(cfg)}/report", timeout=60) as r:
            page = r.read().decode()
        assert "/report/data.json" in page and "Plotly" in page
        with urllib.request.urlopen(f"http://127.0.0.1:{cfg_port(cfg)}/report/data.json",
                                    timeout=60) as r:
            data = json.loads(r.read())
        assert not data.get("errors"), data.get("errors")
    finally:
        stop.set()
        trader.join()
        for c in clients:
            c.join()
    assert not errors, errors[:5]
    assert all(n > 5 for n in answers), answers

    # the daemon catches up with the final head, then stops; a clean backfill gives the same
    head = anvil.rpc.fetch_head()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        (cp,), = db.sql("SELECT max(block_number) FROM checkpoints").fetchall()
        if cp is not None and cp >= head:
            break
        time.sleep(0.3)
    else:
        pytest.fail("the daemon did not reach the head")
    daemon.send_signal(signal.SIGTERM)
    out, _ = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, out
    assert "Traceback" not in out
    clean = write_config(tmp_path / "clean.yaml", anvil.url, vault, 0, database="clean.duckdb")
    assert run_cli("backfill", "--config", str(clean), "--to", str(cp), "--no-progress") == 0
    assert dump(tmp_path / "db.duckdb") == dump(tmp_path / "clean.duckdb")
