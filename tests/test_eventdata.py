"""The layout-aware GMX v2 EventLogData decoder against eth_abi (the reference) on payloads
built with eth_abi from the real ABI: every item type, array items, empty groups, long strings,
extreme values, and malformed payloads."""

from __future__ import annotations

import random

import eth_abi
import pytest

from indexer import eventdata
from indexer.abi import decode_logs, keccak, load_abi_dir
from indexer.config import REPO_ROOT
from indexer.eventdata import (
    DATA_TYPES,
    EventData,
    decode_hex,
    decode_payload,
    from_reference,
    to_reference,
)
from indexer.rpc import as_logs

pytestmark = pytest.mark.unit

ABI = load_abi_dir(REPO_ROOT / "indexer" / "abis" / "gmx_v2")
EVENTLOG1 = next(t for t, e in ABI.by_topic.items() if e.name == "EventLog1")


def rand_value(rng: random.Random, group: int) -> object:
    if group == 0:
        return "0x" + rng.randbytes(20).hex()
    if group == 1:
        return rng.choice([0, 1, 2**256 - 1, 10**30, rng.getrandbits(rng.randint(1, 256))])
    if group == 2:
        return rng.choice([0, -1, -(2**255), 2**255 - 1, rng.getrandbits(200) - 2**199])
    if group == 3:
        return rng.random() < 0.5
    if group == 4:
        return "0x" + rng.randbytes(32).hex()
    if group == 5:
        return rng.randbytes(rng.choice([0, 1, 31, 32, 33, 100, 4000]))
    length = rng.choice([0, 1, 31, 32, 33, 500, 3000])
    return "".join(rng.choice("aZ09 ._-é€😀") for _ in range(length))


def rand_key(rng: random.Random) -> str:
    length = rng.choice([1, 8, 31, 32, 33, 64, 200])
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz.ABC_0123456789") for _ in range(length))


def rand_event(rng: random.Random) -> EventData:
    groups = []
    for g in range(7):
        items = {rand_key(rng): rand_value(rng, g) for _ in range(rng.choice([0, 0, 1, 3, 25]))}
        arrays = {rand_key(rng): [rand_value(rng, g) for _ in range(rng.choice([0, 1, 2, 7]))]
                  for _ in range(rng.choice([0, 0, 1, 2]))}
        groups.append((items, arrays))
    return EventData(groups)


def encode(sender: str, name: str, ev: EventData) -> bytes:
    return eth_abi.encode(list(DATA_TYPES), [sender, name, to_reference(ev)])


def reference(data: bytes) -> tuple[str, str, EventData]:
    sender, name, eld = eth_abi.decode(list(DATA_TYPES), data, strict=True)
    return sender.lower(), name, from_reference(eld)


def test_random_payloads_decode_exactly_as_eth_abi() -> None:
    rng = random.Random(7)
    seen_groups = [0] * 7
    for i in range(300):
        ev = rand_event(rng)
        sender = "0x" + rng.randbytes(20).hex()
        name = rng.choice(["PositionIncrease", "X", "", "a" * 100])
        data = encode(sender, name, ev)
        want = reference(data)
        assert want == (sender, name, ev)
        # twice: the first walks the words (and may learn a template), the second may use it
        assert decode_payload(data) == want, i
        assert decode_payload(data) == want, i
        # and from the hex text, read through the hex template, and upper-case (not one)
        assert decode_hex("0x" + data.hex()) == want, i
        assert decode_hex("0x" + data.hex().upper()) == want, i
        for g, (items, arrays) in enumerate(ev.groups()):
            seen_groups[g] += bool(items) + bool(arrays)
    assert all(n > 50 for n in seen_groups)  # every item type, as items and as arrays


def test_template_reuse_with_other_values_and_all_empty() -> None:
    """Same layout, different static values: the compiled template must read the new values."""
    rng = random.Random(3)
    keys = [rand_key(rng) for _ in range(10)]
    for _ in range(50):
        groups = [({k: rand_value(rng, g) for k in keys}, {"arr": [rand_value(rng, g)] * 3})
                  if g < 5 else ({}, {}) for g in range(7)]
        ev = EventData(groups)
        data = encode("0x" + "11" * 20, "Same", ev)
        assert decode_payload(data) == reference(data) == ("0x" + "11" * 20, "Same", ev)
        assert decode_hex("0x" + data.hex()) == reference(data)
    empty = EventData([({}, {})] * 7)
    data = encode("0x" + "00" * 20, "", empty)
    assert decode_payload(data) == reference(data)


def corrupt(data: bytes, at: int, value: bytes) -> bytes:
    return data[:at] + value + data[at + len(value):]


def test_malformed_payloads_are_refused_like_eth_abi() -> None:
    rng = random.Random(11)
    ev = EventData([({"a": "0x" + "22" * 20}, {}), ({"u": 5}, {}), ({}, {}),
                    ({"flag": True}, {}), ({}, {}), ({"b": b"xyz"}, {}), ({"s": "text"}, {})])
    good = encode("0x" + "33" * 20, "PositionIncrease", ev)
    decode_payload(good)  # let a template exist for this layout
    bad_cases = {
        "truncated": good[:-32],
        "truncated mid-word": good[:-5],
        "sender padding": corrupt(good, 0, b"\x01"),
        "huge offset": corrupt(good, 64, (2**200).to_bytes(32, "big")),
        "bool not 0/1": None,
        "bad utf-8 in name": None,
    }
    # locate the bool word and the event name in the encoding
    flag_at = good.index(b"flag") + 32 - 64 - 32  # key "flag" then back to its value word
    bool_word = good[flag_at:flag_at + 32]
    assert bool_word == (1).to_bytes(32, "big")
    bad_cases["bool not 0/1"] = corrupt(good, flag_at, (2).to_bytes(32, "big"))
    bad_cases["bad utf-8 in name"] = corrupt(good, good.index(b"PositionIncrease"), b"\xff")
    bad_cases["non-zero string padding"] = corrupt(good, good.index(b"text") + 10, b"\x01")
    bad_cases["random bytes"] = rng.randbytes(len(good))
    for what, data in bad_cases.items():
        with pytest.raises(ValueError):
            decode_payload(data)
        with pytest.raises(ValueError):
            decode_hex("0x" + data.hex())
        with pytest.raises(Exception):  # noqa: B017 - eth_abi has many error types
            eth_abi.decode(list(DATA_TYPES), data, strict=True)
        assert what


def log(data: bytes, name: str, topic1: str) -> dict:
    return {"address": "0x" + "ee" * 20, "blockNumber": "0x1", "blockHash": "0x" + "ab" * 32,
            "transactionHash": "0x" + "cd" * 32, "logIndex": "0x0", "transactionIndex": "0x0",
            "topics": [EVENTLOG1, "0x" + keccak(name.encode()).hex(), topic1],
            "data": "0x" + data.hex(), "removed": False}


def test_decode_logs_uses_the_fast_path_and_quarantines_bad_logs(monkeypatch) -> None:
    rng = random.Random(5)
    ev = rand_event(rng)
    data = encode("0x" + "44" * 20, "PositionDecrease", ev)
    t1 = "0x" + "00" * 12 + "55" * 20
    good = log(data, "PositionDecrease", t1)
    short = log(data[:-64], "PositionDecrease", t1)
    wrong_topics = dict(good, topics=good["topics"][:2])
    decoded = decode_logs(as_logs([good, short, wrong_topics]), ABI)
    (cols,) = decoded.events["EventLog1"]
    assert cols.rows == [0]
    assert cols.fields["eventData"] == [ev]
    assert cols.fields["eventName"] == ["PositionDecrease"]
    assert cols.fields["topic1"] == [t1]
    assert cols.fields["msgSender"] == ["0x" + "44" * 20]
    assert [r for r, _ in decoded.failures] == [1, 2]
    assert "topics" in decoded.failures[1][1]

    # what the fast decoder refuses goes to eth_abi, which has the last word
    def refuse(_: bytes) -> None:
        raise ValueError("not handled here")

    monkeypatch.setattr(eventdata, "decode_hex", refuse)
    again = decode_logs(as_logs([good, short]), ABI)
    assert again.events["EventLog1"][0].fields["eventData"] == [ev]
    assert [r for r, _ in again.failures] == [1]


def test_non_canonical_overlap_never_becomes_a_template() -> None:
    """An offset that points at a value word (legal ABI, never produced by solc): a payload of
    that shape must not teach a template, or the next one with another value there would be
    read as a value while it is structure."""
    ev = EventData([({}, {}), ({"u": 0}, {}), ({}, {}), ({}, {}), ({}, {}), ({}, {}), ({}, {})])
    data = bytearray(encode("0x" + "66" * 20, "Overlap", ev))

    def word(p: int) -> int:
        return int.from_bytes(data[p:p + 32], "big")

    eld = word(64)
    base = eld + word(eld + 32)          # the uint group
    first = base + word(base) + 32       # first element offset of its items array
    value_at = first + word(first) + 32  # the value word of item "u"
    data[base + 32:base + 64] = (value_at - base).to_bytes(32, "big")  # arrayItems -> that word
    p1 = bytes(data)
    assert decode_payload(p1) == reference(p1)
    p2 = bytes(data[:value_at]) + (1).to_bytes(32, "big") + bytes(data[value_at + 32:])
    try:
        want = reference(p2)
    except Exception:  # noqa: BLE001 - eth_abi refuses it: so must we
        with pytest.raises(ValueError):
            decode_payload(p2)
    else:
        assert decode_payload(p2) == want


def test_hex_templates_accept_exactly_what_the_bytes_decoder_does(monkeypatch) -> None:
    """A learnt layout read straight from the hex text: other values decode exactly; text that
    is not the lower-case hex of such a payload (upper case, a non-hex digit, a '0x' or '_'
    that int() would accept inside a number, a bool of 2, address padding) is either decoded
    exactly like its bytes or refused, never misread."""
    ev = EventData([({"a": "0x" + "22" * 20}, {}), ({"u": 0x5EED, "v": 7}, {}), ({"i": -3}, {}),
                    ({"flag": True}, {}), ({"k": "0x" + "ab" * 32}, {}), ({}, {}), ({}, {})])
    good = encode("0x" + "33" * 20, "PositionIncrease", ev)
    decode_payload(good)  # learn the layout
    text = "0x" + good.hex()
    assert decode_hex(text) == reference(good)
    u_at = 2 + 2 * good.index((0x5EED).to_bytes(32, "big"))  # hex position of u's value word
    other = EventData([({"a": "0x" + "44" * 20}, {}), ({"u": 2**256 - 1, "v": 0}, {}),
                       ({"i": -(2**255)}, {}), ({"flag": False}, {}),
                       ({"k": "0x" + "cd" * 32}, {}), ({}, {}), ({}, {})])
    data = encode("0x" + "55" * 20, "PositionIncrease", other)
    with monkeypatch.context() as m:  # read from the hex alone, not through the bytes
        m.setattr(eventdata, "decode_payload", None)
        assert decode_hex("0x" + data.hex()) == reference(data) == ("0x" + "55" * 20,
                                                                    "PositionIncrease", other)
    cases = {
        "upper case": text.upper().replace("0X", "0x", 1),
        "upper-case value": text[:u_at] + "F" * 64 + text[u_at + 64:],
        "non-hex digit": text[:u_at] + "g" + text[u_at + 1:],
        "0x inside a number": text[:u_at] + "0x" + text[u_at + 2:],
        "underscore in a number": text[:u_at + 10] + "_" + text[u_at + 11:],
        "sign in a number": text[:u_at] + "+" + text[u_at + 1:],
    }
    flag_at = 2 + 2 * (good.index(b"flag") + 32 - 64 - 32)  # key "flag", back to its value
    assert text[flag_at:flag_at + 64] == "0" * 63 + "1"
    cases["bool of 2"] = text[:flag_at] + "0" * 63 + "2" + text[flag_at + 64:]
    cases["address padding"] = "0x01" + text[4:]
    for what, hexdata in cases.items():
        try:
            want = reference(bytes.fromhex(hexdata[2:]))
        except Exception:  # noqa: BLE001 - not hex, or eth_abi refuses it: so must we
            with pytest.raises(ValueError):
                decode_hex(hexdata)
        else:
            assert decode_hex(hexdata) == want, what
