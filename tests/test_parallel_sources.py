"""Sources backfilled at once: three protocols on two anvil chains (GMX v1 and GMX v2 on one,
gTrade, whose adapter reads prior state, on the other) through one writer, and stopped and
resumed on the way, must equal the three backfilled one by one, table for table."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from indexer.devnet.chain import Anvil
from indexer.devnet.simulator import Simulator, deploy_vault, token_address
from indexer.devnet.simulator_gtrade import (
    COLLATERALS,
    SimulatorGTrade,
    collateral_token,
    deploy_diamond,
)
from indexer.devnet.simulator_v2 import TOKENS, SimulatorV2, deploy_exchange
from indexer.engine import commit as engine_commit
from indexer.engine.source import Tuning
from tests.helpers import dump, run_cli

pytestmark = pytest.mark.anvil


def write_three(path: Path, url_a: str, url_b: str, vault: str, exchange: str, diamond: str,
                database: str) -> Path:
    v2_tokens = "".join(f'\n      "{token_address(s)}": {{ decimals: {d}, symbol: {s} }}'
                        for s, (d, _) in TOKENS.items())
    gtrade_tokens = "".join(f'\n      "{collateral_token(i)}": {{ symbol: {sym}, decimals: {dec}, '
                            f'id: {i} }}' for i, (sym, dec, _) in COLLATERALS.items())
    path.write_text(f"""database: {database}
metrics_port: 0
chains:
  a:
    chain_id: 31337
    rpc_url: "{url_a}"
    confirmations: 0
    max_block_range: 23
  b:
    chain_id: 31338
    rpc_url: "{url_b}"
    confirmations: 0
    max_block_range: 17
protocols:
  - name: gmx_v1_a
    adapter: gmx_v1
    chain: a
    contracts:
      vault: {{ address: "{vault}", start_block: 0 }}
  - name: gmx_v2_a
    adapter: gmx_v2
    chain: a
    contracts:
      event_emitter: {{ address: "{exchange}", start_block: 0 }}
    tokens:{v2_tokens}
  - name: gtrade_b
    adapter: gtrade
    chain: b
    contracts:
      diamond: {{ address: "{diamond}", start_block: 0 }}
    tokens:{gtrade_tokens}
""")
    return path


def test_three_sources_at_once_equal_one_by_one(tmp_path, monkeypatch):
    a = Anvil(accounts=40)
    b = Anvil(accounts=40, extra=["--chain-id", "31338"])
    try:
        vault = deploy_vault(a)
        v1 = Simulator(a.rpc, vault, a.accounts, seed=3, traders=20)
        v1.setup()
        v1.run(120)
        exchange = deploy_exchange(a)
        v2 = SimulatorV2(a.rpc, exchange, a.accounts, seed=4, traders=20)
        v2.setup()
        v2.run(120)
        diamond = deploy_diamond(b)
        gt = SimulatorGTrade(b.rpc, diamond, b.accounts, seed=5, traders=20)
        gt.setup()
        gt.run(160)
        small = Tuning(commit_rows=0)  # a commit per range: many, from every source

        one_by_one = write_three(tmp_path / "one.yaml", a.url, b.url, vault, exchange, diamond,
                                 "one.duckdb")
        for name in ("gmx_v1_a", "gmx_v2_a", "gtrade_b"):
            assert run_cli("backfill", "--config", str(one_by_one), "--protocol", name,
                           "--no-progress", tuning=small) == 0

        # every commit on the one writer thread, whichever source's thread prepared it
        threads: list[tuple[str, str]] = []
        real_commit = engine_commit.commit

        def commit(store, prepared, start_block):
            threads.append((threading.current_thread().name, prepared.rows.source))
            return real_commit(store, prepared, start_block)

        monkeypatch.setattr(engine_commit, "commit", commit)
        at_once = write_three(tmp_path / "once.yaml", a.url, b.url, vault, exchange, diamond,
                              "once.duckdb")
        head_a, head_b = a.rpc.fetch_head(), b.rpc.fetch_head()
        # stopped part way (each source at its own --to), then resumed: all at once both times
        assert run_cli("backfill", "--config", str(at_once), "--to", str(min(head_a, head_b) // 2),
                       "--no-progress", tuning=small) == 0
        assert run_cli("backfill", "--config", str(at_once), "--no-progress",
                       tuning=small) == 0
    finally:
        a.stop()
        b.stop()

    assert {name for name, _ in threads} == {"commit_0"}
    sources = [source for _, source in threads]
    assert set(sources) == {"gmx_v1_a", "gmx_v2_a", "gtrade_b"}
    # the sources' commits interleave: they ran at once, not one after another
    switches = sum(1 for x, y in zip(sources, sources[1:], strict=False) if x != y)
    assert switches >= 4, sources
    want, got = dump(tmp_path / "one.duckdb"), dump(tmp_path / "once.duckdb")
    assert got == want
    assert len(want["position_changes"]) > 300
