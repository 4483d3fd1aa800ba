#!/usr/bin/env python3
"""Benchmark: the daemon's query service under load, and the snapshot copy it replaced.

    .venv/bin/python scripts/bench_service.py [--events 300000] [--clients 8] [--sizes 1,10]

1. Builds an anvil chain of `--events` GMX v1 / v2 events (as scripts/bench.py does).
2. The writer alone: `perp-indexer sync --until <head>` indexes it; its events/s.
3. The same on a fresh database with `--clients` client threads querying the service in a loop
   (the dashboard's reads: open_interest, whale_concentration, the checkpoint), from this
   process: latency percentiles, queries/s, and the writer's events/s beside the first run.
4. Freshness: one more client polls the checkpoint every 5 ms; the delay from the checkpoint's
   `updated_at` (its writing transaction's start) to the moment the client first sees it.
5. The old snapshot copy's cost against database size: `cp` of a `--sizes` GB file (the copy
   the writer made every `snapshot_interval`, 10 s by default), beside the service, which
   copies nothing: its latency is timed on the small database and on one grown to `--grow`
   ledger rows.

It prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import build_chain, grow_ledger, templates  # noqa: I001  (the sibling script)
from bench import write_config as bench_config

from indexer.client import QueryError, connect
from indexer.devnet.chain import Anvil, free_port
from indexer.service import Service, serve
from indexer.store import Store

READS = ["SELECT * FROM open_interest",
         "SELECT * FROM whale_concentration",
         "SELECT source, block_number FROM checkpoints"]


def daemon(cfg: Path, head: int, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "indexer", "sync", "--config", str(cfg),
                             "--until", str(head)], cwd=cwd, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def config(work: Path, url: str, chain: dict[str, Any], name: str, port: int) -> Path:
    cfg = bench_config(work / f"{name}.yaml", url, chain)
    text = cfg.read_text().replace("database: bench.duckdb", f"database: {name}.duckdb")
    cfg.write_text(text.replace("metrics_port: 0", f"metrics_port: {port}"))
    return cfg


def run_writer(work: Path, url: str, chain: dict[str, Any], name: str, clients: int
               ) -> dict[str, Any]:
    port = free_port()
    cfg = config(work, url, chain, name, port)
    started = time.monotonic()
    proc = daemon(cfg, chain["head"], work)
    stop = threading.Event()
    latencies: list[float] = []
    lags: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        db = connect(f"http://127.0.0.1:{port}")
        n = 0
        while not stop.is_set():
            sql = READS[(i + n) % len(READS)]
            t = time.monotonic()
            try:
                db.sql(sql)
            except QueryError as e:
                if e.kind != "unreachable":
                    errors.append(str(e))
                time.sleep(0.05)
                continue
            with lock:
                latencies.append(time.monotonic() - t)
            n += 1

    def freshness() -> None:
        db = connect(f"http://127.0.0.1:{port}")
        seen = None
        while not stop.is_set():
            try:
                rows = db.sql("SELECT max(updated_at) FROM checkpoints").fetchall()
            except QueryError:
                time.sleep(0.05)
                continue
            stamp = rows[0][0]
            if stamp is not None and stamp != seen:
                if seen is not None:  # a commit that happened while we watched
                    lags.append((datetime.now(UTC).replace(tzinfo=None) - stamp).total_seconds())
                seen = stamp
            time.sleep(0.005)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    if clients:
        threads.append(threading.Thread(target=freshness))
    for t in threads:
        t.start()
    _, err = proc.communicate()
    seconds = time.monotonic() - started
    stop.set()
    for t in threads:
        t.join()
    if proc.returncode != 0:
        raise SystemExit(f"sync failed:\n{err[-3000:]}")
    events = chain["v1_events"] + chain["v2_events"]
    return {"seconds": seconds, "events_s": events / seconds, "latencies": latencies,
            "lags": lags, "errors": errors}


def pct(values: list[float], p: float) -> float:
    return sorted(values)[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


def copy_cost(work: Path, gb: int) -> float:
    """Seconds of CHECKPOINT-free `cp` of a `gb` GB file (the snapshot's copy), page cache
    dropped from the measure by writing fresh data first."""
    src = work / f"size{gb}.bin"
    with open(src, "wb") as f:
        block = os.urandom(2**20)
        for _ in range(gb * 1024):
            f.write(block)
    t = time.monotonic()
    subprocess.run(["cp", str(src), str(work / f"size{gb}.copy")], check=True)
    os.sync()
    seconds = time.monotonic() - t
    src.unlink()
    (work / f"size{gb}.copy").unlink()
    return seconds


def service_latency(db: Path, n: int = 50) -> float:
    """Median latency of the dashboard's reads through a service on ``db`` (in this process)."""
    store = Store(db)
    queries = store.read_only_queries()
    server = serve(Service(queries), "127.0.0.1", 0)
    try:
        client = connect(f"http://127.0.0.1:{server.server_address[1]}")
        runs = []
        for sql in READS * n:
            t = time.monotonic()
            client.sql(sql)
            runs.append(time.monotonic() - t)
        return statistics.median(runs)
    finally:
        server.shutdown()
        server.server_close()
        queries.close()
        store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--per-block", type=int, default=2000)
    ap.add_argument("--range", type=int, default=8)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--sizes", default="1,10", help="database sizes in GB for the copy's cost")
    ap.add_argument("--grow", type=int, default=10_000_000,
                    help="ledger rows of the large database the service is also timed on")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="perp-bench-service-"))
    anvil = Anvil(accounts=2, extra=["--gas-limit", "3000000000"])
    try:
        chain = build_chain(anvil, templates(), args.events, args.per_block)
        chain["range"] = args.range
        events = chain["v1_events"] + chain["v2_events"]
        print(f"chain: {events:,} events in {chain['head']:,} blocks")
        alone = run_writer(work, anvil.url, chain, "alone", 0)
        loaded = run_writer(work, anvil.url, chain, "loaded", args.clients)
    finally:
        anvil.stop()
    lat = loaded["latencies"]
    print()
    print("| writer | seconds | events/s |")
    print("|---|---|---|")
    print(f"| sync alone | {alone['seconds']:.1f} | {alone['events_s']:,.0f} |")
    print(f"| sync with {args.clients} clients querying in a loop | {loaded['seconds']:.1f} | "
          f"{loaded['events_s']:,.0f} ({loaded['events_s'] / alone['events_s']:.0%}) |")
    print()
    print(f"queries answered while it wrote: {len(lat):,} ({len(lat) / loaded['seconds']:,.0f}/s),"
          f" errors {len(loaded['errors'])}")
    print(f"latency ms: p50 {pct(lat, .5) * 1000:.1f}, p95 {pct(lat, .95) * 1000:.1f}, "
          f"p99 {pct(lat, .99) * 1000:.1f}, max {max(lat) * 1000:.1f}")
    lags = loaded["lags"]
    print(f"freshness (checkpoint written -> seen by a client polling every 5 ms), "
          f"{len(lags)} commits: p50 {pct(lags, .5) * 1000:.0f} ms, "
          f"p95 {pct(lags, .95) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms")
    for name in ("alone", "grown"):
        db = work / f"{name}.duckdb"
        if name == "grown":
            shutil.copyfile(work / "alone.duckdb", db)
            grow_ledger(db, args.grow)
            with Store(db) as store:
                store.rebuild_positions()
                store.con.execute("CHECKPOINT")
        rows = Store(db, read_only=True)
        (n,) = rows.query("SELECT count(*) FROM position_changes")[1][0]
        rows.close()
        print(f"service latency of the dashboard's reads, one client, on a "
              f"{db.stat().st_size / 2**20:,.0f} MB database ({n:,} ledger rows): "
              f"{service_latency(db) * 1000:.1f} ms (median)")
    print()
    print("| database | snapshot copy (old) | disk writes at one copy / 10 s | service (new) |")
    print("|---|---|---|---|")
    for gb in (int(s) for s in args.sizes.split(",")):
        s = copy_cost(work, gb)
        print(f"| {gb} GB | {s:.1f} s | {gb * 1024 / 10:,.0f} MB/s "
              f"({'cannot keep up: ' if s > 10 else ''}{s / 10:.0%} of the time copying) | "
              "0 bytes copied |")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
