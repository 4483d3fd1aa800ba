"""gTrade end to end on anvil: the simulator trades on our v10-style test diamond (the exact
trade events and struct layouts; limit orders stored as trades then replaced when executed;
size increases and decreases, leverage updates, fees taken from collateral, take-profit,
stop-loss and liquidation triggers), the indexer backfills it in small ranges, and every trade,
the open interest per collateral, pair and side, and the liquidations must equal the diamond's
own state."""

from __future__ import annotations

import pytest

from indexer.adapters.gtrade import trade_key
from indexer.devnet.chain import Anvil
from indexer.devnet.simulator_gtrade import (
    COLLATERALS,
    SimulatorGTrade,
    collateral_token,
    deploy_diamond,
)
from indexer.store import Store
from tests.helpers import (
    assert_oi_view_sums_open_positions,
    backfill_and_assert_resume_equals_one_run,
    write_config,
)

pytestmark = pytest.mark.anvil

TOKENS = "    tokens:\n" + "".join(
    f'      "{collateral_token(i)}": {{ symbol: {sym}, decimals: {dec}, id: {i} }}\n'
    for i, (sym, dec, _) in COLLATERALS.items())


def test_backfill_equals_diamond_state(tmp_path):
    anvil = Anvil(accounts=40)
    try:
        diamond = deploy_diamond(anvil)
        sim = SimulatorGTrade(anvil.rpc, diamond, anvil.accounts, seed=5, traders=30)
        sim.setup()
        stats = sim.run(300)
        for key in ("liquidation", "close", "limit_executed", "partial_decrease", "increase",
                    "leverage_update", "fee_charged", "batch_blocks"):
            assert stats[key] >= 2, (key, stats)
        ids = sorted(sim.ids)
        chain = dict(zip(ids, sim.trades(ids), strict=True))
        prices = dict(zip(ids, sim.collateral_prices(ids), strict=True))
        chain_oi = sim.open_interest()
        cfg = write_config(tmp_path / "c.yaml", anvil.url, diamond, 0, adapter="gtrade",
                           max_block_range=17, protocol_extra=TOKENS)
        backfill_and_assert_resume_equals_one_run(tmp_path, cfg, anvil.rpc)
    finally:
        anvil.stop()

    store = Store(tmp_path / "db.duckdb", read_only=True)
    try:
        _, rows = store.query(
            "SELECT position_key, account, market, collateral_token, is_long, status, "
            "size_tokens_raw::VARCHAR, collateral_tokens_raw::VARCHAR, size_raw::VARCHAR, "
            "entry_price_raw::VARCHAR FROM positions")
        _, oi = store.query(
            "SELECT collateral_token, market, is_long, sum(size_tokens_raw)::VARCHAR "
            "FROM positions WHERE status = 'open' GROUP BY ALL")
        _, liquidations = store.query(
            "SELECT DISTINCT tx_hash FROM position_changes WHERE kind = 'liquidation'")
        assert_oi_view_sums_open_positions(store)
        _, quarantined = store.query("SELECT count(*) FROM quarantine")
    finally:
        store.close()

    ours = {r[0]: r for r in rows}
    compared = pending = 0
    for (user, index), t in chain.items():
        key = trade_key(user, index)
        if t[7] != 0:  # a limit order: never a position
            assert key not in ours
            pending += 1
            continue
        r = ours[key]
        size, decimals = t[8] * t[3] // 1000, COLLATERALS[t[6]][1]
        assert r[1:5] == (user, str(t[2]), collateral_token(t[6]), t[4]), key
        assert (r[5] == "open") == t[5], key
        if t[5]:
            assert (int(r[6]), int(r[7])) == (size, t[8]), key
            assert int(r[8]) == size * prices[(user, index)] * 10**10 // 10**decimals, key
            assert int(r[9]) == t[9] * 10**8, key
        else:
            assert r[6] == "0" and r[5] in ("closed", "liquidated"), key
        compared += 1
    assert compared > 60 and pending >= 2
    assert len(ours) == compared
    rebuilt = {(c, m, lg): int(v) for c, m, lg, v in oi}
    for (coll, pair), (long_, short) in chain_oi.items():
        token = collateral_token(coll)
        assert (rebuilt.get((token, str(pair), True), 0),
                rebuilt.get((token, str(pair), False), 0)) == (long_, short), (coll, pair)
    assert sum(lg + sh for lg, sh in chain_oi.values()) > 0
    assert sorted(h for (h,) in liquidations) == sorted(sim.liquidations)
    assert quarantined == [(0,)]
