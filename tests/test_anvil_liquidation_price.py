"""On anvil: the test vault's own liquidation check (the GMX v1 Vault's rule: funding and position
fees, the $ liquidation fee, max leverage) flips exactly at position_risk's liquidation price:
the oracle is moved just short of it and just past it, for every open position. Halfway through,
the fees and max leverage change without an event; the indexer finds the new values with
eth_call (protocol_parameters)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from indexer.abi import encode_call
from indexer.devnet.chain import call
from indexer.devnet.simulator import token_address
from indexer.store import Store
from tests.helpers import run_cli, write_config

pytestmark = pytest.mark.anvil

USD = 10**30
VALIDATE = "validateLiquidation(address,address,address,bool)"


def test_the_vault_liquidates_exactly_past_our_price(tmp_path, gmx_v1_chain):
    anvil, vault, sim = gmx_v1_chain
    sim.run(120)
    changed = anvil.rpc.call("eth_blockNumber", [])
    assert sim._tx(sim.gov, encode_call("setFees(uint256,uint256,uint256)",
                                        [25, 3 * USD, 40 * 10_000]))
    sim.run(80)
    cfg = write_config(tmp_path / "c.yaml", anvil.url, vault, 0)
    assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 0
    with Store(tmp_path / "db.duckdb", read_only=True) as store:
        params = store.con.execute("SELECT block_number, name, value_raw::VARCHAR FROM "
                                   "protocol_parameters ORDER BY block_number, name").fetchall()
        rows = store.con.execute(
            "SELECT p.account, p.collateral_token, p.market, p.is_long, r.liquidation_price_usd, "
            "r.liquidatable, p.entry_price_raw::VARCHAR FROM position_risk r JOIN positions p "
            "USING (source, position_key)").fetchall()
    fee_change = int(changed, 16) + 1
    assert [p for p in params if p[0] == fee_change] == [
        (fee_change, "liquidationFeeUsd", str(3 * USD)), (fee_change, "marginFeeBasisPoints", "25"),
        (fee_change, "maxLeverage", "400000")]
    assert len(rows) > 10
    symbols = {token_address(s).lower(): s for s in sim.prices}
    checked = 0
    for account, collateral, index, is_long, price, beyond, entry in rows:
        pid = [account, collateral, index, is_long]
        if price is None:
            assert beyond
            probes = [(int(entry), True)]
        else:
            raw = int(Decimal(price) * USD)
            above, below = raw + raw // 10**9, raw - raw // 10**9
            probes = [(above, not is_long), (below, is_long)]
        for probe, liquidated in probes:
            sim.set_price(symbols[index], probe)
            state = int(call(anvil.rpc, vault, VALIDATE, pid), 16)
            assert (state != 0) == liquidated, (pid, price, probe, state)
        checked += 1
    assert checked == len(rows)

