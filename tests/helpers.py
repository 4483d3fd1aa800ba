"""Test helpers: the shared recordings, a replay node serving them, config files, the CLI
runner, and what "the same database" means."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from indexer import adapters
from indexer.cli import main
from indexer.devnet.chain import free_port
from indexer.engine.source import Tuning
from indexer.rpc import Rpc
from indexer.store import Store

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PERP_SHARED_DIR", ROOT.parent / "shared")).resolve()
REPLAY_NODE = SHARED / "tools" / "replay_node.py"
GMX_V1_DATA = SHARED / "data" / "gmx_v1_devnet"
GMX_V2_DATA = SHARED / "data" / "gmx_v2_devnet"
GMX_V1_VAULT = (json.loads((GMX_V1_DATA / "gmx_v1_truth.json").read_text())["contracts"]["Vault"]
                if GMX_V1_DATA.exists() else "")


def logs_of(*logs: dict) -> list:
    """Test logs given by some of their JSON fields (topics, data...) as the pipeline's ``Log``
    structs; the chain coordinates default to the i-th log of block 1."""
    from indexer.rpc import as_logs

    return as_logs([{"address": "0x" + "ee" * 20, "blockNumber": "0x1",
                     "blockHash": "0x" + "ab" * 32, "transactionHash": "0x" + "cd" * 32,
                     "logIndex": hex(i), **lg} for i, lg in enumerate(logs)])


def wait_rpc(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId",
                                      "params": []}, timeout=2)
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"node at {url} did not come up")


class ReplayNode:
    def __init__(self, data: Path, prefix: str, *extra: str) -> None:
        if not REPLAY_NODE.exists():
            raise RuntimeError(f"{REPLAY_NODE} is missing: tests need ../shared next to the repo "
                               "(or PERP_SHARED_DIR)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, str(REPLAY_NODE), "--data", str(data), "--prefix", prefix,
             "--port", str(self.port), *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_rpc(self.url)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def start_sync(cfg: Path, *extra: str, verbose: bool = False) -> subprocess.Popen:
    """``perp-indexer sync`` as a separate process (the daemon), output captured as text."""
    return subprocess.Popen([sys.executable, "-m", "indexer", *(["-v"] if verbose else []),
                             "sync", "--config", str(cfg), *extra], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "250"})


def write_config(path: Path, rpc_url: str, address: str, start_block: int, *,
                 database: str = "db.duckdb", chain_id: int = 31337, adapter: str = "gmx_v1",
                 protocol_extra: str = "", metrics_port: int = 0, **chain: object) -> Path:
    """A one-chain, one-protocol config; ``protocol_extra`` is YAML appended to the entry.
    The daemon serves no metrics unless ``metrics_port`` is given."""
    chain_lines = "".join(f"\n    {k}: {v}" for k, v in chain.items())
    path.write_text(f"""database: {database}
metrics_port: {metrics_port}
chains:
  dev:
    chain_id: {chain_id}
    rpc_url: "{rpc_url}"
    confirmations: 0{chain_lines}
protocols:
  - name: {adapter}_dev
    adapter: {adapter}
    chain: dev
    contracts:
      {adapters.load(adapter).roles[0]}: {{ address: "{address}", start_block: {start_block} }}
{protocol_extra}""")
    return path


def write_dydx_config(path: Path, url: str, start_block: int, *, database: str = "db.duckdb",
                      metrics_port: int = 0, **chain: object) -> Path:
    """A config of one dydx_v4 source on a CometBFT chain whose node (RPC and REST) is ``url``."""
    chain_lines = "".join(f"\n    {k}: {v}" for k, v in chain.items())
    path.write_text(f"""database: {database}
metrics_port: {metrics_port}
chains:
  dydx:
    kind: cometbft
    network: dydx-mainnet-1
    rpc_url: "{url}"
    rest_url: "{url}"{chain_lines}
protocols:
  - name: dydx_v4_dev
    adapter: dydx_v4
    chain: dydx
    start_block: {start_block}
""")
    return path


#: What "the same database" means in the tests: every table, in a stable order, without the
#: columns that record when a row was written and the daemon's last (retried) error.
DUMP_TABLES = {
    # (a dYdX match writes two rows, taker and maker, under one log index)
    "position_changes": "SELECT * EXCLUDE (block_time) FROM position_changes "
                        "ORDER BY block_number, log_index, position_key",
    "positions": "SELECT * FROM positions ORDER BY position_key",
    "markets": "SELECT * FROM markets ORDER BY block_number, log_index",
    "funding_payments": "SELECT * EXCLUDE (block_time) FROM funding_payments "
                        "ORDER BY block_number, log_index, position_key",
    # (a dYdX funding tick writes every market's row under the tick's log index)
    "protocol_open_interest": "SELECT * FROM protocol_open_interest "
                              "ORDER BY block_number, log_index, market",
    "funding_updates": "SELECT * FROM funding_updates ORDER BY block_number, log_index, market",
    "protocol_parameters": "SELECT * FROM protocol_parameters ORDER BY block_number, name",
    "checkpoints": "SELECT * EXCLUDE (updated_at, last_error) FROM checkpoints ORDER BY source",
    "quarantine": "SELECT count(*) FROM quarantine",
}


def dump(db: Path) -> dict[str, list[tuple]]:
    store = Store(db, read_only=True)
    try:
        return {name: store.query(sql)[1] for name, sql in DUMP_TABLES.items()}
    finally:
        store.close()


def assert_oi_view_sums_open_positions(store: Store) -> None:
    """The ``open_interest`` view's long/short USD equal the sums over open ``positions``."""
    _, view = store.query("SELECT market, long_oi_usd, short_oi_usd FROM open_interest")
    _, by_size = store.query(
        "SELECT market, sum(size_usd) FILTER (WHERE is_long), "
        "sum(size_usd) FILTER (WHERE NOT is_long) FROM positions WHERE status = 'open' "
        "GROUP BY market")
    assert view and {m: (lg, sh) for m, lg, sh in view} == {
        m: (lg or 0, sh or 0) for m, lg, sh in by_size}


def fetch_health(host: str, port: int) -> dict | None:
    """The running daemon's /health JSON, or None when no daemon answers there."""
    from indexer.client import Connection, QueryError

    try:
        return Connection(f"http://{host}:{port}", timeout=2.0).health()
    except QueryError:
        return None


def run_cli(*args: str, tuning: Tuning = Tuning()) -> int:
    return main(list(args), tuning)


def backfill_and_assert_resume_equals_one_run(tmp_path: Path, cfg: Path, rpc: Rpc) -> None:
    """Backfill ``cfg`` once into ``db.duckdb``; then a backfill stopped and resumed at several
    blocks, then made to replay an already indexed middle range, must equal that one run (for
    adapters reading prior state, the replay reads it from the ledger, not newer positions)."""
    assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 0
    head = rpc.fetch_head()
    other = cfg.with_name("resumed.yaml")
    other.write_text(cfg.read_text().replace("database: db.duckdb", "database: resumed.duckdb"))
    for stop in (head // 5, head // 3, head // 2):
        assert run_cli("backfill", "--config", str(other), "--to", str(stop),
                       "--no-progress") == 0
    assert run_cli("backfill", "--config", str(other), "--no-progress") == 0
    assert dump(tmp_path / "resumed.duckdb") == dump(tmp_path / "db.duckdb")
    assert run_cli("backfill", "--config", str(other), "--from", str(head // 4), "--to",
                   str(head // 2), "--no-progress") == 0
    assert dump(tmp_path / "resumed.duckdb") == dump(tmp_path / "db.duckdb")
