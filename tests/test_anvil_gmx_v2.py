"""GMX v2 end to end on anvil: the simulator trades on our GMX-v2-style test exchange (the exact
EventEmitter events and EventLogData payloads), the indexer backfills it, and positions, open
interest and liquidations must equal the exchange's own state."""

from __future__ import annotations

from decimal import Decimal

import pytest

from indexer.devnet.chain import Anvil
from indexer.devnet.simulator import token_address
from indexer.devnet.simulator_v2 import (
    MARKETS,
    TOKENS,
    SimulatorV2,
    deploy_exchange,
    market_address,
)
from indexer.store import Store
from tests.helpers import run_cli, write_config

pytestmark = pytest.mark.anvil

TOKENS_YAML = "    tokens:" + "".join(
    f'\n      "{token_address(s)}": {{ decimals: {d}, symbol: {s} }}'
    for s, (d, _) in TOKENS.items()) + "\n"


def test_backfill_equals_exchange_state(tmp_path):
    anvil = Anvil(accounts=40)
    try:
        exchange = deploy_exchange(anvil)
        sim = SimulatorV2(anvil.rpc, exchange, anvil.accounts, seed=5, traders=30)
        sim.setup()
        stats = sim.run(260)
        assert stats["liquidation"] >= 5 and stats["close"] >= 5 and stats["batch_blocks"] >= 5
        ids = sorted(sim.ids)
        chain_positions = dict(zip(ids, sim.positions(ids), strict=True))
        chain_oi = sim.open_interest()
        cfg = write_config(tmp_path / "c.yaml", anvil.url, exchange, 0, adapter="gmx_v2",
                           protocol_extra=TOKENS_YAML, max_block_range=37)
        assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 0
    finally:
        anvil.stop()

    store = Store(tmp_path / "db.duckdb", read_only=True)
    try:
        _, rows = store.query(
            "SELECT account, market, collateral_token, is_long, size_raw::VARCHAR, "
            "size_tokens_raw::VARCHAR, collateral_tokens_raw::VARCHAR, status, position_key, "
            "index_token FROM positions")
        _, oi_rows = store.query(
            "SELECT market, collateral_token, is_long, sum(size_raw)::VARCHAR, "
            "sum(size_tokens_raw)::VARCHAR FROM positions WHERE status = 'open' GROUP BY ALL")
        _, own = store.query(
            "SELECT market, collateral_token, is_long, unit, arg_max(next_value_raw, "
            "block_number * 1000000 + log_index)::VARCHAR FROM protocol_open_interest GROUP BY ALL")
        _, liquidations = store.query(
            "SELECT tx_hash FROM position_changes WHERE kind = 'liquidation'")
        _, view = store.query("SELECT market, long_oi_usd, short_oi_usd FROM open_interest")
        _, markets = store.query("SELECT market, index_token FROM markets")
        _, nulls = store.query("SELECT count(*) FROM position_changes WHERE price_usd IS NULL "
                               "OR size_after_tokens IS NULL OR collateral_after_tokens IS NULL")
        _, quarantined = store.query("SELECT count(*) FROM quarantine")
    finally:
        store.close()

    ours = {r[:4]: r for r in rows}
    compared = 0
    for pid, p in chain_positions.items():
        if pid not in ours:  # every order on this key reverted: the exchange never held it
            assert p[4] == 0
            continue
        r = ours[pid]
        assert (int(r[4]), int(r[5]), int(r[6])) == (p[4], p[5], p[6]), pid
        assert (r[7] == "open") == (p[4] > 0), pid
        assert r[8] == "0x" + sim.key(pid).hex()
        compared += 1
    assert compared > 40 and set(ours) <= set(chain_positions)

    rebuilt = {(m, c, lg): (int(s), int(t)) for m, c, lg, s, t in oi_rows}
    own_oi = {(m, c, lg, u): int(v) for m, c, lg, u, v in own}
    for k, (usd, tokens) in chain_oi.items():
        assert rebuilt.get(k, (0, 0)) == (usd, tokens), k
        assert (own_oi.get((*k, "usd"), 0), own_oi.get((*k, "tokens"), 0)) == (usd, tokens), k
    by_view = {m: (lg, sh) for m, lg, sh in view}
    for name in MARKETS:
        m = market_address(name)
        long_ = sum(v[0] for k, v in chain_oi.items() if k[0] == m and k[2])
        short = sum(v[0] for k, v in chain_oi.items() if k[0] == m and not k[2])
        assert by_view.get(m, (0, 0)) == (Decimal(long_) / 10**30, Decimal(short) / 10**30)

    assert sorted(h for (h,) in liquidations) == sorted(sim.liquidations)
    assert sorted(markets) == sorted((market_address(n), token_address(i))
                                     for n, (i, _, _) in MARKETS.items())
    assert nulls == [(0,)] and quarantined == [(0,)]
