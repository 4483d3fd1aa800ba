#!/usr/bin/env python3
"""Benchmark: our end-to-end backfill against a naive web3.py loop and cryo, on the same anvil chain.

    .venv/bin/python scripts/bench.py [--events 1000000] [--naive-events 60000] [--no-cryo]

1. Builds the chain. Our simulators trade briefly on our GMX v1 and GMX v2 test contracts; one
   GMX v1 IncreasePosition + UpdatePosition pair and one GMX v2 EventLog1 PositionIncrease are
   taken from those trades, with the v2 set-up logs (MarketCreated...). Then `BenchEmitter`
   replays them in bulk, with a distinct position key per copy, on a fresh anvil. About 70 % are
   GMX v1 events and 30 % GMX v2 EventLog1, in blocks of `--per-block` events.
2. Ours: `perp-indexer backfill` per protocol, in its own process (fetch + decode + reconstruct
   + store), timed, with its peak RSS.
3. Naive: a web3.py loop on the first `--naive-events` events (w3.eth.get_logs, contract event
   `process_log`, duckdb `executemany`).
4. cryo (`pip install cryo`, the Python binding; it is installed into the venv when missing
   unless `--no-cryo`) fetches the same logs to Parquet. Its Python binding (0.3.x) has no
   event decoding, so it does less work than we do.
5. A full rebuild of positions from the stored ledger (no RPC).
6. The standard analyst queries on a ledger grown to `--query-rows` rows.

It prints figures and ratios and asserts nothing. Speed targets are in issue 4 and the README.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from indexer.abi import encode_call, keccak, load_abi_dir
from indexer.devnet.chain import Anvil, compile_contract, deploy, send
from indexer.devnet.simulator import Simulator, deploy_vault, token_address
from indexer.devnet.simulator_v2 import TOKENS, SimulatorV2, deploy_exchange
from indexer.store import Store

SIG_MANY = "emitMany(bytes32[3][],uint256[],bytes[],uint256[],uint256,uint256)"
SIG_ONCE = "emitOnce(bytes32[3][],uint256[],bytes[])"
NO_KEY = 2**256 - 1  # the key is topic 1, not a data word


def topic(name: str) -> str:
    return "0x" + keccak(name.encode()).hex()


def all_logs(anvil: Anvil, address: str) -> list[dict[str, Any]]:
    return anvil.rpc.call("eth_getLogs", [{"address": address, "fromBlock": "0x0",
                                           "toBlock": "latest"}])


def templates() -> dict[str, Any]:
    """Real logs of our test contracts, from a short simulated trading session."""
    anvil = Anvil(accounts=40)
    try:
        vault = deploy_vault(anvil)
        sim = Simulator(anvil.rpc, vault, anvil.accounts, seed=11, traders=30)
        sim.setup()
        sim.run(30)
        v1_abi = load_abi_dir(ROOT / "indexer" / "abis" / "gmx_v1")
        inc = v1_abi.topics_for({"IncreasePosition"})
        upd = v1_abi.topics_for({"UpdatePosition"})
        logs = all_logs(anvil, vault)
        pair = None
        for a, b in itertools.pairwise(logs):
            if a["topics"][0] in inc and b["topics"][0] in upd and \
                    a["transactionHash"] == b["transactionHash"]:
                pair = [a, b]
                break
        assert pair, "no IncreasePosition + UpdatePosition pair in the simulated trades"

        exchange = deploy_exchange(anvil)
        sim2 = SimulatorV2(anvil.rpc, exchange, anvil.accounts, seed=5, traders=30)
        sim2.setup()
        sim2.run(30)
        logs2 = all_logs(anvil, exchange)
        increase = topic("PositionIncrease")
        first = next(i for i, lg in enumerate(logs2) if len(lg["topics"]) > 1
                     and lg["topics"][1] == increase)
        setup = [lg for lg in logs2[:first] if lg["topics"][1] == topic("MarketCreated")]
        position = logs2[first]
        keys = {sim2.key(pid).hex() for pid in sim2.ids}
        data = position["data"][2:]
        offset = next(i // 2 for i in range(0, len(data), 64) if data[i:i + 64] in keys)
        return {"v1": pair, "v1_offsets": [0, 0], "v2_setup": setup, "v2": [position],
                "v2_offsets": [offset]}
    finally:
        anvil.stop()


def _args(logs: list[dict[str, Any]]) -> tuple[list[list[bytes]], list[int], list[bytes]]:
    topics = [[bytes.fromhex(t[2:]) for t in lg["topics"]] + [b"\0" * 32] * (3 - len(lg["topics"]))
              for lg in logs]
    return topics, [len(lg["topics"]) for lg in logs], [bytes.fromhex(lg["data"][2:])
                                                         for lg in logs]


def build_chain(anvil: Anvil, t: dict[str, Any], events: int, per_block: int) -> dict[str, Any]:
    compiled = compile_contract(ROOT / "scripts" / "BenchEmitter.sol", "BenchEmitter")
    sender = anvil.accounts[0]
    e1, e2 = deploy(anvil.rpc, sender, compiled), deploy(anvil.rpc, sender, compiled)
    topics, counts, datas = _args(t["v2_setup"])
    send(anvil.rpc, sender, e2, encode_call(SIG_ONCE, [topics, counts, datas]), gas=30_000_000)
    v2_events = int(events * 0.3)
    v1_pairs = (events - v2_events) // 2
    started = time.monotonic()
    for address, logs, offsets, total, group in ((e1, t["v1"], t["v1_offsets"], v1_pairs, 2),
                                                   (e2, t["v2"], t["v2_offsets"], v2_events, 1)):
        topics, counts, datas = _args(logs)
        step = max(per_block // group, 1)
        done = 0
        while done < total:
            n = min(step, total - done)
            data = encode_call(SIG_MANY, [topics, counts, datas, offsets, done + 1, n])
            receipt = send(anvil.rpc, sender, address, data, gas=2_000_000_000)
            assert receipt["status"] == "0x1", receipt
            done += n
    return {"v1": e1, "v2": e2, "v1_events": 2 * v1_pairs, "v2_events": v2_events,
            "head": anvil.rpc.fetch_head(), "build_s": time.monotonic() - started}


def write_config(path: Path, url: str, chain: dict[str, Any]) -> Path:
    tokens = "".join(f'\n      "{token_address(s)}": {{ decimals: {d}, symbol: {s} }}'
                     for s, (d, _) in TOKENS.items())
    path.write_text(f"""database: bench.duckdb
metrics_port: 0
chains:
  anvil:
    chain_id: 31337
    rpc_url: "{url}"
    confirmations: 0
    max_block_range: {chain['range']}
protocols:
  - name: gmx_v1_bench
    adapter: gmx_v1
    chain: anvil
    contracts:
      vault: {{ address: "{chain['v1']}", start_block: 0 }}
    tokens:{tokens}
    parameters: {{ marginFeeBasisPoints: 10, liquidationFeeUsd: {5 * 10**30}, maxLeverage: 500000 }}
  - name: gmx_v2_bench
    adapter: gmx_v2
    chain: anvil
    contracts:
      event_emitter: {{ address: "{chain['v2']}", start_block: 0 }}
    tokens:{tokens}
""")
    return path


_MEASURED = """
import json, resource, sys, time
sys.argv = ["perp-indexer"] + {argv!r}
started = time.monotonic()
from indexer.cli import main
code = main(sys.argv[1:])
print(json.dumps({{"code": code, "seconds": time.monotonic() - started,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def measured(argv: list[str], cwd: Path) -> dict[str, Any]:
    """Run the CLI in a fresh process; its wall time and peak RSS."""
    out = subprocess.run([sys.executable, "-c", _MEASURED.format(argv=argv)], cwd=cwd,
                         capture_output=True, text=True, check=False,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    result = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {}
    if result.get("code") != 0:
        raise SystemExit(f"{argv} failed:\n{out.stderr[-3000:]}")
    return result


_NAIVE = """
import json, resource, sys, time
import duckdb
from eth_utils import event_abi_to_log_topic
from web3 import Web3
url, v1, v2, head, limit, abi_v1, abi_v2, db = sys.argv[1:9]
head, limit = int(head), int(limit)
w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 120}))
contracts = {}
for address, path in ((v1, abi_v1), (v2, abi_v2)):
    abi = [e for f in sorted(__import__("pathlib").Path(path).glob("*.json"))
           for e in json.loads(open(f).read()) if e.get("type") == "event"]
    by_topic = {}
    for e in abi:  # one contract object per event: a name may have several versions
        c = w3.eth.contract(address=Web3.to_checksum_address(address), abi=[e])
        by_topic.setdefault(event_abi_to_log_topic(e).hex(), getattr(c.events, e["name"]))
    contracts[address.lower()] = by_topic
con = duckdb.connect(db)
con.execute("CREATE TABLE IF NOT EXISTS events (block BIGINT, log_index INT, tx VARCHAR, "
            "name VARCHAR, args VARCHAR)")
started = time.monotonic()
n = 0
lo = 0
while lo <= head and n < limit:
    hi = min(head, lo + 9)
    logs = w3.eth.get_logs({"address": [Web3.to_checksum_address(v1), Web3.to_checksum_address(v2)],
                            "fromBlock": lo, "toBlock": hi})
    rows = []
    for log in logs:
        ev = contracts[log["address"].lower()].get(log["topics"][0].hex().removeprefix("0x"))
        if ev is None:
            continue
        d = ev().process_log(log)
        rows.append((d["blockNumber"], d["logIndex"], d["transactionHash"].hex(), d["event"],
                     json.dumps(dict(d["args"]), default=str)))
    if rows:
        con.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", rows)
    n += len(rows)
    lo = hi + 1
print(json.dumps({"events": n, "seconds": time.monotonic() - started,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def naive(url: str, chain: dict[str, Any], limit: int, work: Path) -> dict[str, Any]:
    abis = ROOT / "indexer" / "abis"
    out = subprocess.run([sys.executable, "-c", _NAIVE, url, chain["v1"], chain["v2"],
                          str(chain["head"]), str(limit), str(abis / "gmx_v1"),
                          str(abis / "gmx_v2"), str(work / "naive.duckdb")],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"naive loop failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


_CRYO = """
import json, resource, sys, time
import cryo
url, head, out_dir, contract = sys.argv[1:5]
started = time.monotonic()
cryo.freeze("logs", rpc=url, blocks=[f"0:{int(head) + 1}"], output_dir=out_dir,
            contract=[contract], chunk_size=100, max_concurrent_requests=8, no_verbose=True)
print(json.dumps({"seconds": time.monotonic() - started,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_cryo(url: str, chain: dict[str, Any], work: Path) -> dict[str, Any] | str:
    try:
        import cryo  # noqa: F401
    except ImportError:
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "cryo"],
                             capture_output=True, text=True, check=False)
        if pip.returncode != 0:
            return f"not measured: `pip install cryo` failed ({pip.stderr.strip()[-200:]})"
    total = {"seconds": 0.0, "rss_mb": 0.0}
    for contract in (chain["v1"], chain["v2"]):
        out_dir = work / f"cryo_{contract[-6:]}"
        out_dir.mkdir()
        r = subprocess.run([sys.executable, "-c", _CRYO, url, str(chain["head"]),
                            str(out_dir), contract], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            return f"not measured: cryo failed ({r.stderr.strip()[-300:]})"
        one = json.loads(r.stdout.strip().splitlines()[-1])
        total["seconds"] += one["seconds"]
        total["rss_mb"] = max(total["rss_mb"], one["rss_mb"])
    return total


def grow_ledger(db: Path, rows: int) -> int:
    """Copy the ledger onto itself (later blocks, distinct keys) until it has ``rows`` rows."""
    store = Store(db)
    try:
        con = store.con
        (have,) = con.execute("SELECT count(*) FROM position_changes").fetchone()
        copy = 1
        while have < rows:
            (span,) = con.execute("SELECT max(block_number) + 1 FROM position_changes").fetchone()
            con.execute(f"""INSERT INTO position_changes SELECT * REPLACE (
                block_number + {span} AS block_number,
                position_key || '-{copy}' AS position_key) FROM position_changes
                LIMIT {min(have, rows - have)}""")
            (have,) = con.execute("SELECT count(*) FROM position_changes").fetchone()
            copy += 1
        # a history of two years (the copies' block times would repeat the chain's minutes):
        # the hourly views then span 17,520 hours per market
        (last,) = con.execute("SELECT max(block_number) FROM position_changes").fetchone()
        con.execute(f"""UPDATE position_changes SET block_time = TIMESTAMP '2024-01-01'
            + to_microseconds((block_number * {2 * 365 * 86400 * 10**6 // max(last, 1)})::BIGINT)""")
        return int(have)
    finally:
        store.close()


QUERIES = {
    "open_interest": "SELECT * FROM open_interest",
    "whale_concentration": "SELECT * FROM whale_concentration",
    # the market named as an analyst would, so the filter reaches the ledger scan
    "oi_history (1 market, hourly)": "SELECT * FROM oi_history WHERE market = '{market}'",
    "asset_open_interest": "SELECT * FROM asset_open_interest",
    # a risk dashboard's table: every open position is priced, the nearest are shown
    "position_risk (100 nearest to liquidation)":
        "SELECT * FROM position_risk ORDER BY distance_to_liquidation LIMIT 100",
    "liquidation_map": "SELECT * FROM liquidation_map",
    "prices_hourly (1 market)": "SELECT * FROM prices_hourly WHERE market = '{market}'",
    "volume_hourly (1 market)": "SELECT * FROM volume_hourly WHERE market = '{market}'",
    "liquidations_hourly (1 market)": "SELECT * FROM liquidations_hourly WHERE market = '{market}'",
    "oi_regimes_hourly (1 market)": "SELECT * FROM oi_regimes_hourly WHERE market = '{market}'",
    "funding_rates_hourly (1 market)":
        "SELECT * FROM funding_rates_hourly WHERE market = '{market}'",
    "imbalance_episodes": "SELECT * FROM imbalance_episodes",
    "long_short_ratios": "SELECT * FROM long_short_ratios",
    "wallet_exposure (100 largest)": "SELECT * FROM wallet_exposure ORDER BY gross_usd DESC "
                                     "LIMIT 100",
    "position_risk_at (mid-history, 100 nearest)":
        "SELECT * FROM position_risk_at({mid}) ORDER BY distance_to_liquidation LIMIT 100",
    "liquidation_map_at (mid-history)": "SELECT * FROM liquidation_map_at({mid})",
    "whale_concentration_at (mid-history)": "SELECT * FROM whale_concentration_at({mid})",
}


def time_queries(db: Path) -> dict[str, float]:
    store = Store(db, read_only=True)
    try:
        out = {}
        (market,) = store.query("SELECT market FROM positions ORDER BY market LIMIT 1")[1][0]
        (mid,) = store.query("SELECT max(block_number) // 2 FROM position_changes")[1][0]
        for name, template in QUERIES.items():
            sql = template.format(market=market, mid=mid)
            store.query(sql)  # warm
            runs = []
            for _ in range(5):
                t = time.monotonic()
                store.query(sql)
                runs.append(time.monotonic() - t)
            out[name] = sorted(runs)[len(runs) // 2]
        return out
    finally:
        store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--per-block", type=int, default=2000, help="events per block")
    ap.add_argument("--range", type=int, default=8,
                    help="our max_block_range (see the README: a node without a result cap)")
    ap.add_argument("--naive-events", type=int, default=60_000)
    ap.add_argument("--query-rows", type=int, default=10_000_000)
    ap.add_argument("--no-cryo", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="perp-bench-"))
    print(f"work folder {work}")
    t = templates()
    anvil = Anvil(accounts=2, extra=["--gas-limit", "3000000000"])
    try:
        chain = build_chain(anvil, t, args.events, args.per_block)
        chain["range"] = args.range
        events = chain["v1_events"] + chain["v2_events"]
        print(f"chain: {events:,} events ({chain['v1_events']:,} GMX v1, {chain['v2_events']:,} "
              f"GMX v2 EventLog1) in {chain['head']:,} blocks, built in {chain['build_s']:.0f}s")
        cfg = write_config(work / "bench.yaml", anvil.url, chain)
        ours = {}
        for proto, n in (("gmx_v1_bench", chain["v1_events"]), ("gmx_v2_bench",
                                                                 chain["v2_events"])):
            r = measured(["backfill", "--config", str(cfg), "--protocol", proto,
                          "--no-progress"], work)
            r["events_s"] = n / r["seconds"]
            ours[proto] = r
        total_s = sum(r["seconds"] for r in ours.values())
        store = Store(work / "bench.duckdb", read_only=True)
        try:
            (ledger,) = store.query("SELECT count(*) FROM position_changes")[1][0]
            (quarantined,) = store.query("SELECT count(*) FROM quarantine")[1][0]
        finally:
            store.close()
        nv = naive(anvil.url, chain, args.naive_events, work)
        cr = None if args.no_cryo else run_cryo(anvil.url, chain, work)
    finally:
        anvil.stop()

    store = Store(work / "bench.duckdb")
    try:
        t0 = time.monotonic()
        rebuilt = store.rebuild_positions()
        rebuild_s = time.monotonic() - t0
    finally:
        store.close()
    big = work / "big.duckdb"
    shutil.copyfile(work / "bench.duckdb", big)
    grown = grow_ledger(big, args.query_rows)
    store = Store(big)
    try:
        t0 = time.monotonic()
        store.rebuild_positions()
        rebuild_big_s = time.monotonic() - t0
    finally:
        store.close()
    queries = time_queries(big)

    ours_rate = events / total_s
    naive_rate = nv["events"] / nv["seconds"]
    print()
    print("| run | events | seconds | events/s | blocks/s | peak RSS MB | vs ours |")
    print("|---|---|---|---|---|---|---|")
    for proto, r in ours.items():
        n = chain["v1_events"] if proto == "gmx_v1_bench" else chain["v2_events"]
        print(f"| ours, {proto} | {n:,} | {r['seconds']:.1f} | {r['events_s']:,.0f} | "
              f"{chain['head'] / r['seconds']:,.0f} | {r['rss_mb']:.0f} | |")
    print(f"| ours, both | {events:,} | {total_s:.1f} | {ours_rate:,.0f} | "
          f"{chain['head'] / total_s:,.0f} | {max(r['rss_mb'] for r in ours.values()):.0f} | 1x |")
    print(f"| naive web3.py loop | {nv['events']:,} | {nv['seconds']:.1f} | {naive_rate:,.0f} | "
          f"| {nv['rss_mb']:.0f} | ours {ours_rate / naive_rate:.1f}x faster |")
    if isinstance(cr, dict):
        cryo_rate = events / cr["seconds"]
        print(f"| cryo logs → Parquet (no decoding) | {events:,} | {cr['seconds']:.1f} | "
              f"{cryo_rate:,.0f} | {chain['head'] / cr['seconds']:,.0f} | {cr['rss_mb']:.0f} | "
              f"ours {ours_rate / cryo_rate:.2f}x |")
    elif cr:
        print(f"| cryo | {cr} |")
    print()
    print(f"ledger rows {ledger:,}, quarantined {quarantined:,}")
    print(f"rebuild of positions from the ledger: {rebuilt:,} rows in {rebuild_s:.2f}s "
          f"({rebuilt / rebuild_s:,.0f} rows/s); on {grown:,} rows: {rebuild_big_s:.2f}s "
          f"({grown / rebuild_big_s:,.0f} rows/s)")
    for name, s in queries.items():
        print(f"query on {grown:,} ledger rows, {name}: {s * 1000:.0f} ms (median of 5)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
