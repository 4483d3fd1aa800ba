"""ABCI events (CometBFT ``block_results``) as the engine's event records, and their decoding.

A CometBFT chain has no logs: a block's effects are ABCI events, each a type and a list of
(key, value) attributes, under ``txs_results[i].events`` (per transaction) and
``finalize_block_events`` (begin/end block). Each event a source wants becomes one event record
(:class:`indexer.rpc.Log`, the record every stage, the quarantine and the ledger's coordinates
use): ``topics[0]`` is the event type, ``data`` its attributes as JSON ``[[key, value], ...]``,
``transaction_hash`` the transaction's hash ("" for a block event), ``log_index`` the event's
place among the block's events (transactions' in order, then the block's own), ``address`` the
emitting module's name as the chain reports it where it does, else "".

Decoding maps attributes to the keys of the adapter's event schema (``abis/<adapter>/events.json``,
the counterpart of an ABI): values stay the strings the chain wrote; a key that appears twice
(dYdX's ``settled_funding`` before v4.0.0 keyed the subaccount number ``subaccount`` too) gives
``key#2`` for its second value; keys the schema lacks (added by a later chain version) are
ignored, keys it has and the event lacks are None. The adapter decides what is malformed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from indexer.abi import AbiEvents
from indexer.errors import AbiError
from indexer.rpc import Log
from indexer.types import Decoded, EventColumns, EventDef

_IDENTIFIER = re.compile(r"^[a-z][a-z0-9_.]*$")


def load_event_schema(folder: Path) -> AbiEvents:
    """``events.json`` of an adapter folder: event type -> attribute keys, as an AbiEvents
    keyed by type (so the start-up checks treat it like an ABI)."""
    path = folder / "events.json"
    try:
        doc = json.loads(path.read_text())
        events = doc["events"]
        by_type = {name: EventDef(name, f"{name}({','.join(keys)})", name,
                                  tuple((str(k), "string", False) for k in keys), str(path))
                   for name, keys in events.items()}
    except FileNotFoundError:
        raise AbiError(f"{path}: event schema not found") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise AbiError(f"{path}: not an event schema ({e!r}); expected "
                       '{"events": {"<type>": ["<key>", ...]}}') from None
    return AbiEvents(by_type, str(folder))


def _text(value: Any, encoded: bool) -> str:
    if value is None:
        return ""
    if not encoded:
        return str(value)
    return base64.b64decode(str(value), validate=True).decode("utf-8")


def _is_base64_attrs(attributes: list[dict[str, Any]]) -> bool:
    """CometBFT before 0.37 sent keys and values base64-encoded; 0.37+ sends plain strings.
    Keys are identifiers (``taker_subaccount``): they are encoded when every one of them decodes
    to one (a plain identifier almost never is valid base64 of another)."""
    keys = [str(a.get("key", "")) for a in attributes]
    if not keys:
        return False
    for key in keys:
        try:
            text = base64.b64decode(key, validate=True).decode("ascii")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        if not _IDENTIFIER.match(text):
            return False
    return True


def attributes(event: dict[str, Any]) -> list[tuple[str, str]]:
    """An event's attributes as (key, value) text pairs, base64 or plain alike."""
    attrs = event.get("attributes") or []
    encoded = _is_base64_attrs(attrs)
    return [(_text(a.get("key"), encoded), _text(a.get("value"), encoded)) for a in attrs]


def tx_hash(tx_base64: str) -> str:
    """A transaction's hash as CometBFT names it: upper-case hex SHA-256 of its bytes."""
    return hashlib.sha256(base64.b64decode(tx_base64)).hexdigest().upper()


def block_records(height: int, time: int, block_hash: str, txs: Sequence[str],
                  results: dict[str, Any], types: set[str]) -> list[Log]:
    """The event records of one block's events of ``types``, in the chain's order."""
    out: list[Log] = []
    index = 0
    hashes = [tx_hash(t) for t in txs]

    def add(events: Iterable[dict[str, Any]], tx: str) -> None:
        nonlocal index
        for event in events or ():
            kind = str(event.get("type", ""))
            if kind in types:
                pairs = attributes(event)
                module = next((v for k, v in pairs if k == "module"), "")
                out.append(Log(module, [kind], json.dumps(pairs), hex(height), block_hash, tx,
                               hex(index), hex(time)))
            index += 1

    for i, tx_result in enumerate(results.get("txs_results") or ()):
        if int(tx_result.get("code") or 0) != 0:  # a failed transaction changed nothing
            index += len(tx_result.get("events") or ())
            continue
        add(tx_result.get("events") or (), hashes[i] if i < len(hashes) else "")
    add(results.get("finalize_block_events") or (), "")
    # CometBFT 0.37 and older: begin/end block events in their own lists
    add(results.get("begin_block_events") or (), "")
    add(results.get("end_block_events") or (), "")
    return out


def decode_events(records: Sequence[Log], schema: AbiEvents) -> Decoded:
    """The records' attributes as columns per event type (see the module's docstring)."""
    columns: dict[str, EventColumns] = {}
    failures: list[tuple[int, str]] = []
    for row, record in enumerate(records):
        kind = record.topics[0] if record.topics else ""
        event = schema.by_topic.get(kind)
        if event is None:
            failures.append((row, f"event type {kind!r} is not in the event schema"))
            continue
        try:
            pairs = json.loads(record.data)
        except ValueError:
            failures.append((row, "attributes are not JSON"))
            continue
        values: dict[str, str] = {}
        for key, value in pairs:
            name = key
            n = 2
            while name in values:
                name, n = f"{key}#{n}", n + 1
            values[name] = value
        cols = columns.get(kind)
        if cols is None:
            keys = [k for k, _, _ in event.inputs]
            cols = columns[kind] = EventColumns(event, [], {k: [] for k in keys})
            cols.fields.update({f"{k}#2": [] for k in keys})
        cols.rows.append(row)
        for name, column in cols.fields.items():
            column.append(values.get(name))
    return Decoded({k: [v] for k, v in columns.items()}, failures)
