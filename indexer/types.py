"""Plain data carried between stages. Columns are parallel lists: one entry per row."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from itertools import pairwise
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from indexer.rpc import Log

#: ABI types that occupy exactly one 32-byte word.
STATIC_TYPES = {"address", "bool", "bytes32"} | {f"uint{8 * i}" for i in range(1, 33)} | {
    f"int{8 * i}" for i in range(1, 33)}


@dataclass(frozen=True, slots=True)
class EventDef:
    name: str
    #: Canonical signature, e.g. ``UpdatePosition(bytes32,uint256,...)``.
    signature: str
    #: keccak256 of the signature, lower-case 0x hex.
    topic0: str
    #: (name, canonical type, indexed) per input, in declaration order.
    inputs: tuple[tuple[str, str, bool], ...]
    #: Source file the definition came from.
    source: str

    @property
    def static(self) -> bool:
        """Every data argument is one word or a tuple of them (so the data has a fixed layout)."""
        return all(word_types(t) is not None for _, t, indexed in self.inputs if not indexed)

    @property
    def data_types(self) -> list[str]:
        return [t for _, t, indexed in self.inputs if not indexed]


def split_types(types: str) -> list[str]:
    """Split ``a,(b,c),d`` at its top-level commas."""
    out, depth, cur = [], 0, ""
    for ch in types:
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    if cur:
        out.append(cur)
    return out


def word_types(typ: str) -> list[str] | None:
    """The one-word types a static ABI type is laid out as, in order: ``[typ]`` for a word type,
    the flattened components for a tuple of static types (e.g. gTrade's ``Trade`` struct);
    None for a dynamic type (arrays, bytes, string, tuples holding them)."""
    if typ in STATIC_TYPES:
        return [typ]
    if typ.startswith("(") and typ.endswith(")"):
        out: list[str] = []
        for part in split_types(typ[1:-1]):
            words = word_types(part)
            if words is None:
                return None
            out += words
        return out
    return None


@dataclass(slots=True)
class EventColumns:
    """Decoded values of one event type, column by column."""

    event: EventDef
    #: Row number of each decoded log in the batch (chain order).
    rows: list[int] = field(default_factory=list)
    #: Argument name -> values (ints for integers, 0x hex for address/bytes32, bool for bool).
    fields: dict[str, list[Any]] = field(default_factory=dict)


@dataclass(slots=True)
class Decoded:
    """Result of decoding one batch of logs."""

    #: Event name -> columns. Both versions of one event name share a key when their fields do.
    events: dict[str, list[EventColumns]]
    #: (row, reason) for every log that could not be decoded.
    failures: list[tuple[int, str]]



@dataclass(slots=True)
class LogMeta:
    """Chain coordinates of each log of a batch, by row (chain order)."""

    block_number: list[int]
    block_hash: list[str]
    #: Unix seconds of the block, or -1 where the node left ``blockTimestamp`` out.
    block_time: list[int]
    tx_hash: list[str]
    log_index: list[int]
    address: list[str]

    @classmethod
    def from_logs(cls, logs: Sequence[Log]) -> LogMeta:
        return cls(
            block_number=[int(lg.block_number, 16) for lg in logs],
            block_hash=[lg.block_hash for lg in logs],
            block_time=[int(lg.block_timestamp, 16) if lg.block_timestamp else -1
                        for lg in logs],
            tx_hash=[lg.transaction_hash for lg in logs],
            log_index=[int(lg.log_index, 16) for lg in logs],
            address=[lg.address.lower() for lg in logs],
        )


@dataclass(slots=True)
class ChangeColumns:
    """Normalized position changes, raw integer amounts in the adapter's own units.

    USD amounts are integers scaled by ``10**usd_decimals`` (the adapter declares it); the
    store turns them into exact DECIMAL(38,18) and keeps the raw integers for exactness.
    """

    #: Row in the batch of the log the change is keyed by (its log_index is the row's).
    row: list[int] = field(default_factory=list)
    position_key: list[str] = field(default_factory=list)
    account: list[str] = field(default_factory=list)
    #: The protocol's market id (GMX v1: index token).
    market: list[str] = field(default_factory=list)
    collateral_token: list[str | None] = field(default_factory=list)
    is_long: list[bool] = field(default_factory=list)
    #: 'increase' | 'decrease' | 'close' | 'liquidation'.
    kind: list[str] = field(default_factory=list)
    #: Signed change of size, raw USD.
    size_delta: list[int] = field(default_factory=list)
    #: Signed collateral moved in or out as the protocol reports it, raw USD.
    collateral_delta: list[int | None] = field(default_factory=list)
    #: Position size after the change (0 once closed), raw USD.
    size_after: list[int] = field(default_factory=list)
    #: Collateral after the change, raw USD.
    collateral_after: list[int | None] = field(default_factory=list)
    #: Execution / mark price of the change, raw USD per whole index token.
    price: list[int | None] = field(default_factory=list)
    #: Fee charged by this change, raw USD.
    fee: list[int] = field(default_factory=list)
    #: The position's realised PnL as the protocol tracks it after the change, raw USD (signed).
    realized_pnl: list[int | None] = field(default_factory=list)
    #: Average entry price after the change (0 once closed), raw USD per whole index token;
    #: None where the index token's decimals are unknown.
    entry_price: list[int | None] = field(default_factory=list)
    #: The index token of the market (GMX v1: the market itself), or None if unknown.
    index_token: list[str | None] = field(default_factory=list)
    # Token-unit amounts, for protocols that track them (GMX v2); None elsewhere.
    #: Signed size change and size after, in index-token units.
    size_delta_tokens: list[int | None] = field(default_factory=list)
    size_after_tokens: list[int | None] = field(default_factory=list)
    #: Signed collateral change and collateral after, in collateral-token units.
    collateral_delta_tokens: list[int | None] = field(default_factory=list)
    collateral_after_tokens: list[int | None] = field(default_factory=list)
    #: Decimals of the index and collateral tokens, None if unknown.
    index_decimals: list[int | None] = field(default_factory=list)
    collateral_decimals: list[int | None] = field(default_factory=list)
    #: The position's funding reference after the change, in the protocol's units (GMX v1:
    #: ``entryFundingRate``, 1e6; Synthetix: the funding-sequence index its funding is settled
    #: to); None where not tracked or once closed.
    funding_entry: list[int | None] = field(default_factory=list)
    #: The liquidation price after the change where the protocol's event reports one (gTrade's
    #: ``liqPrice`` at execution), raw USD per whole index token; None elsewhere.
    liquidation_price: list[int | None] = field(default_factory=list)

    def add(self, change: Change) -> None:
        """Add one row."""
        for name in _CHANGE_FIELDS:
            getattr(self, name).append(getattr(change, name))

    def extend(self, **columns: list[Any]) -> None:
        """Add rows column by column (equal lengths); optional fields left out are None."""
        n = len(columns["row"])
        for name in _CHANGE_FIELDS:
            values = columns.get(name)
            if values is None:
                values = [_OPTIONAL[name]] * n
            elif len(values) != n:
                raise ValueError(f"column {name} has {len(values)} values, row has {n}")
            getattr(self, name).extend(values)

    def sort_by_row(self) -> None:
        """Put the rows in chain order (a no-op when they are)."""
        rows = self.row
        if all(a < b for a, b in pairwise(rows)):
            return
        order = sorted(range(len(rows)), key=rows.__getitem__)
        for name in _CHANGE_FIELDS:
            column = getattr(self, name)
            setattr(self, name, [column[i] for i in order])

    def __len__(self) -> int:
        return len(self.row)


@dataclass(frozen=True, slots=True)
class Change:
    """One normalized position change, as row-wise adapters write it (see :class:`ChangeColumns`
    for the meaning and units of each field)."""

    row: int
    position_key: str
    account: str
    market: str
    collateral_token: str | None
    is_long: bool
    kind: str
    size_delta: int
    #: None where the protocol has no per-position collateral (Perp v2's account margin).
    collateral_delta: int | None
    size_after: int
    collateral_after: int | None
    price: int | None
    fee: int
    realized_pnl: int | None = None
    entry_price: int | None = None
    index_token: str | None = None
    size_delta_tokens: int | None = None
    size_after_tokens: int | None = None
    collateral_delta_tokens: int | None = None
    collateral_after_tokens: int | None = None
    index_decimals: int | None = None
    collateral_decimals: int | None = None
    funding_entry: int | None = None
    liquidation_price: int | None = None


_CHANGE_FIELDS = tuple(f.name for f in fields(ChangeColumns))
_OPTIONAL = {f.name: None for f in fields(Change) if f.default is None}
assert set(_CHANGE_FIELDS) == {f.name for f in fields(Change)}


@dataclass(slots=True)
class MarketColumns:
    """Markets announced by the protocol's own events (e.g. GMX v2 ``MarketCreated``)."""

    row: list[int] = field(default_factory=list)
    market: list[str] = field(default_factory=list)
    #: The market's tokens (None where a market is not a token triple, e.g. Synthetix).
    index_token: list[str | None] = field(default_factory=list)
    long_token: list[str | None] = field(default_factory=list)
    short_token: list[str | None] = field(default_factory=list)
    #: A human-readable name where the event gives one (Synthetix ``marketKey``), else None.
    name: list[str | None] = field(default_factory=list)

    def append(self, row: int, market: str, index_token: str | None = None,
               long_token: str | None = None, short_token: str | None = None,
               name: str | None = None) -> None:
        self.row.append(row)
        self.market.append(market)
        self.index_token.append(index_token)
        self.long_token.append(long_token)
        self.short_token.append(short_token)
        self.name.append(name)


@dataclass(slots=True)
class OpenInterestColumns:
    """The protocol's own open-interest updates (GMX v2 ``OpenInterest[InTokens]Updated``)."""

    row: list[int] = field(default_factory=list)
    market: list[str] = field(default_factory=list)
    collateral_token: list[str] = field(default_factory=list)
    is_long: list[bool] = field(default_factory=list)
    #: 'usd' (raw USD at the adapter's scale) or 'tokens' (index-token units).
    unit: list[str] = field(default_factory=list)
    delta: list[int] = field(default_factory=list)
    next_value: list[int] = field(default_factory=list)


@dataclass(slots=True)
class FundingColumns:
    """Funding-rate updates (protocol units), by row."""

    row: list[int] = field(default_factory=list)
    market: list[str] = field(default_factory=list)
    #: Cumulative funding rate as the protocol reports it (GMX v1: 1e6 precision).
    rate: list[int] = field(default_factory=list)
    #: The entry's place in the market's funding sequence, where the protocol numbers them
    #: (Synthetix ``FundingRecomputed.index``), else None.
    index: list[int | None] = field(default_factory=list)
    #: The rate in force from here on, where the protocol emits one (Synthetix ``fundingRate``:
    #: a daily proportion, 1e18), else None.
    current_rate: list[int | None] = field(default_factory=list)

    def append(self, row: int, market: str, rate: int, index: int | None = None,
               current_rate: int | None = None) -> None:
        self.row.append(row)
        self.market.append(market)
        self.rate.append(rate)
        self.index.append(index)
        self.current_rate.append(current_rate)


@dataclass(frozen=True, slots=True)
class Payment:
    """Funding a position settled (dYdX ``settled_funding``): positive when the account paid."""

    row: int
    account: str
    position_key: str
    market: str
    #: Raw USD at the adapter's scale.
    amount: int


@dataclass(slots=True)
class AdapterOutput:
    changes: ChangeColumns
    funding: FundingColumns
    #: (row, reason) of logs that decoded but make no sense to the adapter.
    rejected: list[tuple[int, str]]
    markets: MarketColumns = field(default_factory=MarketColumns)
    open_interest: OpenInterestColumns = field(default_factory=OpenInterestColumns)
    #: Protocol parameters set by events: (row, market or None for the whole protocol, name,
    #: value as the protocol emits it).
    parameters: list[tuple[int, str | None, str, int]] = field(default_factory=list)
    #: Funding settled per position, where the protocol reports it.
    payments: list[Payment] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PreviousState:
    """A position's state after its latest stored change (see ``Store.load_previous``)."""

    is_long: bool
    #: Size in index-token units (a magnitude; the side is ``is_long``).
    size_tokens: int
    #: Collateral after, raw USD (None where the protocol has no per-position collateral).
    collateral: int | None
    #: Realised PnL after, raw USD (exact for adapters with at most 18 USD decimals).
    realized_pnl: int | None
    market: str | None = None
    collateral_token: str | None = None
    #: Size after, raw USD.
    size_usd: int = 0
    #: Collateral after in collateral-token units (None where not tracked).
    collateral_tokens: int | None = None
    #: Entry price after, raw USD (None where not tracked).
    entry_price: int | None = None
