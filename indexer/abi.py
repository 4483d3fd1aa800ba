"""ABI loading and batch log decoding (the only module that imports eth_abi / eth_utils).

``load_abi_dir`` reads every ``*.json`` ABI in a protocol's folder and maps topic0 to its event;
two versions of one event (e.g. GMX v1 ``UpdatePosition`` with 7 or 8 arguments) simply have two
topic0s with the same name. ``decode_logs`` decodes a whole batch column by column: for events
whose non-indexed arguments are all static, every argument is a fixed 32-byte word, so one list
comprehension per column slices it straight out of the hex ``data`` of every log. Events with
dynamic arguments fall back to eth_abi. A log that does not decode is returned as a failure with
its reason (for the quarantine), never dropped and never fatal.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import eth_abi
from eth_utils import keccak as _keccak

from indexer import eventdata
from indexer.errors import AbiError

if TYPE_CHECKING:
    from indexer.rpc import Log
from indexer.types import STATIC_TYPES, Decoded, EventColumns, EventDef, split_types, word_types


def keccak(data: bytes) -> bytes:
    return bytes(_keccak(data))


def topic_of(signature: str) -> str:
    return "0x" + keccak(signature.encode()).hex()


def _canonical_type(param: dict[str, Any]) -> str:
    t = param["type"]
    if t.startswith("tuple"):
        inner = ",".join(_canonical_type(c) for c in param.get("components", []))
        return f"({inner}){t[5:]}"
    return {"uint": "uint256", "int": "int256"}.get(t, t)



@dataclass(frozen=True, slots=True)
class AbiEvents:
    by_topic: dict[str, EventDef]
    folder: str
    #: (topic0, number of topics) -> event, for versions of one event that differ only in
    #: which arguments are indexed (same topic0, different layout; e.g. Synthetix perps v1
    #: ``PositionLiquidated`` with three indexed arguments, v2 with none).
    by_shape: dict[tuple[str, int], EventDef] = field(default_factory=dict)

    def event_for(self, topic0: str, n_topics: int) -> EventDef:
        return self.by_shape.get((topic0, n_topics)) or self.by_topic[topic0]

    @property
    def names(self) -> set[str]:
        return {e.name for e in self.by_topic.values()}

    def topics_for(self, names: set[str]) -> list[str]:
        return sorted(t for t, e in self.by_topic.items() if e.name in names)


def load_abi_dir(folder: Path) -> AbiEvents:
    """Load every ``*.json`` ABI file in ``folder``. Raises AbiError with file and reason."""
    if not folder.is_dir():
        raise AbiError(f"{folder}: ABI folder not found")
    by_topic: dict[str, EventDef] = {}
    by_shape: dict[tuple[str, int], EventDef] = {}
    files = sorted(folder.glob("*.json"))
    if not files:
        raise AbiError(f"{folder}: no *.json ABI files")
    for f in files:
        try:
            doc = json.loads(f.read_text())
        except ValueError as e:
            raise AbiError(f"{f}: not valid JSON ({e})") from None
        items = doc.get("abi") if isinstance(doc, dict) else doc
        if not isinstance(items, list):
            raise AbiError(f"{f}: expected a JSON list of ABI entries (or an object with 'abi')")
        for i, item in enumerate(items):
            if not isinstance(item, dict) or item.get("type") != "event":
                continue
            try:
                name = item["name"]
                inputs = tuple((p.get("name", ""), _canonical_type(p), bool(p.get("indexed")))
                               for p in item["inputs"])
            except (KeyError, TypeError, AttributeError) as e:
                raise AbiError(f"{f}: entry {i}: malformed event ({e!r})") from None
            sig = f"{name}({','.join(t for _, t, _ in inputs)})"
            ev = EventDef(name, sig, topic_of(sig), inputs, f.name)
            if item.get("anonymous"):
                continue
            shape = (ev.topic0, 1 + sum(ix for _, _, ix in inputs))
            if shape in by_shape:
                raise AbiError(f"{f}: event {sig} with {shape[1] - 1} indexed arguments is "
                               f"declared twice (also in {by_shape[shape].source})")
            by_shape[shape] = ev
            by_topic.setdefault(ev.topic0, ev)
    return AbiEvents(by_topic, str(folder), by_shape)


# -- batch decoding ------------------------------------------------------------------------------


def _word_decoder(typ: str) -> Any:
    """A function hexword -> value that raises ValueError on an out-of-range word."""
    if typ == "address":
        def dec(w: str) -> str:
            if w[:24] != "0" * 24:
                raise ValueError("address word has non-zero high bytes")
            return "0x" + w[24:].lower()
        return dec
    if typ == "bool":
        def dec_bool(w: str) -> bool:
            v = int(w, 16)
            if v > 1:
                raise ValueError("bool word is neither 0 nor 1")
            return v == 1
        return dec_bool
    if typ == "bytes32":
        return lambda w: "0x" + w.lower()
    if typ.startswith("uint"):
        bits = int(typ[4:])
        if bits == 256:
            return lambda w: int(w, 16)

        def dec_uint(w: str, bits: int = bits) -> int:
            v = int(w, 16)
            if v >> bits:
                raise ValueError(f"value does not fit {typ}")
            return v
        return dec_uint
    if typ.startswith("int"):
        bits = int(typ[3:])

        def dec_int(w: str, bits: int = bits) -> int:
            v = int(w, 16)
            if v >> 255:
                v -= 1 << 256
            if not -(1 << (bits - 1)) <= v < (1 << (bits - 1)):
                raise ValueError(f"value does not fit {typ}")
            return v
        return dec_int
    raise AssertionError(typ)


_ZERO24, _ZERO64, _ONE64 = "0" * 24, "0" * 64, "0" * 63 + "1"


def _fast_column(src: list[str], off: int, typ: str) -> list[Any]:
    """What ``_word_decoder(typ)`` gives for the word at ``off`` of every string, in one
    comprehension per column (no per-value call or slice list). Raises ValueError on any value
    the word decoder might refuse (the caller then decodes the column word by word)."""
    end = off + 64
    if typ == "address":
        lo = off + 24
        if any(s[off:lo] != _ZERO24 for s in src):
            raise ValueError("address word has non-zero high bytes")
        return ["0x" + s[lo:end].lower() for s in src]
    if typ == "bool":
        words = [s[off:end] for s in src]
        if any(w != _ZERO64 and w != _ONE64 for w in words):
            raise ValueError("bool word is neither 0 nor 1")
        return [w == _ONE64 for w in words]
    if typ == "bytes32":
        return ["0x" + s[off:end].lower() for s in src]
    values = [int(s[off:end], 16) for s in src]
    if typ == "uint256" or not values:
        return values
    if typ.startswith("uint"):
        if max(values) >> int(typ[4:]):
            raise ValueError(f"a value does not fit {typ}")
        return values
    if typ.startswith("int"):
        values = [v - (1 << 256) if v >> 255 else v for v in values]
        half = 1 << (int(typ[3:]) - 1)
        if not (-half <= min(values) and max(values) < half):
            raise ValueError(f"a value does not fit {typ}")
        return values
    raise AssertionError(typ)


def _decode_static(ev: EventDef, logs: Sequence[Log], rows: list[int],
                   failures: list[tuple[int, str]]) -> EventColumns:
    n_topics = 1 + sum(1 for _, _, ix in ev.inputs if ix)
    n_words = sum(len(word_types(t) or ()) for t in ev.data_types)
    want = 2 + 64 * n_words
    good: list[int] = []
    datas: list[str] = []
    topics: list[list[str]] = []
    for r in rows:
        log = logs[r]
        d, tps = log.data, log.topics
        if len(d) != want:
            failures.append((r, (f"{ev.name}: data is {(len(d) - 2) // 2} bytes, "
                                 f"{ev.signature} needs {n_words * 32}")))
        elif len(tps) != n_topics:
            failures.append((r, f"{ev.name}: {len(tps)} topics, {ev.signature} needs {n_topics}"))
        else:
            good.append(r)
            datas.append(d)
            topics.append(tps)
    cols = EventColumns(ev, good, {})
    word, topic = 0, 1
    bad: dict[int, str] = {}

    def column(src: list[str], off: int, typ: str, label: str) -> list[Any]:
        """The values of the words at ``off`` (in hex digits) of every string in ``src``."""
        try:
            return _fast_column(src, off, typ)
        except ValueError:  # rare: find the offending rows one by one
            dec = _word_decoder(typ)
            values = []
            for i, s in enumerate(src):
                try:
                    values.append(dec(s[off:off + 64]))
                except ValueError as e:
                    bad.setdefault(i, f"{ev.name}.{label}: {e}")
                    values.append(None)
            return values

    def assemble(typ: str, label: str) -> list[Any]:
        """The column of one data argument: words sliced, tuples zipped from their parts."""
        nonlocal word
        if typ in STATIC_TYPES:
            off = 2 + 64 * word
            word += 1
            return column(datas, off, typ, label)
        parts = [assemble(p, f"{label}[{i}]") for i, p in enumerate(split_types(typ[1:-1]))]
        return list(zip(*parts, strict=True)) if parts else [() for _ in datas]

    for name, typ, indexed in ev.inputs:
        if indexed:
            src = [t[topic] for t in topics]
            topic += 1
            # an indexed tuple is only its hash in the topic
            cols.fields[name] = (column(src, 2, typ, name) if typ in STATIC_TYPES
                                 else ["0x" + w[2:].lower() for w in src])
        else:
            cols.fields[name] = assemble(typ, name)
    if bad:
        keep = [i for i in range(len(good)) if i not in bad]
        failures.extend((good[i], reason) for i, reason in bad.items())
        cols.rows = [good[i] for i in keep]
        cols.fields = {k: [v[i] for i in keep] for k, v in cols.fields.items()}
    return cols


def _decode_dynamic(ev: EventDef, logs: Sequence[Log], rows: list[int],
                    failures: list[tuple[int, str]]) -> EventColumns:
    cols = EventColumns(ev, [], {name: [] for name, _, _ in ev.inputs})
    data_names = [n for n, _, ix in ev.inputs if not ix]
    idx_inputs = [(n, t) for n, t, ix in ev.inputs if ix]
    for r in rows:
        log = logs[r]
        try:
            values = eth_abi.decode(ev.data_types, bytes.fromhex(log.data[2:]), strict=True)
            if len(log.topics) != 1 + len(idx_inputs):
                raise ValueError(f"{len(log.topics)} topics, needs {1 + len(idx_inputs)}")
            decoded = dict(zip(data_names, values, strict=True))
            for (n, t), tp in zip(idx_inputs, log.topics[1:], strict=True):
                decoded[n] = _word_decoder(t)(tp[2:]) if t in STATIC_TYPES else tp
        except Exception as e:  # noqa: BLE001 - eth_abi raises many types; all mean "undecodable"
            failures.append((r, f"{ev.name}: {type(e).__name__}: {e}"))
            continue
        cols.rows.append(r)
        for name in cols.fields:
            cols.fields[name].append(decoded[name])
    return cols


def _decode_eventlog(ev: EventDef, logs: Sequence[Log], rows: list[int],
                     failures: list[tuple[int, str]]) -> EventColumns:
    """GMX v2 ``EventLog*``: the layout-aware decoder, eth_abi for whatever it refuses."""
    idx_inputs = [n for n, _, ix in ev.inputs if ix]
    data_names = [n for n, _, ix in ev.inputs if not ix]
    cols = EventColumns(ev, [], {name: [] for name, _, _ in ev.inputs})
    out = [cols.fields[n] for n in data_names]
    out_topics = [cols.fields[n] for n in idx_inputs]
    n_topics = 1 + len(idx_inputs)
    decode = eventdata.decode_hex
    for r in rows:
        log = logs[r]
        tps = log.topics
        if len(tps) != n_topics:
            failures.append((r, f"{ev.name}: {len(tps)} topics, {ev.signature} needs {n_topics}"))
            continue
        try:
            values: tuple[Any, ...] = decode(log.data)
        except ValueError:
            try:
                raw = bytes.fromhex(log.data[2:])
            except ValueError as e:
                failures.append((r, f"{ev.name}: data is not hex ({e})"))
                continue
            try:
                sender, name, eld = eth_abi.decode(list(eventdata.DATA_TYPES), raw, strict=True)
                values = (sender.lower(), name, eventdata.from_reference(eld))
            except Exception as e:  # noqa: BLE001 - every eth_abi error means "undecodable"
                failures.append((r, f"{ev.name}: {type(e).__name__}: {e}"))
                continue
        cols.rows.append(r)
        for column, v in zip(out, values, strict=True):
            column.append(v)
        for column, t in zip(out_topics, tps[1:], strict=True):
            column.append(t.lower())
    return cols


def decode_logs(logs: Sequence[Log], abi: AbiEvents) -> Decoded:
    """Decode a batch of raw logs (as eth_getLogs returns them) grouped by event, in columns."""
    by_event: dict[int, tuple[EventDef, list[int]]] = {}
    failures: list[tuple[int, str]] = []
    for i, log in enumerate(logs):
        tps = log.topics
        t0 = tps[0].lower() if tps else ""
        if t0 in abi.by_topic:
            ev = abi.event_for(t0, len(tps))
            by_event.setdefault(id(ev), (ev, []))[1].append(i)
        else:
            failures.append((i, f"unknown topic0 {t0 or '(none)'} for the ABI in {abi.folder}"))
    events: dict[str, list[EventColumns]] = {}
    for ev, rows in by_event.values():
        if ev.static:
            decode = _decode_static
        elif tuple(ev.data_types) == eventdata.DATA_TYPES:
            decode = _decode_eventlog
        else:
            decode = _decode_dynamic
        events.setdefault(ev.name, []).append(decode(ev, logs, rows, failures))
    return Decoded(events, sorted(failures))


# -- encoding helpers for the dev chain and tests ----------------------------------------------


def selector(signature: str) -> str:
    return "0x" + keccak(signature.encode())[:4].hex()


def encode_call(signature: str, args: Sequence[Any]) -> str:
    """Calldata for ``name(type,...)`` with ``args``, as 0x hex."""
    types = signature[signature.index("(") + 1:-1]
    types_list = split_types(types)
    return selector(signature) + eth_abi.encode(types_list, list(args)).hex()


def encode_values(types: Sequence[str], values: Sequence[Any]) -> bytes:
    """``abi.encode(values)``."""
    return eth_abi.encode(list(types), list(values))


def decode_values(types: Sequence[str], data_hex: str) -> tuple[Any, ...]:
    return tuple(eth_abi.decode(list(types), bytes.fromhex(data_hex[2:])))
