"""Layout-aware decoder for GMX v2 ``EventLog*`` payloads (pure Python, no eth_abi).

GMX v2 logs every event through one ``EventEmitter`` as ``EventLog``, ``EventLog1`` or
``EventLog2``; their data is ``(address msgSender, string eventName, EventLogData eventData)``,
where ``EventLogData`` is seven groups (address, uint, int, bool, bytes32, bytes, string) of
``(string key, T value)[]`` items and ``(string key, T[] value)[]`` array items. A generic ABI
decoder walks that type tree for every log; this module knows the layout and reads the words
straight out of the bytes, caching the key strings (the same few hundred names repeat in every
log). It is checked against eth_abi on generated payloads (tests/test_eventdata.py) and accepts
exactly what eth_abi's strict mode accepts or raises ``ValueError``; the caller then falls back
to eth_abi (see ``indexer.abi``), so anything unusual is decoded by the reference decoder.

Values: addresses and bytes32 as lower-case 0x hex, uint/int as Python ints, bool as bool,
bytes as ``bytes``, strings as ``str``. A key repeated within one group keeps its last value.
"""

from __future__ import annotations

import builtins
import re
from typing import Any

#: Group names in EventLogData order.
GROUPS = ("address", "uint", "int", "bool", "bytes32", "bytes", "string")
#: The ABI type of each group's values.
GROUP_TYPES = ("address", "uint256", "int256", "bool", "bytes32", "bytes", "string")
#: ``EventLogData`` as a canonical ABI tuple type.
ELD_TYPE = "(" + ",".join(f"((string,{t})[],(string,{t}[])[])" for t in GROUP_TYPES) + ")"
#: The non-indexed argument types of EventLog, EventLog1 and EventLog2.
DATA_TYPES = ("address", "string", ELD_TYPE)

_ZERO12 = bytes(12)
_INT_SIGN = 1 << 255
_INT_WRAP = 1 << 256
#: key bytes -> str, shared by every decode (GMX uses a few hundred key names).
_KEYS: dict[bytes, str] = {}


class EventData:
    """One decoded ``EventLogData``: per group, key -> value and key -> list of values."""

    __slots__ = (
        "address",
        "address_array",
        "bool",
        "bool_array",
        "bytes",
        "bytes32",
        "bytes32_array",
        "bytes_array",
        "int",
        "int_array",
        "string",
        "string_array",
        "uint",
        "uint_array",
    )

    address: dict[str, str]
    address_array: dict[str, list[str]]
    uint: dict[str, int]
    uint_array: dict[str, list[int]]
    int: dict[str, builtins.int]
    int_array: dict[str, list[builtins.int]]
    bool: dict[str, builtins.bool]
    bool_array: dict[str, list[builtins.bool]]
    bytes32: dict[str, str]
    bytes32_array: dict[str, list[str]]
    bytes: dict[str, builtins.bytes]
    bytes_array: dict[str, list[builtins.bytes]]
    string: dict[str, str]
    string_array: dict[str, list[str]]

    def __init__(self, groups: list[tuple[dict[str, Any], dict[str, list[Any]]]]) -> None:
        for name, (items, arrays) in zip(GROUPS, groups, strict=True):
            setattr(self, name, items)
            setattr(self, name + "_array", arrays)

    def groups(self) -> list[tuple[dict[str, Any], dict[str, list[Any]]]]:
        return [(getattr(self, g), getattr(self, g + "_array")) for g in GROUPS]

    def __eq__(self, other: object) -> builtins.bool:
        return isinstance(other, EventData) and self.groups() == other.groups()

    def __repr__(self) -> str:
        parts = [f"{g}={getattr(self, g)!r}" for g in self.__slots__ if getattr(self, g)]
        return f"EventData({', '.join(parts)})"


def decode_payload(data: bytes) -> tuple[str, str, EventData]:
    """Decode the data of one EventLog* log: (msgSender, eventName, eventData).

    Payloads with the layout of one seen before (same event, same keys, same array lengths, only
    static values differing) are matched by a compiled template in one regex call; the others
    are walked word by word, and may become a template. Raises ValueError on anything eth_abi's
    strict decoder would reject, and on layouts this decoder does not handle; the caller falls
    back to eth_abi for those.
    """
    for template in _TEMPLATES.get(len(data), ()):
        m = template.pattern.fullmatch(data)
        if m is not None:
            return template.build(m.groups())
    slots: list[tuple[int, int, str | None, int]] = []
    spans: list[tuple[int, int]] = []
    result = _walk(data, slots, spans)
    if slots and slots[-1][0] >= 0:  # only static values: the layout can become a template
        _learn(data, result, slots, spans)
    return result


def decode_hex(data: str) -> tuple[str, str, EventData]:
    """:func:`decode_payload` of a log's ``data`` as the node sends it (``0x`` + hex).

    A payload of a learnt layout is read straight from the hex: its structure compared with
    the template's as text, its values converted from their hex digits, so the 11 KB of a GMX
    v2 position event are never turned into bytes. Anything else (another layout, upper-case
    or invalid hex) goes through ``bytes.fromhex`` and :func:`decode_payload`. Raises
    ValueError like it, and on data that is not hex."""
    for template in _HEX_TEMPLATES.get(len(data), ()):
        result = template(data)
        if result is not None:
            return result
    if data[:2] != "0x":
        raise ValueError("data does not start with 0x")
    return decode_payload(bytes.fromhex(data[2:]))


class _Template:
    __slots__ = ("build", "pattern")

    def __init__(self, pattern: re.Pattern[bytes], build: Any) -> None:
        self.pattern = pattern
        self.build = build


#: data length -> templates (at most _MAX_TEMPLATES in all).
_TEMPLATES: dict[int, list[_Template]] = {}
#: length of the 0x hex text -> the same templates as functions hex -> result or None.
_HEX_TEMPLATES: dict[int, list[Any]] = {}
_MAX_TEMPLATES = 2000
_template_count = 0
#: Regex of one static value word per reader kind (address and bool enforce their padding).
_VALUE_RE = {0: rb"\x00{12}(.{20})", 1: rb"(.{32})", 2: rb"(.{32})", 3: rb"\x00{31}([\x00\x01])",
             4: rb"(.{32})"}
#: Python expression turning the matched bytes ``v[i]`` into the value, per reader kind.
_VALUE_EXPR = {0: "'0x' + v[{i}].hex()", 1: "fb(v[{i}], 'big')",
               2: "sgn(fb(v[{i}], 'big'))", 3: "v[{i}] == b'\\x01'", 4: "'0x' + v[{i}].hex()"}
#: The same from ``vb``, the bytes of all value digits of a hex payload, the value at ``o``.
_PACKED_EXPR = {0: "'0x' + vb[{o}:{o} + 20].hex()", 1: "fb(vb[{o}:{o} + 32], 'big')",
                2: "sgn(fb(vb[{o}:{o} + 32], 'big'))", 3: "vb[{o}] == 1",
                4: "'0x' + vb[{o}:{o} + 32].hex()"}
#: Bytes of a value word that hold the value (the rest is padding that must be zero).
_VALUE_BYTES = {0: (12, 32), 1: (0, 32), 2: (0, 32), 3: (31, 32), 4: (0, 32)}


def _signed(v: int) -> int:
    return v - _INT_WRAP if v & _INT_SIGN else v


def _learn(data: bytes, result: tuple[str, str, EventData],
           slots: list[tuple[int, int, str | None, int]], spans: list[tuple[int, int]]) -> None:
    """Compile the layout of a decoded payload into a regex + builder (values -> EventData).

    ``slots`` lists every value word: (position, group, key, array index or -1); group -1 is
    msgSender. Everything between them (offsets, lengths, keys, the event name) is matched
    literally, so a payload matching the template decodes to exactly what the walk gives.
    """
    global _template_count
    if _template_count >= _MAX_TEMPLATES:
        return
    slots = sorted(slots, key=lambda s: s[0])
    # A value word that is also read as structure (an offset, a length, key bytes) would let a
    # template accept bytes the walk reads differently: only canonical layouts become templates.
    structure = sorted(spans)
    j = 0
    for pos, _, _, _ in slots:
        while j < len(structure) and structure[j][1] <= pos:
            j += 1
        if j < len(structure) and structure[j][0] < pos + 32:
            return
    parts: list[bytes] = []
    prev = 0
    for pos, group, _, _ in slots:
        kind = max(group, 0)
        if pos < prev:
            return  # overlapping reads (a non-canonical encoding): walk those every time
        parts.append(re.escape(data[prev:pos]))
        parts.append(_VALUE_RE[kind])
        prev = pos + 32
    parts.append(re.escape(data[prev:]))
    pattern = re.compile(b"".join(parts), re.DOTALL)
    # builder source: dict literals in the walk's own key order
    where: dict[tuple[int, str | None, int], int] = {
        (g, k, j): i for i, (_, g, k, j) in enumerate(slots)}

    def result_src(value: Any) -> str:
        """``(sender, name, EventData(...))`` with ``value(i)`` the source of slot i's value."""
        _, name, ev = result
        groups_src = []
        for g, (items, arrays) in enumerate(ev.groups()):
            item_src = ", ".join(f"{k!r}: " + value(where[(g, k, -1)]) for k in items)
            array_src = ", ".join(
                f"{k!r}: [" + ", ".join(value(where[(g, k, j)]) for j in range(len(vs))) + "]"
                for k, vs in arrays.items())
            groups_src.append(f"({{{item_src}}}, {{{array_src}}})")
        return (f"({value(where[(-1, None, -1)])}, {name!r}, "
                f"EventData([{', '.join(groups_src)}]))")

    # the hex form: value digits at fixed places, everything else literal text
    kinds = [max(g, 0) for _, g, _, _ in slots]
    digits = [(2 + 2 * (pos + _VALUE_BYTES[k][0]), 2 + 2 * (pos + _VALUE_BYTES[k][1]))
              for (pos, _, _, _), k in zip(slots, kinds, strict=True)]
    literal, prev_end = [], 0
    for a, b in digits:
        literal.append((prev_end, a))
        prev_end = b
    literal.append((prev_end, 2 + 2 * len(data)))
    text = "0x" + data.hex()
    # value i's bytes start at packed[i] in the bytes of all value digits, joined
    packed, size = [], 0
    for k in kinds:
        packed.append(size)
        size += _VALUE_BYTES[k][1] - _VALUE_BYTES[k][0]

    def joined(spans: list[tuple[int, int]]) -> str:
        return "''.join((" + "".join(f"h[{a}:{b}], " for a, b in spans) + "))"

    src = (f"def build(v):\n    return {result_src(lambda i: _VALUE_EXPR[kinds[i]].format(i=i))}\n"
           f"def build_hex(h):\n    sw = h.startswith\n"
           # compared in place, segment by segment (a copy of 10 KB costs more than reading)
           f"    if not ({' and '.join(f'sw({text[a:b]!r}, {a})' for a, b in literal if b > a)}):"
           f"\n        return None\n"
           f"    try:\n        vb = fromhex({joined(digits)})\n"
           f"    except ValueError:\n        return None\n"
           # fromhex skips whitespace: the values must be exactly their digits
           f"    if len(vb) != {size}:\n        return None\n"
           + "".join(f"    if vb[{packed[i]}] > 1:\n        return None\n"
                     for i, k in enumerate(kinds) if k == 3)
           + f"    return {result_src(lambda i: _PACKED_EXPR[kinds[i]].format(o=packed[i]))}\n")
    namespace = {"fb": int.from_bytes, "sgn": _signed, "EventData": EventData,
                 "fromhex": bytes.fromhex}
    exec(compile(src, "<eventdata template>", "exec"), namespace)  # noqa: S102 - literals via repr
    _TEMPLATES.setdefault(len(data), []).append(_Template(pattern, namespace["build"]))
    _HEX_TEMPLATES.setdefault(len(text), []).append(namespace["build_hex"])
    _template_count += 1


def _walk(data: bytes, slots: list[tuple[int, int, str | None, int]],
          spans: list[tuple[int, int]]) -> tuple[str, str, EventData]:
    """The word-by-word decoder. Appends every static value read to ``slots`` and every
    structural read (offsets, lengths, key and string bytes) to ``spans`` as (start, end); a
    dynamic value (bytes or string) appends a slot with position -1, which rules out a template."""
    n = len(data)
    frombytes = int.from_bytes
    record = slots.append
    span = spans.append

    def word(p: int) -> int:
        if p < 0 or p + 32 > n:
            raise ValueError(f"read past the end of the data at byte {p}")
        span((p, p + 32))
        return frombytes(data[p:p + 32], "big")

    def value_word(p: int) -> int:
        if p < 0 or p + 32 > n:
            raise ValueError(f"read past the end of the data at byte {p}")
        return frombytes(data[p:p + 32], "big")

    def raw_bytes(p: int) -> bytes:
        length = word(p)
        start = p + 32
        end = start + length
        padded = start + ((length + 31) & ~31)
        if padded > n:
            raise ValueError(f"bytes of length {length} at {p} run past the end of the data")
        if data[end:padded].strip(b"\0"):
            raise ValueError(f"non-zero padding after the bytes at {p}")
        span((start, padded))
        return data[start:end]

    def key(p: int) -> str:
        kb = raw_bytes(p)
        cached = _KEYS.get(kb)
        if cached is None:
            cached = kb.decode("utf-8")  # UnicodeDecodeError is a ValueError
            if len(_KEYS) < 100_000:
                _KEYS[kb] = cached
        return cached

    def address(p: int) -> str:
        if p < 0 or p + 32 > n:
            raise ValueError(f"read past the end of the data at byte {p}")
        if data[p:p + 12] != _ZERO12:
            raise ValueError(f"address word at {p} has non-zero high bytes")
        return "0x" + data[p + 12:p + 32].hex()

    def boolean(p: int) -> bool:
        v = value_word(p)
        if v > 1:
            raise ValueError(f"bool word at {p} is neither 0 nor 1")
        return v == 1

    def bytes32(p: int) -> str:
        if p < 0 or p + 32 > n:
            raise ValueError(f"read past the end of the data at byte {p}")
        return "0x" + data[p:p + 32].hex()

    def string(p: int) -> str:
        return raw_bytes(p).decode("utf-8")

    static = (address, value_word, lambda p: _signed(value_word(p)), boolean, bytes32)
    dynamic = (raw_bytes, string)

    def array(p: int) -> tuple[int, int]:
        """(length, first element position) of a dynamic array at p, bounds-checked."""
        count = word(p)
        if p + 32 + 32 * count > n:
            raise ValueError(f"array of {count} items at {p} runs past the end of the data")
        return count, p + 32

    def group(g: int, base: int) -> tuple[dict[str, Any], dict[str, list[Any]]]:
        items: dict[str, Any] = {}
        arrays: dict[str, list[Any]] = {}
        count, first = array(base + word(base))
        for i in range(count):
            elem = first + word(first + 32 * i)
            name = key(elem + word(elem))
            if g < 5:
                items[name] = static[g](elem + 32)
                record((elem + 32, g, name, -1))
            else:
                items[name] = dynamic[g - 5](elem + word(elem + 32))
                record((-1, g, name, -1))
        count, first = array(base + word(base + 32))
        for i in range(count):
            elem = first + word(first + 32 * i)
            name = key(elem + word(elem))
            m, vfirst = array(elem + word(elem + 32))
            if g < 5:
                read = static[g]
                arrays[name] = [read(vfirst + 32 * j) for j in range(m)]
                slots.extend((vfirst + 32 * j, g, name, j) for j in range(m))
            else:
                read = dynamic[g - 5]  # type: ignore[assignment]
                arrays[name] = [read(vfirst + word(vfirst + 32 * j)) for j in range(m)]
                if m:
                    record((-1, g, name, 0))
        return items, arrays

    sender = address(0)
    name = string(word(32))
    eld = word(64)
    ev = EventData([group(g, eld + word(eld + 32 * g)) for g in range(7)])
    dynamic_seen = any(pos < 0 for pos, _, _, _ in slots)
    slots.append((0, -1, None, -1))
    if dynamic_seen:
        slots.append((-1, -1, None, -1))  # marks "not a template" (checked by the caller)
    return sender, name, ev


def from_reference(value: Any) -> EventData:
    """Build an EventData from eth_abi's decoding of ``ELD_TYPE`` (the fallback path)."""
    groups = []
    for g, (items, arrays) in enumerate(value):
        conv = _reference_converters[g]
        groups.append(({k: conv(v) for k, v in items},
                       {k: [conv(x) for x in vs] for k, vs in arrays}))
    return EventData(groups)


def to_reference(ev: EventData) -> tuple[Any, ...]:
    """The eth_abi-shaped value of an EventData (for encoding test payloads and comparisons)."""
    out = []
    for g, (items, arrays) in enumerate(ev.groups()):
        back = _reference_back[g]
        out.append(([(k, back(v)) for k, v in items.items()],
                    [(k, [back(x) for x in vs]) for k, vs in arrays.items()]))
    return tuple(out)


def _same(v: Any) -> Any:
    return v


_reference_converters = (
    lambda a: a.lower(),           # eth_abi returns checksummed addresses
    _same, _same, _same,
    lambda b: "0x" + b.hex(),      # bytes32 as bytes
    _same, _same,
)
_reference_back = (
    _same, _same, _same, _same,
    lambda h: bytes.fromhex(h[2:]),
    _same, _same,
)
