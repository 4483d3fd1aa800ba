"""Synthetix Perps v2 end to end on anvil: two manager versions announce markets at run time
(one market emitting the pre-April-2023 event versions, one added mid-run), wallets trade and get
liquidated, the indexer backfills from the managers' addresses alone, and every position, the
markets' size and skew and the liquidations must equal the markets' own state."""

from __future__ import annotations

import pytest

from indexer.adapters.base import address_pair_key
from indexer.devnet.chain import Anvil
from indexer.devnet.simulator_synthetix import (
    MARKETS,
    SimulatorSynthetix,
    deploy_manager,
    deploy_market,
)
from indexer.store import Store
from tests.helpers import backfill_and_assert_resume_equals_one_run


def write_config(path, url: str, managers: tuple[str, str], max_block_range: int):
    path.write_text(f"""database: db.duckdb
chains:
  dev: {{ chain_id: 31337, rpc_url: "{url}", confirmations: 0, max_block_range: {max_block_range} }}
protocols:
  - name: synthetix_dev
    adapter: synthetix_perps_v2
    chain: dev
    contracts:
      futures_market_manager:
        - {{ address: "{managers[0]}", start_block: 0 }}
        - {{ address: "{managers[1]}", start_block: 0 }}
""")
    return path


pytestmark = pytest.mark.anvil


def test_backfill_finds_markets_and_equals_their_state(tmp_path):
    anvil = Anvil(accounts=40)
    try:
        managers = (deploy_manager(anvil), deploy_manager(anvil))
        markets = {k: deploy_market(anvil, p * 10**18, legacy)
                   for k, (_, p, legacy) in MARKETS.items()}
        sim = SimulatorSynthetix(anvil.rpc, managers, markets, anvil.accounts, seed=11)
        sim.setup()
        sim.run(150)
        sim.upgrade()
        stats = sim.run(150)
        assert stats["liquidation"] >= 3 and stats["close"] >= 3 and stats["flip"] >= 2
        assert stats["margin_out"] >= 2 and stats["batch_blocks"] >= 3
        ids = sorted(sim.ids)
        chain = dict(zip(ids, sim.positions(ids), strict=True))
        sizes = sim.market_sizes()
        cfg = write_config(tmp_path / "c.yaml", anvil.url, managers, 29)
        backfill_and_assert_resume_equals_one_run(tmp_path, cfg, anvil.rpc)
    finally:
        anvil.stop()

    store = Store(tmp_path / "db.duckdb", read_only=True)
    try:
        _, rows = store.query(
            "SELECT market, account, is_long, size_tokens_raw::VARCHAR, collateral_raw::VARCHAR,"
            " status, position_key FROM positions")
        _, oi = store.query(
            "SELECT market, is_long, sum(size_tokens_raw)::VARCHAR FROM positions "
            "WHERE status = 'open' GROUP BY ALL")
        _, liquidations = store.query(
            "SELECT tx_hash FROM position_changes WHERE kind = 'liquidation'")
        _, found = store.query("SELECT DISTINCT market, name FROM markets")
        _, funding = store.query("SELECT count(DISTINCT market) FROM funding_updates")
        _, quarantined = store.query("SELECT count(*) FROM quarantine")
    finally:
        store.close()

    ours = {(r[0], r[1]): r for r in rows}
    compared = 0
    for pid, (_, _, margin, _, size) in chain.items():
        if pid not in ours:  # only margin moved, never a position
            assert size == 0
            continue
        r = ours[pid]
        assert (int(r[3]) if r[2] else -int(r[3])) == size, pid
        assert (r[5] == "open") == (size != 0), pid
        if size:
            assert int(r[4]) == margin, pid
        assert r[6] == address_pair_key(*pid)
        compared += 1
    assert compared > 40 and set(ours) <= set(chain)
    rebuilt = {(m, lg): int(v) for m, lg, v in oi}
    for market, (size, skew) in sizes.items():
        long_, short = (size + skew) // 2, (size - skew) // 2
        assert (rebuilt.get((market, True), 0), rebuilt.get((market, False), 0)) == (long_, short)
    assert sorted(h for (h,) in liquidations) == sorted(sim.liquidations)
    assert sorted(found) == sorted((m, k) for k, m in markets.items())
    assert funding == [(3,)] and quarantined == [(0,)]
