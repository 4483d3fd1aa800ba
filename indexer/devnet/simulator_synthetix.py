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
from indexer.devnet.simulator import TradingLoop, mine_together, trade_size

ONE = 10**18
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

    def _delta(self, wallet: str, market: str) -> int:
        key = next(k for k, m in self.markets.items() if m == market)
        size = self._usd(wallet) * ONE // self.prices[key]
        return size if self.rng.random() < 0.55 else -size

    def open_or_increase(self) -> None:
        wallet, market = self._pick()
        delta = self._delta(wallet, market)
        margin = abs(delta) * self.prices[self._key(market)] // ONE // self.rng.choice([3, 6, 12])
        self._tx(wallet, market, encode_call("transferMargin(int256)", [margin]))
        if self._tx(wallet, market, encode_call("modifyPosition(int256)", [delta])):
            self.ids.add((market, wallet))
            self.stats["trade"] += 1

    def _key(self, market: str) -> str:
        return next(k for k, m in self.markets.items() if m == market)

    def _open_ids(self) -> list[PositionId]:
        ids = sorted(self.ids)
        return [pid for pid, p in zip(ids, self.positions(ids), strict=True) if p[4]]

    def collateral_deposit(self) -> None:
        ids = self._open_ids()
        if ids:
            market, wallet = self.rng.choice(ids)
            if self._tx(wallet, market, encode_call("transferMargin(int256)",
                                                    [self._usd(wallet) // 20 + ONE])):
                self.stats["margin_in"] += 1

    def decrease(self, full: bool = False, collateral_only: bool = False) -> None:
        ids = self._open_ids()
        if not ids:
            return
        market, wallet = pid = self.rng.choice(ids)
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

    def move_price(self, shock: bool = False) -> None:
        key = self.rng.choice(self.live)
        bps = self.rng.choice([-1500, -1000, 900, 1300]) if shock else self.rng.randint(-300, 300)
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
            margin = abs(delta) * self.prices[self._key(market)] // ONE // 4
            for data in (encode_call("transferMargin(int256)", [margin]),
                         encode_call("modifyPosition(int256)", [delta])):
                txs.append({"from": wallet, "to": market, "data": data, "gas": hex(1_000_000)})
            pids.append((market, wallet))
        oks = mine_together(self.rpc, txs)
        for pid, ok in zip(pids, oks[1::2], strict=True):
            if ok:
                self.ids.add(pid)
        self.stats["tx_ok"] += sum(oks)
        self.stats["tx_reverted"] += len(oks) - sum(oks)
        self.stats["batch_blocks"] += 1
