"""A dYdX v4 trading simulator: it keeps its own subaccount state (the truth) and writes the blocks
a dYdX chain would have written for it, as CometBFT 0.38 serves them.

Nothing here is the indexer's code. The simulator matches orders by its own rules and records
what the chain would emit, following dydxprotocol/v4-chain (paths below are in that repository,
branch main unless a tag is named; the Go is read, not copied):

* ``match`` (``protocol/x/clob/types/events.go`` ``NewCreateMatchEvent``): 22 attributes in the
  order of ``MATCH_KEYS`` (14 since before mainnet, 4 builder since v8.1, 4 order router since
  v9.0), plus the SDK's ``msg_index`` from v4. Order matches and liquidations: ``x/clob/keeper/process_single_match.go``
  ``persistMatchedOrders``: the fill's quote quantums come from the maker's subticks
  (``FillAmountToQuoteQuantums``), each side's fee is ``BigMulPpm(fill, ppm, roundUp)`` (rounded
  towards +inf, so a negative maker fee, a rebate, rounds towards zero) and is subtracted from
  that side's quote delta, as is its builder fee (``x/clob/types/builder_code.go``; never for the
  liquidation taker); a liquidation taker pays no fee, the maker's rebate is capped at 0, and the
  insurance fund delta is subtracted from the taker's quote delta. Order-router fees are rev
  shares paid out of the fees: reported, not subtracted. Deleveraging and final settlement:
  ``x/clob/keeper/deleveraging.go`` ``ProcessDeleveraging``: taker = the liquidated subaccount,
  maker = the offsetting one, no fees, ``is_deleverage`` true; offsetting subaccounts are walked
  from a random start and must hold the opposite side; the quote is the bankruptcy price, or for
  final settlement ``GetNetNotional`` at the oracle price (``lib/quantums.go``
  ``BaseToQuoteQuantums``, truncated towards zero).
* ``settled_funding`` (``x/subaccounts/types/events.go``; emitted in
  ``x/subaccounts/keeper/subaccount.go`` ``UpdateSubaccounts``): for each updated subaccount in
  update order (taker, then maker; liquidated, then offsetting), for each of its perpetual
  positions by perpetual id whose settlement is non-zero, before the ``match`` event (that is
  emitted after ``UpdateSubaccounts`` returns). Settlement (``x/perpetuals/lib/lib.go``
  ``GetSettlementPpmWithPerpetual``, ``x/subaccounts/lib/updates.go``
  ``GetSettledSubaccountWithPerpetuals``): ``ppm = -(index_now - index_position) * quantums``;
  ``paid = -(ppm Div 1e6)`` with Go's Euclidean ``Div`` (a floor for a positive divisor), so the
  payment is the ceiling of ``delta * quantums / 1e6``; the event is emitted when ``ppm != 0``
  even if ``paid`` rounds to 0. Transfers (deposit, withdraw) also go through ``UpdateSubaccounts``
  (``x/subaccounts/keeper/transfer.go``), so they settle funding too, in their own transactions.
  Tags protocol/v1.0.0 .. v3.x keyed the number ``subaccount`` as well (two ``subaccount``
  attributes, owner then number; fixed in v4.0.0 by ab6a65c): heights below
  ``settled_funding_fixed_at`` use that form. (v3 emitted them in Go map order; here always by
  perpetual id, as since v4.)
* ``new_epoch`` (``x/epochs/types/events.go``; ``x/epochs/keeper/epoch_info.go``
  ``MaybeStartNextEpoch``, run in the epochs BeginBlocker, epochs in key order
  ``funding-sample``, ``funding-tick``, ``stats-epoch``); the funding index moves in the
  perpetuals EndBlocker of the block whose ``funding-tick`` epoch started
  (``x/perpetuals/keeper/perpetual.go`` ``MaybeProcessNewFundingTickEpoch``), so the block's trades
  settle against the old index. Index delta: ``x/perpetuals/funding/funding.go``
  ``GetFundingIndexDelta``. Epochs are compressed: funding-tick and stats-epoch every 50 s,
  funding-sample every 10 s (mainnet genesis: 3600 s and 60 s); the index delta is computed for
  the mainnet 3600 s so its size is realistic.
* Markets: real perpetual and CLOB-pair parameters and oracle prices/exponents from
  ``protocol/testing/mainnet/genesis.json`` (``MARKETS``). The market added mid-run takes the next
  perpetual id, as ``MsgCreatePerpetual`` would, with PEPE-USD's real parameters.
* The proposer's ``MsgProposedOperations`` is transaction 0 (``protocol/app/process/
  transactions.go``, ``proposedOperationsTxIndex``); the three app-injected transactions
  (acknowledge bridges, premium votes, market prices) are the block's last three; user
  transactions sit in between. Vote-extension offsets are not simulated.

CometBFT and the Cosmos SDK (read in cometbft/cometbft v0.38.17 and cosmos-sdk v0.50 baseapp):
dYdX v4.0.0 (the settled_funding fix, mainnet 12,791,712) moved to cosmos-sdk 0.50 and CometBFT
0.38 (``protocol/go.mod`` at the tags). From that height, message events carry a trailing
``msg_index`` attribute (cosmos-sdk PR 15845, baseapp ``runMsgs``) and begin/end-block events a
trailing ``mode`` (``BeginBlock``/``EndBlock``, indexed). Below it the node (0.38) serves the stored
0.37 responses converted by ``state/store.go`` ``responseFinalizeBlockFromLegacy``: begin and end
block events merged into ``finalize_block_events`` with a ``mode`` attribute whose ``index`` is
false, and no app hash. Below ``base64_attributes_below`` attribute keys and values are base64
(CometBFT 0.34). Noise (``tx``, ``message``, ``coin_spent``, ``coin_received``, ``transfer``,
``deposit_to_subaccount``, ``active_proposal`` ...) has plausible attributes; their exact lists
are assumed, not checked against a node.

Deviations on purpose: a few blocks have no transactions at all (a real dYdX block always has
at least the four injected ones) so that ``txs_results: null`` is exercised; every height emits
all 22 match attributes (the builder and router ones did not exist before v8.1/v9.0); pre-v4
transaction ``log`` fields are empty (0.47 filled them with the events as JSON).
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

NETWORK = "dydx-mainnet-1"
#: Mainnet height of the v4.0.0 upgrade (settled_funding key fix, cosmos-sdk 0.50, CometBFT 0.38).
V4_UPGRADE_HEIGHT = 12_791_712
#: Mainnet height of v5.0.0, from which Perpetual.open_interest is state.
OPEN_INTEREST_HEIGHT = 17_560_000
CHECKPOINT_EVERY = 25
USDC_DENOM = "ibc/8E27BA2D5493AF5636760E354E46004562C46AB7EC0CC4C1CA14E9E20E2545B5"
EMPTY_HASH = hashlib.sha256(b"").hexdigest().upper()
#: Mainnet genesis time (2023-10-26T17:00:00Z), for plausible epoch numbers.
GENESIS_UNIX = 1_698_339_600
#: Block time of the first simulated height (2024-04-08T09:00:00Z), whatever the height.
START_UNIX = 1_712_566_800

Sub = tuple[str, int]  # (owner, subaccount number)
Key = tuple[str, int, int]  # (owner, subaccount number, perpetual id)
Event = tuple[str, list[tuple[str, str]]]  # (type, [(key, value), ...])


# --------------------------------------------------------------------------------------- bech32

_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _bech32_polymod(values: list[int]) -> int:
    generator = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            if (top >> i) & 1:
                chk ^= generator[i]
    return chk


def bech32_address(data: bytes, hrp: str = "dydx") -> str:
    """BIP-173 bech32 of ``data`` (an account's 20 bytes), as Cosmos addresses are written."""
    five: list[int] = []
    acc = bits = 0
    for byte in data:
        acc, bits = (acc << 8) | byte, bits + 8
        while bits >= 5:
            bits -= 5
            five.append((acc >> bits) & 31)
    if bits:
        five.append((acc << (5 - bits)) & 31)
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    polymod = _bech32_polymod(expanded + five + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32[d] for d in five + checksum)


def module_address(name: str) -> str:
    """A module account's address: the first 20 bytes of sha256(name) (x/auth NewModuleAddress)."""
    return bech32_address(hashlib.sha256(name.encode()).digest()[:20])


# -------------------------------------------------------------------------------------- markets

CROSS, ISOLATED = "PERPETUAL_MARKET_TYPE_CROSS", "PERPETUAL_MARKET_TYPE_ISOLATED"
ACTIVE, FINAL_SETTLEMENT = "STATUS_ACTIVE", "STATUS_FINAL_SETTLEMENT"


@dataclass(frozen=True)
class MarketSpec:
    """A perpetual and its CLOB pair, with the oracle price it starts from (price x 10^exponent
    USD per whole coin)."""

    perpetual_id: int
    ticker: str
    market_id: int
    atomic_resolution: int
    liquidity_tier: int
    market_type: str
    step_base_quantums: int
    subticks_per_tick: int
    quantum_conversion_exponent: int
    price_exponent: int
    genesis_price: int
    trade_weight: int


#: Mainnet genesis values (perpetuals.perpetuals, clob.clob_pairs, prices.market_params /
#: market_prices), four different atomic resolutions, then the market added mid-run.
MARKETS = (
    MarketSpec(0, "BTC-USD", 0, -10, 0, CROSS, 1_000_000, 100_000, -9, -5, 2_868_819_524, 35),
    MarketSpec(1, "ETH-USD", 1, -9, 0, CROSS, 1_000_000, 100_000, -9, -6, 1_811_985_252, 30),
    MarketSpec(2, "LINK-USD", 2, -6, 1, CROSS, 1_000_000, 1_000_000, -9, -9, 7_204_646_989, 15),
    MarketSpec(3, "POL-USD", 3, -5, 1, CROSS, 1_000_000, 1_000_000, -9, -10, 6_665_746_387, 12),
    # genesis perpetual 28 (atomic resolution +1); here the next id, an isolated market
    MarketSpec(4, "PEPE-USD", 28, 1, 1, ISOLATED, 1_000_000, 1_000_000, -9, -16, 2_481_900_353,
               14),
)
ADDED_PERPETUAL = 4
FINAL_SETTLED_PERPETUAL = 3
#: Fill sizes in steps of step_base_quantums.
SIZE_STEPS = (1, 1, 2, 3, 5, 8, 10, 15, 20, 40, 75, 150, 400, 1000)
TAKER_FEES_PPM = (500, 450, 400, 350, 300, 250)
MAKER_FEES_PPM = (-110, -110, -70, 0, 50, 100)
#: Genesis clob.liquidations_config.max_liquidation_fee_ppm.
MAX_LIQUIDATION_FEE_PPM = 15_000
#: Liquidated subaccounts wound down per block in final settlement (MaxDeleveragingAttemptsPerBlock
#: is a flag; its value here is a choice).
FINAL_SETTLEMENTS_PER_BLOCK = 20

MATCH_KEYS = (
    "taker_subaccount", "taker_subaccount_number", "maker_subaccount", "maker_subaccount_number",
    "taker_order_fee_quote_quantums", "maker_order_fee_quote_quantums",
    "taker_quote_balance_delta_quote_quantums", "maker_quote_balance_delta_quote_quantums",
    "taker_perpetual_quantums_delta_base_quantums", "maker_perpetual_quantums_delta_base_quantums",
    "insurance_fund_delta_quote_quantums", "is_liquidation", "is_deleverage", "perpetual_id",
    "taker_builder_address", "maker_builder_address", "taker_builder_fee_quantums",
    "maker_builder_fee_quantums", "taker_order_router_address", "maker_order_router_address",
    "taker_order_router_fee_quote_quantums", "maker_order_router_fee_quote_quantums",
)
assert len(MATCH_KEYS) == 22  # 14 since before mainnet, 4 builder (v8.1), 4 order router (v9.0)


# ---------------------------------------------------------------------------- chain arithmetic


def _quo(numerator: int, denominator: int) -> int:
    """Go ``big.Int.Quo``: division truncated towards zero (``denominator`` > 0)."""
    q = abs(numerator) // denominator
    return q if numerator >= 0 else -q


def fill_quote_quantums(base_quantums: int, subticks: int, quantum_conversion_exponent: int) -> int:
    """``x/clob/types/quantums.go`` ``FillAmountToQuoteQuantums``: ``subticks * base quantums *
    10^qce``, rounded down. With genesis steps (1e6) and ticks (>= 1e5 subticks) and qce -9 the
    product is always a whole number of quote quantums, so the fill price is exact."""
    product = base_quantums * subticks
    if quantum_conversion_exponent >= 0:
        return product * 10**quantum_conversion_exponent
    return product // 10**-quantum_conversion_exponent


def base_to_quote_quantums(base_quantums: int, atomic_resolution: int, price: int,
                           price_exponent: int) -> int:
    """``lib/quantums.go`` ``BaseToQuoteQuantums`` (quote atomic resolution -6), truncated
    towards zero: the oracle notional of a signed amount."""
    exponent = price_exponent + atomic_resolution + 6
    product = price * base_quantums
    if exponent >= 0:
        return product * 10**exponent
    return _quo(product, 10**-exponent)


def mul_ppm_round_up(value: int, ppm: int) -> int:
    """``lib/big_math.go`` ``BigMulPpm(value, ppm, roundUp=true)`` (``BigDivCeil``): the ceiling
    of ``value * ppm / 1e6``; fees and builder fees."""
    return -((-value * ppm) // 1_000_000)


def funding_index_delta(rate_8h_ppm: int, seconds: int, spec: MarketSpec, price: int) -> int:
    """``x/perpetuals/funding/funding.go`` ``GetFundingIndexDelta``: ``seconds * rate`` converted
    at the oracle price, then divided by 8 hours, truncating towards zero."""
    scaled = base_to_quote_quantums(seconds * rate_8h_ppm, spec.atomic_resolution, price,
                                    spec.price_exponent)
    return _quo(scaled, 8 * 3600)


def funding_paid(index_delta: int, quantums: int) -> int:
    """Funding a position paid (positive) or received when settled after its perpetual's index
    moved by ``index_delta`` (see the module docstring for the sources)."""
    settlement_ppm = -(index_delta * quantums)
    return -(settlement_ppm // 1_000_000)


def fill_price(quote_quantums: int, base_quantums: int, atomic_resolution: int) -> Fraction:
    """USD per whole coin of a fill: quote quantums (1e-6 USD) per base quantum (10^atomic
    resolution coins)."""
    exponent = -6 - atomic_resolution
    scale = Fraction(10**exponent) if exponent >= 0 else Fraction(1, 10**-exponent)
    return Fraction(abs(quote_quantums), abs(base_quantums)) * scale


def next_entry(quantums: int, entry: Fraction, sum_open: int, delta: int, price: Fraction
               ) -> tuple[Fraction, int]:
    """The official Indexer's entry price after a fill of ``delta`` at ``price`` on a position of
    ``quantums`` (``indexer/services/ender/src/scripts/helpers/
    dydx_update_perpetual_position_aggregate_fields.sql``, with the position row opened or
    replaced first by ``handlers/dydx_subaccount_update_handler.sql``): a fill on the position's
    side averages into the entry price weighted by size (``sumOpen``); a reducing fill leaves it;
    an opening or flipping fill starts a new position (entry 0, sumOpen 0) whose entry becomes
    that fill's price. Returns (entry, sumOpen); a closed position gives (0, 0)."""
    after = quantums + delta
    if after == 0:
        return Fraction(0), 0
    if quantums == 0 or (quantums > 0) != (after > 0):
        return price, abs(delta)
    if (delta > 0) == (quantums > 0):
        total = sum_open + abs(delta)
        return (entry * sum_open + price * abs(delta)) / total, total
    return entry, sum_open


# -------------------------------------------------------------------------------------- events


def match_event(taker: Sub, maker: Sub, perpetual_id: int, *, taker_fee: int, maker_fee: int,
                taker_quote: int, maker_quote: int, taker_delta: int, maker_delta: int,
                insurance: int, liquidation: bool, deleverage: bool,
                builders: tuple[str, str, int, int], routers: tuple[str, str, int, int]) -> Event:
    """A ``match`` event, attributes in ``NewCreateMatchEvent``'s order (``MATCH_KEYS``)."""
    taker_builder, maker_builder, taker_builder_fee, maker_builder_fee = builders
    taker_router, maker_router, taker_router_fee, maker_router_fee = routers
    values = (taker[0], str(taker[1]), maker[0], str(maker[1]), str(taker_fee), str(maker_fee),
              str(taker_quote), str(maker_quote), str(taker_delta), str(maker_delta),
              str(insurance), "true" if liquidation else "false",
              "true" if deleverage else "false", str(perpetual_id), taker_builder, maker_builder,
              str(taker_builder_fee), str(maker_builder_fee), taker_router, maker_router,
              str(taker_router_fee), str(maker_router_fee))
    return "match", list(zip(MATCH_KEYS, values, strict=True))


def settled_funding_event(sub: Sub, perpetual_id: int, paid: int, *, fixed: bool) -> Event:
    """``settled_funding``; before v4.0.0 the number was keyed ``subaccount`` too."""
    return "settled_funding", [("subaccount", sub[0]),
                               ("subaccount_number" if fixed else "subaccount", str(sub[1])),
                               ("perpetual_id", str(perpetual_id)),
                               ("funding_paid_quote_quantums", str(paid))]


def new_epoch_event(name: str, number: int, tick_time: int, block_time: int, height: int
                    ) -> Event:
    return "new_epoch", [("epoch_info_name", name), ("epoch_number", str(number)),
                         ("epoch_start_tick_time", str(tick_time)),
                         ("epoch_start_block_time", str(block_time)),
                         ("epoch_start_block", str(height))]


def bank_transfer_events(sender: str, recipient: str, amount: str) -> list[Event]:
    """x/bank ``SendCoins``: coin_spent, coin_received, transfer (assumed attribute lists)."""
    return [("coin_spent", [("spender", sender), ("amount", amount)]),
            ("coin_received", [("receiver", recipient), ("amount", amount)]),
            ("transfer", [("recipient", recipient), ("sender", sender), ("amount", amount)])]


def message_event(action: str, module: str, sender: str | None = None) -> Event:
    """The ``message`` event baseapp puts first among a message's events."""
    pairs = [("action", action)]
    if sender is not None:
        pairs.append(("sender", sender))
    pairs.append(("module", module))
    return "message", pairs


# ------------------------------------------------------------------------- CometBFT rendering


def rfc3339(unix_ns: int) -> str:
    """A time as CometBFT's JSON writes it: UTC, Go's RFC3339Nano (trailing zeros of the
    fraction dropped, no fraction when it is zero)."""
    seconds, nanos = divmod(unix_ns, 1_000_000_000)
    text = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    return text + "Z"


def merkle_root(items: list[bytes]) -> bytes:
    """CometBFT ``crypto/merkle`` ``HashFromByteSlices`` (RFC 6962 leaf/inner prefixes)."""
    if not items:
        return hashlib.sha256(b"").digest()
    if len(items) == 1:
        return hashlib.sha256(b"\x00" + items[0]).digest()
    split = 1 << (len(items) - 1).bit_length() - 1
    return hashlib.sha256(b"\x01" + merkle_root(items[:split]) + merkle_root(items[split:])
                          ).digest()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def render_events(events: list[Event], *, base64_attributes: bool, trailing: tuple[str, str]
                  | None = None, trailing_indexed: bool = True) -> list[dict[str, Any]]:
    """Events as CometBFT's JSON has them; ``trailing`` is an attribute added to each (the SDK's
    ``msg_index`` or ``mode``)."""
    out = []
    for kind, pairs in events:
        if trailing is not None:
            pairs = [*pairs, trailing]
        if base64_attributes:
            attributes = [{"key": _b64(k), "value": _b64(v), "index": True} for k, v in pairs]
        else:
            attributes = [{"key": k, "value": v, "index": True} for k, v in pairs]
        if trailing is not None and not trailing_indexed:
            attributes[-1]["index"] = False
        out.append({"type": kind, "attributes": attributes})
    return out


def _tx_msg_data(type_url: str) -> str:
    """base64 ``TxMsgData{msg_responses: [Any{type_url}]}``: what ``data`` holds for a
    one-message transaction whose response is empty."""
    url = type_url.encode()
    any_ = b"\x0a" + bytes([len(url)]) + url
    return base64.b64encode(b"\x12" + bytes([len(any_)]) + any_).decode()


CONSENSUS_PARAMS: dict[str, Any] = {  # mainnet genesis consensus params
    "block": {"max_bytes": "4194304", "max_gas": "-1"},
    "evidence": {"max_age_num_blocks": "100000", "max_age_duration": "172800000000000",
                 "max_bytes": "1048576"},
    "validator": {"pub_key_types": ["ed25519"]},
    "version": {"app": "0"},
}


@dataclass
class _Tx:
    """One transaction: its bytes, the ante handler's events and its (single) message's."""

    raw: bytes
    type_url: str
    ante: list[Event] = field(default_factory=list)
    msg: list[Event] = field(default_factory=list)
    gas_wanted: int = 0
    gas_used: int = 0


# ----------------------------------------------------------------------------- exchange state


@dataclass
class _Position:
    quantums: int
    funding_index: int  # the perpetual's index when this position was last settled
    entry: Fraction
    sum_open: int


class Exchange:
    """Subaccount positions, funding indexes and open interest: the simulator's truth."""

    def __init__(self) -> None:
        self.subaccounts: dict[Sub, dict[int, _Position]] = {}
        self.holders: dict[int, dict[Sub, None]] = {}  # perpetual -> subaccounts holding it
        self.funding_index: dict[int, int] = {}
        self.long_open_interest: dict[int, int] = {}

    def list_perpetual(self, perpetual_id: int) -> None:
        self.holders[perpetual_id] = {}
        self.funding_index[perpetual_id] = 0
        self.long_open_interest[perpetual_id] = 0

    def quantums(self, sub: Sub, perpetual_id: int) -> int:
        position = self.subaccounts.get(sub, {}).get(perpetual_id)
        return position.quantums if position else 0

    def settle(self, sub: Sub) -> list[tuple[int, int]]:
        """Settle every position of ``sub`` at the current indexes: (perpetual, paid) for each
        non-zero settlement, by perpetual id."""
        out = []
        for perpetual_id, position in sorted(self.subaccounts.get(sub, {}).items()):
            delta = self.funding_index[perpetual_id] - position.funding_index
            if delta * position.quantums:
                out.append((perpetual_id, funding_paid(delta, position.quantums)))
            position.funding_index = self.funding_index[perpetual_id]
        return out

    def apply(self, sub: Sub, perpetual_id: int, delta: int, price: Fraction) -> None:
        positions = self.subaccounts.setdefault(sub, {})
        position = positions.get(perpetual_id)
        before = position.quantums if position else 0
        after = before + delta
        entry, sum_open = next_entry(before, position.entry if position else Fraction(0),
                                     position.sum_open if position else 0, delta, price)
        self.long_open_interest[perpetual_id] += max(after, 0) - max(before, 0)
        if after == 0:
            del positions[perpetual_id]
            del self.holders[perpetual_id][sub]
            if not positions:
                del self.subaccounts[sub]
        elif position is None:
            positions[perpetual_id] = _Position(after, self.funding_index[perpetual_id], entry,
                                                sum_open)
            self.holders[perpetual_id][sub] = None
        else:
            position.quantums, position.entry, position.sum_open = after, entry, sum_open

    def snapshot(self) -> list[list[Any]]:
        """Open positions as [owner, number, perpetual, quantums, entry, sumOpen], sorted."""
        return sorted([owner, number, perpetual_id, p.quantums, str(p.entry), p.sum_open]
                      for (owner, number), positions in self.subaccounts.items()
                      for perpetual_id, p in positions.items())


# ------------------------------------------------------------------------------------ scenario

SUBACCOUNTS_MODULE = module_address("subaccounts")
FEE_COLLECTOR = module_address("fee_collector")
INSURANCE_FUND = module_address("insurance_fund")
DISTRIBUTION = module_address("distribution")
NO_FEES = ("", "", 0, 0)


class _Simulation:
    """Runs the scenario block by block: BeginBlock (epochs), transaction 0 (the proposer's
    operations: trades, liquidations, deleveraging, final settlement), user transactions, the
    injected price update, EndBlock (funding tick, governance); then renders the block."""

    def __init__(self, *, seed: int, start_height: int, blocks: int,
                 settled_funding_fixed_at: int, open_interest_from: int,
                 base64_attributes_below: int | None, accounts: int, malformed_at: int | None
                 ) -> None:
        self.rng = random.Random(seed)
        self.bytes = random.Random(f"{seed}:bytes")  # tx bytes, signatures: noise only
        self.start, self.last = start_height, start_height + blocks - 1
        self.fixed_at, self.open_interest_from = settled_funding_fixed_at, open_interest_from
        self.base64_below, self.malformed_at = base64_attributes_below, malformed_at
        self.specs = {m.perpetual_id: m for m in MARKETS}
        self.exchange = Exchange()
        self.status: dict[int, str] = {}
        self.oracle = {m.perpetual_id: m.genesis_price for m in MARKETS}
        self.funding_history: list[list[int]] = []
        for spec in MARKETS:
            if spec.perpetual_id != ADDED_PERPETUAL:
                self._list(spec.perpetual_id, self.start)
                # a chain months old: indexes far from 0
                index = self.rng.randint(-3_000_000, 3_000_000)
                self.exchange.funding_index[spec.perpetual_id] = index
                self.funding_history[-1][2] = index

        owners = [bech32_address(self.rng.randbytes(20)) for _ in range(max(accounts, 4))]
        self.cross_pool: list[Sub] = [(o, 0) for o in owners]
        self.cross_pool += [(o, 1) for o in owners if self.rng.randrange(5) < 2]
        self.isolated_pool: list[Sub] = [(o, 128 + self.rng.randrange(3)) for o in owners
                                         if self.rng.randrange(2)]
        for owner in owners[:2]:  # at least two owners trade the isolated market
            if not any(o == owner for o, _ in self.isolated_pool):
                self.isolated_pool.append((owner, 128))
        self.taker_ppm = {o: self.rng.choice(TAKER_FEES_PPM) for o in owners}
        self.maker_ppm = {o: self.rng.choice(MAKER_FEES_PPM) for o in owners}
        self.builders = [bech32_address(self.rng.randbytes(20)) for _ in range(3)]
        self.routers = [bech32_address(self.rng.randbytes(20)) for _ in range(2)]
        self.validators = [(self.bytes.randbytes(20).hex().upper(),
                            base64.b64encode(self.bytes.randbytes(32)).decode())
                           for _ in range(3)]
        self.validators_hash = self.bytes.randbytes(32).hex().upper()
        self.consensus_hash = self.bytes.randbytes(32).hex().upper()

        self.added_at = self.start + blocks * 2 // 5
        self.final_settlement_at = self.start + blocks * 17 // 20
        self.busy = {self.start + blocks // 6, self.start + blocks // 2 + 7,
                     self.start + blocks * 3 // 4}
        self.forced_liquidation = self.start + blocks // 3
        self.forced_deleveraging = self.start + blocks * 3 // 5 + 1
        special = self.busy | {self.added_at, self.forced_liquidation, self.forced_deleveraging,
                               malformed_at or 0}
        special |= set(range(self.final_settlement_at, self.final_settlement_at + 6))
        self.empty = {h for h in range(self.start, self.last + 1)
                      if h not in special and self.rng.randrange(100) < 3}

        self.time_ns = START_UNIX * 10**9 + self.rng.randrange(10**9)
        seconds = START_UNIX
        hours, minutes = (seconds - GENESIS_UNIX) // 3600, (seconds - GENESIS_UNIX) // 60
        # [name, duration (s), next tick (unix s), current epoch], in store key order
        self.epochs: list[list[Any]] = [
            ["funding-sample", 10, (seconds // 10 + 1) * 10 + 5, minutes],
            ["funding-tick", 50, (seconds // 50 + 1) * 50, hours],
            ["stats-epoch", 50, (seconds // 50 + 1) * 50, hours],
        ]
        self.funding_tick_now = False
        self.proposal_id = 40 + self.rng.randrange(20)
        self.sequence: dict[str, int] = {}

        self.prev_hash = self.bytes.randbytes(32).hex().upper()
        self.prev_time_ns = self.time_ns - 1_000_000_000
        self.prev_app_hash = self.bytes.randbytes(32)
        self.prev_results_hash = EMPTY_HASH
        self.last_state = ""

        self.fills: list[list[Any]] = []
        self.liquidations: list[dict[str, Any]] = []
        self.settled: list[dict[str, Any]] = []
        self.malformed: list[tuple[int, str]] = []
        self.checkpoints: dict[int, list[list[Any]]] = {}
        self.matches = 0

    # ------------------------------------------------------------------ markets and helpers

    def _list(self, perpetual_id: int, height: int) -> None:
        self.exchange.list_perpetual(perpetual_id)
        self.status[perpetual_id] = ACTIVE
        self.funding_history.append([height, perpetual_id, 0])

    def _tradeable(self, height: int) -> list[int]:
        """Perpetuals open for trading in this block (before its EndBlock)."""
        return [p for p, status in sorted(self.status.items())
                if status == ACTIVE and (p != ADDED_PERPETUAL or height > self.added_at)
                and not (p == FINAL_SETTLED_PERPETUAL and height >= self.final_settlement_at)]

    def _pool(self, perpetual_id: int) -> list[Sub]:
        spec = self.specs[perpetual_id]
        return self.isolated_pool if spec.market_type == ISOLATED else self.cross_pool

    def _counterparty(self, perpetual_id: int, taker: Sub) -> Sub:
        pool = self._pool(perpetual_id)
        while True:
            maker = self.rng.choice(pool)
            if maker[0] != taker[0]:
                return maker

    def _subticks(self, perpetual_id: int, ticks_off_oracle: int) -> int:
        """An order price in subticks, ``ticks_off_oracle`` ticks from the oracle price: a
        human price P is ``subticks * 10^(qce - 6 - atomic_resolution)`` USD per coin."""
        spec = self.specs[perpetual_id]
        exponent = (spec.price_exponent - spec.quantum_conversion_exponent + 6
                    + spec.atomic_resolution)
        oracle = self.oracle[perpetual_id]
        raw = oracle * 10**exponent if exponent >= 0 else oracle // 10**-exponent
        tick = spec.subticks_per_tick
        return max(tick, (raw // tick + ticks_off_oracle) * tick)

    def _random_position(self, height: int) -> tuple[Sub, int] | None:
        candidates = [(sub, p) for p in self._tradeable(height)
                      for sub in self.exchange.holders[p]]
        return self.rng.choice(candidates) if candidates else None

    # ------------------------------------------------------------------------- matching

    def _emit_match(self, tx: _Tx, height: int, taker: Sub, maker: Sub, perpetual_id: int,
                    taker_delta: int, fill_quote: int, *, taker_quote: int, maker_quote: int,
                    taker_fee: int = 0, maker_fee: int = 0, insurance: int = 0,
                    liquidation: bool = False, deleverage: bool = False,
                    builders: tuple[str, str, int, int] = NO_FEES,
                    routers: tuple[str, str, int, int] = NO_FEES) -> None:
        """Settle both subaccounts' funding, apply the fill to both, and write the events in the
        chain's order (insurance fund payment, settled_funding of taker then maker, builder and
        fee transfers, match)."""
        if insurance > 0:
            tx.msg += bank_transfer_events(SUBACCOUNTS_MODULE, INSURANCE_FUND,
                                           f"{insurance}{USDC_DENOM}")
        elif insurance < 0:
            tx.msg += bank_transfer_events(INSURANCE_FUND, SUBACCOUNTS_MODULE,
                                           f"{-insurance}{USDC_DENOM}")
        for sub in (taker, maker):
            self._settle(tx, height, 0, sub)
        price = fill_price(fill_quote, taker_delta, self.specs[perpetual_id].atomic_resolution)
        self.exchange.apply(taker, perpetual_id, taker_delta, price)
        self.exchange.apply(maker, perpetual_id, -taker_delta, price)
        self.fills.append([height, taker[0], taker[1], perpetual_id, taker_delta, str(price)])
        self.fills.append([height, maker[0], maker[1], perpetual_id, -taker_delta, str(price)])
        for address, fee in ((builders[0], builders[2]), (builders[1], builders[3])):
            if fee > 0:
                tx.msg += bank_transfer_events(SUBACCOUNTS_MODULE, address, f"{fee}{USDC_DENOM}")
        fees = taker_fee + maker_fee
        if fees:
            source, sink = ((SUBACCOUNTS_MODULE, FEE_COLLECTOR) if fees > 0
                            else (FEE_COLLECTOR, SUBACCOUNTS_MODULE))
            tx.msg += bank_transfer_events(source, sink, f"{abs(fees)}{USDC_DENOM}")
        tx.msg.append(match_event(
            taker, maker, perpetual_id, taker_fee=taker_fee, maker_fee=maker_fee,
            taker_quote=taker_quote, maker_quote=maker_quote, taker_delta=taker_delta,
            maker_delta=-taker_delta, insurance=insurance, liquidation=liquidation,
            deleverage=deleverage, builders=builders, routers=routers))
        self.matches += 1

    def _settle(self, tx: _Tx, height: int, tx_index: int, sub: Sub) -> None:
        for perpetual_id, paid in self.exchange.settle(sub):
            tx.msg.append(settled_funding_event(sub, perpetual_id, paid,
                                                fixed=height >= self.fixed_at))
            self.settled.append({"height": height, "tx_index": tx_index, "owner": sub[0],
                                 "number": sub[1], "perpetual_id": perpetual_id, "paid": paid})

    def _trade(self, tx: _Tx, height: int, perpetual_id: int) -> None:
        """An order match: the taker opens, adds to, partly or fully closes, or flips."""
        spec = self.specs[perpetual_id]
        step = spec.step_base_quantums
        holders = list(self.exchange.holders[perpetual_id])
        if holders and self.rng.randrange(100) < 55:
            taker = self.rng.choice(holders)
        else:
            taker = self.rng.choice(self._pool(perpetual_id))
        held = self.exchange.quantums(taker, perpetual_id)
        side = 1 if held > 0 else -1
        choice = self.rng.randrange(100)
        if held == 0:
            delta = self.rng.choice(SIZE_STEPS) * step * self.rng.choice((1, -1))
        elif choice < 35:  # increase
            delta = side * self.rng.choice(SIZE_STEPS) * step
        elif choice < 60 and abs(held) > step:  # partial close
            delta = -side * self.rng.randint(1, abs(held) // step - 1) * step
        elif choice < 82:  # full close
            delta = -held
        else:  # flip: one fill takes the position through zero
            delta = -held - side * self.rng.choice(SIZE_STEPS) * step
        maker = self._counterparty(perpetual_id, taker)
        buy = delta > 0
        subticks = self._subticks(perpetual_id, self.rng.randint(-6, 6))
        fill = fill_quote_quantums(abs(delta), subticks, spec.quantum_conversion_exponent)
        taker_fee = mul_ppm_round_up(fill, self.taker_ppm[taker[0]])
        maker_fee = mul_ppm_round_up(fill, self.maker_ppm[maker[0]])
        builders, routers = NO_FEES, NO_FEES
        if self.rng.randrange(100) < 3:
            builders = (self.rng.choice(self.builders), "",
                        mul_ppm_round_up(fill, self.rng.choice((100, 250, 500, 1000))), 0)
        elif self.rng.randrange(100) < 2:
            builders = ("", self.rng.choice(self.builders), 0,
                        mul_ppm_round_up(fill, self.rng.choice((100, 500))))
        if self.rng.randrange(100) < 3 and taker_fee > 0:  # a share of the fee, not charged
            routers = (self.rng.choice(self.routers), "", taker_fee * 250_000 // 1_000_000, 0)
        gross = -fill if buy else fill
        self._emit_match(tx, height, taker, maker, perpetual_id, delta, fill,
                         taker_quote=gross - taker_fee - builders[2],
                         maker_quote=-gross - maker_fee - builders[3], taker_fee=taker_fee,
                         maker_fee=maker_fee, builders=builders, routers=routers)

    def _liquidation(self, tx: _Tx, height: int) -> None:
        """A liquidation order (the taker) closes part or all of a position against a maker at
        the maker's price, worse than the oracle; no taker fee, the maker's rebate capped at 0,
        and an insurance fund delta taken from the taker."""
        picked = self._random_position(height)
        if picked is None:
            return
        liquidated, perpetual_id = picked
        spec = self.specs[perpetual_id]
        held = self.exchange.quantums(liquidated, perpetual_id)
        lots = abs(held) // spec.step_base_quantums
        amount = (abs(held) if lots == 1 or self.rng.randrange(2)
                  else self.rng.randint(1, lots - 1) * spec.step_base_quantums)
        delta = -amount if held > 0 else amount
        buy = delta > 0
        maker = self._counterparty(perpetual_id, liquidated)
        subticks = self._subticks(perpetual_id, self.rng.randint(0, 15) * (1 if buy else -1))
        fill = fill_quote_quantums(amount, subticks, spec.quantum_conversion_exponent)
        maker_fee = mul_ppm_round_up(fill, max(self.maker_ppm[maker[0]], 0))
        if self.rng.randrange(5):
            insurance = mul_ppm_round_up(fill, self.rng.randint(1_000, MAX_LIQUIDATION_FEE_PPM))
        else:  # the fill was beyond the bankruptcy price: the insurance fund pays
            insurance = -self.rng.randint(1, max(1, fill // 100))
        gross = -fill if buy else fill
        self._emit_match(tx, height, liquidated, maker, perpetual_id, delta, fill,
                         taker_quote=gross - insurance, maker_quote=-gross - maker_fee,
                         maker_fee=maker_fee, insurance=insurance, liquidation=True)
        self.liquidations.append(self._liquidated(height, liquidated, perpetual_id, -delta,
                                                  "liquidation"))

    def _deleveraging(self, tx: _Tx, height: int) -> None:
        picked = self._random_position(height)
        if picked is None:
            return
        liquidated, perpetual_id = picked
        step = self.specs[perpetual_id].step_base_quantums
        held = self.exchange.quantums(liquidated, perpetual_id)
        amount = abs(held) if self.rng.randrange(2) else self.rng.randint(1, abs(held) // step) * step
        self._deleverage(tx, height, liquidated, perpetual_id, -amount if held > 0 else amount,
                         final=False)

    def _deleverage(self, tx: _Tx, height: int, liquidated: Sub, perpetual_id: int, total: int,
                    *, final: bool) -> None:
        """Offset ``total`` (the liquidated side's delta) against subaccounts holding the other
        side, walked from a random start: at the bankruptcy price, or in final settlement at
        the oracle notional."""
        spec = self.specs[perpetual_id]
        remaining = total
        others = [s for s in self.exchange.holders[perpetual_id] if s != liquidated]
        start = self.rng.randrange(len(others)) if others else 0
        for i in range(len(others)):
            if remaining == 0:
                break
            other = others[(start + i) % len(others)]
            held = self.exchange.quantums(other, perpetual_id)
            if held == 0 or (held > 0) != (remaining > 0):
                continue
            delta = remaining if abs(remaining) <= abs(held) else held
            quote = base_to_quote_quantums(-delta, spec.atomic_resolution,
                                           self.oracle[perpetual_id], spec.price_exponent)
            if not final:  # the bankruptcy price is worse for the liquidated side
                worse = 1_000 + self.rng.randint(0, 30) * (-1 if quote > 0 else 1)
                quote = quote * worse // 1_000 if quote > 0 else -((-quote) * worse // 1_000)
            if quote == 0:
                continue
            self._emit_match(tx, height, liquidated, other, perpetual_id, delta, abs(quote),
                             taker_quote=quote, maker_quote=-quote, deleverage=True)
            self.liquidations.append(self._liquidated(
                height, liquidated, perpetual_id, -delta,
                "final_settlement" if final else "deleverage"))
            remaining -= delta

    @staticmethod
    def _liquidated(height: int, sub: Sub, perpetual_id: int, quantums: int, kind: str
                    ) -> dict[str, Any]:
        return {"height": height, "tx_index": 0, "owner": sub[0], "number": sub[1],
                "perpetual_id": perpetual_id, "quantums": quantums, "kind": kind}

    def _final_settlement(self, tx: _Tx, height: int) -> None:
        holders = list(self.exchange.holders[FINAL_SETTLED_PERPETUAL])
        for sub in holders[:FINAL_SETTLEMENTS_PER_BLOCK]:
            held = self.exchange.quantums(sub, FINAL_SETTLED_PERPETUAL)
            if held:
                self._deleverage(tx, height, sub, FINAL_SETTLED_PERPETUAL, -held, final=True)

    def _malformed(self, tx: _Tx, height: int) -> None:
        """Two match events the chain never wrote (a non-integer delta; no perpetual_id): they
        change nothing here and must be quarantined."""
        taker = self.rng.choice(self.cross_pool)
        maker = self._counterparty(0, taker)
        kind, pairs = match_event(taker, maker, 0, taker_fee=1, maker_fee=0, taker_quote=-2869,
                                  maker_quote=2869, taker_delta=1_000_000, maker_delta=-1_000_000,
                                  insurance=0, liquidation=False, deleverage=False,
                                  builders=NO_FEES, routers=NO_FEES)
        bad_amount = [(k, "12x" if k == "taker_perpetual_quantums_delta_base_quantums" else
                       "-12" if k == "maker_perpetual_quantums_delta_base_quantums" else v)
                      for k, v in pairs]
        no_perpetual = [(k, v) for k, v in pairs if k != "perpetual_id"]
        tx.msg += [(kind, bad_amount), (kind, no_perpetual)]
        self.malformed += [
            (height, "taker_perpetual_quantums_delta_base_quantums is not an integer"),
            (height, "lacks perpetual_id")]

    # ---------------------------------------------------------------------------- the block

    def _begin_block(self, height: int) -> list[Event]:
        events: list[Event] = []
        block_seconds = self.time_ns // 10**9
        self.funding_tick_now = False
        for epoch in self.epochs:
            name, duration, next_tick, number = epoch
            if block_seconds >= next_tick:
                epoch[2], epoch[3] = next_tick + duration, number + 1
                events.append(new_epoch_event(name, number + 1, next_tick, block_seconds,
                                              height))
                self.funding_tick_now |= name == "funding-tick"
        if self.rng.randrange(3) == 0:  # x/distribution allocating the last block's fees
            amount = f"{self.rng.randint(1, 10**7)}{USDC_DENOM}"
            events += bank_transfer_events(FEE_COLLECTOR, DISTRIBUTION, amount)
        return events

    def _proposed_operations(self, height: int) -> _Tx:
        url = "/dydxprotocol.clob.MsgProposedOperations"
        tx = _Tx(b"", url, msg=[message_event(url, "clob")])
        tradeable = self._tradeable(height)
        if height in self.busy:
            trades = self.rng.randint(150, 210)
        else:
            roll = self.rng.randrange(100)
            trades = 0 if roll < 45 else self.rng.randint(1, 3) if roll < 80 else \
                self.rng.randint(4, 10)
        weights = [self.specs[p].trade_weight for p in tradeable]
        for _ in range(trades):
            self._trade(tx, height, self.rng.choices(tradeable, weights)[0])
        if height == self.forced_liquidation or self.rng.randrange(100) < 2:
            self._liquidation(tx, height)
        if height == self.forced_deleveraging or self.rng.randrange(100) < 1:
            self._deleveraging(tx, height)
        if self.status.get(FINAL_SETTLED_PERPETUAL) == FINAL_SETTLEMENT:
            self._final_settlement(tx, height)
        if height == self.malformed_at:
            self._malformed(tx, height)
        operations = sum(1 for kind, _ in tx.msg if kind == "match")
        tx.raw = self.bytes.randbytes(48 + 150 * operations)
        tx.gas_used = 60_000 + 90_000 * operations
        return tx

    def _user_txs(self, height: int) -> list[_Tx]:
        """Deposits and withdrawals (which settle the subaccount's funding) and bank sends."""
        out: list[_Tx] = []
        if self.rng.randrange(100) >= 12:
            return out
        for _ in range(self.rng.randint(1, 2)):
            tx_index = 1 + len(out)
            kind = self.rng.randrange(3)
            held = list(self.exchange.subaccounts)
            sub = self.rng.choice(held) if held and self.rng.randrange(3) else \
                self.rng.choice(self.cross_pool + self.isolated_pool)
            owner = sub[0]
            self.sequence[owner] = self.sequence.get(owner, self.rng.randrange(500)) + 1
            fee = f"{self.rng.randint(5_000, 20_000)}{USDC_DENOM}"
            ante = bank_transfer_events(owner, FEE_COLLECTOR, fee) + [
                ("tx", [("fee", fee), ("fee_payer", owner)]),
                ("tx", [("acc_seq", f"{owner}/{self.sequence[owner]}")]),
                ("tx", [("signature", base64.b64encode(self.bytes.randbytes(64)).decode())])]
            quantums = self.rng.randint(1, 50_000) * 10**6
            amount = f"{quantums}{USDC_DENOM}"
            if kind == 0:
                url = "/dydxprotocol.sending.MsgDepositToSubaccount"
                tx = _Tx(b"", url, ante, [message_event(url, "sending", owner)])
                tx.msg += bank_transfer_events(owner, SUBACCOUNTS_MODULE, amount)
                self._settle(tx, height, tx_index, sub)
                tx.msg.append(("deposit_to_subaccount", [
                    ("sender", owner), ("recipient", owner), ("recipient_number", str(sub[1])),
                    ("asset_id", "0"), ("quantums", str(quantums))]))
            elif kind == 1:
                url = "/dydxprotocol.sending.MsgWithdrawFromSubaccount"
                tx = _Tx(b"", url, ante, [message_event(url, "sending", owner)])
                tx.msg += bank_transfer_events(SUBACCOUNTS_MODULE, owner, amount)
                self._settle(tx, height, tx_index, sub)
                tx.msg.append(("withdraw_from_subaccount", [
                    ("sender", owner), ("sender_number", str(sub[1])), ("recipient", owner),
                    ("asset_id", "0"), ("quantums", str(quantums))]))
            else:
                url = "/cosmos.bank.v1beta1.MsgSend"
                to = self.rng.choice(self.cross_pool)[0]
                tx = _Tx(b"", url, ante, [message_event(url, "bank", owner)])
                tx.msg += bank_transfer_events(owner, to, f"{self.rng.randint(1, 10**20)}adydx")
            tx.raw = self.bytes.randbytes(self.rng.randint(180, 420))
            tx.gas_wanted = self.rng.randint(200_000, 400_000)
            tx.gas_used = tx.gas_wanted - self.rng.randint(20_000, 150_000)
            out.append(tx)
        return out

    def _injected_txs(self) -> list[_Tx]:
        """The last three transactions of every block; the price update moves the oracle."""
        out = []
        for url, module, size in (("/dydxprotocol.bridge.MsgAcknowledgeBridges", "bridge", 40),
                                  ("/dydxprotocol.perpetuals.MsgAddPremiumVotes", "perpetuals",
                                   300),
                                  ("/dydxprotocol.prices.MsgUpdateMarketPrices", "prices", 400)):
            tx = _Tx(self.bytes.randbytes(size + self.rng.randrange(size)), url,
                     msg=[message_event(url, module)])
            tx.gas_used = 20_000 + self.rng.randrange(50_000)
            out.append(tx)
        for perpetual_id in self.status:
            price = self.oracle[perpetual_id]
            self.oracle[perpetual_id] = max(1, price + price * self.rng.randint(-25, 25) // 10_000)
        return out

    def _end_block(self, height: int) -> list[Event]:
        events: list[Event] = []
        if self.funding_tick_now:
            self._funding_tick(height)
        if height == self.added_at:
            self._list(ADDED_PERPETUAL, height)
            events.append(self._proposal_passed())
        if height == self.final_settlement_at:
            self.status[FINAL_SETTLED_PERPETUAL] = FINAL_SETTLEMENT
            events.append(self._proposal_passed())
        return events

    def _proposal_passed(self) -> Event:
        self.proposal_id += 1
        return "active_proposal", [("proposal_id", str(self.proposal_id)),
                                   ("proposal_result", "proposal_passed")]

    def _funding_tick(self, height: int) -> None:
        """Each perpetual's index moves by its (random, clamped-looking) 8-hour rate over an
        hour at the oracle price; a market in final settlement has no premium samples: rate 0."""
        for perpetual_id, status in sorted(self.status.items()):
            if status == FINAL_SETTLEMENT or self.rng.randrange(10) == 0:
                continue
            rate = self.rng.randint(-400, 400)
            delta = funding_index_delta(rate, 3600, self.specs[perpetual_id],
                                        self.oracle[perpetual_id])
            if delta:
                self.exchange.funding_index[perpetual_id] += delta
                self.funding_history.append(
                    [height, perpetual_id, self.exchange.funding_index[perpetual_id]])

    def _state_line(self, height: int) -> str | None:
        """The REST view of x/perpetuals and x/clob after this block, if it changed."""
        perpetuals, clob_pairs = [], []
        for perpetual_id in sorted(self.status):
            spec = self.specs[perpetual_id]
            perpetual: dict[str, Any] = {
                "params": {"id": perpetual_id, "ticker": spec.ticker, "market_id": spec.market_id,
                           "atomic_resolution": spec.atomic_resolution,
                           "default_funding_ppm": 0, "liquidity_tier": spec.liquidity_tier,
                           "market_type": spec.market_type},
                "funding_index": str(self.exchange.funding_index[perpetual_id])}
            if height >= self.open_interest_from:
                perpetual["open_interest"] = str(self.exchange.long_open_interest[perpetual_id])
            perpetuals.append(perpetual)
            clob_pairs.append({
                "id": perpetual_id, "perpetual_clob_metadata": {"perpetual_id": perpetual_id},
                "step_base_quantums": str(spec.step_base_quantums),
                "subticks_per_tick": spec.subticks_per_tick,
                "quantum_conversion_exponent": spec.quantum_conversion_exponent,
                "status": self.status[perpetual_id]})
        text = json.dumps({"perpetuals": perpetuals, "clob_pairs": clob_pairs},
                          separators=(",", ":"))
        if text == self.last_state:
            return None
        self.last_state = text
        return f'{{"height":{height},{text[1:]}'

    def _render(self, height: int, begin: list[Event], end: list[Event], txs: list[_Tx]
                ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The /block and /block_results results of this height."""
        legacy = height < self.fixed_at  # CometBFT 0.37 / cosmos-sdk 0.47 responses
        encoded = self.base64_below is not None and height < self.base64_below
        msg_index = None if legacy else ("msg_index", "0")
        tx_results = []
        for tx in txs:
            events = render_events(tx.ante, base64_attributes=encoded)
            events += render_events(tx.msg, base64_attributes=encoded, trailing=msg_index)
            tx_results.append({"code": 0, "data": _tx_msg_data(tx.type_url), "log": "",
                               "info": "", "gas_wanted": str(tx.gas_wanted),
                               "gas_used": str(tx.gas_used), "events": events, "codespace": ""})
        finalize = render_events(begin, base64_attributes=encoded, trailing=("mode", "BeginBlock"),
                                 trailing_indexed=not legacy)
        finalize += render_events(end, base64_attributes=encoded, trailing=("mode", "EndBlock"),
                                  trailing_indexed=not legacy)
        data_hash = merkle_root([hashlib.sha256(tx.raw).digest() for tx in txs]).hex().upper()
        proposer = self.validators[height % len(self.validators)][0]
        header = {
            "version": {"block": "11", "app": "0"}, "chain_id": NETWORK, "height": str(height),
            "time": rfc3339(self.time_ns),
            "last_block_id": {"hash": self.prev_hash, "parts": {"total": 1, "hash": _parts(
                self.prev_hash)}},
            "last_commit_hash": hashlib.sha256(b"commit" + bytes.fromhex(self.prev_hash))
            .hexdigest().upper(),
            "data_hash": data_hash, "validators_hash": self.validators_hash,
            "next_validators_hash": self.validators_hash, "consensus_hash": self.consensus_hash,
            "app_hash": self.prev_app_hash.hex().upper(),
            "last_results_hash": self.prev_results_hash, "evidence_hash": EMPTY_HASH,
            "proposer_address": proposer}
        block_hash = hashlib.sha256(json.dumps(header, sort_keys=True).encode()).hexdigest().upper()
        commit_time = rfc3339(self.prev_time_ns + 400_000_000)
        block = {
            "block_id": {"hash": block_hash, "parts": {"total": 1, "hash": _parts(block_hash)}},
            "block": {
                "header": header,
                "data": {"txs": [base64.b64encode(tx.raw).decode() for tx in txs]},
                "evidence": {"evidence": []},
                "last_commit": {
                    "height": str(height - 1), "round": 0,
                    "block_id": {"hash": self.prev_hash,
                                 "parts": {"total": 1, "hash": _parts(self.prev_hash)}},
                    "signatures": [{"block_id_flag": 2, "validator_address": address,
                                    "timestamp": commit_time,
                                    "signature": base64.b64encode(self.bytes.randbytes(64))
                                    .decode()} for address, _ in self.validators]}}}
        app_hash = hashlib.sha256(self.prev_app_hash + bytes.fromhex(data_hash)
                                  + self.last_state.encode()).digest()
        consensus = dict(CONSENSUS_PARAMS)
        if not legacy:
            consensus["abci"] = {"vote_extensions_enable_height": "0"}
        results = {"height": str(height), "txs_results": tx_results or None,
                   "finalize_block_events": finalize or None, "validator_updates": None,
                   "consensus_param_updates": consensus,
                   "app_hash": "" if legacy else base64.b64encode(app_hash).decode()}
        self.prev_hash, self.prev_time_ns, self.prev_app_hash = block_hash, self.time_ns, app_hash
        self.prev_results_hash = merkle_root(
            [f"0|{r['data']}|{r['gas_wanted']}|{r['gas_used']}".encode() for r in tx_results]
        ).hex().upper()
        return block, results

    def run(self, out: Path) -> Truth:
        with (out / "blocks.jsonl").open("w") as blocks, (out / "state.jsonl").open("w") as state:
            for height in range(self.start, self.last + 1):
                if height > self.start:
                    self.time_ns += self.rng.randint(600_000_000, 1_500_000_000)
                begin = self._begin_block(height)
                txs: list[_Tx] = []
                if height not in self.empty:
                    txs.append(self._proposed_operations(height))
                    txs += self._user_txs(height)
                    txs += self._injected_txs()
                end = self._end_block(height)
                line = self._state_line(height)
                if line is not None:
                    state.write(line + "\n")
                block, results = self._render(height, begin, end, txs)
                blocks.write(json.dumps({"height": height, "block": block,
                                         "block_results": results}, separators=(",", ":")))
                blocks.write("\n")
                if (height - self.start + 1) % CHECKPOINT_EVERY == 0 or height == self.last:
                    self.checkpoints[height] = self.exchange.snapshot()
        markets = {}
        for spec in MARKETS:
            markets[spec.perpetual_id] = {
                "ticker": spec.ticker, "market_id": spec.market_id,
                "atomic_resolution": spec.atomic_resolution, "market_type": spec.market_type,
                "added_at": self.added_at if spec.perpetual_id == ADDED_PERPETUAL else None,
                "final_settlement_at": (self.final_settlement_at
                                        if spec.perpetual_id == FINAL_SETTLED_PERPETUAL
                                        else None)}
        return Truth(network=NETWORK, start_height=self.start, last_height=self.last,
                     heights=sorted(self.checkpoints), markets=markets, matches=self.matches,
                     liquidations=self.liquidations, settled_funding=self.settled,
                     malformed=self.malformed, checkpoints=self.checkpoints, fills=self.fills,
                     funding_history=self.funding_history)


def _parts(block_hash: str) -> str:
    return hashlib.sha256(b"parts" + bytes.fromhex(block_hash)).hexdigest().upper()


# ---------------------------------------------------------------------------------------- truth


@dataclass
class Truth:
    """The simulator's own state over the run, to hold the indexer to.

    ``checkpoints`` holds every open position after each height of ``heights`` (every 25th and
    the last) as [owner, number, perpetual, quantums, entry price "n/d", sumOpen]; ``fills`` every
    applied fill side as [height, owner, number, perpetual, delta, price "n/d"] so any height can
    be replayed from the checkpoint before it; ``funding_history`` [height, perpetual, index]
    each time an index was set. ``markets``: perpetual id -> ticker, market_id,
    atomic_resolution, market_type, added_at (the first height whose state lists it, trades from
    the next block; None: listed before the run), final_settlement_at (the first height whose
    state has its CLOB pair in STATUS_FINAL_SETTLEMENT, wound down from the next block; or
    None). ``liquidations``: the
    liquidated side (the taker) of each liquidation, deleveraging and final-settlement match:
    height, tx_index, owner, number, perpetual_id, quantums (the amount closed, signed as the
    position was), kind. ``settled_funding``: height, tx_index, owner, number, perpetual_id, paid
    (quote quantums, positive = paid). ``matches``: applied match events (the malformed ones are
    not counted). ``malformed``: (height, reason) of each match event that must be quarantined.
    """

    network: str
    start_height: int
    last_height: int
    heights: list[int]
    markets: dict[int, dict[str, Any]]
    matches: int
    liquidations: list[dict[str, Any]]
    settled_funding: list[dict[str, Any]]
    malformed: list[tuple[int, str]]
    checkpoints: dict[int, list[list[Any]]]
    fills: list[list[Any]]
    funding_history: list[list[int]]
    _replayed: dict[int, dict[Key, tuple[int, Fraction, int]]] = field(
        default_factory=dict, init=False, compare=False, repr=False)

    def _state(self, height: int) -> dict[Key, tuple[int, Fraction, int]]:
        """(quantums, entry, sumOpen) per open position after ``height``: the checkpoint at or
        before it, then the fills after that checkpoint."""
        if height in self._replayed:
            return self._replayed[height]
        i = bisect.bisect_right(self.heights, height) - 1
        state: dict[Key, tuple[int, Fraction, int]] = {}
        base = self.start_height - 1
        if i >= 0:
            base = self.heights[i]
            state = {(o, n, p): (q, Fraction(e), s) for o, n, p, q, e, s in self.checkpoints[base]}
        fill_heights = [f[0] for f in self.fills]
        lo, hi = bisect.bisect_right(fill_heights, base), bisect.bisect_right(fill_heights, height)
        for _, owner, number, perpetual_id, delta, price in self.fills[lo:hi]:
            key = (owner, number, perpetual_id)
            quantums, entry, sum_open = state.get(key, (0, Fraction(0), 0))
            entry, sum_open = next_entry(quantums, entry, sum_open, delta, Fraction(price))
            if quantums + delta:
                state[key] = (quantums + delta, entry, sum_open)
            else:
                del state[key]
        self._replayed[height] = state
        return state

    def positions(self, height: int) -> dict[Key, int]:
        """(owner, number, perpetual) -> signed base quantums after ``height`` (non-zero only)."""
        return {k: q for k, (q, _, _) in self._state(height).items()}

    def entry_price(self, height: int) -> dict[Key, Fraction]:
        """(owner, number, perpetual) -> entry price (USD per whole coin) of each open position
        after ``height``, by the official Indexer's rule (``next_entry``)."""
        return {k: e for k, (_, e, _) in self._state(height).items()}

    def listed(self, height: int) -> list[int]:
        """Perpetual ids in the chain's state after ``height``."""
        return [p for p, m in sorted(self.markets.items())
                if m["added_at"] is None or m["added_at"] <= height]

    def open_interest(self, height: int) -> dict[int, int]:
        """Perpetual id -> base quantums of all long positions after ``height`` (every listed
        perpetual, zeros included: what ``Perpetual.open_interest`` holds)."""
        out = dict.fromkeys(self.listed(height), 0)
        for (_, _, perpetual_id), quantums in self.positions(height).items():
            if quantums > 0:
                out[perpetual_id] += quantums
        return out

    def funding_index(self, height: int) -> dict[int, int]:
        """Perpetual id -> funding index in the chain's state after ``height``."""
        out: dict[int, int] = {}
        for set_at, perpetual_id, index in self.funding_history:
            if set_at <= height:
                out[perpetual_id] = index
        return {p: out[p] for p in self.listed(height) if p in out}

    def to_json(self) -> dict[str, Any]:
        return {"network": self.network, "start_height": self.start_height,
                "last_height": self.last_height, "heights": self.heights,
                "markets": {str(k): v for k, v in self.markets.items()},
                "matches": self.matches, "liquidations": self.liquidations,
                "settled_funding": self.settled_funding,
                "malformed": [list(m) for m in self.malformed],
                "checkpoints": {str(k): v for k, v in self.checkpoints.items()},
                "fills": self.fills, "funding_history": self.funding_history}

    @classmethod
    def load(cls, out: Path) -> Truth:
        doc = json.loads((out / "truth.json").read_text())
        return cls(network=doc["network"], start_height=doc["start_height"],
                   last_height=doc["last_height"], heights=doc["heights"],
                   markets={int(k): v for k, v in doc["markets"].items()},
                   matches=doc["matches"], liquidations=doc["liquidations"],
                   settled_funding=doc["settled_funding"],
                   malformed=[(int(h), str(r)) for h, r in doc["malformed"]],
                   checkpoints={int(k): v for k, v in doc["checkpoints"].items()},
                   fills=doc["fills"], funding_history=doc["funding_history"])


def simulate(out: Path, *, seed: int = 1, start_height: int = 1, blocks: int = 1500,
             settled_funding_fixed_at: int = V4_UPGRADE_HEIGHT,
             open_interest_from: int = OPEN_INTEREST_HEIGHT,
             base64_attributes_below: int | None = None, accounts: int = 40,
             malformed_at: int | None = None) -> Truth:
    """Simulate ``blocks`` heights from ``start_height`` and write the recording to ``out``:
    ``blocks.jsonl`` (per height: the /block and /block_results results), ``state.jsonl`` (per
    height where it changed: the REST perpetuals and CLOB pairs after that block) and
    ``truth.json``. Deterministic for a seed. ``settled_funding_fixed_at`` is the v4.0.0 height
    (key fix, SDK 0.50 event attributes); ``open_interest_from`` the first height whose state
    has ``open_interest`` (the key is omitted below it); ``base64_attributes_below`` encodes
    attributes below that height as CometBFT 0.34 did; ``malformed_at`` adds two bogus match
    events at that height (``Truth.malformed``)."""
    if blocks < 60:
        raise ValueError("the scenario needs at least 60 blocks")
    if malformed_at is not None and not start_height <= malformed_at < start_height + blocks:
        raise ValueError(f"malformed_at {malformed_at} is outside the run")
    out.mkdir(parents=True, exist_ok=True)
    simulation = _Simulation(seed=seed, start_height=start_height, blocks=blocks,
                             settled_funding_fixed_at=settled_funding_fixed_at,
                             open_interest_from=open_interest_from,
                             base64_attributes_below=base64_attributes_below, accounts=accounts,
                             malformed_at=malformed_at)
    truth = simulation.run(out)
    (out / "truth.json").write_text(json.dumps(truth.to_json(), separators=(",", ":")))
    return truth
