"""Golden logs for the adapter unit tests, built from hand-written event signatures.

An event is given as its Solidity-style declaration, e.g.
``"PositionChanged(address indexed trader, address indexed baseToken, int256 x)"``; topic0 is
the keccak of the canonical signature, indexed values go in the topics and the others are
ABI-encoded with eth_abi into ``data``: the log the node would send. The adapter under test
then gets them through the real pipeline (``decode_logs`` with the shipped ABI, then
``LogMeta.from_logs``), so a signature or ABI mismatch shows as a decoding failure.

Nothing here computes an expected value: keys are hashed with pycryptodome's keccak from their
documented formulas, independently of ``indexer``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import eth_abi
from Crypto.Hash import keccak as _keccak

from indexer.abi import AbiEvents, decode_logs, load_abi_dir
from indexer.adapters import load
from indexer.adapters.base import AdapterContext
from indexer.config import default_abi_dir
from indexer.rpc import Log, as_logs
from indexer.types import AdapterOutput, ChangeColumns, Decoded, LogMeta


def keccak(data: bytes) -> bytes:
    return _keccak.new(digest_bits=256, data=data).digest()


def word(address: str) -> bytes:
    """An address as one ABI word (left-padded to 32 bytes)."""
    return bytes(12) + bytes.fromhex(address[2:])


def tx(n: int) -> str:
    """Transaction hash number ``n``."""
    return f"0x{n:064x}"


def addr(byte: str) -> str:
    """A test address made of one repeated byte, e.g. ``addr("a1")``."""
    return "0x" + byte * 20


def _split(params: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in params:
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        depth += (ch == "(") - (ch == ")")
        cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def parse(declaration: str) -> tuple[str, list[tuple[str, str, bool]]]:
    """``Name(type [indexed] name, ...)`` -> (name, [(arg name, type, indexed)])."""
    name, params = declaration.split("(", 1)
    args = []
    for p in _split(params[:-1]):
        parts = p.split()
        args.append((parts[-1], parts[0], "indexed" in parts[1:-1]))
    return name.strip(), args


def topic0(declaration: str) -> str:
    name, args = parse(declaration)
    return "0x" + keccak(f"{name}({','.join(t for _, t, _ in args)})".encode()).hex()


def ev(declaration: str, address: str, tx_n: int, **values: Any) -> dict:
    """One log of the event ``declaration`` emitted by ``address`` in transaction ``tx_n``."""
    _, args = parse(declaration)
    missing = {n for n, _, _ in args} - set(values)
    assert not missing, f"values missing for {missing}"
    values = {n: bytes.fromhex(values[n][2:]) if t == "bytes32" and isinstance(values[n], str)
              else values[n] for n, t, _ in args}  # bytes32 given as 0x hex
    topics = [topic0(declaration)]
    for n, t, indexed in args:
        if indexed:
            raw = keccak(values[n].encode()) if t == "string" else eth_abi.encode([t], [values[n]])
            topics.append("0x" + raw.hex())
    data = eth_abi.encode([t for _, t, ix in args if not ix], [values[n] for n, _, ix in args if not ix])
    return {"address": address, "topics": topics, "data": "0x" + data.hex(),
            "transactionHash": tx(tx_n)}


def as_batch(logs: list[dict]) -> list[Log]:
    """The logs as one eth_getLogs answer: block 1 + tx number, log index = position."""
    return as_logs([{"blockNumber": hex(1 + int(lg["transactionHash"], 16)),
                     "blockHash": "0x" + "ab" * 32, "blockTimestamp": "0x6600aa00",
                     "logIndex": hex(i), **lg} for i, lg in enumerate(logs)])


@cache
def abi(adapter: str) -> AbiEvents:
    """The adapter's shipped ABI folder, as the config resolves it by default."""
    return load_abi_dir(default_abi_dir(adapter))


def decode(adapter: str, logs: list[dict]) -> tuple[Decoded, LogMeta]:
    batch = as_batch(logs)
    decoded = decode_logs(batch, abi(adapter))
    assert decoded.failures == [], decoded.failures
    return decoded, LogMeta.from_logs(batch)


def run(adapter: str, logs: list[dict], ctx: AdapterContext) -> AdapterOutput:
    decoded, meta = decode(adapter, logs)
    return load(adapter).to_changes(decoded, meta, ctx)


def rows(changes: ChangeColumns) -> list[dict[str, Any]]:
    """The change columns as one dict per row."""
    names = [n for n in ChangeColumns.__dataclass_fields__]
    return [{n: getattr(changes, n)[i] for n in names} for i in range(len(changes))]


def pick(row: dict[str, Any], want: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``row`` named in ``want`` (to compare with ``want``)."""
    return {k: row[k] for k in want}
