"""Synthetix PerpsV2 liquidation prices on the shared recording of the unmodified contracts: at
every snapshot, for every open position the markets report, just past our price the
contract's ``_canLiquidate`` is true and just short of it false. The rule is evaluated here in
the contract's own fixed-point arithmetic, from the truth's positions and the settings and
funding sequence decoded from the raw logs with eth_abi (funding as recorded: no accrual
since the market's last recompute)."""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import eth_abi
import pytest

from indexer.store import Store
from tests.helpers import SHARED, ReplayNode, run_cli, write_config

pytestmark = pytest.mark.replay

DATA = SHARED / "data" / "synthetix_devnet"
UNIT = 10**18
PARAMETER_UPDATED = "0xb1e024a1aed9a1f08ef2258cedd5c544e48dcb5befc1ec2aa0ff9ea60997d14f"
FUNDING_RECOMPUTED = "0xfc48da481fcf86ce12ffab287c2f0876771bfd89d024ed05e59d8640035d603e"
GLOBALS = {"0x19aa707c9ee917e97ea0ac9146e39c123d4bd88e1f2cd719d32a8a54fe409902": "minKeeperFee",
           "0x5f76c6c4116194987a36d1002399cf6129c9623bb38b557dd907e10515071a52": "maxKeeperFee",
           "0xc20b071f9997836faebec2ea68df94cb8cd01c8721f2c0b973443d8316eaa070":
               "liquidationFeeRatio",
           "0x6b3f66ae1ca3399d67740353b4871b7b1a7bd353c6d98a441be97133ec1d4933":
               "keeperLiquidationFee"}


@pytest.fixture(scope="module")
def truth() -> dict:
    return json.loads((DATA / "synthetix_truth.json").read_text())


@pytest.fixture(scope="module")
def logs() -> list[dict]:
    with gzip.open(DATA / "synthetix_logs.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory, truth: dict) -> Path:
    tmp = tmp_path_factory.mktemp("synthetix_analytics")
    node = ReplayNode(DATA, "synthetix")
    try:
        settings = truth["contracts"]["PerpsV2MarketSettings"]
        cfg = write_config(
            tmp / "c.yaml", node.url, truth["contracts"]["FuturesMarketManager"],
            truth["deploymentBlock"], adapter="synthetix_perps_v2", chain_id=truth["chainId"],
            protocol_extra=f'      market_settings: {{ address: "{settings}", '
                           f'start_block: {truth["deploymentBlock"]} }}\n')
        assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 0
    finally:
        node.stop()
    return tmp / "db.duckdb"


def text(word: str) -> str:
    return bytes.fromhex(word[2:]).rstrip(b"\0").decode()


def settings_at(logs: list[dict], settings: str, block: int) -> dict[tuple[str | None, str], int]:
    out: dict[tuple[str | None, str], int] = {}
    for lg in logs:
        if lg["address"] != settings.lower() or int(lg["blockNumber"], 16) > block:
            continue
        topic = lg["topics"][0]
        if topic == PARAMETER_UPDATED:
            (value,) = eth_abi.decode(["uint256"], bytes.fromhex(lg["data"][2:]))
            out[(text(lg["topics"][1]), text(lg["topics"][2]))] = value
        elif topic in GLOBALS:
            (value,) = eth_abi.decode(["uint256"], bytes.fromhex(lg["data"][2:]))
            out[(None, GLOBALS[topic])] = value
    return out


def funding_sequences(logs: list[dict], block: int) -> dict[str, dict[int, int]]:
    out: dict[str, dict[int, int]] = defaultdict(lambda: {0: 0})  # entry 0: initialised to 0
    for lg in logs:
        if lg["topics"][0] == FUNDING_RECOMPUTED and int(lg["blockNumber"], 16) <= block:
            funding, _, index, _ = eth_abi.decode(["int256", "int256", "uint256", "uint256"],
                                                  bytes.fromhex(lg["data"][2:]))
            out[lg["address"]][index] = funding
    return out


def mul(x: int, y: int) -> int:
    """SafeDecimalMath.multiplyDecimal: x * y / UNIT, truncated toward zero."""
    q = abs(x * y) // UNIT
    return q if x * y >= 0 else -q


def div(x: int, y: int) -> int:
    q = abs(x * UNIT) // abs(y)
    return q if (x >= 0) == (y > 0) else -q


def can_liquidate(p: dict, price: int, funding: int, s: dict[str, int], g: dict[str, int]) -> bool:
    """PerpsV2MarketBase._canLiquidate at ``price`` (1e18), with net funding per unit
    ``funding`` (the recorded sequence's latest entry minus the position's)."""
    size, margin, last = int(p["size"]), int(p["margin"]), int(p["lastPrice"])
    accrued = 0 if int(p["lastFundingIndex"]) == 0 else mul(size, funding)
    notional = abs(mul(size, price))
    premium = mul(mul(div(abs(size), s["skewScale"]), notional), s["liquidationPremiumMultiplier"])
    remaining = max(0, margin + mul(size, price - last) + accrued - premium)
    proportional = mul(mul(abs(size), price), g["liquidationFeeRatio"])
    fee = max(min(proportional, g["maxKeeperFee"]), g["minKeeperFee"])
    buffer = mul(mul(abs(size), price), s["liquidationBufferRatio"])
    return remaining <= buffer + fee + g["keeperLiquidationFee"]


def test_liquidation_prices_follow_can_liquidate_at_every_snapshot(db, truth, logs):
    settings = truth["contracts"]["PerpsV2MarketSettings"]
    keys = {m["proxy"]: key for key, m in truth["contracts"]["markets"].items()}
    checked = never = 0
    with Store(db, read_only=True) as store:
        for snap in truth["snapshots"]:
            block = snap["blockNumber"]
            values = settings_at(logs, settings, block)
            g = {name: v for (market, name), v in values.items() if market is None}
            sequences = funding_sequences(logs, block)
            rows = {(m, a): (price, note) for m, a, price, note in store.con.execute(
                "SELECT market, account, liquidation_price_usd, liquidation_price_note "
                "FROM position_risk_at(?)", [block]).fetchall()}
            open_ = [p for p in snap["positions"] if int(p["size"]) != 0]
            assert set(rows) == {(p["market"], p["account"]) for p in open_}
            for p in open_:
                market = p["market"]
                assert len(sequences[market]) == int(snap["markets"][keys[market]]
                                                      ["fundingSequenceLength"])
                s = {name: v for (k, name), v in values.items() if k == keys[market]}
                seq = sequences[market]
                funding = seq[max(seq)] - seq[int(p["lastFundingIndex"])]
                price, note = rows[(market, p["account"])]
                if price is None:  # a long whose margin covers a fall to 0
                    assert int(p["size"]) > 0 and "fall of the price to 0" in note
                    for anywhere in (1, int(p["lastPrice"]), 10 * int(p["lastPrice"])):
                        assert not can_liquidate(p, anywhere, funding, s, g), (block, p)
                    never += 1
                    continue
                raw = int(Decimal(price) * UNIT)
                above, below = raw + raw // 10**9, raw - raw // 10**9
                safe, unsafe = (above, below) if int(p["size"]) > 0 else (below, above)
                assert not can_liquidate(p, safe, funding, s, g), (block, p)
                assert can_liquidate(p, unsafe, funding, s, g), (block, p)
                checked += 1
    assert checked + never == sum(1 for snap in truth["snapshots"] for p in snap["positions"]
                                  if int(p["size"]) != 0)
    assert checked > 450 and never < checked / 10


def test_without_the_settings_contract_the_reason_is_given(tmp_path, truth):
    node = ReplayNode(DATA, "synthetix")
    try:
        cfg = write_config(tmp_path / "c.yaml", node.url,
                           truth["contracts"]["FuturesMarketManager"], truth["deploymentBlock"],
                           adapter="synthetix_perps_v2", chain_id=truth["chainId"])
        assert run_cli("backfill", "--config", str(cfg), "--to", "400", "--no-progress") == 0
    finally:
        node.stop()
    with Store(tmp_path / "db.duckdb", read_only=True) as store:
        notes = store.con.execute("SELECT DISTINCT liquidation_price_note, "
                                  "liquidation_price_usd FROM position_risk").fetchall()
    assert len(notes) == 1 and "contracts.market_settings" in notes[0][0] and notes[0][1] is None
