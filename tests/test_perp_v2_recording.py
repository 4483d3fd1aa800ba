"""Backfill the shared recording of the unmodified Perpetual Protocol v2 (Curie) contracts (given
only the ClearingHouse and its creation block) and compare with what AccountBalance's
``getTakerPositionSize`` / ``getTakerOpenNotional`` returned at every snapshot block."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from eth_abi import decode, encode
from eth_utils import keccak

from indexer.store import Store
from tests.helpers import SHARED, assert_oi_view_sums_open_positions, dump, run_cli, write_config

pytestmark = pytest.mark.replay

DATA = SHARED / "data" / "perp_v2_devnet"
SOURCE = "perp_v2_dev"
POSITION_CHANGED = "0x" + keccak(
    b"PositionChanged(address,address,int256,int256,uint256,int256,int256,uint256)").hex()
POSITION_LIQUIDATED = "0x" + keccak(
    b"PositionLiquidated(address,address,uint256,uint256,uint256,address)").hex()


@pytest.fixture(scope="module")
def truth() -> dict:
    return json.loads((DATA / "perp_v2_truth.json").read_text())


@pytest.fixture(scope="module")
def recording() -> tuple[dict[int, str], list[dict]]:
    """The recording's block hashes and logs, as the node answered them when recorded."""
    with gzip.open(DATA / "perp_v2_blocks.jsonl.gz", "rt") as f:
        hashes = {int(b["number"], 16): b["hash"] for b in map(json.loads, f)}
    with gzip.open(DATA / "perp_v2_logs.jsonl.gz", "rt") as f:
        logs = [json.loads(line) for line in f]
    return hashes, logs


def position_key(trader: str, base: str) -> str:
    """keccak256(abi.encode(trader, baseToken)), computed here independently of the indexer."""
    return "0x" + keccak(encode(["address", "address"], [trader, base])).hex()


def topic_address(word: str) -> str:
    return "0x" + word[-40:].lower()


def config(tmp_path: Path, url: str, truth: dict, name: str, **kw: object) -> Path:
    return write_config(tmp_path / f"{name}.yaml", url, truth["contracts"]["ClearingHouse"],
                        truth["deploymentBlock"], adapter="perp_v2", database=f"{name}.duckdb",
                        chain_id=truth["chainId"], **kw)


def check_snapshot(store: Store, snap: dict, truth: dict) -> tuple[int, int]:
    block = snap["blockNumber"]
    _, rows = store.query(
        "SELECT position_key, account, market, is_long, size_tokens_raw::VARCHAR, "
        "entry_price_raw::VARCHAR, status, collateral_token, collateral_raw FROM positions")
    ours = {r[0]: r for r in rows}
    want = {position_key(p["trader"], p["baseToken"]): p for p in snap["positions"]}
    assert len(want) == len(snap["positions"])
    # the truth lists every (trader, base token) of any PositionChanged or LiquidityChanged in
    # the recording, for the markets added by then; makers (LiquidityChanged only) have no row
    assert set(ours) <= set(want)
    opened = 0
    for key, p in want.items():
        size, notional = int(p["takerPositionSize"]), int(p["takerOpenNotional"])
        r = ours.get(key)
        if r is None:
            assert size == 0 and notional == 0, (block, p)
            continue
        assert r[1:3] == (p["trader"].lower(), p["baseToken"].lower()), (block, p)
        signed = int(r[4]) if r[3] else -int(r[4])
        assert signed == size, (block, p)
        assert (r[6] == "open") == (size != 0), (block, p)
        assert r[7] is None and r[8] is None
        # the open notional is stored as the entry price |openNotional| / |size| (1e18)
        assert int(r[5]) == (abs(notional) * 10**18 // abs(size) if size else 0), (block, p)
        if size:
            # a long pays quote (negative open notional), a short receives it
            assert (notional < 0) == (size > 0), (block, p)
            opened += 1
    # open interest in base units: the sums of the long / minus the short taker sizes
    _, oi = store.query("SELECT market, is_long, sum(size_tokens_raw)::VARCHAR FROM positions "
                        "WHERE status = 'open' GROUP BY ALL")
    rebuilt = {(m, lg): int(s) for m, lg, s in oi}
    bases = set()
    for sym, m in snap["markets"].items():
        base = truth["contracts"]["baseTokens"][sym]["address"].lower()
        bases.add(base)
        assert (rebuilt.get((base, True), 0), rebuilt.get((base, False), 0)) == (
            int(m["sumLongTaker"]), int(m["sumShortTaker"])), (block, sym)
    assert {m for m, _ in rebuilt} <= bases
    if rebuilt:
        assert_oi_view_sums_open_positions(store)
    else:
        assert store.query("SELECT count(*) FROM open_interest WHERE long_positions + "
                           "short_positions > 0")[1] == [(0,)]
    return len(want), opened


def check_liquidations(store: Store, truth: dict, logs: list[dict], block: int) -> int:
    """Each PositionLiquidated of the truth is one ``liquidation`` row: the trader's own
    PositionChanged, the last one of the trader and base token before it in its transaction,
    whose size change is minus the liquidated size."""
    _, rows = store.query(
        "SELECT block_number, tx_hash, log_index, account, market, position_key, "
        "size_delta_tokens_raw::VARCHAR FROM position_changes WHERE kind = 'liquidation'")
    want = []
    for x in truth["liquidations"]:
        if x["blockNumber"] > block:
            continue
        tx, trader, base = x["transactionHash"].lower(), x["trader"].lower(), x["baseToken"].lower()
        in_tx = [lg for lg in logs if lg["transactionHash"] == tx
                 and lg["address"] == truth["contracts"]["ClearingHouse"].lower()]
        liquidated = [lg for lg in in_tx if int(lg["logIndex"], 16) == x["logIndex"]]
        assert len(liquidated) == 1 and liquidated[0]["topics"][0] == POSITION_LIQUIDATED
        changed = [lg for lg in in_tx if lg["topics"][0] == POSITION_CHANGED
                   and int(lg["logIndex"], 16) < x["logIndex"]
                   and (topic_address(lg["topics"][1]), topic_address(lg["topics"][2]))
                   == (trader, base)]
        assert changed, x
        own = changed[-1]
        exchanged = decode(["int256"], bytes.fromhex(own["data"][2:66]))[0]
        assert abs(exchanged) == int(x["positionSize"]) > 0, x
        want.append((x["blockNumber"], tx, int(own["logIndex"], 16), trader, base,
                     position_key(trader, base), str(-int(x["positionSize"]))))
    assert sorted(rows) == sorted(want)
    return len(rows)


def test_backfill_reproduces_account_balance_at_every_snapshot(tmp_path, replay_factory, truth,
                                                               recording):
    hashes, logs = recording
    node = replay_factory(data=DATA, prefix="perp_v2")
    cfg = config(tmp_path, node.url, truth, "db", max_block_range=43)
    compared = opened = liquidations = 0
    for snap in truth["snapshots"]:
        assert run_cli("backfill", "--config", str(cfg), "--to", str(snap["blockNumber"]),
                       "--no-progress") == 0
        store = Store(tmp_path / "db.duckdb", read_only=True)
        try:
            rows, open_ = check_snapshot(store, snap, truth)
            compared, opened = compared + rows, opened + open_
            liquidations = check_liquidations(store, truth, logs, snap["blockNumber"])
            cp = store.load_checkpoint(SOURCE)
            assert cp is not None and (cp.block_number, cp.block_hash) == (
                snap["blockNumber"], hashes[snap["blockNumber"]])
            assert store.query("SELECT count(*) FROM quarantine")[1] == [(0,)]
        finally:
            store.close()
    assert len(truth["snapshots"]) == 13
    assert liquidations == len(truth["liquidations"]) == truth["counts"]["PositionLiquidated"] == 15
    assert len({(x["trader"], x["baseToken"]) for x in truth["liquidations"]}) == 8
    assert truth["snapshots"][-1]["blockNumber"] == truth["headBlock"]
    head = truth["snapshots"][-1]["positions"]
    assert len(head) == 112 and sum(int(p["takerPositionSize"]) != 0 for p in head) == 80
    assert compared == sum(len(s["positions"]) for s in truth["snapshots"]) and opened > 500

    # resumed run (13 stops) == one uninterrupted run
    one = config(tmp_path, node.url, truth, "one")
    assert run_cli("backfill", "--config", str(one), "--no-progress") == 0
    assert dump(tmp_path / "db.duckdb") == dump(tmp_path / "one.duckdb")
