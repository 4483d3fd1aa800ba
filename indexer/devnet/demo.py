"""``perp-indexer demo``: anvil + the test vault + the simulator, synced live with a terminal view."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.table import Table
from rich.text import Text

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
from indexer.metrics import Metrics
from indexer.rpc import Rpc
from indexer.service import open_service
from indexer.service import stop as stop_service
from indexer.store import Store

logger = logging.getLogger(__name__)


#: The demo's config, shipped in the package next to this module.
DEMO_CONFIG = Path(str(resources.files("indexer.devnet") / "demo.yaml"))
#: Where the database goes unless DEMO_DATABASE says (relative to the working directory).
DEFAULT_DATABASE = Path("data") / "demo.duckdb"

LABELS = {**SYMBOLS, **{market_address(n): n for n in MARKETS},
          **{base_address(s): s for s in BASES}, **{str(p): n for p, (n, _) in PAIRS.items()}}
#: Synthetix markets: steps after which the second manager takes over and adds the last market
UPGRADE_AFTER = 60


#: Short venue names for narrow terminals.
VENUES = {"gmx_v1": "GMX v1", "gmx_v2": "GMX v2", "perp_v2": "Perp v2",
          "synthetix_perps_v2": "Synthetix", "gtrade": "gTrade"}


def usd(v: Any) -> str:
    """A USD amount in at most 7 characters, never cut: $512, $12.3K, $1.23M, $4.56B."""
    if v is None:
        return "-"
    d = Decimal(v)
    sign, d = ("-" if d < 0 else ""), abs(d)
    if d < Decimal("999.5"):
        return f"{sign}${d:.0f}"
    for unit, scale in (("K", 10**3), ("M", 10**6), ("B", 10**9), ("T", 10**12)):
        x = d / scale
        if x < Decimal("999.5") or unit == "T":
            digits = 2 if x < Decimal("9.995") else 1 if x < Decimal("99.95") else 0
            return f"{sign}${x:.{digits}f}{unit}"
    raise AssertionError("unreachable")


def skew_text(skew: float | None, bar: int = 0) -> Text:
    """Skew as a sign and a number (+0.57: longs outweigh shorts), after a bar of ``bar``
    cells when asked: '█' the long share, '░' the short share (readable without colour; the
    colours are added on top)."""
    if skew is None:
        return Text("-")
    out = Text()
    if bar:
        filled = round((skew + 1) / 2 * bar)
        out.append("█" * filled, style="green")
        out.append("░" * (bar - filled), style="red")
        out.append(" ")
    out.append(f"{skew:+.2f}", style="green" if skew > 0 else "red" if skew < 0 else "")
    return out


@dataclass
class ViewData:
    """What the live view shows, read from the store at once (the view lays it out later, at
    the terminal's size)."""

    head: int
    indexed: int
    changes: int
    liquidations: int
    txs: int
    #: (protocol, market label, long, short, total, skew, long positions, short positions)
    oi: list[tuple[Any, ...]]
    #: (account, open size, positions, venues)
    wallets: list[tuple[Any, ...]]
    #: (protocol, accounts, top-10 share, HHI, Gini, whales) of each protocol
    concentration: list[tuple[Any, ...]]
    #: (asset, total OI, venues, largest venue, its share, dominant)
    assets: list[tuple[Any, ...]]
    #: asset -> move % -> (longs liquidated by a fall, shorts by a rise); asset -> unpriced OI
    cascade: dict[str, dict[int, tuple[Any, Any]]]
    unpriced: dict[str, Any]


MOVES = (2, 5, 10, 20)


def render(store: Store, head: int, stats: dict[str, int], indexed: dict[str, int]) -> DemoView:
    """The live view: read from the store now, laid out at the terminal's size when printed."""
    _, named = store.query("SELECT market, any_value(name) FROM markets WHERE name IS NOT NULL "
                           "GROUP BY market")
    labels = {**LABELS, **dict(named)}
    _, oi = store.query("SELECT protocol, market, long_oi_usd, short_oi_usd, total_oi_usd, skew, "
                        "long_positions, short_positions FROM open_interest "
                        "ORDER BY total_oi_usd DESC, protocol, market")
    _, wallets = store.query(
        "SELECT account, sum(size_usd) s, count(*), count(DISTINCT protocol) FROM positions "
        "WHERE status = 'open' GROUP BY account ORDER BY s DESC, account LIMIT 10")
    _, conc = store.query("SELECT protocol, accounts, top10_share, hhi, gini, whales "
                          "FROM whale_concentration WHERE market IS NULL ORDER BY protocol")
    _, assets = store.query(
        "SELECT asset, sum(total_oi_usd), count(*), arg_max(protocol, total_oi_usd), "
        "max(venue_share), bool_or(dominant) FROM asset_open_interest GROUP BY asset "
        "ORDER BY 2 DESC, asset")
    _, cascade = store.query(
        "SELECT asset, move_pct, long_liquidated_usd, short_liquidated_usd, unpriced_oi_usd "
        "FROM liquidation_map WHERE scope = 'asset' AND move_pct IN (2, 5, 10, 20) "
        "ORDER BY asset, move_pct")
    _, kinds = store.query("SELECT kind, count(*) FROM position_changes GROUP BY ALL")
    moves: dict[str, dict[int, tuple[Any, Any]]] = {}
    unpriced: dict[str, Any] = {}
    for asset, pct, lg, sh, left in cascade:
        moves.setdefault(asset, {})[pct] = (lg, sh)
        unpriced[asset] = left
    counts = dict(kinds)
    return DemoView(ViewData(
        head=head, indexed=indexed.get("block", 0), changes=sum(counts.values()),
        liquidations=counts.get("liquidation", 0), txs=stats.get("tx_ok", 0),
        oi=[(p, labels.get(m, m[:10]), *rest) for p, m, *rest in oi], wallets=wallets,
        concentration=conc, assets=assets, cascade=moves, unpriced=unpriced))


def _table(title: str, *columns: str, right: int = 0) -> Table:
    """A borderless table (one line of title, one of header, then the rows): the first
    columns left-aligned, the last ``right`` ones (numbers) right-aligned (``_rows`` keeps
    them whole)."""
    t = Table(box=None, pad_edge=False, padding=(0, 1), header_style="bold", show_edge=False)
    t.caption = title  # shown above the table by ``_rows``, on one line
    for i, name in enumerate(columns):
        number = i >= len(columns) - right
        t.add_column(name, justify="right" if number else "left", no_wrap=True,
                     overflow="fold" if number else "ellipsis")
    return t


def _cells(cell: str | Text) -> int:
    return cell.cell_len if isinstance(cell, Text) else Text(cell).cell_len


def _rows(t: Table, rows: list[list[str | Text]]) -> Group:
    """``t`` with ``rows`` under its title line; its right-aligned columns (numbers) get the
    width of their widest cell as minimum, so that a narrow terminal shrinks the text columns,
    never a number."""
    for row in rows:
        t.add_row(*row)
    for i, column in enumerate(t.columns):
        if column.justify == "right":
            column.min_width = max([_cells(r[i]) for r in rows] or [0])
    title, t.caption = Text(str(t.caption), style="bold", no_wrap=True, overflow="ellipsis"), None
    return Group(title, t)


@dataclass
class DemoView:
    """The demo's live view, laid out for the console it is printed on: what fits in its
    width and height (``console.size``), most important first: a summary line, open interest
    per market (the largest first when not all fit), the largest wallets, then whale
    concentration, assets across venues and the liquidation map when there is room. Amounts are
    compact ($1.23M) and never cut; skew is a signed number (a bar too when wide)."""

    data: ViewData

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = min(options.max_width, console.size.width)
        height = options.height or console.size.height
        budget = max(height - 1, 4)  # the last line stays free for the cursor
        d = self.data
        summary = self._summary(width)
        budget -= len(summary)
        yield from summary
        wallets_min = min(3, len(d.wallets))
        rows = max(0, min(len(d.oi), budget - 2 - (2 + wallets_min if wallets_min else 0)))
        if d.oi:
            budget -= 2 + rows
            yield self._open_interest(width, rows)
        else:
            budget -= 1
            yield Text("no open positions yet")
        shown = min(len(d.wallets), max(0, min(5, budget - 2)))
        sections: list[tuple[int, Any]] = []
        if shown:
            budget -= 2 + shown
            sections.append((0, self._wallets(width, shown)))
        for cost, make in ((2 + len(d.concentration), self._concentration),
                           (2 + len(d.assets), self._assets),
                           (2 + 2 * len(d.cascade), self._cascade)):
            if cost > 2 and cost + 1 <= budget:  # a blank line before each extra section
                budget -= cost + 1
                sections.append((1, make(width)))
        more = min(len(d.wallets), shown + max(0, budget))
        if more > shown and sections:
            sections[0] = (0, self._wallets(width, more))
        for blank, table in sections:
            if blank:
                yield Text("")
            yield table

    def _summary(self, width: int) -> list[Text]:
        """The summary line(s), wrapped between its parts to the width; the parts after the
        figures only where they fit."""
        d = self.data
        parts = [f"head {d.head}", f"indexed {d.indexed}", f"{d.changes} changes",
                 f"{d.liquidations} liquidations", f"{d.txs} txs"]
        if width >= 100:
            parts.insert(0, "perp-indexer demo: test contracts of 5 protocols on anvil")
        lines, line = [], ""
        for part in parts:
            if line and len(line) + 3 + len(part) > width:
                lines.append(line)
                line = part
            else:
                line = f"{line} · {part}" if line else part
        if len(line) + 15 <= width:
            line += " · Ctrl-C stops"
        lines.append(line)
        return [Text(x, style="bold") for x in lines]

    def _open_interest(self, width: int, rows: int) -> Group:
        d = self.data
        title = "Open interest per market"
        if rows < len(d.oi):
            title += f" (largest {rows} of {len(d.oi)})"
        wide = width >= 100
        # the largest markets, in a steady order (venue, market) while the figures move
        shown = sorted(d.oi[:rows], key=lambda r: (r[0], r[1]))
        if width >= 60:
            bar = 20 if wide else 10 if width >= 72 else 0
            t = _table(title, "venue", "market", "long", "short", "total",
                       "skew +long/-short" if bar else "skew", "pos L/S", right=5)
            return _rows(t, [[p if wide else VENUES.get(p, p), m, usd(lg), usd(sh), usd(tot),
                              skew_text(skew, bar), f"{nl}/{ns}"]
                             for p, m, lg, sh, tot, skew, nl, ns in shown])
        t = _table(title, "venue", "market", "total", "skew", right=2)
        return _rows(t, [[VENUES.get(p, p), m, usd(tot), skew_text(skew)]
                         for p, m, _, _, tot, skew, _, _ in shown])

    def _wallets(self, width: int, rows: int) -> Group:
        title = "Largest wallets (open size over every venue)"
        if width < 56:
            return _rows(_table(title, "wallet", "open size", right=1),
                         [[f"{account[:8]}..{account[-6:]}", usd(size)]
                          for account, size, _, _ in self.data.wallets[:rows]])
        t = _table(title, "wallet", "open size", "positions", "venues", right=3)
        return _rows(t, [[account if width >= 72 else f"{account[:8]}..{account[-6:]}",
                          usd(size), str(n), str(venues)]
                         for account, size, n, venues in self.data.wallets[:rows]])

    def _concentration(self, width: int) -> Group:
        t = _table("Whale concentration", "venue", "accounts", "top-10 share", "HHI", "Gini",
                   "whales >= $1M", right=5)
        return _rows(t, [[p if width >= 100 else VENUES.get(p, p), str(acc), f"{top10:.1%}",
                          f"{hhi:.3f}", f"{gini:.3f}", str(whales)]
                         for p, acc, top10, hhi, gini, whales in self.data.concentration])

    def _assets(self, width: int) -> Group:
        t = _table("Assets across venues", "asset", "largest venue", "total OI", "venues",
                   "its share", right=3)
        return _rows(t, [[asset, (venue if width >= 100 else VENUES.get(venue, venue)) +
                          (" (dominant)" if dominant else ""), usd(tot), str(n),
                          f"{share:.1%}" if share is not None else "-"]
                         for asset, tot, n, venue, share, dominant in self.data.assets])

    def _cascade(self, width: int) -> Group:
        t = _table("Liquidation map: OI liquidated by a move of", "asset", "side",
                   *(f"{m}%" for m in MOVES), "no liq. price", right=len(MOVES) + 1)
        rows: list[list[str | Text]] = []
        for asset, moves in self.data.cascade.items():
            for i, side in enumerate(("longs, fall", "shorts, rise")):
                rows.append([asset if i == 0 else "", side,
                             *(usd(moves.get(m, (None, None))[i]) for m in MOVES),
                             usd(self.data.unpriced.get(asset)) if i == 0 else ""])
        return _rows(t, rows)


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
                logger.info("%s blocks %d-%d: %d logs, %d changes", state.source.config.name,
                            r.lo, r.hi, r.log_count, r.written)

        metrics = Metrics({s.source.name: s.source.chain.name for s in states},
                          stale_after=120.0)
        server = None
        try:
            server = open_service(store, metrics, cfg.file, cfg.metrics_host, cfg.metrics_port)
        except OSError as e:
            logger.warning("the demo's query service cannot listen on %s:%d (%s): other shells "
                           "cannot query it while it runs", cfg.metrics_host, cfg.metrics_port,
                           e.strerror)

        def on_idle() -> None:
            if live is not None:
                live.update(render(store, chain.rpc.fetch_head(),
                                   dict(sum((sim.stats for sim in sims), Counter())), indexed))
            if duration is not None and time.monotonic() - started > duration:
                stop.set()

        logger.info("demo: anvil at %s, database %s; from another shell: `perp-indexer query "
                    "--demo \"select * from open_interest\"`, `perp-indexer status --demo`, or "
                    "in Python `indexer.client.connect().sql(...)`; live charts at "
                    "http://%s:%d/report", anvil.url, cfg.database, cfg.metrics_host,
                    cfg.metrics_port)
        def on_signal(signum: int, _frame: Any) -> None:
            # a first Ctrl-C stops after the current range: raised inside a DuckDB statement,
            # KeyboardInterrupt would abort its COMMIT ("Query interrupted", a traceback)
            if stop.is_set():
                raise KeyboardInterrupt
            stop.set()

        main = threading.current_thread() is threading.main_thread()
        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} \
            if main else {}
        try:
            if live is not None:
                live.start()
            sync(states, {chain.name: chain}, store, None, False, cfg.file, stop, on_range,
                 on_idle, observer=metrics)
        except KeyboardInterrupt:
            stop.set()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            if live is not None:
                live.stop()
            stop.set()
            trader.join(timeout=30)
            if server is not None:
                stop_service(server)
            _, oi = store.query("SELECT count(*) FROM positions WHERE status = 'open'")
            logger.info("demo stopped: %d open positions indexed; the database stays at %s",
                        oi[0][0], cfg.database)
            chain.close()
            sim_rpc.close()
    finally:
        stop.set()
        anvil.stop()
    return 0
