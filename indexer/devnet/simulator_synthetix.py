"""A seeded trading simulator for the Synthetix-Perps-v2-style test manager and markets on anvil.

Two manager versions are deployed, as on Optimism (Mintaka, then Caph): the first adds two
markets, one of them emitting the event versions from before April 2023; later the second
manager re-adds them and adds a third market mid-run, so the indexer must find markets at run
time. Wallets (whales, mid-size, small) move margin in and out and trade signed sizes (opens,
adds, reductions, flips, closes, several trades per block) while prices random-walk with
shocks and a keeper liquidates after every price move. The indexer is checked against what the
markets themselves hold afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from indexer.abi import decode_values, encode_call, encode_values
from indexer.devnet.chain import CONTRACTS, Anvil, compile_contract, deploy
from indexer.devnet.simulator import TradingLoop, mine_together, move_bps, trade_size

ONE = 10**18
#: leverages a trader aims at when it sets its margin (the markets allow 25x)
LEVERAGES = (1.5, 2, 3, 5, 8, 10, 15, 20)
SOURCE = CONTRACTS / "SynthetixTestPerps.sol"
#: market key -> (asset, start price in USD, legacy (pre-April-2023) events)
MARKETS: dict[str, tuple[str, int, bool]] = {"sETHPERP": ("sETH", 3100, False),
                                             "sBTCPERP": ("sBTC", 62000, True),
                                             "sLINKPERP": ("sLINK", 18, False)}
#: markets the first manager adds; the rest come from the second, mid-run
FIRST = ("sETHPERP", "sBTCPERP")

PositionId = tuple[str, str]  # market, account


def bytes32(text: str) -> bytes:
    return text.encode().ljust(32, b"\0")


def deploy_manager(anvil: Anvil, sender: str | None = None) -> str:
    compiled = compile_contract(SOURCE, "SynthetixTestMarketManager")
    return deploy(anvil.rpc, sender or anvil.accounts[0], compiled)


def deploy_market(anvil: Anvil, price: int, legacy: bool, sender: str | None = None) -> str:
    compiled = compile_contract(SOURCE, "SynthetixTestPerpsMarket")
    return deploy(anvil.rpc, sender or anvil.accounts[0], compiled,
                  encode_values(["uint256", "bool"], [price, legacy]))


@dataclass
class SimulatorSynthetix(TradingLoop):
    MIX = (0.36, 0.44, 0.56, 0.61, 0.71, 0.86, 0.93)
    SHOCK = 0.3

    #: the two manager versions, oldest first
    managers: tuple[str, str]
    #: market key -> market address (deployed, not yet added)
    markets: dict[str, str]
    accounts: list[str]
    #: market keys added so far (tradable)
    live: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.owner, self.keeper = self.accounts[0], self.accounts[1]
        self.prices = {k: p * ONE for k, (_, p, _) in MARKETS.items()}
        self.start_prices = dict(self.prices)

    def _tx(self, sender: str, to: str, data: str) -> str | None:
        return self.transact(sender, to, data, gas=1_000_000)

    def add_markets(self, manager: str, keys: tuple[str, ...]) -> None:
        for key in keys:
            self._tx(self.owner, manager, encode_call(
                "addMarket(address,bytes32,bytes32)",
                [self.markets[key], bytes32(MARKETS[key][0]), bytes32(key)]))
            if key not in self.live:
                self.live.append(key)

    def setup(self) -> None:
        self.add_markets(self.managers[0], FIRST)

    def upgrade(self) -> None:
        """The second manager takes over: re-adds the markets and adds the new ones."""
        self.add_markets(self.managers[1], tuple(MARKETS))
        self.stats["upgrade"] += 1

    # -- reads -------------------------------------------------------------------------------

    def positions(self, ids: list[PositionId]) -> list[tuple[int, int, int, int, int]]:
        """(id, lastFundingIndex, margin, lastPrice, size) of each id, as the market holds it."""
        outs = self.rpc.batch([("eth_call", [{"to": m, "data": encode_call(
            "positions(address)", [a])}, "latest"]) for m, a in ids])
        return [decode_values(["uint64", "uint64", "uint128", "uint128", "int128"], str(o))
                for o in outs]

    def market_sizes(self) -> dict[str, tuple[int, int]]:
        """market -> (marketSize, marketSkew)."""
        out = {}
        for key in MARKETS:
            m = self.markets[key]
            size = self.rpc.call("eth_call", [{"to": m, "data": encode_call("marketSize()", [])},
                                              "latest"])
            skew = self.rpc.call("eth_call", [{"to": m, "data": encode_call("marketSkew()", [])},
                                              "latest"])
            out[m] = (decode_values(["uint128"], size)[0], decode_values(["int128"], skew)[0])
        return out

    # -- actions -----------------------------------------------------------------------------

    def _usd(self, wallet: str) -> int:
        return trade_size(self.rng, self.wallets.index(wallet), self.whales) // 10**12

    def _pick(self) -> tuple[str, str]:
        return self.rng.choice(self.wallets), self.markets[self.rng.choice(self.live)]

    def held(self, wallet: str) -> dict[PositionId, int]:
        """The wallet's open positions: id -> size in whole USD at the current price."""
        ids = sorted(pid for pid in self.ids if pid[1] == wallet)
        return {pid: abs(p[4]) * self.prices[self._key(pid[0])] // ONE // ONE
                for pid, p in zip(ids, self.positions(ids), strict=True) if p[4]}

    def _state(self, market: str, wallet: str) -> tuple[int, int]:
        """(size, margin with the PnL since the last settlement) of a position, 1e18."""
        _, _, margin, last_price, size = self.positions([(market, wallet)])[0]
        return size, margin + size * (self.prices[self._key(market)] - last_price) // ONE

    def _delta(self, wallet: str, market: str) -> int | None:
        """A signed size to trade, within the wallet's limits when it adds to its position (a
        trade against the position reduces it, at most to zero); None when the wallet is at its
        limits."""
        price = self.prices[self._key(market)]
        sign = 1 if self.rng.random() < 0.55 else -1
        size, _ = self._state(market, wallet)
        if size * sign < 0:
            cut = self._usd(wallet) * ONE // price
            return sign * (abs(size) if cut > abs(size) * 9 // 10 else cut)  # no dust left
        usd = self.sized(wallet, (market, wallet), self.held(wallet))
        return None if usd is None else sign * (usd // 10**12 * ONE // price)

    def _margin_for(self, market: str, wallet: str, delta: int) -> int:
        """The margin to move in (+) or out (-) for the position after a trade of ``delta`` to
        be at a leverage drawn from ``LEVERAGES`` (with its fee)."""
        size, margin = self._state(market, wallet)
        notional = abs(size + delta) * self.prices[self._key(market)] // ONE
        fee = abs(delta) * self.prices[self._key(market)] // ONE // 500
        return int(notional / self.rng.choice(LEVERAGES)) + fee - margin

    def _rebalance(self, market: str, wallet: str) -> None:
        """Take out the margin a position under 1.1x leverage does not need (a reduced or
        flipped position), down to 2x-5x."""
        size, margin = self._state(market, wallet)
        notional = abs(size) * self.prices[self._key(market)] // ONE
        if size and margin * 11 > notional * 10:
            out = margin - notional // self.rng.choice([2, 3, 5])
            if self._tx(wallet, market, encode_call("transferMargin(int256)", [-out])):
                self.stats["margin_trim"] += 1

    def open_or_increase(self) -> None:
        wallet, market = self._pick()
        delta = self._delta(wallet, market)
        if delta is None:
            self.trim(self.held(wallet))
            return
        if not delta:
            return
        margin = self._margin_for(market, wallet, delta)
        if margin > 0:
            self._tx(wallet, market, encode_call("transferMargin(int256)", [margin]))
        if self._tx(wallet, market, encode_call("modifyPosition(int256)", [delta])):
            self.ids.add((market, wallet))
            self.stats["trade"] += 1
            self._rebalance(market, wallet)

    def _key(self, market: str) -> str:
        return next(k for k, m in self.markets.items() if m == market)

    def _open_ids(self) -> list[PositionId]:
        ids = sorted(self.ids)
        return [pid for pid, p in zip(ids, self.positions(ids), strict=True) if p[4]]

    def collateral_deposit(self) -> None:
        ids = self._open_ids()
        if ids:
            market, wallet = self.rng.choice(ids)
            size, margin = self._state(market, wallet)
            # at most down to 1.1x leverage
            room = abs(size) * self.prices[self._key(market)] // ONE * 10 // 11 - margin
            amount = min(self._usd(wallet) // 20 + ONE, room)
            if amount > 0 and self._tx(wallet, market, encode_call("transferMargin(int256)",
                                                                   [amount])):
                self.stats["margin_in"] += 1

    def decrease(self, full: bool = False, collateral_only: bool = False,
                 pid: PositionId | None = None) -> None:
        if pid is None:
            pid = self._pick_open()
            if pid is None:
                return
        market, wallet = pid
        _, _, margin, _, size = self.positions([pid])[0]
        if full:
            data, what = encode_call("closePosition()", []), "close"
        elif collateral_only:
            if self.rng.random() < 0.5:
                data, what = encode_call("transferMargin(int256)", [-(margin // 10)]), "margin_out"
            else:
                data, what = encode_call("modifyPosition(int256)", [-size * 3 // 2]), "flip"
        else:
            data = encode_call("modifyPosition(int256)", [-size * self.rng.randint(10, 70) // 100])
            what = "reduce"
        if self._tx(wallet, market, data):
            self.stats[what] += 1
            if full:  # the margin left goes back to the wallet
                left = self.positions([pid])[0][2]
                if left and self._tx(wallet, market, encode_call("transferMargin(int256)",
                                                                 [-left])):
                    self.stats["margin_withdrawn"] += 1
            else:
                self._rebalance(market, wallet)

    def move_price(self, shock: bool = False) -> None:
        key = self.rng.choice(self.live)
        bps = move_bps(self.rng, self.prices[key] / self.start_prices[key], shock,
                       (-1500, -1000, 900, 1300), 300)
        self.prices[key] = max(self.prices[key] * (10_000 + bps) // 10_000, ONE // 100)
        self._tx(self.owner, self.markets[key], encode_call("setPrice(uint256)",
                                                            [self.prices[key]]))
        self.liquidation_sweep()

    def liquidation_sweep(self) -> None:
        ids = self._open_ids()
        flags = self.rpc.batch([("eth_call", [{"to": m, "data": encode_call(
            "canLiquidate(address)", [a])}, "latest"]) for m, a in ids])
        for (market, account), flag in zip(ids, flags, strict=True):
            if int(str(flag), 16):
                tx = self._tx(self.keeper, market, encode_call("liquidatePosition(address)",
                                                               [account]))
                if tx:
                    self.liquidations.append(tx)
                    self.stats["liquidation"] += 1

    def batch_block(self) -> None:
        txs, pids = [], []
        for wallet in self.rng.sample(self.wallets, self.rng.randint(2, 5)):
            market = self.markets[self.rng.choice(self.live)]
            delta = self._delta(wallet, market)
            if not delta:
                continue
            margin = self._margin_for(market, wallet, delta)
            calls = [encode_call("transferMargin(int256)", [margin])] if margin > 0 else []
            for data in [*calls, encode_call("modifyPosition(int256)", [delta])]:
                txs.append({"from": wallet, "to": market, "data": data, "gas": hex(1_000_000)})
            pids.append(((market, wallet), len(txs) - 1))
        oks = mine_together(self.rpc, txs)
        for pid, i in pids:
            if oks[i]:
                self.ids.add(pid)
        self.stats["tx_ok"] += sum(oks)
        self.stats["tx_reverted"] += len(oks) - sum(oks)
        self.stats["batch_blocks"] += 1
