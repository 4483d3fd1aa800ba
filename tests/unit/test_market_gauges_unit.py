"""The analytics gauges' label bounds on a small hand-made database, their failure path, and the
Grafana dashboard's queries against the metric names /metrics renders."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from indexer.market_gauges import METRICS, MarketGauges
from indexer.metrics import Metrics
from indexer.store import Store

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana" / "perp-indexer-dashboard.json"
SAMPLE = re.compile(r'^(perp_indexer_\w+)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

#: protocol -> [(market, symbol, asset, long USD, short USD)]: 9 markets on one venue, 2 on another
MARKETS: dict[str, list[tuple[str, str | None, str | None, str, str]]] = {
    "gmx_v2": [(f"0x{i:040x}", sym, asset, f"{1000 * (i + 1)}.000000000000000001",
                f"{37 * i + 5}.25")
               for i, (sym, asset) in enumerate([
                   ("ETH/USD", "ETH"), ("ETH/USD", "ETH"), ("BTC/USD", "BTC"), (None, None),
                   ("SOL/USD", "SOL"), ("LINK/USD", "LINK"), ("ARB/USD", "ARB"),
                   ("DOGE/USD", "DOGE"), ('we"ird\\sym\nbol', "WEIRD")])],
    "gtrade": [("0", "ETH/USD", "ETH", "500", "700"), ("1", "BTC/USD", "BTC", "0", "10")],
}
WHALE = "0x" + "ab" * 20


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "db.duckdb") as s:
        for protocol, markets in MARKETS.items():
            for i, (market, symbol, asset, long_, short) in enumerate(markets):
                s.con.execute("INSERT INTO markets (chain_id, protocol, source, block_number, "
                              "log_index, market, symbol, asset) VALUES (42161, ?, ?, 1, ?, ?, ?, ?)",
                              [protocol, protocol, i, market, symbol, asset])
                for is_long, usd in ((True, long_), (False, short)):
                    if Decimal(usd) == 0:
                        continue
                    # the long side split over two accounts (the whale holds most of it)
                    parts = ([(WHALE, Decimal(usd) - 1), (f"0x{i:040x}", Decimal(1))] if is_long
                             else [(f"0x{i + 100:040x}", Decimal(usd))])
                    for account, size in parts:
                        s.con.execute(
                            "INSERT INTO positions (chain_id, protocol, source, position_key, "
                            "account, market, is_long, size_usd, status, updated_block, size_raw) "
                            "VALUES (42161, ?, ?, ?, ?, ?, ?, ?, 'open', 1, ?::BIGNUM)",
                            [protocol, protocol, f"{market}/{account}/{is_long}", account, market,
                             is_long, size, str(int(size * 10**18))])
        yield s


def parse(lines: list[str]) -> dict[str, dict[frozenset[tuple[str, str]], float]]:
    out: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    for line in lines:
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, line
        labels = frozenset(LABEL.findall(m.group(2) or ""))
        assert labels not in out.setdefault(m.group(1), {}), f"duplicate series: {line}"
        out[m.group(1)][labels] = float(m.group(3))
    return out


def test_markets_over_the_cap_are_summed_into_other(store):
    gauges = MarketGauges(max_markets=5, max_assets=3)
    gauges.refresh(store.query)
    got = parse(gauges.samples())
    oi = got["perp_indexer_open_interest_usd"]
    for protocol, markets in MARKETS.items():
        mine = {dict(k)["market"]: v for k, v in oi.items()
                if dict(k)["protocol"] == protocol and dict(k)["side"] == "long"}
        ranked = sorted(markets, key=lambda m: -(Decimal(m[3]) + Decimal(m[4])))
        if len(markets) <= 5:
            assert len(mine) == len(markets) and "other" not in mine
            continue
        for side, col in (("long", 3), ("short", 4)):
            series = {dict(k)["market"]: v for k, v in oi.items()
                      if dict(k)["protocol"] == protocol and dict(k)["side"] == side}
            assert len(series) == 5 + 1
            assert series["other"] == float(sum(Decimal(m[col]) for m in ranked[5:]))
            kept = {k: v for k, v in series.items() if k != "other"}
            assert sorted(kept.values()) == sorted(float(Decimal(m[col])) for m in ranked[:5])
        # the kept are the largest; labels are symbols, never an account
        assert set(mine) - {"other"} == {"LINK/USD", "ARB/USD", "DOGE/USD",
                                         'we\\"ird\\\\symbol', "SOL/USD"}
    text = "\n".join(gauges.samples())
    assert WHALE not in text and "\nbol" not in text
    # skew and per-market top-10 share: the kept markets (skew of "other" too), no more
    skews = {dict(k)["market"] for k in got["perp_indexer_market_skew"]
             if dict(k)["protocol"] == "gmx_v2"}
    assert len(skews) == 6 and "other" in skews
    shares = {dict(k)["market"] for k in got["perp_indexer_market_top10_share"]
              if dict(k)["protocol"] == "gmx_v2"}
    assert shares == skews - {"other"}
    assert {dict(k)["protocol"] for k in got["perp_indexer_top10_share"]} == {"gmx_v2", "gtrade"}
    # assets over venues: 3 largest + other, the sum of the rest
    assets = {dict(k)["asset"]: v for k, v in got["perp_indexer_asset_open_interest_usd"].items()
              if dict(k)["side"] == "short"}
    per_asset: dict[str, Decimal] = {}
    for markets in MARKETS.values():
        for _, _, asset, long_, short in markets:
            if asset:
                per_asset[asset] = per_asset.get(asset, Decimal(0)) + Decimal(long_) + \
                    Decimal(short)
    top = sorted(per_asset, key=lambda a: -per_asset[a])
    assert set(assets) == set(top[:3]) | {"other"}


def test_one_refresh_is_one_statement(store):
    """One SELECT is one snapshot: the market, asset, share and episode figures of a refresh
    come from the same database state, even if a writer commits in between."""
    seen: list[str] = []

    def run(sql: str) -> tuple[list[str], list[tuple]]:
        seen.append(sql)
        return store.query(sql)

    MarketGauges().refresh(run)
    assert len(seen) == 1


def test_two_markets_of_one_symbol_keep_their_addresses(store):
    gauges = MarketGauges()
    gauges.refresh(store.query)
    names = {dict(k)["market"] for k in parse(gauges.samples())["perp_indexer_open_interest_usd"]
             if dict(k)["protocol"] == "gmx_v2"}
    assert {f"ETH/USD@0x{0:040x}", f"ETH/USD@0x{1:040x}", f"0x{3:040x}", "BTC/USD"} <= names
    assert len(names) == 9


def test_a_failed_refresh_keeps_the_previous_values(store):
    gauges = MarketGauges()
    gauges.refresh(store.query)
    before = [line for line in gauges.samples() if "market_gauges_" not in line]

    def broken(sql: str) -> tuple[list[str], list[tuple]]:
        raise RuntimeError("database gone")

    gauges.refresh(broken)
    after = gauges.samples()
    assert [line for line in after if "market_gauges_" not in line] == before
    assert "perp_indexer_market_gauges_errors_total 1.0" in after


def test_every_metric_has_help_and_type_once(store):
    metrics = Metrics({"gmx_v2_arb": "arbitrum"}, 60.0)
    metrics.market_gauges.refresh(store.query)
    text = metrics.render()
    for name in METRICS:
        assert text.count(f"# TYPE perp_indexer_{name} ") == 1, name
        assert text.count(f"# HELP perp_indexer_{name} ") == 1, name


def test_dashboard_queries_use_rendered_metrics(store):
    dashboard = json.loads(DASHBOARD.read_text())
    metrics = Metrics({"gmx_v2_arb": "arbitrum"}, 60.0,
                      rpc_errors=lambda: {("https://rpc.example/…", "timeout"): 1})
    metrics.market_gauges.refresh(store.query)
    rendered = set(re.findall(r"^# TYPE (perp_indexer_\w+) ", metrics.render(), re.M))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
              for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert len(exprs) >= 10
    used = {n for e in exprs for n in re.findall(r"perp_indexer_\w+", e)}
    assert used and used <= rendered, used - rendered
    assert {"perp_indexer_open_interest_usd", "perp_indexer_market_skew",
            "perp_indexer_top10_share", "perp_indexer_imbalance_episodes_open",
            "perp_indexer_head_lag_blocks", "perp_indexer_rows_written_per_second",
            "perp_indexer_rpc_errors_total", "perp_indexer_reorgs_total"} <= used
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"chain", "protocol", "asset"}
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["__inputs"][0]["name"] == "DS_PROMETHEUS"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
