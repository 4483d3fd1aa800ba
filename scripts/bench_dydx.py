#!/usr/bin/env python3
"""Benchmark: backfilling dYdX v4 from a CometBFT node.

    .venv/bin/python scripts/bench_dydx.py [--blocks 20000] [--in-flight 8] [--range 100]

1. Simulates `--blocks` heights of a dYdX chain (tests/dydx_chain/simulator.py: busy blocks,
   liquidations, funding ticks, other modules' events) and serves them from a replay node in its
   own process (tests/dydx_chain/node.py, CometBFT's default batch limit of 10 requests).
2. `perp-indexer backfill` indexes them; blocks/s, match events/s and ledger rows/s, and what
   a public archive RPC's request limit would allow instead.

It prints figures and asserts nothing. The node is local (no network latency): the figure is
the indexer's own ceiling, not a provider's.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from indexer.devnet.chain import free_port  # noqa: E402
from indexer.store import Store  # noqa: E402
from tests.dydx_chain.simulator import simulate  # noqa: E402
from tests.helpers import wait_rpc, write_dydx_config  # noqa: E402

START = 20_000_000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blocks", type=int, default=20_000)
    ap.add_argument("--in-flight", type=int, default=8, help="requests_in_flight")
    ap.add_argument("--range", type=int, default=100, help="max_block_range")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        truth = simulate(work / "chain", seed=11, start_height=START, blocks=args.blocks,
                         open_interest_from=START)
        print(f"simulated {args.blocks:,} blocks, {truth.matches:,} matches in "
              f"{time.perf_counter() - t0:.1f} s")
        port = free_port()
        node = subprocess.Popen([sys.executable, "-m", "tests.dydx_chain.node",
                                 str(work / "chain"), "--port", str(port)], cwd=ROOT,
                                stdout=subprocess.DEVNULL)
        try:
            wait_rpc(f"http://127.0.0.1:{port}")
            cfg = write_dydx_config(work / "c.yaml", f"http://127.0.0.1:{port}", START,
                                    max_block_range=args.range, requests_in_flight=args.in_flight,
                                    open_interest_from=START)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "indexer", "backfill", "--config", str(cfg),
                            "--no-progress"], cwd=ROOT, check=True, stderr=subprocess.DEVNULL)
            took = time.perf_counter() - t0
            child = resource.getrusage(resource.RUSAGE_CHILDREN)
        finally:
            node.terminate()
            node.wait(10)
        store = Store(work / "db.duckdb", read_only=True)
        try:
            (rows,), = store.query("SELECT count(*) FROM position_changes")[1]
        finally:
            store.close()
        blocks = args.blocks
        figures = {
            "blocks": blocks, "matches": truth.matches, "ledger_rows": rows,
            "seconds": round(took, 2), "blocks_per_s": round(blocks / took),
            "matches_per_s": round(truth.matches / took), "rows_per_s": round(rows / took),
            "max_rss_mb_children": round(child.ru_maxrss / 1024),
            # two JSON-RPC requests per block; a public archive RPC allows ~300 requests/min
            "public_archive_blocks_per_s": round(300 / 60 / 2, 1),
        }
        print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
