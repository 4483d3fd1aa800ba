"""A seeded trading simulator for the GMX-v2-style test exchange on anvil.

Markets are created on chain (``MarketCreated``); then a keeper executes orders for many wallets
(whales, mid-size, small): opens and increases (longs backed by the long token or USDC, shorts by
USDC or the long token), partial decreases, full closes, collateral-only deposits and
withdrawals, several executions per block, while prices random-walk with shocks and a liquidation
sweep follows every price move (insolvent liquidations included). The transactions come from the
keeper, not from the wallets, as on GMX v2. What the indexer is checked against is read back from
the exchange afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from indexer.abi import decode_values, encode_call, encode_values, keccak
from indexer.devnet.chain import CONTRACTS, Anvil, compile_contract, deploy, send
from indexer.devnet.simulator import TradingLoop, mine_together, move_bps, token_address

USD = 10**30
#: symbol -> (decimals, start price in USD per whole token). SOL is synthetic (no contract).
TOKENS: dict[str, tuple[int, int]] = {"WETH": (18, 3100), "WBTC": (8, 62000), "SOL": (9, 150),
                                      "USDC": (6, 1)}
#: market name -> (index, long, short token symbols)
MARKETS: dict[str, tuple[str, str, str]] = {"ETH/USD": ("WETH", "WETH", "USDC"),
                                            "BTC/USD": ("WBTC", "WBTC", "USDC"),
                                            "SOL/USD": ("SOL", "WETH", "USDC")}
ORDER_MARKET_INCREASE, ORDER_LIMIT_INCREASE = 2, 3
ORDER_MARKET_DECREASE, ORDER_LIMIT_DECREASE, ORDER_STOP_LOSS = 4, 5, 6

SIG_INCREASE = "increasePosition(address,address,address,bool,uint256,uint256,uint256)"
SIG_DECREASE = "decreasePosition(address,address,address,bool,uint256,uint256,uint256)"
SIG_LIQUIDATE = "liquidatePosition(address,address,address,bool)"
SIG_GET_POSITION = "getPosition(bytes32)"
SIG_OPEN_INTEREST = "getOpenInterest(address,address,bool)"
POSITION_TYPES = ["address", "address", "address", "bool", "uint256", "uint256", "uint256",
                  "uint256", "uint256"]

PositionId = tuple[str, str, str, bool]  # account, market, collateral token, isLong


def market_address(name: str) -> str:
    return token_address(f"market:{name}")


def deploy_exchange(anvil: Anvil, sender: str | None = None) -> str:
    compiled = compile_contract(CONTRACTS / "GmxV2TestExchange.sol", "GmxV2TestExchange")
    return deploy(anvil.rpc, sender or anvil.accounts[0], compiled)


def unit_price(symbol: str, usd: float) -> int:
    """GMX v2 price: USD per smallest unit x 1e30."""
    decimals = TOKENS[symbol][0]
    return int(usd * 10**6) * 10 ** (30 - decimals) // 10**6


@dataclass
class SimulatorV2(TradingLoop):
    MIX = (0.34, 0.40, 0.52, 0.57, 0.67, 0.84, 0.92)
    SHOCK = 0.25

    exchange: str
    accounts: list[str]

    def __post_init__(self) -> None:
        super().__post_init__()
        self.keeper = self.accounts[0]
        self.usd_prices: dict[str, float] = {s: float(p) for s, (_, p) in TOKENS.items()}
        self.start_prices = dict(self.usd_prices)

    def _tx(self, data: str) -> dict[str, Any]:
        receipt = send(self.rpc, self.keeper, self.exchange, data, gas=3_000_000)
        self.stats["tx_ok" if receipt["status"] == "0x1" else "tx_reverted"] += 1
        return receipt

    def setup(self) -> None:
        for symbol in TOKENS:
            self.set_price(symbol, self.usd_prices[symbol])
        for name, (index, long_, short) in MARKETS.items():
            self._tx(encode_call("createMarket(address,address,address,address)", [
                market_address(name), token_address(index), token_address(long_),
                token_address(short)]))

    def set_price(self, symbol: str, usd: float) -> None:
        self.usd_prices[symbol] = usd
        self._tx(encode_call("setPrice(address,uint256)",
                             [token_address(symbol), unit_price(symbol, usd)]))

    @staticmethod
    def key(pid: PositionId) -> bytes:
        """GMX v2 position key: keccak256(abi.encode(account, market, collateralToken, isLong))."""
        return keccak(encode_values(["address", "address", "address", "bool"], pid))

    def positions(self, ids: list[PositionId]) -> list[tuple[Any, ...]]:
        """getPosition of each id, in one JSON-RPC batch."""
        replies = self.rpc.batch([("eth_call", [{"to": self.exchange, "data": encode_call(
            SIG_GET_POSITION, [self.key(pid)])}, "latest"]) for pid in ids])
        return [decode_values(POSITION_TYPES, r) for r in replies]

    def _open_ids(self) -> list[PositionId]:
        ids = sorted(self.ids)
        return [pid for pid, p in zip(ids, self.positions(ids), strict=True) if p[4] > 0]

    # -- actions -----------------------------------------------------------------------------

    def held(self, wallet: str) -> dict[PositionId, int]:
        """The wallet's open positions: id -> size in whole USD, as the exchange holds them."""
        ids = sorted(pid for pid in self.ids if pid[0] == wallet)
        return {pid: p[4] // USD for pid, p in zip(ids, self.positions(ids), strict=True) if p[4]}

    def _symbol(self, token: str) -> str:
        return next(s for s in TOKENS if token_address(s) == token)

    def _pick_id(self) -> PositionId:
        wallet = self.rng.choice(self.wallets)
        name = self.rng.choice(list(MARKETS))
        _, long_, short = MARKETS[name]
        is_long = self.rng.random() < 0.55
        collateral = self.rng.choice([long_, short])
        return (wallet, market_address(name), token_address(collateral), is_long)

    def _collateral_for(self, pid: PositionId, usd: int) -> int:
        """``usd`` (x 1e30) in the collateral token's smallest units (its decimals)."""
        symbol = self._symbol(pid[2])
        return usd // unit_price(symbol, self.usd_prices[symbol])

    def _collateral_usd(self, pid: PositionId, amount: int) -> int:
        """A collateral amount (smallest units) in USD x 1e30."""
        symbol = self._symbol(pid[2])
        return amount * unit_price(symbol, self.usd_prices[symbol])

    def _increase_call(self, pid: PositionId, size: int) -> str:
        leverage = self.rng.choice([1.5, 2, 3, 5, 8, 10, 15, 20, 30, 40, 50])
        collateral = self._collateral_for(pid, int(size / leverage) + size // 500)
        order = ORDER_LIMIT_INCREASE if self.rng.random() < 0.05 else ORDER_MARKET_INCREASE
        return encode_call(SIG_INCREASE, [*pid, size, collateral, order])

    def open_or_increase(self) -> None:
        pid = self._pick_id()
        held = self.held(pid[0])
        size = self.sized(pid[0], pid, held)
        if size is None:
            self.trim(held)
            return
        if self._tx(self._increase_call(pid, size))["status"] == "0x1":
            self.ids.add(pid)
            self.stats["increase"] += 1

    def collateral_deposit(self) -> None:
        ids = self._open_ids()
        if ids:
            pid = self.rng.choice(ids)
            (p,) = self.positions([pid])
            # a third to a tenth of the collateral, keeping the leverage at 1.1x or more
            value = self._collateral_usd(pid, p[6])
            usd = min(value // self.rng.randint(3, 10), p[4] * 10 // 11 - value)
            amount = self._collateral_for(pid, usd) if usd > 0 else 0
            if not amount:
                return
            data = encode_call(SIG_INCREASE, [*pid, 0, amount, ORDER_MARKET_INCREASE])
            if self._tx(data)["status"] == "0x1":
                self.stats["collateral_deposit"] += 1

    def decrease(self, full: bool = False, collateral_only: bool = False,
                 pid: PositionId | None = None) -> None:
        if pid is None:
            pid = self._pick_open()
            if pid is None:
                return
        (p,) = self.positions([pid])
        size, collateral = p[4], p[6]
        value = self._collateral_usd(pid, collateral)
        order = self.rng.choice([ORDER_MARKET_DECREASE] * 8 + [ORDER_LIMIT_DECREASE,
                                                                ORDER_STOP_LOSS])
        if full:
            size_delta, coll_delta = size, 0
        elif collateral_only:  # up to 45x leverage at most
            size_delta = 0
            coll_delta = min(collateral // self.rng.randint(8, 30),
                             collateral - self._collateral_for(pid, size // 45))
            if coll_delta <= 0:
                return
        else:
            size_delta = size * self.rng.randint(10, 70) // 100
            coll_delta = collateral * self.rng.randint(0, 30) // 100
            # what stays is at 1.1x leverage or more (when the collateral covers it)
            excess = value - (size - size_delta) * 10 // 11
            if excess > 0:
                coll_delta = min(max(coll_delta, self._collateral_for(pid, excess) + 1),
                                 collateral * 9 // 10)
        if self._tx(encode_call(SIG_DECREASE, [*pid, size_delta, coll_delta, order]))[
                "status"] == "0x1":
            self.stats["close" if full else "collateral_withdrawal" if collateral_only
                       else "partial_decrease"] += 1

    def move_price(self, shock: bool = False) -> None:
        symbol = self.rng.choice(["WETH", "WBTC", "SOL"])
        bps = move_bps(self.rng, self.usd_prices[symbol] / self.start_prices[symbol], shock,
                       (-1500, -1000, 800, 1200), 300)
        self.set_price(symbol, self.usd_prices[symbol] * (10_000 + bps) / 10_000)
        self.liquidation_sweep()

    def liquidation_sweep(self) -> None:
        ids = self._open_ids()
        if not ids:
            return
        replies = self.rpc.batch([("eth_call", [{"to": self.exchange, "data": encode_call(
            "isLiquidatable(bytes32)", [self.key(pid)])}, "latest"]) for pid in ids])
        for pid, out in zip(ids, replies, strict=True):
            if int(out, 16):
                receipt = self._tx(encode_call(SIG_LIQUIDATE, list(pid)))
                if receipt["status"] == "0x1":
                    self.liquidations.append(receipt["transactionHash"])
                    self.stats["liquidation"] += 1

    def batch_block(self) -> None:
        """Several executions mined in one block, for different wallets."""
        txs: list[tuple[PositionId, str]] = []
        for pid in [self._pick_id() for _ in range(self.rng.randint(2, 5))]:
            if pid[0] in {t[0] for t, _ in txs}:
                continue  # one per wallet: its limits are checked against the chain
            size = self.sized(pid[0], pid, self.held(pid[0]))
            if size is not None:
                txs.append((pid, self._increase_call(pid, size)))
        self.ids.update(pid for pid, _ in txs)
        for ok in mine_together(self.rpc, [
                {"from": self.keeper, "to": self.exchange, "data": data,
                 "gas": hex(3_000_000)} for _, data in txs]):
            self.stats["tx_ok" if ok else "tx_reverted"] += 1
            self.stats["increase"] += ok
        self.stats["batch_blocks"] += 1

    def open_interest(self) -> dict[tuple[str, str, bool], tuple[int, int]]:
        """The exchange's own OI per (market, collateral token, side)."""
        keys = [(market_address(n), token_address(c), lg) for n, (_, lt, st) in MARKETS.items()
                for c in (lt, st) for lg in (True, False)]
        replies = self.rpc.batch([("eth_call", [{"to": self.exchange, "data": encode_call(
            SIG_OPEN_INTEREST, list(k))}, "latest"]) for k in keys])
        return {k: decode_values(["uint256", "uint256"], r) for k, r in zip(keys, replies,
                                                                            strict=True)}
