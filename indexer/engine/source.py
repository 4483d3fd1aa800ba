"""What to scan for one config entry (a *source*), frozen at start-up, and what the scan learns
on the way (its state), which a rollback invalidates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from indexer import adapters
from indexer.abci import load_event_schema
from indexer.abi import AbiEvents, keccak, load_abi_dir
from indexer.adapters.base import Adapter
from indexer.config import ChainConfig, Config, ProtocolConfig
from indexer.errors import AbiError, ConfigError
from indexer.rpc import RECOVER_AFTER, Backoff, exponential_backoff
from indexer.scanner import MAX_BYTES, REQUEST_BYTES, RangeSizer

#: Ledger rows a commit aims at while catching up: consecutive prepared ranges with fewer are
#: committed together, for a commit has a fixed cost (docs/benchmarks.md).
COMMIT_ROWS = 25_000
#: Memory the rows gathered for one commit take, in MB (about 1.2 KB a ledger row once adapted).
COMMIT_MB = COMMIT_ROWS * 1_200 // 1_000_000
#: Share of ``max_memory_mb`` given to DuckDB's own memory limit (it spills to disk beyond).
DUCKDB_SHARE = 4
#: What Python, the libraries and the decoders' working set take besides the logs held, in MB.
BASE_MB = 200


@dataclass(frozen=True, slots=True)
class Tuning:
    """The engine's sizes and timings that are not configuration: the defaults serve every
    user; tests pass smaller ones (``cli.main(argv, tuning=...)``) to reach their edge cases
    quickly."""

    #: Ledger rows a commit gathers while catching up (0: each range alone).
    commit_rows: int = COMMIT_ROWS
    #: Bytes of logs an answer may hold (None: derived from ``max_memory_mb``).
    response_bytes: int | None = None
    #: Bytes of logs the sizer aims each answer below (see ``scanner.REQUEST_BYTES``).
    request_bytes: int = REQUEST_BYTES
    #: RPC retry timing (see ``rpc.Rpc``).
    backoff: Backoff = exponential_backoff
    recover_after: float = RECOVER_AFTER


def response_budget(max_memory_mb: int, in_flight: int) -> int:
    """Bytes of logs one getLogs answer may hold under the memory ceiling: what is left after
    DuckDB's share, the base and the rows gathered for a commit is split over the answers held
    at once: those in flight, and the one being decoded and stored, which counts four times (its
    JSON while it is parsed, the logs, their decoded columns and the rows built from them)."""
    left = max_memory_mb - max_memory_mb // DUCKDB_SHARE - BASE_MB - COMMIT_MB
    return max(left, 50) * 1_000_000 // (in_flight + 4)


@dataclass(frozen=True, slots=True)
class Source:
    """One config entry resolved: adapter, ABI, filters and tuning. Never changes."""

    config: ProtocolConfig
    chain: ChainConfig
    adapter: Adapter
    abi: AbiEvents
    #: The configured contracts' addresses (see ``ScanState.addresses`` for all log emitters).
    contracts: tuple[str, ...]
    #: eth_getLogs topics filter: [[topic0 of every handled event version]] (plus, for
    #: adapters reading one generic event, [[keccak256 of each event name]]).
    topics: list[Any]
    #: Bytes of logs one eth_getLogs answer may hold (a larger one is dropped and its range
    #: split) and one range joins answers up to (see :func:`response_budget`).
    response_bytes: int = MAX_BYTES
    #: Ledger rows a commit gathers while catching up (0: each range is committed alone).
    commit_rows: int = COMMIT_ROWS
    #: Bytes of logs the sizer aims each answer below.
    request_bytes: int = REQUEST_BYTES

    @property
    def name(self) -> str:
        return self.config.name

    def new_state(self) -> ScanState:
        return ScanState(self)


@dataclass(slots=True)
class ScanState:
    """What a scan of one source learns as it goes: the request sizer, the markets found, the
    token decimals read. Markets also come from the store:
    :meth:`invalidate` (after a rollback) makes them be read again."""

    source: Source
    sizer: RangeSizer = field(init=False)
    #: Markets known so far: address -> (index, long, short token); config, then events.
    markets: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    #: Token decimals known so far (config first, then read from the token contracts).
    decimals: dict[str, int | None] = field(default_factory=dict)
    #: Whether ``markets`` hold the stored markets as they are now.
    markets_loaded: bool = False
    #: Every market in the store's ``markets`` (announced or traded): address -> block listed.
    listed: dict[str, int] = field(default_factory=dict)
    #: Token symbols known so far (config first, then ``symbol()``; None: none readable).
    symbols: dict[str, str | None] = field(default_factory=dict)
    #: Protocol parameters stored so far: name -> [(block, value)] in block order.
    parameters: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    #: What the adapter carries from batch to batch beyond the positions table (``carried``
    #: hooks), valid after block ``carried_through`` (None: to be rebuilt from the ledger).
    carried: dict[str, Any] = field(default_factory=dict)
    carried_through: int | None = None

    def __post_init__(self) -> None:
        src = self.source
        self.sizer = RangeSizer(src.chain.max_block_range,
                                max_bytes=min(src.response_bytes, src.request_bytes))
        self.decimals.update({t.address: t.decimals for t in src.config.tokens.values()})
        self.symbols.update({t.address: t.symbol for t in src.config.tokens.values() if t.symbol})
        self._configured_markets()

    def _configured_markets(self) -> None:
        self.markets.clear()
        self.markets.update({m.address: (m.index_token, m.long_token, m.short_token)
                             for m in self.source.config.markets.values()})

    def invalidate(self) -> None:
        """A rollback removed stored rows: what was learnt from them is read again."""
        self.markets_loaded = False
        self.carried_through = None

    def load_markets(self, stored: dict[str, tuple[str, str, str]],
                     listed: dict[str, int] | None = None,
                     parameters: dict[str, list[tuple[int, int]]] | None = None) -> None:
        """Markets from the config, then those stored from events; what else the store holds
        of this source (markets listed, parameters)."""
        self._configured_markets()
        self.markets.update(stored)
        self.listed = dict(listed or {})
        self.parameters = {k: list(v) for k, v in (parameters or {}).items()}
        self.markets_loaded = True

    def add_markets(self, m: dict[str, list[Any]] | None) -> None:
        """Markets a prepared range announced (later ranges are adapted with them)."""
        for i, market in enumerate((m or {}).get("market", [])):
            if m["found_by"][i] != "event":  # type: ignore[index]
                continue  # first traded: no tokens to learn
            self.markets[market] = (m["index_token"][i], m["long_token"][i],  # type: ignore[index]
                                    m["short_token"][i])  # type: ignore[index]

    @property
    def addresses(self) -> list[str]:
        """Every address whose logs are fetched: the configured contracts, plus the markets
        found so far for adapters whose markets log themselves (Synthetix proxies)."""
        contracts = list(self.source.contracts)
        if not self.source.adapter.scans_markets:
            return contracts
        return contracts + sorted(set(self.markets) - set(contracts))


def build_source(cfg: Config, entry: ProtocolConfig, tuning: Tuning = Tuning()) -> Source:
    """Resolve adapter, ABI and filters; config and ABI problems raise ConfigError / AbiError."""
    index = cfg.protocols.index(entry)
    adapter = adapters.load(entry.adapter, cfg.file, f"protocols[{index}].adapter")
    chain = cfg.chains[entry.chain]
    if chain.kind == "cometbft" and adapter.state_needed is None:
        raise ConfigError(cfg.file, f"protocols[{index}].chain", entry.chain,
                          f"an EVM chain: adapter {entry.adapter} reads EVM logs")
    if chain.kind != "cometbft" and adapter.state_needed is not None:
        raise ConfigError(cfg.file, f"protocols[{index}].chain", entry.chain,
                          f"a CometBFT chain (kind: cometbft): adapter {entry.adapter} reads "
                          "ABCI events")
    adapters.check_roles(entry.adapter, adapter, [c.role for c in entry.contracts], cfg.file,
                         f"protocols[{index}].contracts")
    try:
        abi = (load_event_schema(entry.abi_dir) if chain.kind == "cometbft"
               else load_abi_dir(entry.abi_dir))
    except AbiError as e:
        raise AbiError(f"{cfg.file}: protocols[{index}] ({entry.name}): {e}") from None
    adapters.check_events(entry.adapter, adapter, abi.names, str(entry.abi_dir))
    known = {n for _, n in adapter.parameters}
    for name in entry.parameters:
        if name not in known:
            raise ConfigError(cfg.file, f"protocols[{index}].parameters.{name}", name,
                              "one of the adapter's parameters: " + (", ".join(sorted(known))
                                                                     or "(it reads none)"))
    topics: list[Any] = [abi.topics_for(set(adapter.events))]
    if adapter.event_names:
        topics.append(sorted("0x" + keccak(n.encode()).hex() for n in adapter.event_names))
    budget = tuning.response_bytes or response_budget(cfg.max_memory_mb, chain.requests_in_flight)
    return Source(entry, chain, adapter, abi,
                  tuple(dict.fromkeys(c.address for c in entry.contracts)), topics,
                  response_bytes=budget, commit_rows=tuning.commit_rows,
                  request_bytes=tuning.request_bytes)
