"""The /metrics analytics gauges on the GMX v1 recording, against the real Vault's state (the
truth snapshots), computed here from the truth alone: open interest per market and side, skew,
the protocol's and each market's top-10 share. Also: the daemon's render carries them."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from decimal import Decimal

import pytest

from indexer.market_gauges import MarketGauges
from indexer.metrics import Metrics
from indexer.store import Store
from tests.helpers import run_cli, write_config

pytestmark = pytest.mark.replay

SAMPLE = re.compile(r'^(perp_indexer_\w+)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse(lines: list[str]) -> dict[str, dict[frozenset[tuple[str, str]], float]]:
    """metric name -> {labels: value}; every sample line must parse, every series be unique."""
    out: dict[str, dict[frozenset[tuple[str, str]], float]] = defaultdict(dict)
    for line in lines:
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, line
        labels = frozenset(LABEL.findall(m.group(2) or ""))
        assert labels not in out[m.group(1)], f"duplicate series: {line}"
        out[m.group(1)][labels] = float(m.group(3))
    return out


def top10(sizes: list[int]) -> float:
    desc = sorted(sizes, reverse=True)
    return float(Decimal(sum(desc[:10])) / Decimal(sum(sizes)))


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)


@pytest.mark.parametrize("snap_index", [6, 12])
def test_gauges_equal_the_vault_at_a_snapshot(tmp_path, replay_factory, gmx_v1_truth, snap_index):
    snap = gmx_v1_truth["snapshots"][snap_index]
    node = replay_factory()
    cfg = write_config(tmp_path / "c.yaml", node.url, gmx_v1_truth["contracts"]["Vault"],
                       gmx_v1_truth["deploymentBlock"])
    assert run_cli("backfill", "--config", str(cfg), "--to", str(snap["blockNumber"]),
                   "--no-progress") == 0
    gauges = MarketGauges()
    store = Store(tmp_path / "db.duckdb", read_only=True)
    try:
        gauges.refresh(store.query)
    finally:
        store.close()
    got = parse(gauges.samples())
    assert got["perp_indexer_market_gauges_errors_total"] == {frozenset(): 0.0}

    # open interest per market and side: the Vault's per-token sums of position sizes (1e30 USD)
    oi = got["perp_indexer_open_interest_usd"]
    want_markets = {sym: v for sym, v in snap["openInterest"].items()
                    if int(v["longOpenInterestUsd"]) + int(v["shortOpenInterestUsd"]) > 0}
    assert want_markets
    assert {dict(k)["market"] for k in oi} == set(want_markets)
    for labels, value in oi.items():
        d = dict(labels)
        assert (d["chain_id"], d["protocol"]) == (str(gmx_v1_truth["chainId"]), "gmx_v1")
        want = want_markets[d["market"]]
        raw = int(want["longOpenInterestUsd" if d["side"] == "long" else "shortOpenInterestUsd"])
        assert close(value, float(Decimal(raw) / Decimal(10**30))), (d, value, raw)
    # skew per market, from the same truth
    skews = got["perp_indexer_market_skew"]
    assert len(skews) == len(want_markets)
    for labels, value in skews.items():
        want = want_markets[dict(labels)["market"]]
        lg, sh = int(want["longOpenInterestUsd"]), int(want["shortOpenInterestUsd"])
        assert close(value, float(Decimal(lg - sh) / Decimal(lg + sh)))

    # top-10 share: per account, over the truth's open positions (protocol, then each market)
    by_account: dict[str, int] = defaultdict(int)
    by_market: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    symbol = {t["address"].lower(): sym for sym, t in gmx_v1_truth["tokens"].items()}
    for p in snap["positions"]:
        if int(p["size"]) > 0:
            by_account[p["account"].lower()] += int(p["size"])
            by_market[symbol[p["indexToken"].lower()]][p["account"].lower()] += int(p["size"])
    share = got["perp_indexer_top10_share"]
    assert len(share) == 1
    assert close(next(iter(share.values())), top10(list(by_account.values())))
    market_share = got["perp_indexer_market_top10_share"]
    assert {dict(k)["market"] for k in market_share} == set(by_market)
    for labels, value in market_share.items():
        assert close(value, top10(list(by_market[dict(labels)["market"]].values())))

    # every market named has an asset, and the asset gauge is the sum of its markets
    assets = got["perp_indexer_asset_open_interest_usd"]
    per_asset: dict[tuple[str, str], float] = defaultdict(float)
    for labels, value in oi.items():
        d = dict(labels)
        assert d["asset"], d
        per_asset[(d["asset"], d["side"])] += value
    assert {(dict(k)["asset"], dict(k)["side"]): v for k, v in assets.items()}.keys() == \
        per_asset.keys()
    for labels, value in assets.items():
        d = dict(labels)
        assert math.isclose(value, per_asset[(d["asset"], d["side"])], rel_tol=1e-12)
    # open imbalance episodes: one per market whose skew at the snapshot (the ledger's last
    # hour) is at or past the default threshold 0.5 on that side; one venue, so per asset too
    flagged = {"long": 0, "short": 0}
    for want in want_markets.values():
        lg, sh = int(want["longOpenInterestUsd"]), int(want["shortOpenInterestUsd"])
        skew = Decimal(lg - sh) / Decimal(lg + sh)
        if abs(skew) >= Decimal("0.5"):
            flagged["long" if skew > 0 else "short"] += 1
    assert sum(flagged.values()) > 0
    episodes = got["perp_indexer_imbalance_episodes_open"]
    assert {(dict(k)["scope"], dict(k)["side"]): v for k, v in episodes.items()} == {
        (scope, side): float(flagged[side]) for scope in ("market", "asset")
        for side in ("long", "short")}

    # the daemon's /metrics text carries them after its operational figures
    metrics = Metrics({"gmx_v1_dev": "dev"}, 60.0)
    store = Store(tmp_path / "db.duckdb", read_only=True)
    try:
        metrics.market_gauges.refresh(store.query)
    finally:
        store.close()
    text = metrics.render()
    assert "perp_indexer_up" in text and text.count("# TYPE perp_indexer_open_interest_usd ") == 1
    assert parse(text.splitlines())["perp_indexer_open_interest_usd"] == oi
