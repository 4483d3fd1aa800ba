"""Perpetual v2 end to end on anvil: the simulator trades on our Curie-style test clearing house
(the exact ClearingHouse events; liquidations hand the position to the liquidator; a closed
market's positions are quit), the indexer backfills it, and every taker position, the open
interest and the liquidations must equal the clearing house's own state."""

from __future__ import annotations

from decimal import Decimal

import pytest

from indexer.adapters.base import address_pair_key
from indexer.devnet.chain import Anvil
from indexer.devnet.simulator_perp import (
    BASES,
    SimulatorPerp,
    base_address,
    deploy_clearing_house,
)
from indexer.store import Store
from tests.helpers import (
    assert_oi_view_sums_open_positions,
    backfill_and_assert_resume_equals_one_run,
    write_config,
)

pytestmark = pytest.mark.anvil


def test_backfill_equals_clearing_house_state(tmp_path):
    anvil = Anvil(accounts=40)
    try:
        house = deploy_clearing_house(anvil)
        sim = SimulatorPerp(anvil.rpc, house, anvil.accounts, seed=3, traders=30)
        sim.setup()
        sim.run(240)
        sim.close_market("vSOL")
        stats = sim.run(30)
        assert stats["liquidation"] >= 3 and stats["close"] >= 3 and stats["flip"] >= 3
        assert stats["quit"] >= 1 and stats["batch_blocks"] >= 3
        ids = sorted(sim.ids)
        chain = dict(zip(ids, sim.positions(ids), strict=True))
        chain_oi = sim.open_interest()
        cfg = write_config(tmp_path / "c.yaml", anvil.url, house, 0, adapter="perp_v2",
                           max_block_range=23)
        backfill_and_assert_resume_equals_one_run(tmp_path, cfg, anvil.rpc)
    finally:
        anvil.stop()

    store = Store(tmp_path / "db.duckdb", read_only=True)
    try:
        _, rows = store.query(
            "SELECT account, market, is_long, size_tokens_raw::VARCHAR, realized_pnl_usd, "
            "entry_price_raw::VARCHAR, status, position_key FROM positions")
        _, oi = store.query(
            "SELECT market, is_long, sum(size_tokens_raw)::VARCHAR FROM positions "
            "WHERE status = 'open' GROUP BY ALL")
        _, liquidations = store.query(
            "SELECT DISTINCT tx_hash FROM position_changes WHERE kind = 'liquidation'")
        assert_oi_view_sums_open_positions(store)
        _, view = store.query("SELECT market FROM open_interest")
        _, closes = store.query("SELECT count(*) FROM position_changes WHERE kind = 'close' "
                                "AND market = ?", [base_address("vSOL")])
        _, quarantined = store.query("SELECT count(*) FROM quarantine")
    finally:
        store.close()

    ours = {(r[0], r[1]): r for r in rows}
    compared = 0
    for pid, (size, notional, pnl) in chain.items():
        r = ours[pid]
        signed = int(r[3]) if r[2] else -int(r[3])
        assert signed == size, pid
        assert r[4] == Decimal(pnl) / 10**18, pid
        assert int(r[5]) == (abs(notional) * 10**18 // abs(size) if size else 0), pid
        assert (r[6] == "open") == (size != 0), pid
        assert r[7] == address_pair_key(*pid)
        compared += 1
    assert compared > 40 and set(ours) == set(chain)
    rebuilt = {(m, lg): int(v) for m, lg, v in oi}
    for base, (long_, short) in chain_oi.items():
        assert (rebuilt.get((base, True), 0), rebuilt.get((base, False), 0)) == (long_, short)
    assert chain_oi[base_address("vSOL")] == (0, 0) and closes[0][0] >= 1
    assert sorted(h for (h,) in liquidations) == sorted(sim.liquidations)
    assert {base_address(s) for s in BASES} >= {m for (m,) in view}
    assert quarantined == [(0,)]
