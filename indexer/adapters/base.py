"""The adapter contract: what a protocol adapter gives the engine, and the context it receives.

An adapter is one module of ``indexer.adapters`` that defines ``ADAPTER = Adapter(...)``. Its
``to_changes`` is pure (no I/O): decoded events in, normalized changes out. What it needs from
outside the batch (transactions, token decimals, positions' prior state, markets announced at
run time) it asks for through the optional hooks; the prepare stage fetches that and hands it
over in :class:`AdapterContext`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from indexer.abi import keccak
from indexer.types import AdapterOutput, Decoded, LogMeta, PreviousState


@dataclass(frozen=True, slots=True)
class AdapterContext:
    chain_id: int
    #: Contract role -> its lower-case address(es) (a role may list several deployments).
    contracts: dict[str, tuple[str, ...]]
    #: Transactions fetched for ``transactions_needed``: hash -> eth_getTransactionByHash object.
    transactions: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Known markets: address -> (index token, long token, short token), from the config and
    #: from market-creation events stored earlier.
    markets: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    #: Known token decimals: address -> decimals, or None where the token has no readable
    #: ``decimals()`` (e.g. GMX v2 synthetic index tokens not listed in the config).
    decimals: dict[str, int | None] = field(default_factory=dict)
    #: For adapters with ``keys_needed``: position key -> its state before the batch (keys
    #: never seen before are absent).
    previous: dict[str, PreviousState] = field(default_factory=dict)
    #: The protocol's own token numbers from the config's ``tokens:`` (``id``): id -> address.
    token_ids: dict[int, str] = field(default_factory=dict)
    #: For adapters with ``state_needed`` (a CometBFT chain): (query name, height) -> the items
    #: the chain's state query answered at that height.
    chain_state: dict[tuple[str, int], list[dict[str, Any]]] = field(default_factory=dict)
    #: The chain's own open interest per market as last stored before the batch.
    open_interest: dict[str, int] = field(default_factory=dict)
    #: The first height whose chain state carries open interest (the chain's ``open_interest_from``).
    open_interest_from: int | None = None
    #: For adapters with ``carried_from_history``: what they carry from batch to batch, which
    #: ``to_changes`` updates in place (e.g. dYdX's sumOpen per position).
    carried: dict[str, Any] = field(default_factory=dict)


#: Hooks' signatures.
Needs = Callable[[Decoded, LogMeta], list[str]]
Convert = Callable[[Decoded, LogMeta, "AdapterContext"], AdapterOutput]


@dataclass(frozen=True, slots=True)
class Adapter:
    """One protocol's adapter."""

    #: The contract roles it reads (the keys under ``contracts:`` in the config).
    roles: tuple[str, ...]
    #: The ABI event names it handles (checked against the ABI at start-up).
    events: tuple[str, ...]
    #: The scale of its raw USD integers (GMX: 30).
    usd_decimals: int
    #: Decoded events of one batch -> changes, funding, markets, OI updates (pure, no I/O).
    to_changes: Convert
    #: For protocols logging through one generic event (GMX v2 ``EventLog*``): the names whose
    #: ``keccak256`` goes in the second topic of the eth_getLogs filter.
    event_names: tuple[str, ...] = ()
    #: Hashes of transactions whose input it needs (``ctx.transactions``).
    transactions_needed: Needs | None = None
    #: Token addresses whose decimals it needs and ``ctx.decimals`` lacks (read from the chain).
    tokens_needed: Callable[[Decoded, LogMeta, AdapterContext], list[str]] | None = None
    #: Position keys whose state before the batch it needs, for protocols whose events carry
    #: only deltas (loaded from the store into ``ctx.previous``). Such an adapter's ranges are
    #: prepared one after another, each once the one before it is committed.
    keys_needed: Needs | None = None
    #: For protocols whose markets are contracts announced at run time (Synthetix's market
    #: proxies): (row, market address) of each announcement; their logs are fetched too, from
    #: the announcing block on.
    markets_added: Callable[[Decoded, LogMeta], list[tuple[int, str]]] | None = None
    #: Parameters the protocol's setters change without an event, read with eth_call at the
    #: end of each range: (contract role, getter name without arguments, returning a uint).
    parameters: tuple[tuple[str, str], ...] = ()
    #: Contract roles a config may add (e.g. a settings contract whose events some views
    #: use); the ``roles`` are required.
    optional_roles: tuple[str, ...] = ()
    # CometBFT chains: events come from every block's ``block_results`` (no contracts); what the
    # chain keeps as state is read over its REST API at the heights the adapter names.
    #: The list queries it may name: (name, REST path, key of the list in the answer).
    state_queries: tuple[tuple[str, str, str], ...] = ()
    #: (query name, height) pairs a batch needs (the last argument is the range's end).
    state_needed: Callable[[Decoded, LogMeta, AdapterContext, int], list[tuple[str, int]]] | None \
        = None
    #: What the adapter carries beyond the positions table, rebuilt from the histories of the
    #: positions open before a batch (key -> [(is_long, size in tokens)] in chain order) when
    #: a run starts or a range is replayed; ``to_changes`` keeps it up to date.
    carried_from_history: Callable[[dict[str, list[tuple[bool, int]]]], dict[str, Any]] | None \
        = None
    #: Markets described by the state read: market -> (name, base decimals).
    markets_in_state: Callable[[dict[tuple[str, int], list[dict[str, Any]]]],
                               dict[str, tuple[str, int]]] | None = None

    @property
    def reads_prior_state(self) -> bool:
        return self.keys_needed is not None

    @property
    def scans_markets(self) -> bool:
        return self.markets_added is not None


def address_pair_key(first: str, second: str) -> str:
    """``keccak256(abi.encode(first, second))`` of two 0x addresses, as 0x hex: the position
    key of protocols keyed by (account, market) (Synthetix, Perpetual v2)."""
    data = bytes(12) + bytes.fromhex(first[2:]) + bytes(12) + bytes.fromhex(second[2:])
    return "0x" + keccak(data).hex()


def signed_change(before: int, after: int) -> tuple[str, bool, int]:
    """Classify a change of a signed size (+ long, - short) from ``before`` to ``after``.

    Returns (kind, is_long, size delta) with the ledger's conventions: the delta is the change
    of the magnitude; a flip (long to short or back in one trade) is one ``increase`` of the
    new side by its full size, the old side closing with it; ``close`` has the old side.
    A change with equal sizes (a margin-only change) is an ``increase`` of 0; callers that
    know better relabel it.
    """
    if after == 0:
        return "close", before > 0, -abs(before)
    if before == 0 or (before > 0) != (after > 0):
        return "increase", after > 0, abs(after)
    delta = abs(after) - abs(before)
    return ("increase" if delta >= 0 else "decrease"), after > 0, delta


def at_price(tokens: int, price: int, token_decimals: int) -> int:
    """A signed token amount (smallest units) valued at ``price`` (raw USD per whole token),
    in raw USD, truncated toward zero."""
    value = abs(tokens) * price // 10**token_decimals
    return value if tokens >= 0 else -value


#: One decoded log: (row in the batch, event name, argument name -> value).
EventRow = tuple[int, str, dict[str, Any]]


def event_rows(decoded: Decoded, names: tuple[str, ...]) -> list[EventRow]:
    """The decoded logs of the events ``names`` (every version of each), in chain order."""
    out: list[EventRow] = []
    for name in names:
        for cols in decoded.events.get(name, []):
            fields = list(cols.fields)
            for i, row in enumerate(cols.rows):
                out.append((row, name, {n: cols.fields[n][i] for n in fields}))
    out.sort(key=lambda r: r[0])
    return out
