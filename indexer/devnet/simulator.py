"""A seeded trading simulator for the GMX-v1-style test vault on anvil.

Many wallets (a few whales, mid-size and many small traders) open, increase, partially decrease
and close longs and shorts on several index tokens, move collateral in and out, while prices
random-walk with shocks; a liquidator sweeps after every price move, which produces both kinds of
liquidation (``LiquidatePosition``, and the vault closing an over-leveraged position itself).
The simulator only drives the chain: what the indexer is checked against is read back from the
vault afterwards.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

from indexer.abi import decode_values, encode_call
from indexer.devnet.chain import (
    CONTRACTS,
    Anvil,
    call,
    compile_contract,
    deploy,
    send,
    wait_receipt,
)
from indexer.rpc import Rpc

USD = 10**30
#: symbol -> (start price in USD, shortable index token?)
TOKENS: dict[str, tuple[int, bool]] = {"WETH": (3100, True), "WBTC": (62000, True),
                                      "LINK": (18, True), "USDC": (1, False), "DAI": (1, False)}
INDEX_TOKENS = ("WETH", "WBTC", "LINK")
STABLES = ("USDC", "DAI")


def token_address(symbol: str) -> str:
    """A fixed fake token address per symbol (the test vault needs no ERC-20 contracts)."""
    return "0x" + hashlib.sha256(f"perp-indexer:{symbol}".encode()).hexdigest()[:40]


SYMBOLS = {token_address(s): s for s in TOKENS}

#: Wallet tiers (whales, the next 7 mid-size, the rest small): (smallest and largest trade,
#: largest position, largest open size of one wallet on one protocol), in USD. A wallet trades
#: on the five protocols of the demo, so a whale holds at most 5 x $24M open.
TIERS: tuple[tuple[int, int, int, int], ...] = ((400_000, 5_000_000, 12_000_000, 24_000_000),
                                                (20_000, 300_000, 900_000, 2_000_000),
                                                (200, 12_000, 30_000, 60_000))
MID_TIER = 7


def tier_of(tier: int, whales: int) -> tuple[int, int, int, int]:
    """The ``TIERS`` row of the wallet at ``tier`` (its index among the trading wallets)."""
    return TIERS[0 if tier < whales else 1 if tier < whales + MID_TIER else 2]


def trade_size(rng: random.Random, tier: int, whales: int) -> int:
    """A trade size in USD x 1e30 for the wallet at ``tier``: the first ``whales`` wallets trade
    millions, the next 7 tens to hundreds of thousands, the rest hundreds to thousands."""
    low, high, _, _ = tier_of(tier, whales)
    return rng.randint(low, high) * USD + rng.randint(0, 99) * USD // 100


def capped_size(rng: random.Random, tier: int, whales: int, position_usd: int,
                wallet_usd: int) -> int | None:
    """A trade size in USD x 1e30 (``trade_size``) that keeps the position and the wallet's open
    size on this protocol (both in whole USD) under the tier's limits; None when less than the
    tier's smallest trade is left."""
    low, _, max_position, max_wallet = tier_of(tier, whales)
    size = trade_size(rng, tier, whales)
    room = min(max_position - position_usd, max_wallet - wallet_usd)
    if room < low:
        return None
    return min(size, room * USD)


def move_bps(rng: random.Random, ratio: float, shock: bool, shocks: tuple[int, ...],
             spread: int) -> int:
    """A price move in basis points for a price at ``ratio`` times its start price: a random
    walk of +-``spread`` or a shock (one of ``shocks``), pulled back toward the start price so
    that prices stay near real ones (a shock points back with a chance that grows with the
    distance; a step is drifted by a tenth of it)."""
    if shock:
        bps = rng.choice(shocks)
        if (bps > 0) == (ratio > 1) and rng.random() < min(0.45, abs(ratio - 1) * 3):
            bps = -bps
        return bps
    pull = max(-spread, min(spread, round(-1000 * (ratio - 1))))
    return rng.randint(-spread, spread) + pull


def mine_together(rpc: Rpc, txs: list[dict[str, Any]]) -> list[bool]:
    """Send ``txs`` (eth_sendTransaction objects) and mine them in one block; success of each."""
    rpc.call("evm_setAutomine", [False])
    hashes = []
    try:
        hashes = [rpc.call("eth_sendTransaction", [tx]) for tx in txs]
        rpc.call("evm_mine", [])
    finally:
        rpc.call("evm_setAutomine", [True])
    return [wait_receipt(rpc, h)["status"] == "0x1" for h in hashes]


@dataclass
class TradingLoop:
    """What the simulators share: the wallets, seeded randomness, counters and the action mix.

    A subclass declares its contract field(s) and ``accounts`` (positional, after ``rpc``),
    its weights, and the actions. ``accounts[0]`` and ``[1]`` are its privileged roles
    (owner, keeper or liquidator); the next ``traders`` accounts are the trading wallets.
    """

    #: Cumulative probabilities of: open/increase, collateral deposit, decrease, collateral
    #: withdrawal, full close, price move, batch block; the rest is a time jump.
    MIX: ClassVar[tuple[float, float, float, float, float, float, float]]
    #: Chance that a price move is a shock.
    SHOCK: ClassVar[float]

    rpc: Rpc
    seed: int = field(default=7, kw_only=True)
    traders: int = field(default=30, kw_only=True)
    #: the first ``whales`` wallets trade millions (see ``trade_size``)
    whales: int = field(default=3, kw_only=True)
    stats: Counter[str] = field(default_factory=Counter, kw_only=True)
    #: every position id traded so far
    ids: set[Any] = field(default_factory=set, kw_only=True)
    #: transaction hashes of successful liquidations (where the simulator records them)
    liquidations: list[str] = field(default_factory=list, kw_only=True)

    def _open_ids(self) -> list[Any]:
        """The positions open now (each simulator reads its contract)."""
        raise NotImplementedError(f"{type(self).__name__} lists no open positions")

    def _pick_open(self) -> Any | None:
        """A random open position, or None when there is none."""
        ids = self._open_ids()
        return self.rng.choice(ids) if ids else None

    def __post_init__(self) -> None:
        accounts: list[str] = self.accounts  # type: ignore[attr-defined]
        self.rng = random.Random(self.seed)
        self.wallets = accounts[2:2 + self.traders]
        if len(self.wallets) < self.traders:
            raise ValueError(f"need {self.traders + 2} accounts, anvil has {len(accounts)}")
        self.lock = threading.Lock()

    def transact(self, sender: str, to: str, data: str, gas: int = 1_500_000) -> str | None:
        """Send a transaction and count it; its hash if it succeeded, else None."""
        receipt = send(self.rpc, sender, to, data, gas=gas)
        ok = receipt["status"] == "0x1"
        self.stats["tx_ok" if ok else "tx_reverted"] += 1
        return receipt["transactionHash"] if ok else None

    def read_many(self, to: str, signature: str, args: list[list[Any]]) -> list[str]:
        """``eth_call`` of ``signature`` once per argument list, in one JSON-RPC batch."""
        return [str(r) for r in self.rpc.batch([
            ("eth_call", [{"to": to, "data": encode_call(signature, a)}, "latest"])
            for a in args])]

    # -- the actions a simulator implements -------------------------------------------------

    def open_or_increase(self) -> None:
        raise NotImplementedError

    def collateral_deposit(self) -> None:
        raise NotImplementedError

    def decrease(self, *, full: bool = False, collateral_only: bool = False,
                 pid: Any = None) -> None:
        """A partial decrease, a collateral withdrawal or a full close of ``pid`` (by default
        a random open position)."""
        raise NotImplementedError

    def sized(self, wallet: str, pid: Any, held: dict[Any, int]) -> int | None:
        """A trade size (USD x 1e30) for ``wallet`` adding to ``pid``, given ``held``, its open
        positions on this protocol in whole USD: ``capped_size``."""
        return capped_size(self.rng, self.wallets.index(wallet), self.whales, held.get(pid, 0),
                           sum(held.values()))

    def trim(self, held: dict[Any, int]) -> None:
        """A wallet at its limits takes some off instead: a partial decrease of its largest
        position."""
        self.stats["trimmed"] += 1
        self.decrease(pid=max(held, key=lambda k: held[k]))

    def move_price(self, *, shock: bool = False) -> None:
        raise NotImplementedError

    def batch_block(self) -> None:
        raise NotImplementedError

    def time_jump(self) -> None:
        self.rpc.call("evm_increaseTime", [self.rng.randint(600, 3 * 3600)])
        self.rpc.call("evm_mine", [])

    def step(self) -> None:
        with self.lock:
            r = self.rng.random()
            opening, deposit, decrease, withdrawal, close, price, batch = self.MIX
            if r < opening or not self.ids:
                self.open_or_increase()
            elif r < deposit:
                self.collateral_deposit()
            elif r < decrease:
                self.decrease()
            elif r < withdrawal:
                self.decrease(collateral_only=True)
            elif r < close:
                self.decrease(full=True)
            elif r < price:
                self.move_price(shock=self.rng.random() < self.SHOCK)
            elif r < batch:
                self.batch_block()
            else:
                self.time_jump()
            self.stats["steps"] += 1

    def run(self, steps: int) -> dict[str, Any]:
        for _ in range(steps):
            self.step()
        return dict(self.stats)


SIG_INCREASE = "increasePosition(address,address,address,uint256,uint256,bool)"
SIG_DECREASE = "decreasePosition(address,address,address,uint256,uint256,bool,address)"
SIG_LIQUIDATE = "liquidatePosition(address,address,address,bool,address)"
SIG_GET_POSITION = "getPosition(address,address,address,bool)"
SIG_VALIDATE = "validateLiquidation(address,address,address,bool)"

PositionId = tuple[str, str, str, bool]  # account, collateral token, index token, isLong


def deploy_vault(anvil: Anvil) -> str:
    compiled = compile_contract(CONTRACTS / "GmxV1TestVault.sol", "GmxV1TestVault")
    return deploy(anvil.rpc, anvil.accounts[0], compiled)


@dataclass
class Simulator(TradingLoop):
    MIX = (0.34, 0.42, 0.54, 0.60, 0.70, 0.84, 0.92)
    SHOCK = 0.2

    vault: str
    accounts: list[str]

    def __post_init__(self) -> None:
        super().__post_init__()
        self.gov, self.liquidator = self.accounts[0], self.accounts[1]
        self.prices = {s: p * USD for s, (p, _) in TOKENS.items()}
        self.start_prices = dict(self.prices)

    # -- chain helpers -----------------------------------------------------------------------

    def _tx(self, sender: str, data: str) -> bool:
        return self.transact(sender, self.vault, data, gas=1_000_000) is not None

    def setup(self) -> None:
        self._tx(self.gov, encode_call("setLiquidator(address,bool)", [self.liquidator, True]))
        for s in TOKENS:
            self.set_price(s, self.prices[s])

    def set_price(self, symbol: str, price: int) -> None:
        self.prices[symbol] = price
        self._tx(self.gov, encode_call("setPrice(address,uint256)", [token_address(symbol), price]))

    def position(self, pid: PositionId) -> tuple[int, ...]:
        out = call(self.rpc, self.vault, SIG_GET_POSITION, list(pid))
        return decode_values(["uint256", "uint256", "uint256", "uint256", "uint256", "uint256",
                              "bool", "uint256"], out)

    # -- actions -----------------------------------------------------------------------------

    def held(self, wallet: str) -> dict[PositionId, int]:
        """The wallet's open positions: id -> size in whole USD, as the vault holds them."""
        ids = sorted(pid for pid in self.ids if pid[0] == wallet)
        sizes = [int(out[2:66], 16) // USD for out in self._call_each(SIG_GET_POSITION, ids)]
        return {pid: size for pid, size in zip(ids, sizes, strict=True) if size}

    def _pick_id(self) -> PositionId:
        wallet = self.rng.choice(self.wallets)
        index = self.rng.choice(INDEX_TOKENS)
        is_long = self.rng.random() < 0.55
        collateral = index if is_long else self.rng.choice(STABLES)
        return (wallet, token_address(collateral), token_address(index), is_long)

    def open_or_increase(self) -> None:
        pid = self._pick_id()
        held = self.held(pid[0])
        size = self.sized(pid[0], pid, held)
        if size is None:
            self.trim(held)
            return
        leverage = self.rng.choice([1.5, 2, 3, 5, 8, 10, 15, 20, 30, 40, 45])
        collateral = int(size / leverage) + size // 1000
        if self._tx(pid[0], encode_call(SIG_INCREASE, [*pid[:3], collateral, size, pid[3]])):
            self.ids.add(pid)
            self.stats["increase"] += 1

    def _call_each(self, signature: str, ids: list[PositionId], *extra: Any) -> list[str]:
        """One eth_call per id, sent as a single JSON-RPC batch."""
        return self.read_many(self.vault, signature, [[*pid, *extra] for pid in ids])

    def _open_ids(self) -> list[PositionId]:
        ids = sorted(self.ids)
        sizes = self._call_each(SIG_GET_POSITION, ids)
        return [pid for pid, out in zip(ids, sizes, strict=True) if int(out[2:66], 16) > 0]

    def collateral_deposit(self) -> None:
        ids = self._open_ids()
        if ids:
            pid = self.rng.choice(ids)
            size, collateral = self.position(pid)[:2]
            # at most down to 1.1x leverage
            amount = min(collateral // self.rng.randint(3, 10) + USD, size * 10 // 11 - collateral)
            if amount <= 0:
                return
            if self._tx(pid[0], encode_call(SIG_INCREASE, [*pid[:3], amount, 0, pid[3]])):
                self.stats["collateral_deposit"] += 1

    def decrease(self, full: bool = False, collateral_only: bool = False,
                 pid: PositionId | None = None) -> None:
        if pid is None:
            pid = self._pick_open()
            if pid is None:
                return
        size, collateral = self.position(pid)[:2]
        if full:
            size_delta, coll_delta = size, 0
        elif collateral_only:  # at most up to 45x leverage
            coll_delta = min(collateral // self.rng.randint(5, 20), collateral - size // 45)
            size_delta = 0
            if coll_delta <= 0:
                return
        else:
            size_delta = size * self.rng.randint(10, 70) // 100
            coll_delta = collateral * self.rng.randint(0, 40) // 100
            # the leverage left stays within 1.1x-45x
            left = size - size_delta
            coll_delta = max(0, min(max(coll_delta, collateral - left * 10 // 11),
                                    collateral - left // 45))
        data = encode_call(SIG_DECREASE, [*pid[:3], coll_delta, size_delta, pid[3], pid[0]])
        if self._tx(pid[0], data):
            self.stats["close" if full else "collateral_withdrawal" if collateral_only
                       else "partial_decrease"] += 1

    def move_price(self, shock: bool = False) -> None:
        symbol = self.rng.choice(INDEX_TOKENS)
        bps = move_bps(self.rng, self.prices[symbol] / self.start_prices[symbol], shock,
                       (-1200, -900, 700, 1000), 250)
        self.set_price(symbol, max(self.prices[symbol] * (10_000 + bps) // 10_000, USD // 100))
        self.liquidation_sweep()

    def liquidation_sweep(self) -> None:
        ids = self._open_ids()
        for pid, out in zip(ids, self._call_each(SIG_VALIDATE, ids), strict=True):
            state = int(out, 16)
            if state:
                data = encode_call(SIG_LIQUIDATE, [*pid, self.liquidator])
                if self._tx(self.liquidator, data):
                    self.stats["liquidation_state1" if state == 1 else "liquidation_state2"] += 1

    def batch_block(self) -> None:
        """Several trades mined in one block (transactions from distinct wallets)."""
        txs: list[dict[str, Any]] = []
        pids: list[Any] = []
        for _ in range(self.rng.randint(2, 6)):
            pid = self._pick_id()
            if pid[0] in {p[0] for p in pids}:
                continue
            size = self.sized(pid[0], pid, self.held(pid[0]))
            if size is None:
                continue
            data = encode_call(SIG_INCREASE, [*pid[:3], size // 10 + size // 1000, size, pid[3]])
            txs.append({"from": pid[0], "to": self.vault, "data": data, "gas": hex(1_000_000)})
            pids.append(pid)
        self.ids.update(pids)
        for ok in mine_together(self.rpc, txs):
            self.stats["tx_ok" if ok else "tx_reverted"] += 1
            self.stats["increase"] += ok
        self.stats["batch_blocks"] += 1

