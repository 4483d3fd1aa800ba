"""``perp-indexer demo``: anvil + the test vault + the simulator, synced live with a terminal view."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from indexer.chains.evm import EvmChain
from indexer.config import load_config
from indexer.daemon import sync
from indexer.devnet.chain import Anvil
from indexer.devnet.simulator import SYMBOLS, Simulator, deploy_vault
from indexer.devnet.simulator_gtrade import PAIRS, SimulatorGTrade, deploy_diamond
from indexer.devnet.simulator_perp import BASES, SimulatorPerp, base_address, deploy_clearing_house
from indexer.devnet.simulator_synthetix import (
    MARKETS as SNX_MARKETS,
)
from indexer.devnet.simulator_synthetix import (
    SimulatorSynthetix,
    deploy_manager,
    deploy_market,
)
from indexer.devnet.simulator_v2 import MARKETS, SimulatorV2, deploy_exchange, market_address
from indexer.engine.ranges import BlockRange
from indexer.engine.source import ScanState, build_source
from indexer.errors import FatalError
from indexer.rpc import Rpc
from indexer.store import Store

logger = logging.getLogger(__name__)


def _usd(v: Any) -> str:
    return f"${Decimal(v):,.0f}" if v is not None else "-"


def _skew_bar(skew: float | None, width: int = 20) -> str:
    if skew is None:
        return ""
    filled = round((skew + 1) / 2 * width)
    return "[green]" + "█" * filled + "[/green][red]" + "█" * (width - filled) + f"[/red] {skew:+.2f}"


#: The demo's config, shipped in the package next to this module.
DEMO_CONFIG = Path(str(resources.files("indexer.devnet") / "demo.yaml"))
#: Where the database goes unless DEMO_DATABASE says (relative to the working directory).
DEFAULT_DATABASE = Path("data") / "demo.duckdb"

LABELS = {**SYMBOLS, **{market_address(n): n for n in MARKETS},
          **{base_address(s): s for s in BASES}, **{str(p): n for p, (n, _) in PAIRS.items()}}
#: Synthetix markets: steps after which the second manager takes over and adds the last market
UPGRADE_AFTER = 60


def render(store: Store, head: int, stats: dict[str, int], indexed: dict[str, int]) -> Group:
    _, oi = store.query("SELECT protocol, market, long_oi_usd, short_oi_usd, total_oi_usd, skew, "
                        "long_positions, short_positions FROM open_interest "
                        "ORDER BY protocol, total_oi_usd DESC")
    t = Table("protocol", "market", "long OI", "short OI", "total OI",
              "skew (long green / short red)", "positions L/S",
              title="Open interest (live, from the indexer's DuckDB)")
    _, named = store.query("SELECT market, any_value(name) FROM markets WHERE name IS NOT NULL "
                           "GROUP BY market")
    labels = {**LABELS, **dict(named)}
    for proto, m, lg, sh, tot, skew, nl, ns in oi:
        t.add_row(proto, labels.get(m, m[:10]), _usd(lg), _usd(sh), _usd(tot), _skew_bar(skew),
                  f"{nl}/{ns}")
    _, wc = store.query("SELECT protocol, coalesce(market, 'ALL'), accounts, top10_share, hhi, "
                        "gini, whales FROM whale_concentration ORDER BY protocol, market NULLS FIRST")
    w = Table("protocol", "market", "accounts", "top-10 share", "HHI", "Gini", "whales (>= $1M)",
              title="Whale concentration")
    for proto, m, acc, top10, hhi, gini, whales in wc:
        w.add_row(proto, labels.get(m, m[:10]), str(acc), f"{top10:.1%}", f"{hhi:.3f}",
                  f"{gini:.3f}", str(whales))
    _, venues = store.query("SELECT asset, protocol, total_oi_usd, venue_share, dominant "
                            "FROM asset_open_interest ORDER BY asset, total_oi_usd DESC")
    a = Table("asset", "venue", "total OI", "share of the asset's OI", title="Assets across venues")
    for asset, proto, tot, share, dominant in venues:
        a.add_row(asset, proto, _usd(tot),
                  f"{share:.1%}" + (" dominant" if dominant else "") if share is not None else "-")
    _, cascade = store.query(
        "SELECT asset, move_pct, long_liquidated_usd, short_liquidated_usd, unpriced_oi_usd "
        "FROM liquidation_map WHERE scope = 'asset' AND move_pct IN (2, 5, 10, 20) "
        "ORDER BY asset, move_pct")
    lm = Table("asset", "move", "longs liquidated by a fall", "shorts liquidated by a rise",
               "OI without a liquidation price",
               title="Liquidation map (each position's own liquidation price)")
    for asset, pct, lg, sh, unpriced in cascade:
        lm.add_row(asset, f"{pct}%", _usd(lg), _usd(sh), _usd(unpriced))
    _, kinds = store.query("SELECT kind, count(*) FROM position_changes GROUP BY ALL ORDER BY 1")
    _, top = store.query("SELECT account, sum(size_usd) s FROM positions WHERE status = 'open' "
                         "GROUP BY account ORDER BY s DESC LIMIT 5")
    wh = Table("account", "open size", title="Largest wallets")
    for acct, size in top:
        wh.add_row(acct, _usd(size))
    summary = (f"chain head [bold]{head}[/bold]  indexed to [bold]{indexed.get('block', 0)}"
               f"[/bold]  changes: " + ", ".join(f"{k} {n}" for k, n in kinds) +
               f"  |  simulators: {stats.get('tx_ok', 0)} txs, "
               f"{sum(n for k, n in stats.items() if k.startswith('liquidation'))} "
               f"liquidations   (Ctrl-C to stop)")
    return Group(Panel(summary, title="perp-indexer demo: GMX v1, GMX v2, Perpetual v2, "
                                      "Synthetix and gTrade-style test contracts on a local "
                                      "anvil"),
                 t, a, lm, w, wh)


def run_demo(duration: float | None = None, traders: int = 30, headless: bool = False) -> int:
    # absolute: demo.yaml would take a relative path from its own folder (in the package)
    database = Path(os.environ.get("DEMO_DATABASE") or DEFAULT_DATABASE).expanduser().resolve()
    os.environ["DEMO_DATABASE"] = str(database)
    # the demo is its database's writer from the start: refused while another process holds it,
    # before anything of that process's data is touched
    store = Store(database)
    try:
        return _run(store, duration, traders, headless)
    finally:
        store.close()


def _run(store: Store, duration: float | None, traders: int, headless: bool) -> int:
    anvil = Anvil(accounts=traders + 5)
    stop = threading.Event()
    try:
        # deployment order fixes the addresses demo.yaml expects (nonces 0-4, then
        # the Synthetix markets, then the gTrade diamond)
        deployed = {"gmx_v1": [deploy_vault(anvil)], "gmx_v2": [deploy_exchange(anvil)],
                    "perp_v2": [deploy_clearing_house(anvil)],
                    "synthetix_perps_v2": [deploy_manager(anvil), deploy_manager(anvil)]}
        snx_markets = {k: deploy_market(anvil, p * 10**18, legacy)
                       for k, (_, p, legacy) in SNX_MARKETS.items()}
        deployed["gtrade"] = [deploy_diamond(anvil)]
        vault, exchange = deployed["gmx_v1"][0], deployed["gmx_v2"][0]
        os.environ["DEMO_RPC_URL"] = anvil.url
        cfg = load_config(DEMO_CONFIG)
        for proto in cfg.protocols:
            expected = [c.address for c in proto.contracts]
            if deployed[proto.adapter] != expected:
                raise FatalError(f"{proto.adapter} test contracts deployed at "
                                 f"{deployed[proto.adapter]}, {DEMO_CONFIG} expects {expected}")
        store.reset()  # a fresh chain: a fresh database
        states: list[ScanState] = [build_source(cfg, p).new_state() for p in cfg.protocols]
        sim_rpc = Rpc([anvil.url], timeout=30, max_attempts=3)
        seed = int(time.time()) % 1000
        sims: list[Any] = [
            Simulator(sim_rpc, vault, anvil.accounts, seed=seed, traders=traders),
            SimulatorV2(sim_rpc, exchange, anvil.accounts, seed=seed + 1, traders=traders),
            SimulatorPerp(sim_rpc, deployed["perp_v2"][0], anvil.accounts, seed=seed + 2,
                          traders=traders),
            SimulatorSynthetix(sim_rpc, (deployed["synthetix_perps_v2"][0],
                                                deployed["synthetix_perps_v2"][1]), snx_markets,
                               anvil.accounts, seed=seed + 3, traders=traders),
            SimulatorGTrade(sim_rpc, deployed["gtrade"][0], anvil.accounts, seed=seed + 4,
                            traders=traders)]
        for sim in sims:
            sim.setup()

        def trade() -> None:
            steps = 0
            while not stop.is_set():
                for sim in sims:
                    sim.step()
                steps += 1
                if steps == UPGRADE_AFTER:
                    sims[3].upgrade()
                stop.wait(0.05)

        trader = threading.Thread(target=trade, name="simulator", daemon=True)
        trader.start()
        chain = EvmChain(cfg.chains["devnet"], Rpc([anvil.url], timeout=30, max_attempts=3))
        indexed: dict[str, int] = {}
        started = time.monotonic()
        console = Console()
        live = Live(console=console, refresh_per_second=4, screen=False) if not headless else None

        def on_range(state: ScanState, r: BlockRange) -> None:
            indexed["block"] = r.hi
            if headless:
                logger.info("indexed blocks %d-%d: %d logs, %d changes", r.lo, r.hi, r.log_count,
                            r.written)

        def on_idle() -> None:
            if live is not None:
                live.update(render(store, chain.rpc.fetch_head(),
                                   dict(sum((sim.stats for sim in sims), Counter())), indexed))
            if duration is not None and time.monotonic() - started > duration:
                stop.set()

        logger.info("demo: anvil at %s, test contracts %s, database %s (query it from another "
                    "shell with `DEMO_DATABASE=%s perp-indexer query --config %s \"select * from "
                    "open_interest\"`)", anvil.url, deployed, cfg.database, cfg.database,
                    DEMO_CONFIG)
        try:
            if live is not None:
                live.start()
            sync(states, {chain.name: chain}, store, None, False, cfg.file, stop,
                 lambda: None, on_range, on_idle)
        except KeyboardInterrupt:
            stop.set()
        finally:
            if live is not None:
                live.stop()
            stop.set()
            trader.join(timeout=30)
            _, oi = store.query("SELECT count(*) FROM positions WHERE status = 'open'")
            logger.info("demo stopped: %d open positions indexed; the database stays at %s",
                        oi[0][0], cfg.database)
            chain.close()
            sim_rpc.close()
    finally:
        stop.set()
        anvil.stop()
    return 0
