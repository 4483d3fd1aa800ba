"""One asset symbol across protocols and chains: a market's or token's own name -> ``ETH``.

The name comes from the chain (a token's ``symbol()``), from the protocol's events (Synthetix's
``marketKey``) or from the config; this module only reads names. It knows the naming schemes of
the protocols we index and the usual wrapped-token names, and nothing else: a name it does not
recognise gives None (unknown stays unknown; the config's ``assets:`` names it).
"""

from __future__ import annotations

import re

#: Wrapped or bridged tokens -> the asset they stand for.
WRAPPED = {
    "WETH": "ETH", "WETH.E": "ETH", "WBTC": "BTC", "WBTC.E": "BTC", "BTC.B": "BTC",
    "TBTC": "BTC", "CBBTC": "BTC", "WAVAX": "AVAX", "WMATIC": "MATIC", "WPOL": "POL",
    "WBNB": "BNB", "WSOL": "SOL", "WFTM": "FTM", "WS": "S", "USDC.E": "USDC", "USDBC": "USDC",
    "USDT.E": "USDT", "DAI.E": "DAI", "LINK.E": "LINK",
}
#: A plain asset symbol: letters and digits, starting with a letter or digit (``1INCH``).
_SYMBOL = re.compile(r"^[A-Z0-9]{1,15}$")
#: Synthetix perps market keys: ``sETHPERP`` (v2), ``sETH`` (v1 futures).
_SYNTHETIX_KEY = re.compile(r"^s([A-Z0-9]{1,15}?)(PERP)?$")
#: Perpetual v2's virtual base tokens: ``vETH``.
_PERP_BASE = re.compile(r"^v([A-Z0-9]{1,15})$")
#: Pair names: ``ETH/USD``, ``ETH-USD``, ``ETH/USD [WETH-USDC]`` (GMX v2 market names).
_PAIR = re.compile(r"^([A-Za-z0-9.]{1,15})\s*[/-]\s*USD[A-Z]?\b")


def canonical(name: str | None, scheme: str = "token") -> str | None:
    """The asset a name stands for, or None.

    ``scheme`` says what kind of name it is: ``token`` (an ERC-20 symbol), ``synthetix`` (a
    market key), ``perp_v2`` (a virtual base token's symbol), ``pair`` (``ETH/USD``).
    """
    if not name:
        return None
    text = name.strip()
    if scheme == "synthetix":
        m = _SYNTHETIX_KEY.match(text)
        text = m.group(1) if m else ""
    elif scheme == "perp_v2":
        m = _PERP_BASE.match(text)
        text = m.group(1) if m else ""
    elif scheme == "pair":
        m = _PAIR.match(text)
        text = m.group(1) if m else ""
    upper = text.upper()
    upper = WRAPPED.get(upper, upper)
    return upper if _SYMBOL.match(upper) else None


#: How each adapter's market ids are named: the scheme of :func:`canonical` for the market's
#: symbol (for token-keyed markets, the index token's ``symbol()``).
SCHEMES = {"gmx_v1": "token", "gmx_v2": "token", "synthetix_perps_v2": "synthetix",
           "perp_v2": "perp_v2", "gtrade": "pair", "dydx_v4": "pair"}
