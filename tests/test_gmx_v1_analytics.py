"""The analytics views on the shared recording of the unmodified GMX v1 contracts, each checked
against numbers computed here without our tables: the Vault's own state at the truth snapshots,
its recorded eth_call answers, and the raw logs decoded in the test with eth_abi."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import eth_abi
import pytest

from indexer.store import Store, to_decimal18
from tests.helpers import GMX_V1_DATA, ReplayNode, run_cli, write_config

pytestmark = pytest.mark.replay

INCREASE = "0x2fe68525253654c21998f35787a8d0f361905ef647c854092430ab65f2f15022"
DECREASE = "0x93d75d64d1f84fc6f430a64fc578bdd4c1e090e90ea2d51773e626d19de56d30"
LIQUIDATE = "0x2e1f85a64a2f22cf2f0c42584e7c919ed4abe8d53675cff0f62bf1e95a1c676f"
FUNDING = "0xa146fc154e1913322e9817d49f0d5c37466c24326e15de10e739a948be815eab"
POSITION_EVENT = ["bytes32", "address", "address", "address", "uint256", "uint256", "bool",
                  "uint256", "uint256"]
LIQUIDATE_EVENT = ["bytes32", "address", "address", "address", "bool", "uint256", "uint256",
                   "uint256", "int256", "uint256"]
#: Getter selectors of the Vault settings the liquidation rule reads (keccak of the signatures).
SETTINGS = {"marginFeeBasisPoints": "0x318bc689", "liquidationFeeUsd": "0x174d2694",
            "maxLeverage": "0xae3302c2"}
USD = 10**30


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory, gmx_v1_truth: dict) -> Path:
    tmp = tmp_path_factory.mktemp("gmx_v1_analytics")
    node = ReplayNode(GMX_V1_DATA, "gmx_v1")
    try:
        cfg = write_config(tmp / "c.yaml", node.url, gmx_v1_truth["contracts"]["Vault"],
                           gmx_v1_truth["deploymentBlock"], max_block_range=150)
        assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 0
    finally:
        node.stop()
    return tmp / "db.duckdb"


def query(db: Path, sql: str, *params: object) -> list[tuple]:
    with Store(db, read_only=True) as store:
        return store.con.execute(sql, list(params)).fetchall()


def decoded_logs(gmx_v1_logs: list[dict], vault: str) -> list[tuple[str, dict, tuple]]:
    """(topic0, log, decoded values) of the Vault's position and funding logs."""
    types = {INCREASE: POSITION_EVENT, DECREASE: POSITION_EVENT, LIQUIDATE: LIQUIDATE_EVENT,
             FUNDING: ["address", "uint256"]}
    out = []
    for lg in gmx_v1_logs:
        topic = lg["topics"][0]
        if lg["address"] == vault.lower() and topic in types:
            out.append((topic, lg, eth_abi.decode(types[topic], bytes.fromhex(lg["data"][2:]))))
    return out


def hour_of(lg: dict) -> datetime:
    t = datetime.fromtimestamp(int(lg["blockTimestamp"], 16), UTC)
    return t.replace(minute=0, second=0, microsecond=0, tzinfo=None)


def settings_at(block: int) -> dict[str, int]:
    """The Vault's settings at ``block``, from the recorded eth_call answers."""
    calls = json.loads((GMX_V1_DATA / "gmx_v1_calls.json").read_text())
    out: dict[str, int] = {}
    for name, selector in SETTINGS.items():
        answers = sorted((c["fromBlock"], int(c["result"], 16)) for c in calls
                         if c["data"] == selector and c["fromBlock"] <= block)
        out[name] = answers[-1][1]
    return out


def vault_liquidation_state(p: dict, price: int, cum: int, s: dict[str, int]) -> int:
    """VaultUtils.validateLiquidation (gmx-contracts fe55c4ba) at ``price``, in integers:
    0 safe, 1 liquidatable, 2 over max leverage."""
    size, collateral, average = int(p["size"]), int(p["collateral"]), int(p["averagePrice"])
    delta = size * abs(average - price) // average
    has_profit = price > average if p["isLong"] else average > price
    funding_fee = size * (cum - int(p["entryFundingRate"])) // 10**6
    position_fee = size - size * (10**4 - s["marginFeeBasisPoints"]) // 10**4
    fees = funding_fee + position_fee
    if not has_profit and collateral < delta:
        return 1
    remaining = collateral if has_profit else collateral - delta
    if remaining < fees or remaining < fees + s["liquidationFeeUsd"]:
        return 1
    if remaining * s["maxLeverage"] < size * 10**4:
        return 2
    return 0


def test_liquidation_prices_follow_the_vault_rule_at_every_snapshot(db, gmx_v1_truth):
    """Just past our liquidation price the Vault's rule liquidates; just short of it, it does
    not, for every open position of every snapshot (from the truth's positions and rates)."""
    symbols = {t["address"].lower(): sym for sym, t in gmx_v1_truth["tokens"].items()}
    checked = beyond = 0
    for snap in gmx_v1_truth["snapshots"]:
        block = snap["blockNumber"]
        settings = settings_at(block)
        rows = {r[0]: r[1:] for r in query(
            db, "SELECT position_key, liquidation_price_usd, liquidation_price_method, "
                "liquidation_price_note, liquidatable FROM position_risk_at(?)", block)}
        open_ = [p for p in snap["positions"] if int(p["size"]) > 0]
        assert set(rows) == {p["key"].lower() for p in open_}
        for p in open_:
            price, method, note, liquidatable = rows[p["key"].lower()]
            sym = symbols[p["collateralToken"].lower()]
            cum = int(snap["tokens"][sym]["cumulativeFundingRates"])
            assert method == "exact", note
            if price is None:  # liquidatable at any price
                assert liquidatable and "any price" in note
                average = int(p["averagePrice"])
                for anywhere in (average, average * 2, average // 2):
                    assert vault_liquidation_state(p, anywhere, cum, settings) != 0
                beyond += 1
                continue
            raw = int(Decimal(price) * USD)
            above, below = raw + raw // 10**9, raw - raw // 10**9
            safe, unsafe = (above, below) if p["isLong"] else (below, above)
            assert vault_liquidation_state(p, safe, cum, settings) == 0, p["key"]
            assert vault_liquidation_state(p, unsafe, cum, settings) != 0, p["key"]
            checked += 1
    assert checked > 400 and checked + beyond == sum(
        s["openPositionCount"] for s in gmx_v1_truth["snapshots"])


def test_markets_name_their_asset(db, gmx_v1_truth):
    got = dict(query(db, "SELECT market, asset FROM market_assets"))
    want = {"WETH": "ETH", "WBTC": "BTC", "LINK": "LINK"}
    tokens = gmx_v1_truth["tokens"]
    assert got == {tokens[s]["address"].lower(): a for s, a in want.items()}


def test_asset_open_interest_is_the_vaults(db, gmx_v1_truth):
    head = gmx_v1_truth["snapshots"][-1]
    rows = query(db, "SELECT asset, long_oi_usd, short_oi_usd, total_oi_usd, venue_share, "
                     "dominant FROM asset_open_interest")
    want = {"ETH": "WETH", "BTC": "WBTC", "LINK": "LINK"}
    assert {r[0] for r in rows} == set(want)
    for asset, long_usd, short_usd, total, share, dominant in rows:
        oi = head["openInterest"][want[asset]]
        n = oi["openLongPositions"] + oi["openShortPositions"]
        exact_long = Decimal(to_decimal18(int(oi["longOpenInterestUsd"]), 30))
        exact_short = Decimal(to_decimal18(int(oi["shortOpenInterestUsd"]), 30))
        assert exact_long - n * Decimal("1e-18") <= long_usd <= exact_long
        assert exact_short - n * Decimal("1e-18") <= short_usd <= exact_short
        assert total == long_usd + short_usd
        assert share == 1.0 and dominant  # the only venue


def test_volume_and_liquidations_per_hour_are_the_raw_logs(db, gmx_v1_truth, gmx_v1_logs):
    """Dune's GMX v1 convention: sizeDelta of every Increase/DecreasePosition plus the size of
    every LiquidatePosition; liquidations: LiquidatePosition plus closes by the liquidator."""
    vault = gmx_v1_truth["contracts"]["Vault"]
    volume: dict[tuple, Decimal] = defaultdict(Decimal)
    liquidated: dict[tuple, list] = defaultdict(lambda: [0, Decimal(0)])
    by_liquidator = {x["transactionHash"] for x in gmx_v1_truth["liquidations"]
                     if x["kind"] == "ClosedByLiquidator"}
    for topic, lg, v in decoded_logs(gmx_v1_logs, vault):
        if topic == FUNDING:
            continue
        size = v[5]
        index, is_long = v[3], (v[6] if topic != LIQUIDATE else v[4])
        volume[(index, hour_of(lg))] += Decimal(to_decimal18(size, 30))
        if topic == LIQUIDATE or (topic == DECREASE and lg["transactionHash"] in by_liquidator):
            entry = liquidated[(index, is_long, hour_of(lg))]
            entry[0] += 1
            entry[1] += Decimal(to_decimal18(size, 30))
    got = {(m, h): v for m, h, v in query(
        db, "SELECT market, hour, volume_usd FROM volume_hourly WHERE volume_usd > 0")}
    assert got == dict(volume)
    got_liq = {(m, lg, h): [n, s] for m, lg, h, n, s in query(
        db, "SELECT market, is_long, hour, liquidations, size_usd FROM liquidations_hourly")}
    assert got_liq == dict(liquidated)
    assert sum(n for n, _ in got_liq.values()) == 29


def test_prices_and_funding_per_hour_are_the_raw_logs(db, gmx_v1_truth, gmx_v1_logs):
    """OHLC of the prices the Vault's events carry, the last close carried over empty hours;
    the borrow rate from the cumulative rates' change between hours (1e6, per year)."""
    vault = gmx_v1_truth["contracts"]["Vault"]
    prices: dict[tuple, list[Decimal]] = defaultdict(list)
    cumulative: dict[str, dict[datetime, int]] = defaultdict(dict)
    for topic, lg, v in decoded_logs(gmx_v1_logs, vault):
        if topic == FUNDING:
            cumulative[v[0]][hour_of(lg)] = v[1]  # the hour's last update wins
            continue
        price = v[9] if topic == LIQUIDATE else v[7]
        prices[(v[3], hour_of(lg))].append(Decimal(to_decimal18(price, 30)))
    rows = query(db, "SELECT market, hour, open, high, low, close, observations, carried "
                     "FROM prices_hourly ORDER BY market, hour")
    last: dict[str, Decimal] = {}
    for market, hour, o, h, lo, c, n, carried in rows:
        seen = prices.pop((market, hour), None)
        if seen is None:
            assert carried and n == 0 and o == h == lo == c == last[market]
        else:
            assert (o, h, lo, c, n, carried) == (seen[0], max(seen), min(seen), seen[-1],
                                                  len(seen), False)
        last[market] = c
    assert not prices  # every hour with a price is there
    rates = query(db, "SELECT market, hour, long_rate_apr, short_rate_apr FROM "
                      "funding_rates_hourly ORDER BY market, hour")
    assert len(rates) == sum(len(v) for v in cumulative.values())
    for market, hour, long_apr, short_apr in rates:
        hours = sorted(cumulative[market])
        i = hours.index(hour)
        if i == 0:
            assert long_apr is None
            continue
        elapsed = (hour - hours[i - 1]).total_seconds() / 3600
        want = (cumulative[market][hour] - cumulative[market][hours[i - 1]]) / 1e6 / elapsed * 8760
        assert long_apr == short_apr == pytest.approx(want, rel=1e-12)
    # the inputs: the stored cumulative rate at each snapshot is the Vault's
    for snap in gmx_v1_truth["snapshots"]:
        stored = dict(query(db, "SELECT market, arg_max(rate_raw, block_number * 1000000 + "
                                "log_index)::VARCHAR FROM funding_updates WHERE block_number <= ? "
                                "GROUP BY market", snap["blockNumber"]))
        for sym, t in snap["tokens"].items():
            assert stored.get(t["address"].lower(), "0") == t["cumulativeFundingRates"], sym


def test_concentration_ratios_and_wallets_at_snapshots(db, gmx_v1_truth):
    """whale_concentration_at, long_short_ratios and wallet_exposure against the truth's
    positions (sizes summed per account in integers, then shares)."""
    for snap in gmx_v1_truth["snapshots"]:
        per_account: dict[str, int] = defaultdict(int)
        for p in snap["positions"]:
            per_account[p["account"].lower()] += int(p["size"])
        sizes = sorted((v for v in per_account.values() if v > 0), reverse=True)
        rows = query(db, "SELECT accounts, top10_share FROM whale_concentration_at(?) "
                         "WHERE market IS NULL", snap["blockNumber"])
        if not sizes:
            assert rows == []
            continue
        ((accounts, top10),) = rows
        assert accounts == len(sizes)
        assert top10 == pytest.approx(sum(sizes[:10]) / sum(sizes), rel=1e-12)
    head = gmx_v1_truth["snapshots"][-1]
    open_ = [p for p in head["positions"] if int(p["size"]) > 0]
    for sym, t in head["tokens"].items():
        mine = [p for p in open_ if p["indexToken"] == t["address"]]
        if not mine:
            continue
        longs = {p["account"] for p in mine if p["isLong"]}
        shorts = {p["account"] for p in mine if not p["isLong"]}
        ((n_long, n_short, ratio),) = query(
            db, "SELECT long_accounts, short_accounts, accounts_ratio FROM long_short_ratios "
                "WHERE scope = 'market' AND market = ?", t["address"].lower())
        assert (n_long, n_short) == (len(longs), len(shorts)), sym
        assert ratio == pytest.approx(len(longs) / len(shorts)), sym
    net: dict[str, int] = defaultdict(int)
    gross: dict[str, int] = defaultdict(int)
    for p in open_:
        net[p["account"].lower()] += int(p["size"]) * (1 if p["isLong"] else -1)
        gross[p["account"].lower()] += int(p["size"])
    rows = query(db, "SELECT account, gross_usd, net_usd, open_positions FROM wallet_exposure "
                     "WHERE open_positions > 0")
    assert {r[0] for r in rows} == set(gross)
    for account, g, n, count in rows:
        k = sum(1 for p in open_ if p["account"].lower() == account)
        assert count == k
        assert abs(g - Decimal(to_decimal18(gross[account], 30))) <= k * Decimal("1e-18")
        assert abs(n - Decimal(to_decimal18(net[account], 30))) <= k * Decimal("1e-18")


def test_wallet_realised_pnl_is_the_vaults(db, gmx_v1_truth, gmx_v1_logs):
    """Per account: the realisedPnl of every ClosePosition and LiquidatePosition log, plus that
    of its positions open at the head (getPosition's, signed by hasProfit)."""
    close = "0x73af1d417d82c240fdb6d319b34ad884487c6bf2845d98980cc52ad9171cb455"
    vault = gmx_v1_truth["contracts"]["Vault"].lower()
    owner: dict[str, str] = {}
    pnl: dict[str, int] = defaultdict(int)
    count: dict[str, int] = defaultdict(int)
    for lg in gmx_v1_logs:
        if lg["address"] != vault:
            continue
        data = bytes.fromhex(lg["data"][2:])
        topic = lg["topics"][0]
        if topic == INCREASE:
            v = eth_abi.decode(POSITION_EVENT, data)
            owner["0x" + v[0].hex()] = v[1]
        elif topic == close:
            v = eth_abi.decode(["bytes32", "uint256", "uint256", "uint256", "uint256", "uint256",
                                "int256"], data)
            pnl[owner["0x" + v[0].hex()]] += v[6]
            count[owner["0x" + v[0].hex()]] += 1
        elif topic == LIQUIDATE:
            v = eth_abi.decode(LIQUIDATE_EVENT, data)
            pnl[v[1]] += v[8]
            count[v[1]] += 1
    for p in gmx_v1_truth["snapshots"][-1]["positions"]:
        if int(p["size"]) > 0:
            a = p["account"].lower()
            pnl[a] += int(p["realisedPnl"]) * (1 if p["hasProfit"] else -1)
            count[a] += 1
    got = dict(query(db, "SELECT account, realized_pnl_usd FROM wallet_exposure"))
    assert set(got) == set(owner.values())
    for account, value in got.items():
        want = Decimal(to_decimal18(pnl[account], 30))
        assert abs(value - want) <= count[account] * Decimal("1e-18"), account
