#!/usr/bin/env python3
"""Decode speed of GMX v2 EventLog1 payloads: our layout-aware decoder vs eth_abi, same run.

Payloads are the real EventLog1 logs of the shared GMX v2 recording (../shared/data/gmx_v2_devnet,
or --data), so sizes and key sets are the protocol's own. Prints payloads per second for:

* eth_abi.decode (strict), the reference;
* ours, walking every word (a fresh process has no layout templates yet);
* ours with the layout templates learnt (steady state of a long backfill);
* ours end to end from the hex string of the log (bytes.fromhex included), as the pipeline runs.

Usage: .venv/bin/python scripts/bench_decode.py [--data DIR] [--seconds 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from pathlib import Path

import eth_abi

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from indexer import eventdata

EVENTLOG1 = "0x137a44067c8961cd7e1d876f4754a5a3a75989b4552f1843fc69c3b372def160"


def rate(fn, items: list, seconds: float) -> float:
    """Median payloads/s over repeated passes lasting about ``seconds`` in all."""
    rates = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(rates) < 3:
        t = time.perf_counter()
        for x in items:
            fn(x)
        rates.append(len(items) / (time.perf_counter() - t))
    return statistics.median(rates)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" /
                    "data" / "gmx_v2_devnet")
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = ap.parse_args()
    path = args.data / "gmx_v2_logs.jsonl.gz"
    if not path.exists():
        print(f"{path} not found (pass --data)", file=sys.stderr)
        return 2
    with gzip.open(path, "rt") as f:
        logs = [json.loads(line) for line in f]
    hexes = [lg["data"] for lg in logs if lg["topics"][0] == EVENTLOG1]
    payloads = [bytes.fromhex(h[2:]) for h in hexes]
    sizes = sorted(len(p) for p in payloads)
    print(f"{len(payloads)} EventLog1 payloads from {path.parent.name}: median "
          f"{sizes[len(sizes) // 2]} bytes, largest {sizes[-1]} bytes")

    types = list(eventdata.DATA_TYPES)
    ref = rate(lambda p: eth_abi.decode(types, p, strict=True), payloads[:2000], args.seconds)

    def walk(p: bytes) -> None:
        eventdata._walk(p, [], [])

    cold = rate(walk, payloads, args.seconds)
    for p in payloads:  # learn the layouts
        eventdata.decode_payload(p)
    warm = rate(eventdata.decode_payload, payloads, args.seconds)
    e2e = rate(lambda h: eventdata.decode_payload(bytes.fromhex(h[2:])), hexes, args.seconds)
    fromhex = rate(lambda h: bytes.fromhex(h[2:]), hexes, args.seconds)
    # same answers (checked on every payload, outside the timings)
    for p in payloads:
        s, n, d = eth_abi.decode(types, p, strict=True)
        assert eventdata.decode_payload(p) == (s.lower(), n, eventdata.from_reference(d))

    print(f"{'all EventLog1 payloads':<44}{'payloads/s':>12}{'vs eth_abi':>12}")
    for label, r in (("eth_abi.decode (strict)", ref), ("ours, word walk (no templates)", cold),
                     (f"ours, layout templates ({eventdata._template_count} learnt)", warm),
                     ("ours from hex (bytes.fromhex + templates)", e2e),
                     ("bytes.fromhex alone (ceiling)", fromhex)):
        print(f"{label:<44}{r:>12,.0f}{r / ref:>11.1f}x")

    position = [p for p in payloads
                if eventdata.decode_payload(p)[1] in ("PositionIncrease", "PositionDecrease")]
    size = sorted(len(p) for p in position)[len(position) // 2]
    ref_p = rate(lambda p: eth_abi.decode(types, p, strict=True), position, args.seconds)
    warm_p = rate(eventdata.decode_payload, position, args.seconds)
    print(f"\n{f'PositionIncrease/Decrease ({len(position)}, ~{size} B)':<44}"
          f"{'payloads/s':>12}{'vs eth_abi':>12}")
    for label, r in (("eth_abi.decode (strict)", ref_p), ("ours, layout templates", warm_p)):
        print(f"{label:<44}{r:>12,.0f}{r / ref_p:>11.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
