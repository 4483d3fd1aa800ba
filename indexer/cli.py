"""Command line: ``perp-indexer demo | backfill | sync | query | status``.

The composition root: the only place that builds config, RPC clients and the store, and the only
place that turns errors into exit codes (0 ok, 2 usage/config, 3 reorg deeper than the kept
window, 1 anything else).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from indexer import __version__
from indexer.alerts import ImbalanceWatch
from indexer.backfill import backfill, backfill_all
from indexer.chains import Chain
from indexer.chains.cometbft import CometChain
from indexer.chains.evm import EvmChain
from indexer.client import Connection, QueryError
from indexer.config import UNSET_RPC, ChainConfig, Config, load_config
from indexer.daemon import sync
from indexer.endpoints import load_learnt, save_learnt
from indexer.engine.ranges import BlockRange
from indexer.engine.source import DUCKDB_SHARE, ScanState, Tuning, build_source
from indexer.errors import AbiError, ChainMismatch, ConfigError, IndexerError, redact_url
from indexer.metrics import Metrics
from indexer.reading import Reader, open_reader
from indexer.reorg import ReorgTooDeep
from indexer.results import TEXT_FORMATS, arrow_rows, text, write_rows
from indexer.rpc import Rpc
from indexer.service import open_service
from indexer.service import stop as stop_service
from indexer.store import Limits, Store, write_parquet

if TYPE_CHECKING:  # dask is imported only when a cluster is used (see _cluster)
    from indexer.cluster import Cluster

logger = logging.getLogger("indexer")
#: Exit code of a reorg deeper than the kept window (nothing written; see README).
EXIT_REORG_TOO_DEEP = 3
err = Console(stderr=True)


def _setup_logging(verbose: bool) -> None:
    handler = RichHandler(console=err, show_path=False, rich_tracebacks=False)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        datefmt="%H:%M:%S", handlers=[handler], force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)  # both log full URLs (API keys)


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGINT/SIGTERM set an event; the loops finish or abandon the current range atomically."""
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        logger.info("received %s: finishing the current range, then stopping",
                    signal.Signals(signum).name)
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _chains(cfg: Config, states: list[ScanState], tuning: Tuning) -> dict[str, Chain]:
    """The chains the sources read, with what earlier runs learnt of their endpoints."""
    learnt = load_learnt(_learnt_file(cfg))
    out: dict[str, Chain] = {}
    for state in states:
        c = state.source.chain
        if c.name not in out:
            kept = learnt.get(c.name)
            out[c.name] = (CometChain.connect(c, tuning, kept) if c.kind == "cometbft"
                           else EvmChain.connect(c, tuning, kept))
    return out


def _learnt_file(cfg: Config) -> Path:
    """Where the endpoints' learnt limits are kept: beside the database."""
    return cfg.database.with_name(cfg.database.name + ".endpoints.json")


def _close_chains(cfg: Config, chains: dict[str, Chain]) -> None:
    """Keep what was learnt of the endpoints, then close the connections."""
    save_learnt(_learnt_file(cfg), {name: c.learnt() for name, c in chains.items()})
    for c in chains.values():
        c.close()


def _states(cfg: Config, tuning: Tuning, only: str | None = None) -> list[ScanState]:
    """A fresh scan state of each source of the config (or of the one named ``only``)."""
    entries = [cfg.protocol(only)] if only else list(cfg.protocols)
    return [build_source(cfg, e, tuning).new_state() for e in entries]


# -- commands --------------------------------------------------------------------------------


def _writer_store(cfg: Config) -> Store:
    """The writer's store, with the config's analytics thresholds for the views to read."""
    store = Store(cfg.database, memory_limit_mb=cfg.max_memory_mb // DUCKDB_SHARE)
    store.set_analytics(cfg.imbalance_threshold, cfg.dominance_threshold)
    return store


def _serve(cfg: Config, store: Store, metrics: Metrics | None) -> ThreadingHTTPServer | None:
    """The query service (with /report, /metrics, /health) on the config's port, or None."""
    if not cfg.metrics_port:
        return None
    limits = Limits(timeout=cfg.query_timeout, max_rows=cfg.query_max_rows,
                    max_bytes=cfg.query_max_mb * 2**20)
    try:
        server = open_service(store, metrics, cfg.file, cfg.metrics_host, cfg.metrics_port,
                              limits)
    except OSError as e:
        raise ConfigError(cfg.file, "metrics_port", cfg.metrics_port,
                          f"a free local port for the query service ({e.strerror}; set "
                          "another, or 0 to serve none)") from None
    logger.info("serving on http://%s:%d: /query (SQL), /report, /metrics, /health",
                cfg.metrics_host, server.server_address[1])
    return server


def _stop_serving(server: ThreadingHTTPServer | None) -> None:
    if server is not None:
        stop_service(server)


def cmd_backfill(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    states = _states(cfg, args.tuning, args.source)
    chains = _chains(cfg, states, args.tuning)
    store = _writer_store(cfg)
    server = None
    cluster = _cluster(args, cfg)
    try:
        server = _serve(cfg, store, None)
        if cluster is not None:
            for state in states:
                cluster.check(state)
        with _stop_on_signals() as stop, Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("blocks  {task.fields[logs]} logs  {task.fields[rate]} logs/s"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=err, disable=args.no_progress) as progress:
            results = backfill_all(states, _backfill_one(args, cfg, chains, store, stop,
                                                         progress, len(states) > 1, cluster))
        failed = {name: r for name, r in results.items() if isinstance(r, BaseException)}
        if stop.is_set():
            logger.info("stopped by signal; resume with the same command")
        if failed:
            first = next(iter(failed.values()))
            if len(failed) > 1:
                logger.error("%d sources failed: %s", len(failed), ", ".join(failed))
            raise first
    finally:
        if cluster is not None:
            cluster.close()
        _stop_serving(server)
        store.close()
        _close_chains(cfg, chains)
    return 0


def _cluster(args: argparse.Namespace, cfg: Config) -> Cluster | None:
    """The Dask cluster that --cluster or the config names (None: this machine alone)."""
    address = args.cluster or cfg.cluster_address
    if not address:
        return None
    from indexer.cluster import Cluster  # dask is loaded only when a cluster is used

    staging = (Path(args.staging).resolve() if args.staging else cfg.cluster_staging
               or cfg.database.with_name(cfg.database.name + ".staging"))
    logger.info("backfill over the Dask cluster at %s, staging in %s", address, staging)
    return Cluster.connect(address, str(Path(cfg.file).resolve()), staging,
                           args.partition_blocks or cfg.partition_blocks)


def _backfill_one(args: argparse.Namespace, cfg: Config, chains: dict[str, Chain], store: Store,
                  stop: threading.Event, progress: Progress, total_line: bool,
                  cluster: Cluster | None = None
                  ) -> Callable[[ScanState, ThreadPoolExecutor], tuple[int, int]]:
    """One source's backfill as :func:`backfill_all` runs it, with its progress line (and, for
    several sources, a total line: blocks of every source, logs and ETA of them all)."""
    total = (progress.add_task("all sources", total=0, logs=0, rate="-") if total_line
             else None)
    started = time.monotonic()
    lock = threading.Lock()
    all_logs = [0]

    def run(state: ScanState, writer: ThreadPoolExecutor) -> tuple[int, int]:
        name = state.source.name
        task = progress.add_task(name, total=None, logs=0, rate="-")
        totals = {"logs": 0, "changes": 0, "quarantined": 0}
        began = time.monotonic()

        def on_plan(lo: int, hi: int) -> None:
            progress.update(task, total=max(hi - lo + 1, 0), completed=0)
            if total is not None:
                with lock:
                    planned = progress.tasks[total].total or 0
                    progress.update(total, total=planned + max(hi - lo + 1, 0))

        def on_range(state: ScanState, r: BlockRange) -> None:
            totals["logs"] += r.log_count
            totals["changes"] += r.written
            totals["quarantined"] += r.quarantined
            rate = totals["logs"] / max(time.monotonic() - began, 1e-6)
            progress.update(task, advance=r.hi - r.lo + 1, logs=totals["logs"],
                            rate=f"{rate:,.0f}")
            if total is not None:
                with lock:
                    all_logs[0] += r.log_count
                    rate = all_logs[0] / max(time.monotonic() - started, 1e-6)
                    progress.update(total, advance=r.hi - r.lo + 1, logs=all_logs[0],
                                    rate=f"{rate:,.0f}")

        done, hi = backfill(state, chains[state.source.chain.name], store, args.from_block,
                            args.to_block, cfg.file, stop, on_range, on_plan, writer,
                            cluster.run if cluster is not None else None)
        logger.info("%s: indexed up to block %d of %d: %d logs, %d position changes, "
                    "%d quarantined, %.1fs", name, done, hi, totals["logs"], totals["changes"],
                    totals["quarantined"], time.monotonic() - began)
        return done, hi

    return run


def cmd_sync(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    states = _states(cfg, args.tuning)
    chains = _chains(cfg, states, args.tuning)
    store = _writer_store(cfg)

    def on_range(state: ScanState, r: BlockRange) -> None:
        logger.info("%s blocks %d-%d: %d logs, %d changes%s", state.source.name, r.lo, r.hi,
                    r.log_count, r.written,
                    f", {r.quarantined} quarantined" if r.quarantined else "")
        imbalances.changed()
        gauges_stale[0] = True

    def after_pass() -> None:
        imbalances.check(store)
        if gauges_stale[0]:  # the analytics gauges read views over the whole ledger
            metrics.market_gauges.refresh(store.query)
            gauges_stale[0] = False

    def rpc_errors() -> dict[tuple[str, str], int]:
        out: Counter[tuple[str, str]] = Counter()
        for c in chains.values():
            out.update(c.rpc.errors)
        return dict(out)

    poll = min(s.source.chain.poll_interval for s in states)
    metrics = Metrics({s.source.name: s.source.chain.name for s in states},
                      stale_after=max(10 * poll, 120.0), rpc_errors=rpc_errors)
    server = None
    gauges_stale = [True]
    try:
        if not args.once:
            server = _serve(cfg, store, metrics)
        imbalances = ImbalanceWatch(cfg.imbalance_threshold, cfg.alert_webhook, metrics)
        imbalances.check(store)
        with _stop_on_signals() as stop:
            logger.info("sync started: %s", ", ".join(
                f"{s.source.name} on {s.source.chain.name} via "
                f"{chains[s.source.chain.name].rpc.endpoint}" for s in states))
            sync(states, chains, store, args.until, args.once, cfg.file, stop, on_range,
                 on_idle=after_pass, observer=metrics)
        imbalances.wait_sent()
    finally:
        _stop_serving(server)
        store.close()
        _close_chains(cfg, chains)
    return 0


def _reading_config(args: argparse.Namespace) -> Config:
    """The config of a reading command: ``--demo`` names the demo's; RPC variables may be unset."""
    if getattr(args, "demo", False):
        from indexer.devnet.demo import DEFAULT_DATABASE, DEMO_CONFIG

        os.environ.setdefault("DEMO_DATABASE", str(DEFAULT_DATABASE.resolve()))
        return load_config(DEMO_CONFIG, need_rpc=False)
    if not args.config:
        raise ConfigError("(command line)", "--config", None,
                          "a config file (or --demo for the running demo's database)")
    return load_config(args.config, need_rpc=False)


@contextmanager
def _reader(args: argparse.Namespace) -> Iterator[Reader]:
    cfg = _reading_config(args)
    url = getattr(args, "url", None) or (cfg.service_url if cfg.metrics_port else None)
    with open_reader(cfg.database, url) as reader:
        logger.debug("reading %s", reader.via)
        yield reader


def cmd_query(args: argparse.Namespace) -> int:
    if args.format == "parquet" and not args.out:
        raise ConfigError("(command line)", "--format", "parquet", "--out FILE with it")
    with _reader(args) as reader:
        table = reader.arrow(args.sql)
    if args.format == "parquet":
        write_parquet(table, args.out)
        err.print(f"{table.num_rows} rows written to {args.out}")
        return 0
    rows = arrow_rows(table)
    if args.out:
        with open(args.out, "w", newline="") as f:
            write_rows(list(table.column_names), rows, args.format, f)
        err.print(f"{table.num_rows} rows written to {args.out}")
    else:
        width = Console().width if sys.stdout.isatty() else None
        write_rows(list(table.column_names), rows, args.format, sys.stdout, width)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    with _reader(args) as reader, Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("partitions"), TimeElapsedColumn(), console=err,
            disable=args.no_progress) as progress:
        tasks: dict[str, Any] = {}

        def on_progress(table: str, done: int, total: int) -> None:
            if table not in tasks:
                tasks[table] = progress.add_task(table, total=total)
            progress.update(tasks[table], completed=done, total=total)

        from indexer.store.export import export

        result = export(reader.arrow, out, args.table or None, on_progress)
    logger.info("export to %s: %d partitions written (%d rows), %d unchanged, %d deleted, %.1fs",
                out, result.written, result.rows, result.unchanged, result.deleted,
                result.seconds)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from indexer.report import build_report  # the page inlines plotly.js: loaded when asked

    with _reader(args) as reader:
        page = build_report(reader.rows)
    Path(args.out).write_text(page, encoding="utf-8")
    logger.info("report written to %s (%.1f MB; opens offline)", args.out, len(page) / 1e6)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Per protocol: the database's figures, the node's head, and the running daemon's live
    figures (from its /health endpoint) when one answers on ``metrics_port``."""
    cfg = _reading_config(args)
    table = Table("protocol", "chain", "rpc", "start", "checkpoint", "head", "lag", "lag s",
                  "changes", "open positions", "quarantined", "reorgs (max depth)", "range",
                  "rows/s", "daemon", "last error")
    stats: dict[str, tuple[Any, ...]] = {}
    reorgs: dict[int, tuple[int, int]] = {}
    live = None
    if cfg.metrics_port:
        try:
            live = Connection(cfg.service_url).health()
        except QueryError:
            live = None
    if live is not None or cfg.database.exists():
        with _reader(args) as reader:
            _, rows = reader.rows("""
                SELECT c.source, c.start_block, c.block_number, c.last_error,
                  (SELECT count(*) FROM position_changes p WHERE p.source = c.source),
                  (SELECT count(*) FROM positions p WHERE p.source = c.source AND status = 'open'),
                  (SELECT count(*) FROM quarantine q WHERE q.source = c.source),
                  (SELECT b.timestamp FROM blocks b WHERE b.chain_id = c.chain_id
                     AND b.number = c.block_number)
                FROM checkpoints c""")
            stats = {r[0]: r[1:] for r in rows}
            _, rows = reader.rows("SELECT chain_id, count(*), max(depth) FROM reorgs GROUP BY 1")
            reorgs = {r[0]: (r[1], r[2]) for r in rows}
    heads: dict[str, Any] = {}
    for proto in cfg.protocols:
        chain = cfg.chains[proto.chain]
        if chain.name not in heads:
            heads[chain.name] = _head(chain)
        head, head_time = heads[chain.name]
        start, cp, last_error, changes, open_pos, quarantined, cp_time = stats.get(
            proto.name, (proto.start_block, None, None, 0, 0, 0, None))
        lag = head - cp if isinstance(head, int) and cp is not None else ""
        lag_s = head_time - cp_time if head_time is not None and cp_time is not None else ""
        count, deepest = reorgs.get(chain.chain_id, (0, 0))
        mine = (live or {}).get("protocols", {}).get(proto.name)
        if mine is None:
            daemon, size, rate = "not running", "", ""
        else:
            daemon = "healthy" if mine["fresh"] else "unhealthy"
            size, rate = str(mine["range_size"]), f"{mine['rows_per_second']:,.1f}"
            last_error = mine["last_error"] or last_error
        rpc = ("(variable unset)" if chain.rpc_urls[0] == UNSET_RPC
               else redact_url(chain.rpc_urls[0]))
        table.add_row(proto.name, f"{chain.name} ({chain.chain_id})", rpc, str(start), text(cp),
                      text(head), text(lag), text(lag_s), str(changes), str(open_pos),
                      str(quarantined), f"{count} ({deepest})" if count else "0", size, rate,
                      daemon, last_error or "")
    console = Console(width=max(200, Console().width))
    console.print(table)
    if live is not None:
        errors = Table("rpc endpoint", "error kind", "count", title="RPC errors since the "
                       f"daemon started ({live['uptime_seconds']:.0f}s ago)")
        for row in live["rpc_errors"]:
            errors.add_row(row["endpoint"], row["kind"], str(row["count"]))
        console.print(errors if live["rpc_errors"] else "RPC errors since the daemon started: none")
    return 0


def _head(chain: ChainConfig) -> tuple[Any, int | None]:
    """The node's latest block number and time, or why there is none."""
    urls = chain.rpc_urls
    if urls[0] == UNSET_RPC:
        return "unknown (RPC variable unset)", None
    rpc = Rpc(urls, timeout=5.0, max_attempts=1)
    try:
        if chain.kind == "cometbft":
            return CometChain(chain, rpc, rpc).head()
        latest = rpc.fetch_tagged("latest")
        return int(latest["number"], 16), int(latest["timestamp"], 16)
    except IndexerError as e:
        return f"unreachable ({type(e).__name__})", None
    finally:
        rpc.close()


def cmd_demo(args: argparse.Namespace) -> int:
    from indexer.devnet.demo import run_demo  # imported lazily: needs node tooling

    return run_demo(duration=args.duration, traders=args.traders, headless=args.no_ui)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perp-indexer", description=(
        "Index perp-protocol positions from EVM logs into DuckDB: positions, open interest, "
        "skew and whale concentration in SQL."))
    p.add_argument("--version", action="version", version=f"perp-indexer {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="local anvil chain with test contracts of the five supported "
                                    "protocols and simulated traders, indexed live with a "
                                    "terminal view (no network, no config)")
    d.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    d.add_argument("--traders", type=int, default=30, help="simulated wallets (default 30)")
    d.add_argument("--no-ui", action="store_true", help="log instead of the live view")
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("sync", help="daemon: catch up, then follow the chain head")
    s.add_argument("--config", required=True)
    s.add_argument("--until", type=int, default=None, help="stop once this block is indexed")
    s.add_argument("--once", action="store_true", help="catch up once and exit")
    s.set_defaults(func=cmd_sync)

    b = sub.add_parser("backfill", help="historical load of a block range (resumable)")
    b.add_argument("--config", required=True)
    b.add_argument("--from", dest="from_block", type=int, default=None)
    b.add_argument("--to", dest="to_block", type=int, default=None)
    b.add_argument("--source", "--protocol", dest="source", default=None,
                   help="only this source (a config entry's name; --protocol is the old spelling)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.add_argument("--cluster", default=None, metavar="ADDRESS",
                   help="a Dask scheduler (tcp://host:8786) whose workers fetch partitions")
    b.add_argument("--staging", default=None, metavar="DIR",
                   help="folder the workers stage partitions in, shared with this machine "
                        "(default: <database>.staging)")
    b.add_argument("--partition-blocks", type=int, default=0, metavar="N",
                   help="blocks per partition (default: 4 x max_block_range)")
    b.set_defaults(func=cmd_backfill)

    def reading(parser: argparse.ArgumentParser) -> None:
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--config", help="the config of the database to read (its RPC "
                                            "variables may be unset)")
        where.add_argument("--demo", action="store_true",
                           help="the demo's database (data/demo.duckdb here, or DEMO_DATABASE)")
        parser.add_argument("--url", default=None,
                            help="a daemon's query service (default: the config's metrics_host "
                                 "and metrics_port, used when a daemon answers there)")

    q = sub.add_parser("query", help="run one read-only SQL statement: through the running "
                                     "daemon's query service, or on the file when none runs")
    reading(q)
    q.add_argument("sql")
    q.add_argument("--format", choices=(*TEXT_FORMATS, "parquet"), default="table",
                   help="table (default; too wide for the terminal: one block per row), csv, "
                        "json (one document), jsonl (JSON Lines: one object per row), parquet "
                        "(needs --out)")
    q.add_argument("--out", default=None, help="write to this file instead of stdout")
    q.set_defaults(func=cmd_query)

    ex = sub.add_parser("export", help="the ledger, positions and hourly views to Parquet "
                                       "(Hive partitions by protocol, chain and day; "
                                       "incremental)")
    reading(ex)
    ex.add_argument("--out", required=True, help="the export folder")
    ex.add_argument("--table", action="append", default=[],
                    help="only this table or view (repeatable)")
    ex.add_argument("--no-progress", action="store_true", help="no progress bar")
    ex.set_defaults(func=cmd_export)

    rp = sub.add_parser("report", help="one self-contained HTML page of charts (opens offline)")
    reading(rp)
    rp.add_argument("--out", default="report.html", help="the page's file (default report.html)")
    rp.set_defaults(func=cmd_report)

    st = sub.add_parser("status", help="checkpoint, head, lag and counts per source")
    reading(st)
    st.set_defaults(func=cmd_status)
    return p


def main(argv: list[str] | None = None, tuning: Tuning = Tuning()) -> int:
    """Run the command ``argv``; ``tuning`` is the engine's (tests shorten it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.tuning = tuning
    _setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except (ConfigError, AbiError, ChainMismatch) as e:
        err.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        return 2
    except ReorgTooDeep as e:
        err.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        return EXIT_REORG_TOO_DEEP
    except IndexerError as e:
        err.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted")
        return 1


if __name__ == "__main__":
    sys.exit(main())
