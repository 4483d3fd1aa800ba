"""Staged partitions: one partition's fetched logs as one immutable Parquet file, written by a
cluster worker and merged by the writer (``indexer.cluster``).

A file's name is its source and block range, so a task that is retried, or runs twice on two
workers, writes the same file: it is written aside and renamed into place, never seen half
written. What the writer needs besides the logs (the range and its last block's header) rides in
the file's metadata.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

#: The staged log columns, as eth_getLogs sends them (hex strings).
LOG_SCHEMA = pa.schema([
    ("address", pa.string()), ("topics", pa.list_(pa.string())), ("data", pa.string()),
    ("block_number", pa.string()), ("block_hash", pa.string()),
    ("transaction_hash", pa.string()), ("log_index", pa.string()),
    ("block_timestamp", pa.string())])


@dataclass(frozen=True, slots=True)
class Staged:
    """A staged partition: its file, block range and log count."""

    file: str
    lo: int
    hi: int
    logs: int


def staged_path(staging: Path, source: str, lo: int, hi: int) -> Path:
    """The one name a partition's file has."""
    return staging / source / f"{lo:012d}-{hi:012d}.parquet"


def write_staged(path: Path, columns: dict[str, list[Any]], lo: int, hi: int,
                 end: dict[str, Any]) -> Staged:
    """Write a partition's logs (``LOG_SCHEMA`` columns) and its last block's header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(columns, schema=LOG_SCHEMA).replace_schema_metadata({
        "perp_indexer": json.dumps({"lo": lo, "hi": hi, "end": {
            k: end[k] for k in ("number", "hash", "parentHash", "timestamp")}})})
    aside = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    pq.write_table(table, aside, compression="zstd")
    with open(aside, "rb") as f:
        os.fsync(f.fileno())
    os.replace(aside, path)
    return Staged(str(path), lo, hi, table.num_rows)


def staged_info(path: Path) -> Staged | None:
    """The partition a complete file holds (None: no such file)."""
    if not path.exists():
        return None
    meta = pq.read_schema(path).metadata or {}
    info = json.loads(meta[b"perp_indexer"])
    return Staged(str(path), info["lo"], info["hi"], pq.read_metadata(path).num_rows)


def read_staged(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any], int, int]:
    """(the logs as eth_getLogs objects, the last block's header, lo, hi) of a staged file."""
    table = pq.read_table(path)
    info = json.loads((table.schema.metadata or {})[b"perp_indexer"])
    names = {"block_number": "blockNumber", "block_hash": "blockHash",
             "transaction_hash": "transactionHash", "log_index": "logIndex",
             "block_timestamp": "blockTimestamp"}
    logs = [{names.get(k, k): v for k, v in row.items() if v is not None}
            for row in table.to_pylist()]
    return logs, info["end"], info["lo"], info["hi"]


def clear_staged(staging: Path, source: str, below: int) -> int:
    """Remove a source's files that are not to be merged: partitions ending before block
    ``below`` (merged already; a task of a killed writer may stage its partition after a later
    run merged it) and files left half written by a killed worker. Returns how many went."""
    gone = 0
    for path in (staging / source).glob("*"):
        stale = path.name.endswith(".tmp")
        if path.suffix == ".parquet":
            _, _, hi = path.stem.partition("-")
            stale = hi.isdigit() and int(hi) < below
        if stale:
            path.unlink(missing_ok=True)
            gone += 1
    return gone
