"""The dYdX simulator's own invariants (tests/dydx_chain/simulator.py): what it writes must be a
chain that balances, and its truth must be what its blocks say. Reads the recording with plain
JSON, not with the indexer's decoder."""

from __future__ import annotations

import base64
import json
from collections import Counter, defaultdict
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from tests.dydx_chain.simulator import (
    ADDED_PERPETUAL,
    FINAL_SETTLED_PERPETUAL,
    MATCH_KEYS,
    Truth,
    bech32_address,
    fill_price,
    funding_paid,
    mul_ppm_round_up,
    next_entry,
    rfc3339,
    simulate,
)

START, BLOCKS, FIXED_AT, OI_FROM, MALFORMED, BASE64_BELOW = (
    12_791_400, 600, 12_791_712, 12_791_650, 12_791_555, 12_791_430)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Truth]:
    out = tmp_path_factory.mktemp("dydx_sim")
    truth = simulate(out, seed=7, start_height=START, blocks=BLOCKS,
                     settled_funding_fixed_at=FIXED_AT, open_interest_from=OI_FROM,
                     base64_attributes_below=BASE64_BELOW, accounts=25, malformed_at=MALFORMED)
    return out, truth


def blocks(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "blocks.jsonl").read_text().splitlines()]


def pairs(event: dict[str, Any], height: int) -> list[tuple[str, str]]:
    attributes = event["attributes"]
    if height < BASE64_BELOW:
        return [(base64.b64decode(a["key"]).decode(), base64.b64decode(a["value"]).decode())
                for a in attributes]
    return [(a["key"], a["value"]) for a in attributes]


def tx_events(doc: dict[str, Any]) -> list[tuple[int, str, list[tuple[str, str]]]]:
    """(tx index, type, attributes) of every transaction event of a height."""
    height = doc["height"]
    return [(i, e["type"], pairs(e, height))
            for i, tx in enumerate(doc["block_results"]["txs_results"] or ())
            for e in tx["events"]]


def valid_matches(doc: dict[str, Any]) -> list[dict[str, str]]:
    out = []
    for _, kind, attrs in tx_events(doc):
        fields = dict(attrs)
        if kind == "match" and "perpetual_id" in fields and fields[
                "taker_perpetual_quantums_delta_base_quantums"].lstrip("-").isdigit():
            out.append(fields)
    return out


def test_every_match_offsets_and_carries_the_chains_attributes(run):
    out, truth = run
    matches = 0
    for doc in blocks(out):
        for _, kind, attrs in tx_events(doc):
            if kind != "match":
                continue
            keys = [k for k, _ in attrs]
            fields = dict(attrs)
            if "perpetual_id" not in fields or not fields[
                    "taker_perpetual_quantums_delta_base_quantums"].lstrip("-").isdigit():
                continue  # the two malformed ones
            matches += 1
            want = list(MATCH_KEYS) + (["msg_index"] if doc["height"] >= FIXED_AT else [])
            assert keys == want
            n = {k: int(v) for k, v in fields.items()
                 if k.endswith(("quantums", "_number", "_id"))}
            taker = n["taker_perpetual_quantums_delta_base_quantums"]
            assert taker == -n["maker_perpetual_quantums_delta_base_quantums"] != 0
            # the fill's quote quantums, seen from both sides, must agree
            maker_fill = (n["maker_quote_balance_delta_quote_quantums"]
                          + n["maker_order_fee_quote_quantums"] + n["maker_builder_fee_quantums"])
            taker_fill = (n["taker_quote_balance_delta_quote_quantums"]
                          + n["taker_order_fee_quote_quantums"] + n["taker_builder_fee_quantums"]
                          + n["insurance_fund_delta_quote_quantums"])
            assert taker_fill == -maker_fill != 0
            assert (taker > 0) == (taker_fill < 0)  # the buyer pays
            if fields["is_liquidation"] == "true":
                assert n["taker_order_fee_quote_quantums"] == 0
                assert n["insurance_fund_delta_quote_quantums"] != 0
                assert n["maker_order_fee_quote_quantums"] >= 0
            if fields["is_deleverage"] == "true":
                assert n["taker_order_fee_quote_quantums"] == n["maker_order_fee_quote_quantums"]
                assert n["maker_order_fee_quote_quantums"] == 0
    assert matches == truth.matches > 1000


def test_replaying_the_blocks_gives_the_truth(run):
    """Positions summed from the match events, and the settled_funding events (both key forms),
    equal the simulator's own state and records."""
    out, truth = run
    held: dict[tuple[str, int, int], int] = defaultdict(int)
    settled = []
    checkpoints = set(truth.heights)
    for doc in blocks(out):
        height = doc["height"]
        for tx_index, kind, attrs in tx_events(doc):
            if kind == "settled_funding":
                keys = [k for k, _ in attrs]
                if height < FIXED_AT:
                    assert keys == ["subaccount", "subaccount", "perpetual_id",
                                    "funding_paid_quote_quantums"]
                else:
                    assert keys == ["subaccount", "subaccount_number", "perpetual_id",
                                    "funding_paid_quote_quantums", "msg_index"]
                settled.append({"height": height, "tx_index": tx_index, "owner": attrs[0][1],
                                "number": int(attrs[1][1]), "perpetual_id": int(attrs[2][1]),
                                "paid": int(attrs[3][1])})
        for m in valid_matches(doc):
            perp = int(m["perpetual_id"])
            for side in ("taker", "maker"):
                key = (m[f"{side}_subaccount"], int(m[f"{side}_subaccount_number"]), perp)
                held[key] += int(m[f"{side}_perpetual_quantums_delta_base_quantums"])
        if height in checkpoints:
            assert {k: q for k, q in held.items() if q} == truth.positions(height), height
    assert settled == truth.settled_funding
    assert any(x["height"] < FIXED_AT for x in settled)
    assert any(x["height"] >= FIXED_AT for x in settled)
    assert any(x["tx_index"] > 0 for x in settled)  # a deposit or withdrawal settled funding


def test_positions_balance_and_open_interest_is_the_longs(run):
    out, truth = run
    states = [json.loads(line) for line in (out / "state.jsonl").read_text().splitlines()]
    assert states[0]["height"] == START
    compared = 0
    for height in truth.heights:
        per_perp: Counter[int] = Counter()
        for (_, _, perp), quantums in truth.positions(height).items():
            per_perp[perp] += quantums
        assert not any(per_perp.values()), height
        longs: Counter[int] = Counter()
        for (_, _, perp), quantums in truth.positions(height).items():
            longs[perp] += max(quantums, 0)
        assert {p: longs[p] for p in truth.open_interest(height)} == truth.open_interest(height)
        state = [s for s in states if s["height"] <= height][-1]
        listed = [int(p["params"]["id"]) for p in state["perpetuals"]]
        assert listed == sorted(truth.open_interest(height)) == sorted(truth.funding_index(height))
        assert {int(p["params"]["id"]): int(p["funding_index"]) for p in state["perpetuals"]} == \
            truth.funding_index(height)
        if height >= OI_FROM:
            assert {int(p["params"]["id"]): int(p["open_interest"])
                    for p in state["perpetuals"]} == truth.open_interest(height)
            compared += 1
        else:
            assert all("open_interest" not in p for p in state["perpetuals"])
    assert compared >= 5


def test_the_scenario_has_every_case(run):
    out, truth = run
    docs = blocks(out)
    kinds = Counter(x["kind"] for x in truth.liquidations)
    assert kinds["liquidation"] and kinds["deleverage"] and kinds["final_settlement"]
    added = truth.markets[ADDED_PERPETUAL]["added_at"]
    settled_at = truth.markets[FINAL_SETTLED_PERPETUAL]["final_settlement_at"]
    assert START < added < settled_at < truth.last_height
    per_block = []
    flips = 0
    for doc in docs:
        height = doc["height"]
        matches = valid_matches(doc)
        per_block.append(len(matches))
        for m in matches:
            perp = int(m["perpetual_id"])
            if perp == ADDED_PERPETUAL:
                assert height > added
                assert int(m["taker_subaccount_number"]) >= 128
            if perp == FINAL_SETTLED_PERPETUAL and height > settled_at:
                assert m["is_deleverage"] == "true"
    held: dict[tuple[str, int, int], int] = defaultdict(int)
    for _, owner, number, perp, delta, _ in truth.fills:
        before = held[(owner, number, perp)]
        held[(owner, number, perp)] += delta
        flips += before * held[(owner, number, perp)] < 0
    assert flips >= 5
    assert not any(p == FINAL_SETTLED_PERPETUAL for _, _, p in truth.positions(truth.last_height))
    assert max(per_block) >= 150
    assert sum(1 for doc in docs if doc["block_results"]["txs_results"] is None) >= 3
    assert sum(1 for n in per_block if n == 0) > len(docs) // 3
    assert {n for _, n, _ in truth.positions(truth.last_height)} >= {0, 128}
    assert [h for h, _ in truth.malformed] == [MALFORMED, MALFORMED]
    ticks = [doc["height"] for doc in docs for e in doc["block_results"]["finalize_block_events"]
             or () if e["type"] == "new_epoch"
             and dict(pairs(e, doc["height"]))["epoch_info_name"] == "funding-tick"]
    assert len(ticks) >= 8
    for doc in docs:  # the mode attribute: the SDK's own (indexed) from v4, else the node's
        for e in doc["block_results"]["finalize_block_events"] or ():
            last = e["attributes"][-1]
            assert last["index"] == (doc["height"] >= FIXED_AT)
    assert all(docs[i]["block"]["block"]["header"]["last_block_id"]["hash"]
               == docs[i - 1]["block"]["block_id"]["hash"] for i in range(1, len(docs)))


def test_truth_round_trips_and_replays_between_checkpoints(run):
    out, truth = run
    loaded = Truth.load(out)
    assert loaded == truth
    # drop every other checkpoint: replaying fills from the one before must give the snapshot
    kept = truth.heights[::2]
    sparse = Truth.load(out)
    sparse.heights = kept
    for height in truth.heights[1::2]:
        assert sparse.positions(height) == truth.positions(height)
        assert sparse.entry_price(height) == truth.entry_price(height)
    assert len(truth.entry_price(truth.last_height)) == len(truth.positions(truth.last_height))


def test_deterministic_for_a_seed(tmp_path):
    kwargs = {"start_height": 100, "blocks": 120, "accounts": 8}
    simulate(tmp_path / "a", seed=5, **kwargs)
    simulate(tmp_path / "b", seed=5, **kwargs)
    simulate(tmp_path / "c", seed=6, **kwargs)
    for name in ("blocks.jsonl", "state.jsonl", "truth.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "blocks.jsonl").read_bytes() != \
        (tmp_path / "c" / "blocks.jsonl").read_bytes()


def test_the_chains_arithmetic():
    # settlement: the ceiling of delta * quantums / 1e6 (Euclidean Div of the negated product)
    assert funding_paid(3, 1_000_001) == 4
    assert funding_paid(-3, 1_000_001) == -3
    assert funding_paid(1, -1) == 0
    assert funding_paid(-1, -1) == 1
    # fees and rebates round towards +inf
    assert mul_ppm_round_up(1_000_001, 500) == 501
    assert mul_ppm_round_up(1_000_001, -110) == -110
    # BTC: 1e6 base quantums (1e-4 BTC) at subticks 2_868_800_000 (qce -9) = 2_868_800 quote q.
    assert fill_price(2_868_800, 1_000_000, -10) == Fraction(28_688)
    assert next_entry(0, Fraction(0), 0, 5, Fraction(10)) == (Fraction(10), 5)
    assert next_entry(5, Fraction(10), 5, 5, Fraction(20)) == (Fraction(15), 10)
    assert next_entry(10, Fraction(15), 10, -4, Fraction(99)) == (Fraction(15), 10)
    assert next_entry(6, Fraction(15), 10, -9, Fraction(7)) == (Fraction(7), 9)  # a flip
    # the cosmoshub fee collector, in dYdX's prefix
    fee_collector = bytes.fromhex("f1829676db577682e944fc3493d451b67ff3e29f")
    assert bech32_address(fee_collector, "cosmos") == "cosmos17xpfvakm2amg962yls6f84z3kell8c5lserqta"
    assert rfc3339(1_712_566_800_123_400_000) == "2024-04-08T09:00:00.1234Z"
    assert rfc3339(1_712_566_800_000_000_000) == "2024-04-08T09:00:00Z"
