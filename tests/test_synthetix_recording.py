"""Backfill the shared recording of the unmodified Synthetix PerpsV2 contracts (given only the
FuturesMarketManager and its creation block) and compare with what the market proxies' own
``positions(account)``, ``marketSize`` and ``marketSkew`` returned at every snapshot block."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from eth_abi import encode
from eth_utils import keccak

from indexer.store import Store
from tests.helpers import SHARED, assert_oi_view_sums_open_positions, dump, run_cli, write_config

pytestmark = pytest.mark.replay

DATA = SHARED / "data" / "synthetix_devnet"
SOURCE = "synthetix_perps_v2_dev"


@pytest.fixture(scope="module")
def truth() -> dict:
    return json.loads((DATA / "synthetix_truth.json").read_text())


@pytest.fixture(scope="module")
def block_hashes() -> dict[int, str]:
    with gzip.open(DATA / "synthetix_blocks.jsonl.gz", "rt") as f:
        return {int(b["number"], 16): b["hash"] for b in map(json.loads, f)}


def position_key(market: str, account: str) -> str:
    """keccak256(abi.encode(market, account)), computed here independently of the indexer."""
    return "0x" + keccak(encode(["address", "address"], [market, account])).hex()


def config(tmp_path: Path, url: str, truth: dict, name: str, **kw: object) -> Path:
    return write_config(tmp_path / f"{name}.yaml", url, truth["contracts"]["FuturesMarketManager"],
                        truth["deploymentBlock"], adapter="synthetix_perps_v2",
                        database=f"{name}.duckdb", chain_id=truth["chainId"], **kw)


def check_snapshot(store: Store, snap: dict, truth: dict) -> int:
    block = snap["blockNumber"]
    _, rows = store.query(
        "SELECT position_key, market, account, is_long, size_tokens_raw::VARCHAR, "
        "collateral_raw::VARCHAR, status, collateral_token FROM positions")
    ours = {r[0]: r for r in rows}
    want = {position_key(p["market"], p["account"]): p for p in snap["positions"]}
    assert len(want) == len(snap["positions"])
    # every key we hold is a (market, account) the markets know; accounts that only moved
    # margin while flat never had a position and need no row
    assert set(ours) <= set(want)
    for key, p in want.items():
        size = int(p["size"])
        r = ours.get(key)
        if r is None:
            assert size == 0, (block, p)
            continue
        assert r[1:3] == (p["market"].lower(), p["account"].lower()), (block, p)
        signed = int(r[4]) if r[3] else -int(r[4])
        assert signed == size, (block, p)
        assert (r[6] == "open") == (size != 0), (block, p)
        assert r[7] is None
        if size:
            assert int(r[5]) == int(p["margin"]), (block, p)
    # open interest in base units: marketSize = sum |size|, marketSkew = sum size
    _, oi = store.query("SELECT market, is_long, sum(size_tokens_raw)::VARCHAR, count(*) "
                        "FROM positions WHERE status = 'open' GROUP BY ALL")
    rebuilt = {(m, lg): (int(s), n) for m, lg, s, n in oi}
    proxies = set()
    for key_name, m in snap["markets"].items():
        proxy = m["proxy"].lower()
        proxies.add(proxy)
        size, skew = int(m["marketSize"]), int(m["marketSkew"])
        assert (size + skew) % 2 == 0
        long_, short = rebuilt.get((proxy, True), (0, 0)), rebuilt.get((proxy, False), (0, 0))
        assert (long_[0], short[0]) == ((size + skew) // 2, (size - skew) // 2), (block, key_name)
        assert long_[0] + short[0] == sum(abs(int(p["size"])) for p in snap["positions"]
                                          if p["market"].lower() == proxy)
        assert long_[1] == sum(int(p["size"]) > 0 for p in snap["positions"]
                               if p["market"].lower() == proxy), (block, key_name)
        assert short[1] == sum(int(p["size"]) < 0 for p in snap["positions"]
                               if p["market"].lower() == proxy), (block, key_name)
    assert {m for m, _ in rebuilt} <= proxies
    if rebuilt:
        assert_oi_view_sums_open_positions(store)
    else:
        assert store.query("SELECT count(*) FROM open_interest WHERE long_positions + "
                           "short_positions > 0")[1] == [(0,)]
    # markets discovered from MarketAdded, named by their marketKey
    _, found = store.query("SELECT DISTINCT market, name FROM markets")
    assert sorted(found) == sorted((m["proxy"].lower(), k)
                                   for k, m in truth["contracts"]["markets"].items()
                                   if m["addedBlock"] <= block)
    return len(want)


def check_liquidations(store: Store, truth: dict, block: int) -> int:
    _, rows = store.query(
        "SELECT block_number, tx_hash, market, account, position_key, size_after_tokens_raw"
        "::VARCHAR FROM position_changes WHERE kind = 'liquidation'")
    want = [(x["blockNumber"], x["transactionHash"].lower(), x["market"].lower(),
             x["account"].lower(), position_key(x["market"], x["account"]), "0")
            for x in truth["liquidations"] if x["blockNumber"] <= block]
    assert sorted(rows) == sorted(want)
    return len(rows)


def test_backfill_reproduces_market_state_at_every_snapshot(tmp_path, replay_factory, truth,
                                                            block_hashes):
    node = replay_factory(data=DATA, prefix="synthetix")
    cfg = config(tmp_path, node.url, truth, "db", max_block_range=71)
    compared = liquidations = 0
    for snap in truth["snapshots"]:
        assert run_cli("backfill", "--config", str(cfg), "--to", str(snap["blockNumber"]),
                       "--no-progress") == 0
        store = Store(tmp_path / "db.duckdb", read_only=True)
        try:
            compared += check_snapshot(store, snap, truth)
            liquidations = check_liquidations(store, truth, snap["blockNumber"])
            cp = store.load_checkpoint(SOURCE)
            assert cp is not None and (cp.block_number, cp.block_hash) == (
                snap["blockNumber"], block_hashes[snap["blockNumber"]])
            assert store.query("SELECT count(*) FROM quarantine")[1] == [(0,)]
        finally:
            store.close()
    assert len(truth["snapshots"]) == 13
    assert compared == 944  # (snapshot, market, account) rows, as the recording's README says
    assert liquidations == len(truth["liquidations"]) == truth["stats"]["liquidations"] == 9
    assert truth["snapshots"][-1]["blockNumber"] == truth["headBlock"]
    head = truth["snapshots"][-1]["positions"]
    assert len(head) == 103 and sum(int(p["size"]) != 0 for p in head) == 74

    # resumed run (13 stops) == one uninterrupted run
    one = config(tmp_path, node.url, truth, "one")
    assert run_cli("backfill", "--config", str(one), "--no-progress") == 0
    assert dump(tmp_path / "db.duckdb") == dump(tmp_path / "one.duckdb")
