#!/usr/bin/env python3
"""Benchmark through a remote-like provider: ours, cryo and a naive web3.py loop, on the bench
chain of scripts/bench.py behind scripts/provider_proxy.py.

    .venv/bin/python scripts/bench_remote.py [--events 200000] [--per-block 200] \\
        [--latency 0.08] [--jitter 0.02] [--rate 50] [--range-cap 2000] [--no-cryo]

Real users backfill through providers that answer in 50-200 ms, cap eth_getLogs ranges and
result counts and refuse requests past a rate (HTTP 429 with Retry-After). The proxy does the
same in front of anvil; each run goes through it, with the proxy's counters reset in between:

1. ours: `perp-indexer backfill` of the GMX v1 and the GMX v2 bench source, each in its own
   process, with ``max_block_range`` at the proxy's range cap, ``requests_in_flight``
   ``--in-flight`` and no rate set in the config (the client has to find the limit);
2. cryo (`pip install cryo`), tuned for this provider: ``requests_per_second`` at the limit,
   ``--in-flight`` requests at once, eth_getLogs ranges that fit both caps (it cannot shrink a
   range the provider refuses). It fetches to Parquet and decodes nothing;
3. the naive web3.py loop of bench.py (10 blocks a request, one at a time) on the first
   ``--naive-events`` events.

Printed: events/s, blocks/s, HTTP requests, the share of them refused with 429, and the
accepted calls per second after a 10 s warm-up as a share of the limit (how much of what the
provider allows the run put to use). It asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import duckdb
from bench import build_chain, measured, naive, templates, write_config
from provider_proxy import ProviderProxy

from indexer.devnet.chain import Anvil
from indexer.store import Store

#: Seconds of a run left out of the "useful share of the limit" (start-up, first requests).
WARMUP = 10.0

_CRYO = """
import json, resource, sys, time
import cryo
url, head, out_dir, contract, rate, size, concurrent = sys.argv[1:8]
started = time.monotonic()
cryo.freeze("logs", rpc=url, blocks=[f"0:{int(head) + 1}"], output_dir=out_dir,
            contract=[contract], inner_request_size=int(size), chunk_size=int(size),
            requests_per_second=int(rate), max_concurrent_requests=int(concurrent),
            max_concurrent_chunks=int(concurrent), no_verbose=True)
print(json.dumps({"seconds": time.monotonic() - started,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def remote_config(path: Path, url: str, chain: dict[str, Any], range_cap: int,
                  in_flight: int) -> Path:
    """bench.py's config pointed at ``url``, with the provider's range cap and ``in_flight``
    eth_getLogs requests at once."""
    write_config(path, url, {**chain, "range": range_cap})
    text, n = re.subn(r"(\n    max_block_range: \d+\n)",
                      rf"\1    requests_in_flight: {in_flight}\n", path.read_text())
    assert n == 1, "bench.py's config no longer has a max_block_range line"
    path.write_text(text)
    return path


def cryo_size(range_cap: int, result_cap: int, per_block: int) -> int:
    """Blocks per cryo eth_getLogs request that neither cap refuses on the bench chain (every
    busy block holds ``per_block`` events)."""
    size = range_cap or 10**9
    if result_cap:
        size = min(size, max(result_cap // per_block, 1))
    return size


def run_cryo(proxy: ProviderProxy, chain: dict[str, Any], work: Path, size: int,
             concurrent: int) -> dict[str, Any] | str:
    try:
        import cryo  # noqa: F401
    except ImportError:
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "cryo"],
                             capture_output=True, text=True, check=False)
        if pip.returncode != 0:
            return f"not measured: `pip install cryo` failed ({pip.stderr.strip()[-200:]})"
    seconds, rows = 0.0, 0
    for contract in (chain["v1"], chain["v2"]):
        out_dir = work / f"cryo_{contract[-6:]}"
        out_dir.mkdir()
        r = subprocess.run([sys.executable, "-c", _CRYO, proxy.url, str(chain["head"]),
                            str(out_dir), contract, str(int(proxy.rate)), str(size),
                            str(concurrent)], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            return f"not measured: cryo failed ({r.stderr.strip()[-300:]})"
        seconds += json.loads(r.stdout.strip().splitlines()[-1])["seconds"]
        with duckdb.connect() as con:
            (n,) = con.execute(f"SELECT count(*) FROM read_parquet('{out_dir}/*.parquet')"
                               ).fetchone()
        rows += n
    return {"seconds": seconds, "events": rows}


def row(name: str, events: int, seconds: float, blocks: int, stats: dict[str, Any],
        useful: float | None) -> str:
    refused = stats["refused_429"] / stats["requests"] if stats["requests"] else 0.0
    use = f"{useful:.0%}" if useful is not None else f"n/a (run under {WARMUP + 1:.0f} s)"
    return (f"| {name} | {events:,} | {seconds:.1f} | {events / seconds:,.0f} | "
            f"{blocks / seconds:,.0f} | {stats['requests']:,} | {refused:.1%} | {use} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--per-block", type=int, default=200, help="events per block")
    ap.add_argument("--latency", type=float, default=0.08, help="seconds each way")
    ap.add_argument("--jitter", type=float, default=0.02)
    ap.add_argument("--rate", type=float, default=50.0, help="the provider's calls per second")
    ap.add_argument("--burst", type=float, default=None, help="default: rate / 5")
    ap.add_argument("--range-cap", type=int, default=2000, help="eth_getLogs blocks")
    ap.add_argument("--result-cap", type=int, default=10000, help="logs an answer")
    ap.add_argument("--in-flight", type=int, default=16,
                    help="our requests_in_flight, and cryo's concurrent requests")
    ap.add_argument("--naive-events", type=int, default=40_000)
    ap.add_argument("--no-cryo", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="perp-bench-remote-"))
    print(f"work folder {work}")
    t = templates()
    anvil = Anvil(accounts=2, extra=["--gas-limit", "3000000000"])
    results: list[str] = []
    details: list[str] = []
    at_once: list[tuple[float, float]] = []
    try:
        chain = build_chain(anvil, t, args.events, args.per_block)
        events, head = chain["v1_events"] + chain["v2_events"], chain["head"]
        print(f"chain: {events:,} events ({chain['v1_events']:,} GMX v1, {chain['v2_events']:,} "
              f"GMX v2 EventLog1) in {head:,} blocks, built in {chain['build_s']:.0f}s")
        proxy = ProviderProxy(anvil.url, latency=args.latency, jitter=args.jitter,
                              range_cap=args.range_cap, result_cap=args.result_cap,
                              rate=args.rate, burst=args.burst)
        print(f"provider: {args.latency * 1000:.0f}±{args.jitter * 1000:.0f} ms each way, "
              f"{args.rate:g} calls/s (burst {proxy.burst:g}), range cap {args.range_cap:,} "
              f"blocks, result cap {args.result_cap:,} logs")
        with proxy:
            def record(name: str, n: int, seconds: float, blocks: int) -> None:
                stats = proxy.stats()
                results.append(row(name, n, seconds, blocks, stats, proxy.useful_share(WARMUP)))
                record_details(name, stats)

            def record_details(name: str, stats: dict[str, Any]) -> None:
                details.append(f"{name}: {stats['calls']:,} calls accepted "
                               f"{json.dumps(stats['methods'])}, {stats['refused_429']:,} "
                               f"refused (429), {stats['capped_range']:,} over the range cap, "
                               f"{stats['capped_results']:,} over the result cap; accepted "
                               f"calls each second: {stats['timeline']}")

            cfg = remote_config(work / "remote.yaml", proxy.url, chain, args.range_cap,
                                args.in_flight)
            ours_s = 0.0
            for proto, n in (("gmx_v1_bench", chain["v1_events"]),
                             ("gmx_v2_bench", chain["v2_events"])):
                time.sleep(1.0)  # the bucket refills: each run starts with a full burst
                proxy.reset()
                try:
                    r = measured(["backfill", "--config", str(cfg), "--protocol", proto,
                                  "--no-progress"], work)
                except SystemExit as e:
                    said = [ln for ln in str(e).splitlines() if ln.startswith("error:")] or [
                        ln for ln in str(e).splitlines() if ln.strip()]
                    stats = proxy.stats()
                    results.append(f"| ours, {proto} | failed after {stats['seconds']:.0f} s: "
                                   f"{said[-1] if said else e} | | | | {stats['requests']:,} "
                                   f"| {stats['refused_429'] / max(stats['requests'], 1):.1%} "
                                   f"| |")
                    record_details(f"ours, {proto} (failed)", stats)
                    continue
                ours_s += r["seconds"]
                record(f"ours, {proto}", n, r["seconds"], head + 1)
            # both sources at once, through one writer, into a fresh database
            both = work / "both.yaml"
            both.write_text(cfg.read_text().replace("bench.duckdb", "both.duckdb"))
            time.sleep(1.0)
            proxy.reset()
            r = measured(["backfill", "--config", str(both), "--no-progress"], work)
            record("ours, both sources at once", events, r["seconds"], 2 * (head + 1))
            at_once.append((ours_s, r["seconds"]))
            if not args.no_cryo:
                size = cryo_size(args.range_cap, args.result_cap, args.per_block)
                time.sleep(1.0)
                proxy.reset()
                cr = run_cryo(proxy, chain, work, size, args.in_flight)
                if isinstance(cr, dict):
                    record(f"cryo logs → Parquet, {size} blocks a request (no decoding)",
                           cr["events"], cr["seconds"], 2 * (head + 1))
                else:
                    results.append(f"| cryo | {cr} |")
            time.sleep(1.0)
            proxy.reset()
            nv = naive(proxy.url, chain, args.naive_events, work)
            record("naive web3.py loop", nv["events"], nv["seconds"],
                   proxy.stats()["max_block"] + 1)
    finally:
        anvil.stop()
    store = Store(work / "bench.duckdb", read_only=True)
    try:
        (ledger,) = store.query("SELECT count(*) FROM position_changes")[1][0]
    finally:
        store.close()

    print()
    print("| run | events | seconds | events/s | blocks/s | requests | refused (429) share | "
          "useful requests/s vs the limit |")
    print("|---|---|---|---|---|---|---|---|")
    for line in results:
        print(line)
    print()
    print(f"blocks/s counts the blocks each run scanned: each of our backfills and each of "
          f"cryo's two extractions scans the whole chain ({head + 1:,} blocks); the naive loop "
          f"stops after {args.naive_events:,} events. Our seconds include process start-up; "
          f"both backfills took {ours_s:.1f} s; ledger rows {ledger:,}.")
    for line in details:
        print(f"- {line}")
    for one_by_one, together in at_once:
        print(f"the two sources one after the other: {one_by_one:.1f} s; at once through one "
              f"writer: {together:.1f} s")
    print(f"wall time {time.monotonic() - started:.0f} s")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
