"""Load and validate the YAML config (design.md section 3) into frozen objects.

Every problem raises :class:`ConfigError` naming the file, the key path, the bad value and what
was expected. ``${VAR}`` and ``${VAR:-default}`` in string values expand from the environment.
Unknown keys are errors.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from indexer.errors import MISSING, ConfigError, redact_url

logger = logging.getLogger(__name__)

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_ASSET = re.compile(r"^[A-Z0-9]{1,15}$")
_URL = re.compile(r"^https?://\S+$")
#: The folder above the package: the source checkout in an editable install (tests and scripts
#: use it); nothing the package itself needs is looked up here.
REPO_ROOT = Path(__file__).resolve().parent.parent
#: Below this, Python, the decoders and DuckDB alone do not fit.
MIN_MEMORY_MB = 400


@dataclass(frozen=True, slots=True)
class ChainConfig:
    name: str
    chain_id: int
    #: One or more JSON-RPC endpoints, tried in order (may carry API keys: never print them raw).
    rpc_urls: tuple[str, ...]
    #: Blocks behind the head that backfill stays (the reorg buffer).
    confirmations: int
    #: Use the node's ``finalized`` tag as the safe head where the node has one.
    use_finalized_tag: bool
    #: Largest eth_getLogs range in blocks; the scanner shrinks below it on provider errors.
    max_block_range: int
    #: Seconds before an RPC request times out.
    request_timeout: float
    #: Attempts per RPC request before giving up (first try included).
    max_attempts: int
    #: Seconds between head polls in ``sync``.
    poll_interval: float
    #: Most requests in flight at once to the chain's endpoints while catching up (the ranges
    #: ahead of the one being decoded and stored); each endpoint's own window is learnt below
    #: it (``indexer.endpoints``). On a CometBFT chain, block batches in flight.
    requests_in_flight: int = 16
    #: A known requests-a-second limit of each endpoint (a provider plan's); None: learnt from
    #: its rate-limit answers.
    requests_per_second: float | None = None
    #: ``evm`` (eth_getLogs) or ``cometbft`` (block_results events and Cosmos REST state).
    kind: str = "evm"
    #: CometBFT: the network name the node reports (``dydx-mainnet-1``); checked at start-up.
    network: str = ""
    #: CometBFT: the chain's Cosmos REST (gRPC-gateway) endpoints for state at a height.
    rest_urls: tuple[str, ...] = ()
    #: CometBFT: requests one JSON-RPC batch may hold (the node's ``[rpc]
    #: max_request_batch_size``, 10 by default).
    batch_size: int = 10
    #: CometBFT (dYdX): the first height whose state carries each perpetual's ``open_interest``
    #: (the v5.0.0 upgrade on mainnet); below it the chain's figure is not read.
    open_interest_from: int | None = None


def network_chain_id(network: str) -> int:
    """The number that names a CometBFT network in the database's ``chain_id`` columns (which
    hold EVM chain ids elsewhere): the first 6 bytes of sha256 of the network name, so the same
    name always gives the same number and it cannot collide with a real EVM chain id in practice.
    ``dydx-mainnet-1`` -> see ``chain_id`` in configs/dydx_v4_mainnet.yaml."""
    return int.from_bytes(hashlib.sha256(network.encode()).digest()[:6], "big")


@dataclass(frozen=True, slots=True)
class ContractConfig:
    role: str
    #: Lower-case 0x address.
    address: str
    start_block: int


@dataclass(frozen=True, slots=True)
class TokenConfig:
    #: Lower-case 0x address (GMX v2 synthetic index tokens have no contract at it).
    address: str
    decimals: int
    symbol: str = ""
    #: The protocol's own number for the token where it numbers them (gTrade's
    #: ``collateralIndex``), else None.
    id: int | None = None


@dataclass(frozen=True, slots=True)
class MarketConfig:
    """A market whose tokens are known up front (others are discovered from chain events)."""

    #: Lower-case 0x address of the market (GMX v2: the market token).
    address: str
    index_token: str
    long_token: str
    short_token: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class ProtocolConfig:
    #: Unique label of this deployment (e.g. ``gmx_v1_arbitrum``).
    name: str
    #: Adapter module name under ``indexer.adapters``.
    adapter: str
    chain: str
    contracts: tuple[ContractConfig, ...]
    #: Folder of ABI JSON files (default ``abis/<adapter>`` inside the package).
    abi_dir: Path
    #: Token address -> decimals and symbol (optional; others are read from the token contract).
    tokens: dict[str, TokenConfig] = field(default_factory=dict)
    #: Market address -> its tokens (optional; others come from the protocol's own events).
    markets: dict[str, MarketConfig] = field(default_factory=dict)
    #: Market id, token address or symbol -> asset (``ETH``): overrides what the names say.
    assets: dict[str, str] = field(default_factory=dict)
    #: Protocol parameters given instead of read from the chain (``maxLeverage``: raw integer).
    parameters: dict[str, int] = field(default_factory=dict)
    #: The first block of a source without contracts (a CometBFT chain's ``start_block``).
    first_block: int | None = None

    @property
    def start_block(self) -> int:
        if self.first_block is not None:
            return self.first_block
        return min(c.start_block for c in self.contracts)


@dataclass(frozen=True, slots=True)
class Config:
    file: str
    database: Path
    chains: dict[str, ChainConfig]
    protocols: tuple[ProtocolConfig, ...]
    #: Where ``sync`` and ``backfill`` serve /query, /report, /metrics and /health (port 0: none).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    #: Limits of one analyst's query through the service: seconds, rows, MB of a JSON/CSV answer.
    query_timeout: float = 60.0
    query_max_rows: int = 1_000_000
    query_max_mb: int = 512
    #: The memory a writing process aims to stay under, in MB: it sizes the getLogs answers held
    #: at once and DuckDB's own memory limit.
    max_memory_mb: int = 1500
    #: |skew| at or above which a market or asset is in an imbalance episode.
    imbalance_threshold: float = 0.5
    #: Share of an asset's open interest over which a venue is ``dominant``.
    dominance_threshold: float = 0.4
    #: URL that gets a JSON POST when an imbalance episode opens (empty: none).
    alert_webhook: str = ""
    #: A Dask scheduler that backfill spreads fetching over (empty: this machine alone), the
    #: staging folder its workers and the writer share, and the blocks of one partition (0:
    #: four ``max_block_range``).
    cluster_address: str = ""
    cluster_staging: Path | None = None
    partition_blocks: int = 0

    def protocol(self, name: str) -> ProtocolConfig:
        for p in self.protocols:
            if p.name == name:
                return p
        raise ConfigError(self.file, "--protocol", name,
                          "one of " + ", ".join(p.name for p in self.protocols))

    @property
    def service_url(self) -> str:
        return f"http://{self.metrics_host}:{self.metrics_port}"


def expand_env(text: str, file: str, key: str) -> str:
    """Expand ``${VAR}`` / ``${VAR:-default}``; an unset variable without default is an error."""

    def repl(m: re.Match[str]) -> str:
        var, default = m.group(1), m.group(2)
        value = os.environ.get(var)
        if value is None or (value == "" and default is not None):
            if default is None:
                raise ConfigError(file, key, m.group(0),
                                  f"environment variable {var} to be set (or ${{{var}:-default}})")
            return default
        return value

    return _VAR.sub(repl, text)


class _Reader:
    """Walks a mapping, checking types and rejecting unknown keys, with key paths in errors."""

    def __init__(self, file: str, data: Any, path: str) -> None:
        self.file, self.path = file, path
        if not isinstance(data, dict):
            raise ConfigError(file, path or "(top level)", data, "a mapping of keys to values")
        self.data = data
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def raw(self, name: str, default: Any = MISSING) -> Any:
        self.used.add(name)
        value = self.data.get(name, MISSING)
        if value is MISSING or value is None:
            if default is MISSING:
                raise ConfigError(self.file, self.key(name), MISSING, "a value (required key)")
            return default
        if isinstance(value, str):
            value = expand_env(value, self.file, self.key(name))
        return value

    def str(self, name: str, default: Any = MISSING, pattern: re.Pattern[str] | None = None,
            expected: str = "a string") -> Any:
        value = self.raw(name, default)
        if value is default and default is not MISSING:
            return value
        if not isinstance(value, str) or not value or (pattern and not pattern.match(value)):
            raise ConfigError(self.file, self.key(name), value, expected)
        return value

    def int(self, name: builtins.str, default: Any = MISSING, minimum: builtins.int = 0) -> Any:
        """An integer >= ``minimum`` (or ``default``, which may be None)."""
        value = self.raw(name, default)
        if value is None and default is None:
            return value
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(self.file, self.key(name), value, f"an integer >= {minimum}")
        return value

    def float(self, name: builtins.str, default: Any = MISSING,
              minimum: builtins.float = 0.0) -> Any:
        """A number > ``minimum`` (or ``default``, which may be None)."""
        value = self.raw(name, default)
        if value is None and default is None:
            return value
        try:
            number = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or number <= minimum:
            raise ConfigError(self.file, self.key(name), value, f"a number > {minimum:g}")
        return number

    def bool(self, name: builtins.str, default: Any = MISSING) -> builtins.bool:
        value = self.raw(name, default)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        if not isinstance(value, bool):
            raise ConfigError(self.file, self.key(name), value, "true or false")
        return value

    def done(self) -> None:
        unknown = sorted(set(map(str, self.data)) - self.used)
        if unknown:
            raise ConfigError(self.file, self.key(unknown[0]), self.data[unknown[0]],
                              "no such key; known keys here: " + ", ".join(sorted(self.used)))


_CHAIN_KEYS = ("chain_id", "rpc_url", "confirmations", "use_finalized_tag", "max_block_range",
               "request_timeout", "max_attempts", "poll_interval", "requests_in_flight",
               "requests_per_second")
#: Keys of a CometBFT chain (``kind: cometbft``); the EVM-only ones are refused there.
_COMETBFT_KEYS = ("kind", "network", "chain_id", "rpc_url", "rest_url", "max_block_range",
                  "request_timeout", "max_attempts", "poll_interval", "requests_in_flight",
                  "requests_per_second", "open_interest_from", "batch_size")
_KINDS = ("evm", "cometbft")
#: A Dask scheduler's address (``dask scheduler`` prints it).
_SCHEDULER = re.compile(r"^(tcp|tls|ucx|inproc)://\S+$")


def _urls(file: str, r: _Reader, name: str, need_rpc: bool, required: bool = True
          ) -> tuple[str, ...]:
    """One URL or a list of them, environment variables expanded (an unset one is allowed when
    the node is not needed)."""
    r.used.add(name)
    raw = r.data.get(name)  # expanded below: an unset variable may be allowed
    if raw is None:
        if not required:
            return ()
        raise ConfigError(file, r.key(name), MISSING, "a value (required key)")
    items = raw if isinstance(raw, list) else [raw]
    urls = []
    for i, u in enumerate(items):
        key = r.key(name) + (f"[{i}]" if isinstance(raw, list) else "")
        if isinstance(u, str):
            try:
                u = expand_env(u, file, key)
            except ConfigError:
                if need_rpc:
                    raise
                urls.append(UNSET_RPC)  # reading the database needs no node
                continue
        if not isinstance(u, str) or not re.match(r"^https?://\S+$", u):
            raise ConfigError(file, key, redact_url(u) if isinstance(u, str) else u,
                              "an http(s):// URL (or a list of them)")
        urls.append(u)
    return tuple(urls)


def _load_chain(file: str, name: str, data: Any, need_rpc: bool = True) -> ChainConfig:
    r = _Reader(file, data, f"chains.{name}")
    kind = r.str("kind", "evm")
    if kind not in _KINDS:
        raise ConfigError(file, r.key("kind"), kind, "evm or cometbft")
    if kind == "cometbft":
        return _load_cometbft_chain(file, name, r, need_rpc)
    r.used.update(_CHAIN_KEYS)
    urls = _urls(file, r, "rpc_url", need_rpc)
    cfg = ChainConfig(
        name=name,
        chain_id=r.int("chain_id", minimum=1),
        rpc_urls=urls,
        confirmations=r.int("confirmations", 64),
        use_finalized_tag=r.bool("use_finalized_tag", False),
        max_block_range=r.int("max_block_range", 10_000, minimum=1),
        request_timeout=r.float("request_timeout", 30.0),
        max_attempts=r.int("max_attempts", 5, minimum=1),
        poll_interval=r.float("poll_interval", 2.0),
        requests_in_flight=r.int("requests_in_flight", 16, minimum=1),
        requests_per_second=r.float("requests_per_second", None),
    )
    r.done()
    return cfg


def _load_cometbft_chain(file: str, name: str, r: _Reader, need_rpc: bool) -> ChainConfig:
    """A CometBFT chain: blocks are final once committed (no confirmations, no reorg window);
    ``max_block_range`` is the blocks one range (one commit) covers; ``batch_size`` the requests
    one JSON-RPC batch holds, ``requests_in_flight`` the batches fetched at once."""
    evm_only = sorted(set(map(str, r.data)) - set(_COMETBFT_KEYS))
    if evm_only and evm_only[0] in _CHAIN_KEYS:
        raise ConfigError(file, r.key(evm_only[0]), r.data[evm_only[0]],
                          "no such key on a CometBFT chain (blocks are final once committed)")
    network = r.str("network", pattern=re.compile(r"^[A-Za-z0-9._-]{1,64}$"),
                    expected="the network name the node reports, like dydx-mainnet-1")
    rpc_urls = _urls(file, r, "rpc_url", need_rpc)
    rest_urls = _urls(file, r, "rest_url", need_rpc)
    derived = network_chain_id(network)
    chain_id = r.int("chain_id", derived, minimum=1)
    if chain_id != derived:
        raise ConfigError(file, r.key("chain_id"), chain_id,
                          f"{derived} (the number derived from network {network}; "
                          "leave chain_id out)")
    cfg = ChainConfig(
        name=name, chain_id=chain_id, rpc_urls=rpc_urls, confirmations=0,
        use_finalized_tag=False,
        max_block_range=r.int("max_block_range", 100, minimum=1),
        request_timeout=r.float("request_timeout", 30.0),
        max_attempts=r.int("max_attempts", 5, minimum=1),
        poll_interval=r.float("poll_interval", 1.0),
        requests_in_flight=r.int("requests_in_flight", 8, minimum=1),
        requests_per_second=r.float("requests_per_second", None),
        batch_size=r.int("batch_size", 10, minimum=2),
        kind="cometbft", network=network, rest_urls=rest_urls,
        open_interest_from=r.int("open_interest_from", None))
    r.done()
    return cfg


def _load_protocol(file: str, base: Path, i: int, data: Any, chains: dict[str, ChainConfig]
                   ) -> ProtocolConfig:
    r = _Reader(file, data, f"protocols[{i}]")
    name = r.str("name", pattern=_NAME, expected="a lower-case label like gmx_v1_arbitrum")
    adapter = r.str("adapter", pattern=_NAME, expected="an adapter name like gmx_v1")
    chain = r.str("chain")
    if chain not in chains:
        raise ConfigError(file, r.key("chain"), chain,
                          "one of the chains defined under chains: " + ", ".join(chains))
    cometbft = chains[chain].kind == "cometbft"
    # a CometBFT chain's events come from every block, not from contracts
    c = _Reader(file, r.raw("contracts", {} if cometbft else MISSING), r.key("contracts"))
    first_block = r.int("start_block", 1, minimum=1) if cometbft else None
    contracts = []
    for role in list(c.data):
        value = c.raw(role)
        # one mapping, or a list of them for a role several deployments played over time
        # (e.g. two versions of Synthetix's FuturesMarketManager)
        entries = value if isinstance(value, list) else [value]
        if not entries:
            raise ConfigError(file, c.key(str(role)), value,
                              "{address, start_block} or a non-empty list of them")
        for j, entry in enumerate(entries):
            key = c.key(str(role)) + (f"[{j}]" if isinstance(value, list) else "")
            cr = _Reader(file, entry, key)
            address = cr.str("address", pattern=_ADDRESS,
                             expected="a 0x-prefixed 20-byte hex address")
            contracts.append(ContractConfig(str(role), address.lower(), cr.int("start_block")))
            cr.done()
    if not contracts and not cometbft:
        raise ConfigError(file, r.key("contracts"), {}, "at least one contract role")
    abi = r.str("abi_dir", None)
    abi_dir = (base / abi) if abi else default_abi_dir(adapter)
    tokens: dict[str, TokenConfig] = {}
    t = _Reader(file, r.raw("tokens", {}), r.key("tokens"))
    for addr in list(t.data):
        key = t.key(str(addr))
        if not _ADDRESS.match(str(addr)):
            raise ConfigError(file, key, addr, "a quoted 0x-prefixed 20-byte hex token address as the key")
        tr = _Reader(file, t.raw(addr), key)
        decimals = tr.int("decimals")
        if decimals > 77:
            raise ConfigError(file, tr.key("decimals"), decimals, "token decimals from 0 to 77")
        token_id = tr.int("id", None)
        if token_id is not None and any(o.id == token_id for o in tokens.values()):
            raise ConfigError(file, tr.key("id"), token_id, "a token id not used by another token")
        tokens[str(addr).lower()] = TokenConfig(str(addr).lower(), decimals, tr.str("symbol", ""),
                                                token_id)
        tr.done()
    markets: dict[str, MarketConfig] = {}
    m = _Reader(file, r.raw("markets", {}), r.key("markets"))
    for addr in list(m.data):
        key = m.key(str(addr))
        if not _ADDRESS.match(str(addr)):
            raise ConfigError(file, key, addr, "a quoted 0x-prefixed 20-byte hex market address as the key")
        mr = _Reader(file, m.raw(addr), key)
        addr_expected = "a 0x-prefixed 20-byte hex address"
        markets[str(addr).lower()] = MarketConfig(
            str(addr).lower(),
            mr.str("index_token", pattern=_ADDRESS, expected=addr_expected).lower(),
            mr.str("long_token", pattern=_ADDRESS, expected=addr_expected).lower(),
            mr.str("short_token", pattern=_ADDRESS, expected=addr_expected).lower(),
            mr.str("name", ""))
        mr.done()
    assets: dict[str, str] = {}
    a = _Reader(file, r.raw("assets", {}), r.key("assets"))
    for label in list(a.data):
        a.used.add(label)
        asset = a.data[label]
        if not isinstance(asset, str) or not _ASSET.match(asset):
            raise ConfigError(file, a.key(str(label)), asset,
                              "an upper-case asset symbol like ETH")
        assets[str(label).lower() if _ADDRESS.match(str(label)) else str(label)] = asset
    pr = _Reader(file, r.raw("parameters", {}), r.key("parameters"))
    parameters = {str(k): pr.int(str(k)) for k in list(pr.data)}
    r.done()
    return ProtocolConfig(name, adapter, chain, tuple(contracts), abi_dir.resolve(), tokens,
                          markets, assets, parameters, first_block)


def default_abi_dir(adapter: str) -> Path:
    """``indexer/abis/<adapter>``, shipped as package data (found the same way installed or not)."""
    # a wheel installs as plain files, so this is a real directory (no zip import to extract from)
    return Path(str(resources.files("indexer") / "abis" / adapter))


#: The RPC URL of a chain whose URL variable is unset, in a config loaded for reading only.
UNSET_RPC = "http://unset.invalid/"


def load_config(path: str | Path, need_rpc: bool = True) -> Config:
    """Read, expand and validate a config file. Raises ConfigError.

    Without ``need_rpc`` (commands that only read the database), an RPC URL whose environment
    variable is unset becomes :data:`UNSET_RPC` instead of an error."""
    p = Path(path)
    file = str(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(file, "(file)", file, "an existing YAML config file") from None
    except OSError as e:
        raise ConfigError(file, "(file)", file, f"a readable file ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(parse)"
        raise ConfigError(file, where, getattr(e, "problem", str(e)), "valid YAML") from None
    r = _Reader(file, data, "")
    base = p.resolve().parent
    db = Path(r.str("database", "data/perps.duckdb"))
    chains_r = _Reader(file, r.raw("chains"), "chains")
    chains = {str(n): _load_chain(file, str(n), chains_r.raw(str(n)), need_rpc)
              for n in list(chains_r.data)}
    if not chains:
        raise ConfigError(file, "chains", {}, "at least one chain")
    protos_raw = r.raw("protocols")
    if not isinstance(protos_raw, list) or not protos_raw:
        raise ConfigError(file, "protocols", protos_raw, "a non-empty list of protocol entries")
    protocols = tuple(_load_protocol(file, base, i, d, chains) for i, d in enumerate(protos_raw))
    seen: set[str] = set()
    for i, proto in enumerate(protocols):
        if proto.name in seen:
            raise ConfigError(file, f"protocols[{i}].name", proto.name, "a unique name")
        seen.add(proto.name)
    if "snapshot_interval" in r.data:
        r.used.add("snapshot_interval")
        logger.warning("%s: snapshot_interval is ignored and can be removed: readers no longer "
                       "get a copy of the database, they query the running daemon", file)
    metrics_host = r.str("metrics_host", "127.0.0.1")
    metrics_port = r.int("metrics_port", 9464)
    if metrics_port > 65535:
        raise ConfigError(file, "metrics_port", metrics_port, "a TCP port 1..65535, or 0 for none")
    max_memory_mb = r.int("max_memory_mb", 1500, minimum=MIN_MEMORY_MB)
    q = _Reader(file, r.raw("query", {}), "query")
    query_timeout = q.float("timeout", 60.0)
    query_max_rows = q.int("max_rows", 1_000_000, minimum=1)
    query_max_mb = q.int("max_result_mb", 512, minimum=1)
    if query_timeout <= 0:
        raise ConfigError(file, q.key("timeout"), query_timeout, "seconds, more than 0")
    q.done()
    an = _Reader(file, r.raw("analytics", {}), "analytics")
    imbalance = an.float("imbalance_threshold", 0.5)
    dominance = an.float("dominance_threshold", 0.4)
    for key, value in (("imbalance_threshold", imbalance), ("dominance_threshold", dominance)):
        if not 0 < value <= 1:
            raise ConfigError(file, an.key(key), value, "a fraction in (0, 1]")
    webhook = an.str("alert_webhook", "", pattern=_URL, expected="an http:// or https:// URL")
    an.done()
    cl = _Reader(file, r.raw("cluster", {}), "cluster")
    cluster_address = cl.str("address", "", pattern=_SCHEDULER,
                             expected="a Dask scheduler address like tcp://10.0.0.5:8786")
    staging = cl.str("staging", "")
    partition_blocks = cl.int("partition_blocks", 0)
    cl.done()
    r.done()
    return Config(file=file, database=(base / db).resolve(), chains=chains,
                  protocols=protocols, metrics_host=metrics_host, metrics_port=metrics_port,
                  query_timeout=query_timeout, query_max_rows=query_max_rows,
                  query_max_mb=query_max_mb,
                  max_memory_mb=max_memory_mb, imbalance_threshold=imbalance,
                  dominance_threshold=dominance, alert_webhook=webhook,
                  cluster_address=cluster_address,
                  cluster_staging=(base / staging).resolve() if staging else None,
                  partition_blocks=partition_blocks)
