"""Our column decoder against eth_abi, on every event of the Perpetual v2 and Synthetix ABIs:
payloads built with eth_abi from the real declarations, at the limits of every type, and the
published topic0s of protocols.md 3.1 and 6."""

from __future__ import annotations

import random

import eth_abi
import pytest

from indexer.abi import decode_logs, load_abi_dir
from tests.conftest import ROOT

PUBLISHED = {
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
    if isinstance(v, bytes):
        return "0x" + v.hex()
    return v.lower() if isinstance(v, str) else v


@pytest.mark.parametrize("protocol", sorted(PUBLISHED))
def test_every_event_decodes_like_eth_abi(protocol):
    abi = load_abi_dir(ROOT / "abis" / protocol)
    shapes = {(e.name, n, len(e.inputs)): e for (_, n), e in abi.by_shape.items()}
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
    decoded = decode_logs([logs[i] for i in order], abi)
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
    abi = load_abi_dir(ROOT / "abis" / "synthetix_perps_v2")
    ev = abi.event_for(PUBLISHED["synthetix_perps_v2"][("MarketAdded", 3)], 3)
    good = _log(ev, ["0x" + "11" * 20, b"a" * 32, b"b" * 32])
    dirty = dict(good, data="0x" + "ff" * 32)  # an address word with high bytes set
    short = dict(good, data="0x" + "00" * 31)
    liq = abi.event_for(PUBLISHED["synthetix_perps_v2"][("PositionLiquidated", 1, 8)], 1)
    too_few_topics = dict(_log(liq, [1, "0x" + "22" * 20, "0x" + "33" * 20, -5, 1, 2, 3, 4]))
    too_few_topics["topics"] = too_few_topics["topics"] + ["0x" + "00" * 32]  # 2 topics: no shape
    d = decode_logs([good, dirty, short, too_few_topics], abi)
    assert [r for r, _ in d.failures] == [1, 2, 3]
    assert "non-zero high bytes" in d.failures[0][1] and "31 bytes" in d.failures[1][1]
    assert "topics" in d.failures[2][1]
