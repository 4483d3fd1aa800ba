"""Our column decoder against eth_abi, on every event of the Perpetual v2, Synthetix and gTrade
ABIs: payloads built with eth_abi from the real declarations (gTrade's structs included), at the
limits of every type, and the published topic0s of protocols.md 3.1, 5.2 and 6."""

from __future__ import annotations

import random

import eth_abi
import pytest

from indexer.abi import decode_logs, load_abi_dir
from indexer.types import split_types
from tests.helpers import ROOT, logs_of

pytestmark = pytest.mark.unit

V10, V9 = "GNSMultiCollatDiamond.json", "GNSMultiCollatDiamond_v9.json"
PUBLISHED = {
    "gtrade": {
        ("MarketExecuted", 3, 12, V10): "0xbdc1265da95238ea4c775f66ac8fe748af83982c4b356ac4d0c28a0f512c0a8b",
        ("LimitExecuted", 4, 15, V10): "0x9c19bc42a9be820f3366fa0563f85e5c227966eaea4c45acd2f7cd868086a17d",
        ("MarketExecuted", 3, 12, V9): "0x26d428c63a1c5161a75dbe15e1e65bc7bf932acb203db2a47df55b16a60d35b1",
        ("LimitExecuted", 4, 15, V9): "0x33b71dccfeb2f3e0f4ed2a9f7c05255d8c5aa57936b542245a5e63c938301597",
        ("TradeStored", 3, 5, V10): "0xa14af6e9b04a80b4f40bf3946fceabd8e21e03bed8bdfd8d7b99af550efbf792",
        ("TradeClosed", 3): "0xa518dc0f204e7b9dcb9655590f084b91940be34dd66e174c2b29f4a81d99d5df",
        ("TradePositionUpdated", 3, 9, V10): "0x2412b874f666f2bd61ccfb0bad6a68558833fcfb00fdf60c0b8caed34742bae3",
        ("TradeCollateralUpdated", 3): "0x48a630649f549ef031330c87af1da1f77164d2f664b9044c7e95bc01d27999e5",
    },
    "perp_v2": {
        ("PositionChanged", 3): "0x968bc4f738eae0486dc6736c4b427dbafa4acfdf6eaf223337791ddeb3a56247",
        ("PositionLiquidated", 3): "0xd9aced30440caca81570436bc942f816cfd95a3f08f700a2aeb6334c7cb5b497",
        ("PositionClosed", 3): "0x90195cdfd4796e4ab1175fced26945fa837ef5989e372fcd306856d8ad0ff23b",
        ("FundingPaymentSettled", 3): "0x733330d4aad1a878654bf888817b79bc6478013399be29fa3b8845c81305249e",
        ("LiquidityChanged", 4): "0xcb47d8bf351d355bdd5497973533eada41777b4509f2585a62ae246336ebaa94",
    },
    "synthetix_perps_v2": {
        ("PositionModified", 3, 9): "0xc0d933baa356386a245ade48f9a9c59db4612af2b5b9c17de5b451c628760f43",
        ("PositionModified", 3, 8): "0x930fd93131df035ac630ef616ad4212af6370377bf327e905c2724cd01d95097",
        ("PositionLiquidated", 1, 8): "0x8e83cfbf9c95216dce50909e376c0dcc3e23129a3aa1edd5013fa8b41648f883",
        ("PositionLiquidated", 1, 6): "0x62e7eb6698aabc6740afc94f06bbdfb947fc109fd24d4adb26014d44053ac2c3",
        ("PositionLiquidated", 4, 6): "0x62e7eb6698aabc6740afc94f06bbdfb947fc109fd24d4adb26014d44053ac2c3",
        ("PositionFlagged", 1): "0x68f13e2f9a2abe2d658fcd5ec2405a8ccf6521ff0ec3915d2ad638981d37e697",
        ("FundingRecomputed", 1): "0xfc48da481fcf86ce12ffab287c2f0876771bfd89d024ed05e59d8640035d603e",
        ("MarginTransferred", 2): "0xe20b33a51269d7e4c48682ccfacaf1ca004fdec7b161e7098e4847a0c05d0ce2",
        ("MarketAdded", 3): "0x96bfb0243b17c28e58d33656cd16adf56e92fc6bbeedab19c4a1c56f585274d6",
    },
}


def _value(typ: str, rng: random.Random, extreme: int) -> object:
    """A random value of ``typ``; ``extreme`` 0/1/2 picks the minimum, maximum or a random one."""
    if typ == "address":
        return "0x" + rng.randbytes(20).hex()
    if typ == "bool":
        return rng.random() < 0.5
    if typ == "bytes32":
        return rng.randbytes(32)
    if typ.startswith("("):
        return tuple(_value(t, rng, extreme) for t in split_types(typ[1:-1]))
    bits = int(typ.removeprefix("u").removeprefix("int") or 256)
    lo, hi = (0, 2**bits - 1) if typ.startswith("u") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return (lo, hi, rng.randint(lo, hi))[extreme]


def _log(ev, values: list[object]) -> dict:
    data_types = [t for _, t, ix in ev.inputs if not ix]
    data_values = [v for (_, _, ix), v in zip(ev.inputs, values, strict=True) if not ix]
    topics = [ev.topic0] + ["0x" + eth_abi.encode([t], [v]).hex()
                            for (_, t, ix), v in zip(ev.inputs, values, strict=True) if ix]
    return {"topics": topics, "data": "0x" + eth_abi.encode(data_types, data_values).hex()}


def _expected(typ: str, v: object) -> object:
    if isinstance(v, tuple):
        return tuple(_expected(t, x) for t, x in zip(split_types(typ[1:-1]), v, strict=True))
    if isinstance(v, bytes):
        return "0x" + v.hex()
    return v.lower() if isinstance(v, str) else v


@pytest.mark.parametrize("protocol", sorted(PUBLISHED))
def test_every_event_decodes_like_eth_abi(protocol):
    abi = load_abi_dir(ROOT / "indexer" / "abis" / protocol)
    shapes = {(e.name, n, len(e.inputs), e.source): e for (_, n), e in abi.by_shape.items()}
    for key, topic in PUBLISHED[protocol].items():
        match = [e for k, e in shapes.items() if k[:len(key)] == key]
        assert len(match) == 1 and match[0].topic0 == topic, key
    rng = random.Random(5)
    logs, expected = [], []
    for ev in abi.by_shape.values():
        for extreme in (0, 1, 2, 2, 2):
            values = [_value(t, rng, extreme) for _, t, _ in ev.inputs]
            logs.append(_log(ev, values))
            expected.append((ev, values))
    order = list(range(len(logs)))
    rng.shuffle(order)
    decoded = decode_logs(logs_of(*[logs[i] for i in order]), abi)
    assert decoded.failures == []
    seen = 0
    for groups in decoded.events.values():
        for cols in groups:
            for j, row in enumerate(cols.rows):
                ev, values = expected[order[row]]
                assert cols.event is ev
                for (name, typ, _), v in zip(ev.inputs, values, strict=True):
                    assert cols.fields[name][j] == _expected(typ, v), (ev.signature, name)
                seen += 1
    assert seen == len(logs)


def test_values_out_of_their_type_are_quarantined_not_wrapped():
    abi = load_abi_dir(ROOT / "indexer" / "abis" / "synthetix_perps_v2")
    ev = abi.event_for(PUBLISHED["synthetix_perps_v2"][("MarketAdded", 3)], 3)
    good = _log(ev, ["0x" + "11" * 20, b"a" * 32, b"b" * 32])
    dirty = dict(good, data="0x" + "ff" * 32)  # an address word with high bytes set
    short = dict(good, data="0x" + "00" * 31)
    liq = abi.event_for(PUBLISHED["synthetix_perps_v2"][("PositionLiquidated", 1, 8)], 1)
    too_few_topics = dict(_log(liq, [1, "0x" + "22" * 20, "0x" + "33" * 20, -5, 1, 2, 3, 4]))
    too_few_topics["topics"] = too_few_topics["topics"] + ["0x" + "00" * 32]  # 2 topics: no shape
    d = decode_logs(logs_of(good, dirty, short, too_few_topics), abi)
    assert [r for r, _ in d.failures] == [1, 2, 3]
    assert "non-zero high bytes" in d.failures[0][1] and "31 bytes" in d.failures[1][1]
    assert "topics" in d.failures[2][1]


@pytest.mark.parametrize("protocol", sorted(PUBLISHED))
def test_a_word_out_of_its_type_quarantines_only_its_log(protocol):
    """For every data word of a narrow type (uintN, intN with N < 256, bool, address) of every
    event: a batch of good logs with one whose word is just out of range decodes the good ones
    exactly and quarantines that one, naming the argument."""
    abi = load_abi_dir(ROOT / "indexer" / "abis" / protocol)
    rng = random.Random(8)
    tried = 0
    for ev in abi.by_shape.values():
        if not ev.static:
            continue
        data_types = [t for _, t, ix in ev.inputs if not ix]
        words = [w for t in data_types for w in (split_types(t[1:-1]) if t.startswith("(")
                                                  else [t])]
        for w, typ in enumerate(words):
            if typ == "address":
                bad_word = "01" + "00" * 31
            elif typ == "bool":
                bad_word = f"{2:064x}"
            elif typ.startswith("uint") and typ != "uint256":
                bad_word = f"{1 << int(typ[4:]):064x}"
            elif typ.startswith("int") and typ != "int256":
                bad_word = f"{1 << (int(typ[3:]) - 1):064x}"
            else:
                continue
            values = [[_value(t, rng, 2) for _, t, _ in ev.inputs] for _ in range(3)]
            logs = [_log(ev, v) for v in values]
            d = logs[1]["data"]
            logs[1] = dict(logs[1], data=d[:2 + 64 * w] + bad_word + d[2 + 64 * (w + 1):])
            decoded = decode_logs(logs_of(*logs), abi)
            assert [r for r, _ in decoded.failures] == [1], (ev.signature, w, typ)
            assert ev.name in decoded.failures[0][1]
            (cols,) = decoded.events[ev.name]
            assert cols.rows == [0, 2]
            for j, row in enumerate(cols.rows):
                for (name, typ_, _), v in zip(ev.inputs, values[row], strict=True):
                    assert cols.fields[name][j] == _expected(typ_, v), (ev.signature, name)
            tried += 1
    assert tried >= 3
