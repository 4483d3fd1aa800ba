"""A seeded trading simulator for the gTrade-style test diamond on anvil.

Wallets (whales, mid-size, small) open market trades and limit orders on three pairs in three
collaterals (DAI, WETH, USDC), grow and shrink them, change leverage, get fees charged from
their collateral, close them, while pair prices random-walk with shocks; after every price move
the keeper executes limit orders, takes profits and liquidates what is liquidatable. The
simulator only drives the chain; the indexer is checked against the diamond's own state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from indexer.abi import decode_values, encode_call
from indexer.devnet.chain import CONTRACTS, Anvil, compile_contract, deploy
from indexer.devnet.simulator import TradingLoop, mine_together, move_bps, token_address

#: pair index -> (name, start price in USD)
PAIRS: dict[int, tuple[str, int]] = {0: ("BTC/USD", 62000), 1: ("ETH/USD", 3100),
                                     2: ("SOL/USD", 150)}
#: collateral index -> (symbol, decimals, USD price); WETH follows the ETH/USD pair
COLLATERALS: dict[int, tuple[str, int, int]] = {1: ("DAI", 18, 1), 2: ("WETH", 18, 3100),
                                                3: ("USDC", 6, 1)}
TRADE = ("address,uint32,uint16,uint24,bool,bool,uint8,uint8,uint120,uint64,uint64,uint64,bool,"
         "uint160,uint24")
#: leverages of new trades and leverage updates (1e3 precision: 1.5x-50x)
LEVERAGES = (1_500, 2_000, 3_000, 5_000, 10_000, 20_000, 25_000, 50_000)

TradeId = tuple[str, int]  # user, index


def collateral_token(index: int) -> str:
    return token_address(f"gtrade:{COLLATERALS[index][0]}")


def deploy_diamond(anvil: Anvil, sender: str | None = None) -> str:
    compiled = compile_contract(CONTRACTS / "GTradeTestDiamond.sol", "GTradeTestDiamond")
    return deploy(anvil.rpc, sender or anvil.accounts[0], compiled)


@dataclass
class SimulatorGTrade(TradingLoop):
    MIX = (0.36, 0.46, 0.56, 0.64, 0.74, 0.88, 0.94)
    SHOCK = 0.3

    diamond: str
    accounts: list[str]

    def __post_init__(self) -> None:
        super().__post_init__()
        self.keeper = self.accounts[0]
        self.prices = {p: usd * 10**10 for p, (_, usd) in PAIRS.items()}
        self.start_prices = dict(self.prices)
        #: pending limit orders
        self.limits: set[TradeId] = set()

    def _tx(self, sender: str, data: str) -> str | None:
        return self.transact(sender, self.diamond, data)

    def setup(self) -> None:
        for pair, price in self.prices.items():
            self._tx(self.keeper, encode_call("setPairPrice(uint16,uint64)", [pair, price]))
        for index, (_, _, usd) in COLLATERALS.items():
            self._tx(self.keeper, encode_call("setCollateralPriceUsd(uint8,uint48)",
                                              [index, usd * 10**8]))

    # -- reads -------------------------------------------------------------------------------

    def _calls(self, signature: str, args: list[list[object]]) -> list[str]:
        return self.read_many(self.diamond, signature, args)

    def trades(self, ids: list[TradeId]) -> list[tuple]:
        """Each trade's struct as the diamond holds it (``PAIRS``/``TRADE`` field order)."""
        outs = self._calls("getTrade(address,uint32)", [list(t) for t in ids])
        return [decode_values([f"({TRADE})"], o)[0] for o in outs]

    def collateral_prices(self, ids: list[TradeId]) -> list[int]:
        """``tradeInfo.collateralPriceUsd`` of each trade."""
        info = "(uint32,uint32,uint32,uint16,uint48,uint48,uint8,uint32,uint8)"
        outs = self._calls("getTradeInfo(address,uint32)", [list(t) for t in ids])
        return [decode_values([info], o)[0][5] for o in outs]

    def open_interest(self) -> dict[tuple[int, int], tuple[int, int]]:
        """(collateral index, pair) -> (long, short) in collateral units, as the diamond sums."""
        keys = [(c, p) for c in COLLATERALS for p in PAIRS]
        outs = self._calls("getPairOi(uint8,uint16)", [list(k) for k in keys])
        return {k: decode_values(["uint256", "uint256"], o) for k, o in zip(keys, outs, strict=True)}

    def _open(self) -> list[TradeId]:
        ids = sorted(self.ids)
        return [tid for tid, t in zip(ids, self.trades(ids), strict=True) if t[5] and t[7] == 0]

    # -- actions -----------------------------------------------------------------------------

    def collateral_usd(self, index: int) -> int:
        """The USD price of one whole collateral token, x 1e10 (WETH follows the ETH pair)."""
        return self.prices[1] if index == 2 else COLLATERALS[index][2] * 10**10

    def amount(self, index: int, usd: int) -> int:
        """``usd`` (x 1e30) in collateral ``index``'s smallest units (its own decimals)."""
        _, decimals, _ = COLLATERALS[index]
        return usd * 10**decimals // self.collateral_usd(index) // 10**20

    def held(self, wallet: str) -> dict[TradeId, int]:
        """The wallet's open trades: id -> position size in whole USD at the collateral's
        current price."""
        ids = [t for t in self._open() if t[0] == wallet]
        return {tid: t[8] * t[3] // 1000 * self.collateral_usd(t[6])
                // 10**COLLATERALS[t[6]][1] // 10**10
                for tid, t in zip(ids, self.trades(ids), strict=True)}

    def _order(self, wallet: str, size: int) -> list[Any]:
        """(pair, leverage, long, collateral index, collateral amount) of a new trade of
        ``size`` (USD x 1e30)."""
        pair, coll = self.rng.choice(list(PAIRS)), self.rng.choice(list(COLLATERALS))
        leverage = self.rng.choice(LEVERAGES)
        amount = self.amount(coll, size * 1000 // leverage)
        return [pair, leverage, self.rng.random() < 0.55, coll,
                max(amount, 10**COLLATERALS[coll][1] // 100)]

    def _new_id(self, wallet: str) -> TradeId:
        out = self._calls("currentIndex(address)", [[wallet]])[0]
        return wallet, int(out, 16)

    def open_or_increase(self) -> None:
        wallet = self.rng.choice(self.wallets)
        r = self.rng.random()
        held = self.held(wallet)
        if r < 0.2 and held:
            tid = self.rng.choice(sorted(held))
            size = self.sized(wallet, tid, held)
            if size is None:
                self.trim(held)
                return
            (trade,) = self.trades([tid])
            leverage = self.rng.choice(LEVERAGES)
            # collateral in the trade's own collateral token (its decimals)
            amount = self.amount(trade[6], size * 1000 // leverage) + 1
            if self._tx(wallet, encode_call("increaseSize(uint32,uint120,uint24)",
                                            [tid[1], amount, leverage])):
                self.stats["increase"] += 1
            return
        size = self.sized(wallet, None, held)
        if size is None:
            self.trim(held)
            return
        tid = self._new_id(wallet)
        order = self._order(wallet, size)
        if r < 0.4:  # a limit order a little away from the price
            price = self.prices[order[0]]
            limit = price * (1000 + (-15 if order[2] else 15)) // 1000
            if self._tx(wallet, encode_call(
                    "placeLimit(uint16,uint24,bool,uint8,uint120,uint64)", [*order, limit])):
                self.ids.add(tid)
                self.limits.add(tid)
                self.stats["limit_placed"] += 1
            return
        if self._tx(wallet, encode_call("openTrade(uint16,uint24,bool,uint8,uint120)", order)):
            self.ids.add(tid)
            self.stats["open"] += 1

    def collateral_deposit(self) -> None:
        """A leverage update (collateral in or out, size kept)."""
        ids = self._open()
        if ids:
            tid = self.rng.choice(ids)
            leverage = self.rng.choice(LEVERAGES)
            if self._tx(tid[0], encode_call("updateLeverage(uint32,uint24)", [tid[1], leverage])):
                self.stats["leverage_update"] += 1

    def decrease(self, full: bool = False, collateral_only: bool = False,
                 pid: TradeId | None = None) -> None:
        if pid is None:
            ids = self._open()
            if not ids:
                return
            pid = self.rng.choice(ids)
        tid = pid
        trade = self.trades([tid])[0]
        collateral, leverage = trade[8], trade[3]
        if full:
            if self._tx(tid[0], encode_call("closeTrade(uint32)", [tid[1]])):
                self.stats["close"] += 1
        elif collateral_only:  # a fee charged from the collateral
            fee = collateral // self.rng.randint(50, 400) + 1
            if self._tx(self.keeper, encode_call("chargeFee(address,uint32,uint120)",
                                                 [*tid, fee])):
                self.stats["fee_charged"] += 1
        else:
            cut = collateral * self.rng.randint(10, 60) // 100
            lev_cut = 0 if self.rng.random() < 0.6 else max(0, leverage // 4 - 1100)
            if self._tx(tid[0], encode_call("decreaseSize(uint32,uint120,uint24)",
                                            [tid[1], cut, lev_cut])):
                self.stats["partial_decrease"] += 1

    def move_price(self, shock: bool = False) -> None:
        pair = self.rng.choice(list(PAIRS))
        bps = move_bps(self.rng, self.prices[pair] / self.start_prices[pair], shock,
                       (-1500, -900, 900, 1500), 250)
        price = max(self.prices[pair] * (10_000 + bps) // 10_000, 10**8)
        self.prices[pair] = price
        self._tx(self.keeper, encode_call("setPairPrice(uint16,uint64)", [pair, price]))
        if pair == 1:  # WETH collateral follows ETH
            self._tx(self.keeper, encode_call("setCollateralPriceUsd(uint8,uint48)",
                                              [2, price // 100]))
        self.keeper_sweep()

    def keeper_sweep(self) -> None:
        for tid in sorted(self.limits):
            if self.rng.random() < 0.5:
                new = self._new_id(tid[0])
                if self._tx(self.keeper, encode_call("executeLimit(address,uint32)", list(tid))):
                    self.ids.add(new)
                    self.stats["limit_executed"] += 1
                elif self._tx(tid[0], encode_call("cancelLimit(uint32)", [tid[1]])):
                    self.stats["limit_cancelled"] += 1
                self.limits.discard(tid)
        ids = self._open()
        flags = self._calls("isLiquidatable(address,uint32)", [list(t) for t in ids])
        for tid, flag in zip(ids, flags, strict=True):
            if int(flag, 16):
                tx = self._tx(self.keeper, encode_call("triggerClose(address,uint32,uint8)",
                                                       [*tid, 6]))
                if tx:
                    self.liquidations.append(tx)
                    self.stats["liquidation"] += 1
            elif self.rng.random() < 0.03 and self._tx(self.keeper, encode_call(
                    "triggerClose(address,uint32,uint8)", [*tid, self.rng.choice([4, 5])])):
                self.stats["tp_sl"] += 1

    def batch_block(self) -> None:
        txs, tids = [], []
        for wallet in self.rng.sample(self.wallets, self.rng.randint(2, 6)):
            size = self.sized(wallet, None, self.held(wallet))
            if size is None:
                continue
            data = encode_call("openTrade(uint16,uint24,bool,uint8,uint120)",
                               self._order(wallet, size))
            txs.append({"from": wallet, "to": self.diamond, "data": data, "gas": hex(1_500_000)})
            tids.append(self._new_id(wallet))
        for tid, ok in zip(tids, mine_together(self.rpc, txs), strict=True):
            self.stats["tx_ok" if ok else "tx_reverted"] += 1
            if ok:
                self.ids.add(tid)
        self.stats["batch_blocks"] += 1
