"""A seeded trading simulator for the Perpetual-v2-style test clearing house on anvil.

Wallets (whales, mid-size, small) deposit margin and trade signed base sizes on three markets:
opening, adding, reducing, flipping sides and closing, several trades per block, while prices
random-walk with shocks and a liquidator sweeps after every price move, taking liquidated
positions over as on Perp v2. At the end one market can be closed and its positions quit
(``PositionClosed``). The simulator only drives the chain; the indexer is checked against what
the clearing house itself holds afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from indexer.abi import decode_values, encode_call
from indexer.devnet.chain import CONTRACTS, Anvil, compile_contract, deploy
from indexer.devnet.simulator import (
    USD,
    TradingLoop,
    mine_together,
    move_bps,
    token_address,
    trade_size,
)

ONE = 10**18
#: USD x 1e30 -> a USDC amount (6 decimals), what the clearing house's deposit takes
TO_USDC = USD // 10**6
#: base token symbol -> start price in USD
BASES: dict[str, int] = {"vETH": 3100, "vBTC": 62000, "vSOL": 150}

SIG_OPEN = "openPosition(address,int256)"
SIG_LIQUIDATE = "liquidate(address,address)"

PositionId = tuple[str, str]  # trader, base token


def base_address(symbol: str) -> str:
    return token_address(f"perp:{symbol}")


def deploy_clearing_house(anvil: Anvil, sender: str | None = None) -> str:
    compiled = compile_contract(CONTRACTS / "PerpV2TestClearingHouse.sol",
                                "PerpV2TestClearingHouse")
    return deploy(anvil.rpc, sender or anvil.accounts[0], compiled)


@dataclass
class SimulatorPerp(TradingLoop):
    MIX = (0.40, 0.46, 0.58, 0.62, 0.72, 0.86, 0.93)
    SHOCK = 0.3

    house: str
    accounts: list[str]

    def __post_init__(self) -> None:
        super().__post_init__()
        self.owner, self.liquidator = self.accounts[0], self.accounts[1]
        self.prices = {s: p * ONE for s, p in BASES.items()}
        self.start_prices = dict(self.prices)

    def _tx(self, sender: str, data: str) -> str | None:
        return self.transact(sender, self.house, data)

    def setup(self) -> None:
        for s, price in self.prices.items():
            self._tx(self.owner, encode_call("addBaseToken(address,uint256)",
                                             [base_address(s), price]))
        self._tx(self.owner, encode_call("setLiquidator(address,bool)", [self.liquidator, True]))
        self._tx(self.liquidator, encode_call("deposit(uint256)", [10**9 * 10**6]))
        for i, w in enumerate(self.wallets):  # margin for 3x-8x on a trade
            usdc = trade_size(self.rng, i, self.whales) // TO_USDC
            self._tx(w, encode_call("deposit(uint256)", [usdc // self.rng.choice([3, 5, 8])]))

    # -- reads -------------------------------------------------------------------------------

    def _calls(self, signature: str, args: list[list[Any]]) -> list[str]:
        return self.read_many(self.house, signature, args)

    def positions(self, ids: list[PositionId]) -> list[tuple[int, int, int]]:
        """(size, open notional, realised PnL) of each id, signed, as the house holds them."""
        args = [list(pid) for pid in ids]
        sizes = self._calls("getTakerPositionSize(address,address)", args)
        notionals = self._calls("getTakerOpenNotional(address,address)", args)
        pnls = self._calls("getRealizedPnl(address,address)", args)
        return [(decode_values(["int256"], s)[0], decode_values(["int256"], n)[0],
                 decode_values(["int256"], p)[0])
                for s, n, p in zip(sizes, notionals, pnls, strict=True)]

    def open_interest(self) -> dict[str, tuple[int, int]]:
        """base token -> (long size, short size) as the house sums them."""
        bases = [base_address(s) for s in BASES]
        outs = self._calls("getOpenInterest(address)", [[b] for b in bases])
        return {b: decode_values(["uint256", "uint256"], o) for b, o in zip(bases, outs, strict=True)}

    def _size(self, pid: PositionId) -> int:
        return self.positions([pid])[0][0]

    # -- actions -----------------------------------------------------------------------------

    def held(self, wallet: str) -> dict[PositionId, int]:
        """The wallet's open positions: id -> size in whole USD at the current price."""
        ids = sorted(pid for pid in self.ids if pid[0] == wallet
                     and not self.stats[f"closed_{self._symbol(pid[1])}"])
        return {pid: abs(p[0]) * self.prices[self._symbol(pid[1])] // ONE // ONE
                for pid, p in zip(ids, self.positions(ids), strict=True) if p[0]}

    def _trade_delta(self, wallet: str, symbol: str) -> int | None:
        """A signed base size to trade, within the wallet's limits when it adds to its
        position (a trade against the position reduces it, at most to zero); None when the
        wallet is at its limits."""
        pid = (wallet, base_address(symbol))
        sign = 1 if self.rng.random() < 0.55 else -1
        size = self._size(pid)
        if size * sign < 0:
            usd = trade_size(self.rng, self.wallets.index(wallet), self.whales)
            cut = usd // 10**12 * ONE // self.prices[symbol]
            return sign * (abs(size) if cut > abs(size) * 9 // 10 else cut)  # no dust left
        capped = self.sized(wallet, pid, self.held(wallet))
        if capped is None:
            return None
        return sign * (capped // 10**12 * ONE // self.prices[symbol])

    def _open_symbols(self) -> list[str]:
        return [s for s in BASES if not self.stats[f"closed_{s}"]]

    def open_or_increase(self) -> None:
        wallet, symbol = self.rng.choice(self.wallets), self.rng.choice(self._open_symbols())
        delta = self._trade_delta(wallet, symbol)
        if delta is None:
            self.trim(self.held(wallet))
            return
        if delta and self._tx(wallet, encode_call(SIG_OPEN, [base_address(symbol), delta])):
            self.ids.add((wallet, base_address(symbol)))
            self.stats["trade"] += 1

    def collateral_deposit(self) -> None:
        wallet = self.rng.choice(self.wallets)
        usdc = trade_size(self.rng, self.wallets.index(wallet), self.whales) // TO_USDC // 10
        if self._tx(wallet, encode_call("deposit(uint256)", [usdc])):
            self.stats["deposit"] += 1

    def _open_ids(self) -> list[PositionId]:
        ids = sorted(pid for pid in self.ids
                     if not self.stats[f"closed_{self._symbol(pid[1])}"])
        return [pid for pid, p in zip(ids, self.positions(ids), strict=True) if p[0]]

    @staticmethod
    def _symbol(base: str) -> str:
        return next(s for s in BASES if base_address(s) == base)

    def decrease(self, full: bool = False, collateral_only: bool = False,
                 pid: PositionId | None = None) -> None:
        if pid is None:
            pid = self._pick_open()
            if pid is None:
                return
        size = self._size(pid)
        if collateral_only:  # a flip: trade past zero to the other side
            delta = -size - size * self.rng.randint(10, 80) // 100
        elif full:
            delta = -size
        else:
            delta = -size * self.rng.randint(10, 70) // 100
        if delta and self._tx(pid[0], encode_call(SIG_OPEN, [pid[1], delta])):
            self.stats["flip" if collateral_only else "close" if full else "reduce"] += 1

    def move_price(self, shock: bool = False) -> None:
        symbol = self.rng.choice(self._open_symbols())
        bps = move_bps(self.rng, self.prices[symbol] / self.start_prices[symbol], shock,
                       (-1500, -1000, 800, 1200), 300)
        price = max(self.prices[symbol] * (10_000 + bps) // 10_000, ONE // 100)
        self.prices[symbol] = price
        self._tx(self.owner, encode_call("setPrice(address,uint256)", [base_address(symbol), price]))
        self.liquidation_sweep()

    def liquidation_sweep(self) -> None:
        ids = self._open_ids()
        traders = sorted({pid[0] for pid in ids})
        flags = self._calls("isLiquidatable(address)", [[t] for t in traders])
        doomed = {t for t, f in zip(traders, flags, strict=True) if int(f, 16)}
        for pid in ids:
            if pid[0] in doomed:
                tx = self._tx(self.liquidator, encode_call(SIG_LIQUIDATE, list(pid)))
                if tx:
                    self.liquidations.append(tx)
                    self.ids.add((self.liquidator, pid[1]))
                    self.stats["liquidation"] += 1
        # the liquidator closes what it took over (it is not a trader)
        taken = [pid for pid in ids if pid[0] in doomed]
        for pid in sorted({(self.liquidator, base) for _, base in taken}):
            size = self._size(pid)
            if size and self._tx(self.liquidator, encode_call(SIG_OPEN, [pid[1], -size])):
                self.stats["liquidator_close"] += 1

    def batch_block(self) -> None:
        txs, pids = [], []
        for wallet in self.rng.sample(self.wallets, self.rng.randint(2, 6)):
            symbol = self.rng.choice(self._open_symbols())
            delta = self._trade_delta(wallet, symbol)
            if not delta:
                continue
            data = encode_call(SIG_OPEN, [base_address(symbol), delta])
            txs.append({"from": wallet, "to": self.house, "data": data, "gas": hex(1_500_000)})
            pids.append((wallet, base_address(symbol)))
        for pid, ok in zip(pids, mine_together(self.rpc, txs), strict=True):
            self.stats["tx_ok" if ok else "tx_reverted"] += 1
            if ok:
                self.ids.add(pid)
        self.stats["batch_blocks"] += 1

    def close_market(self, symbol: str) -> None:
        """Close one market and quit every position on it (``PositionClosed``)."""
        base = base_address(symbol)
        self._tx(self.owner, encode_call("closeMarket(address,uint256)",
                                         [base, self.prices[symbol]]))
        ids = sorted(pid for pid in self.ids if pid[1] == base)
        for pid, p in zip(ids, self.positions(ids), strict=True):
            if p[0] and self._tx(self.owner, encode_call("quitMarket(address,address)", list(pid))):
                self.stats["quit"] += 1
        self.stats[f"closed_{symbol}"] = 1
