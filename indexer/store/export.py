"""Parquet export: the ledger, positions, funding updates and the hourly analytics views, as Hive
partitions ``<out>/<table>/protocol=<p>/chain_id=<id>/day=YYYY-MM-DD/part.parquet``
(docs/export.md).

Everything is read through one callable, ``run(sql) -> pyarrow.Table``, each call ONE read-only
SELECT (no COPY, no file functions): the same code exports from a database opened read-only
(:meth:`indexer.store.Store.arrow`) or from a running daemon's query service
(:class:`indexer.client.Connection`). Files are written by pyarrow here.

Per table, two queries:

1. the fingerprint of every partition: ``count(*)`` and ``sum(hash(row))`` over whole rows
   (order-independent), compared with the manifest's; partitions whose figures differ (new
   days, days a reorg rolled back and replayed) are the changed ones;
2. the rows of the changed partitions only (a semi join on their keys; batches of at most
   :data:`ROWS_PER_QUERY` rows, by the partitions' counts), ordered by partition, each row with
   its hash, so the fingerprint stored for a file is the one of exactly the rows it holds even
   when a writer committed between the two queries.

Each file goes to a temporary name in its folder, is fsynced and renamed over the old one; the
manifest (``<out>/manifest.json``) the same way, after the table's files. Partitions that no
longer exist (and files no manifest knows, from an interrupted run) are deleted with their empty
folders. An interrupted export is therefore redone safely by the next run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from indexer.errors import ConfigError, StoreError

RunArrow = Callable[[str], pa.Table]
Progress = Callable[[str, int, int], None]

#: The manifest's layout; a manifest of another version is refused.
MANIFEST_VERSION = 1
MANIFEST = "manifest.json"
FILE = "part.parquet"
#: The Hive value of a NULL partition key (as Hive and Spark write it; DuckDB and polars read
#: it as NULL).
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
#: The tables always exported (the *_hourly views are found in the database).
TABLES = ("position_changes", "positions", "funding_updates", "funding_payments")
#: Rows fetched by one query at most (several changed partitions per query, never one split).
ROWS_PER_QUERY = 1_000_000
#: Column of the rows query holding each row's hash.
_HASH = "__row_hash"
_TMP = ".part.parquet.tmp-"


@dataclass(slots=True)
class ExportResult:
    written: int = 0     # partition files written
    unchanged: int = 0   # partitions whose fingerprint matched the manifest's
    deleted: int = 0     # partition files deleted (their rows are gone)
    rows: int = 0        # rows written
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class _Spec:
    """How one table or view is exported."""
    name: str
    #: the columns as written (BIGNUM cast to VARCHAR), in the relation's order
    columns: tuple[str, ...]
    #: SELECT yielding ``columns`` and the partition keys (``day`` computed)
    select: str
    #: Hive partition keys, in path order
    keys: tuple[str, ...]
    #: the order of rows inside a file
    order: tuple[str, ...]


def export(run: RunArrow, out: Path, tables: Sequence[str] | None = None,
           on_progress: Progress | None = None) -> ExportResult:
    """Export ``tables`` (default: all: :data:`TABLES` and every ``*_hourly`` view) into ``out``,
    writing only partitions whose rows changed since the manifest, deleting vanished ones."""
    started = time.monotonic()
    out = Path(out)
    _prepare_out(out)
    manifest = _load_manifest(out)
    specs = _specs(run, tables)
    result = ExportResult()
    checkpoints = _checkpoints(run)
    for spec in specs:
        entries = manifest["tables"].setdefault(spec.name, {})
        entries["partition_by"] = list(spec.keys)
        parts: dict[str, Any] = entries.setdefault("partitions", {})
        _export_table(run, out, spec, parts, result, on_progress)
    manifest["checkpoints"] = checkpoints
    manifest["exported_at"] = _now()
    _write_manifest(out, manifest)
    result.seconds = time.monotonic() - started
    return result


# --- what to export ---------------------------------------------------------------------------

def exported_tables(run: RunArrow) -> list[str]:
    """The tables and views an export of this database writes: :data:`TABLES`, then every
    ``*_hourly`` view by name."""
    return list(_columns(run))


def _columns(run: RunArrow) -> dict[str, list[tuple[str, str]]]:
    """(column, type) of each exported relation, in export order."""
    meta = run("SELECT table_name, column_name, data_type FROM duckdb_columns() "
               "WHERE table_name IN ('position_changes', 'positions', 'funding_updates', "
               "'funding_payments') "
               "OR table_name LIKE '%\\_hourly' ESCAPE '\\' "
               "ORDER BY table_name, column_index").to_pylist()
    found: dict[str, list[tuple[str, str]]] = {}
    for r in meta:
        found.setdefault(r["table_name"], []).append((r["column_name"], r["data_type"]))
    views = sorted(n for n in found if n.endswith("_hourly"))
    return {n: found[n] for n in [t for t in TABLES if t in found] + views}


def _specs(run: RunArrow, wanted: Sequence[str] | None) -> list[_Spec]:
    columns = _columns(run)
    known = list(columns)
    if not wanted:
        names = known
    else:
        unknown = [t for t in wanted if t not in known]
        if unknown:
            raise ConfigError("export", "--table", unknown[0],
                              "one of " + ", ".join(known or ["(no table: not a database "
                                                              "of perp-indexer?)"]))
        names = list(dict.fromkeys(wanted))
    return [_spec(n, columns[n]) for n in names]


def _spec(name: str, cols: list[tuple[str, str]]) -> _Spec:
    names = [c for c, _ in cols]
    if "day" in names:
        raise StoreError(f"{name}: has a column named day, the export's partition key")

    def shown(prefix: str = "") -> str:
        return ", ".join(f"{prefix}{_q(c)}::VARCHAR AS {_q(c)}" if t.upper() == "BIGNUM"
                         else prefix + _q(c) for c, t in cols)
    # protocol and chain are keys where every row has them: cross-venue views (a scope column:
    # rows of scope 'asset' have no protocol or chain) are partitioned by day only
    venue = ("protocol" in names and "chain_id" in names and "scope" not in names)
    keys = (("protocol", "chain_id") if venue else ()) + ("day",)
    if name == "positions":
        # a position belongs to the day of its last change
        select = (f"SELECT {shown('p.')}, "
                  "l.last_time::DATE AS day FROM positions p LEFT JOIN "
                  "(SELECT chain_id, source, position_key, max(block_time) AS last_time "
                  " FROM position_changes GROUP BY ALL) l "
                  "ON l.chain_id = p.chain_id AND l.source = p.source "
                  "AND l.position_key = p.position_key")
        order: tuple[str, ...] = ("source", "position_key")
    elif "block_time" in names:
        select = f"SELECT {shown()}, block_time::DATE AS day FROM {_q(name)}"
        order = ("block_number", "log_index", "source") if "log_index" in names else ()
    elif "hour" in names:
        select = f"SELECT {shown()}, hour::DATE AS day FROM {_q(name)}"
        order = ("hour",) + tuple(c for c in ("scope", "chain_id", "protocol", "market", "asset",
                                              "is_long", "kind") if c in names)
    else:
        raise StoreError(f"{name}: has neither block_time nor hour to partition by day")
    return _Spec(name, tuple(names), select, keys, order)


# --- one table --------------------------------------------------------------------------------

def _export_table(run: RunArrow, out: Path, spec: _Spec, parts: dict[str, Any],
                  result: ExportResult, on_progress: Progress | None) -> None:
    base = out / spec.name
    _sweep_temporaries(base)
    keys = ", ".join(spec.keys)
    found = run(f"WITH t AS ({spec.select}) SELECT {keys}, count(*)::BIGINT AS n, "
                f"sum(hash(t))::VARCHAR AS fp FROM t GROUP BY ALL ORDER BY ALL").to_pylist()
    current: dict[str, tuple[tuple[Any, ...], int, str]] = {}
    for r in found:
        values = tuple(r[k] for k in spec.keys)
        current[_path(spec.keys, values)] = (values, r["n"], r["fp"])
    changed = [p for p, (_, n, fp) in current.items()
               if not (parts.get(p, {}).get("rows") == n and parts[p].get("fingerprint") == fp
                       and (base / p / FILE).is_file())]
    total, done = len(current), len(current) - len(changed)
    result.unchanged += done
    if on_progress:
        on_progress(spec.name, done, total)
    folders: set[Path] = set()
    for batch in _batches(changed, {p: current[p][1] for p in changed}):
        table = run(_rows_query(spec, [current[p][0] for p in batch]))
        for values, rows in _split(table, spec.keys):
            path = _path(spec.keys, values)
            # Python ints: exact, as DuckDB's sum(hash) (a HUGEINT)
            fingerprint = sum(rows.column(_HASH).to_pylist())
            data = rows.drop_columns([*spec.keys, _HASH])
            _write_atomic(base / path / FILE, data)
            folders.add(base / path)
            parts[path] = {"rows": data.num_rows, "fingerprint": str(fingerprint),
                           "written_at": _now()}
            result.written += 1
            result.rows += data.num_rows
            done += 1
            if on_progress:
                on_progress(spec.name, done, total)
    for folder in folders:  # the renames are durable before the manifest names them
        _fsync_dir(folder)
    # partitions gone (also any file an interrupted run left that no partition owns)
    for path in [p for p in parts if p not in current]:
        del parts[path]
    for file in sorted(base.rglob(FILE)) if base.is_dir() else []:
        rel = file.parent.relative_to(base).as_posix()
        if rel not in current:
            file.unlink()
            result.deleted += 1
            _remove_empty(file.parent, base)
    if on_progress:
        on_progress(spec.name, total, total)


def _rows_query(spec: _Spec, partitions: list[tuple[Any, ...]]) -> str:
    values = ", ".join("(" + ", ".join(_literal(v) for v in p) + ")" for p in partitions)
    on = " AND ".join(f"t.{k} IS NOT DISTINCT FROM v.{k}" for k in spec.keys)
    order = ", ".join([*spec.keys, *spec.order])
    return (f"WITH t AS ({spec.select}) SELECT t.*, hash(t) AS {_HASH} FROM t "
            f"SEMI JOIN (VALUES {values}) v({', '.join(spec.keys)}) ON {on} ORDER BY {order}")


def _batches(paths: list[str], rows: dict[str, int]) -> Iterable[list[str]]:
    """The changed partitions in groups of at most ROWS_PER_QUERY rows (a bigger partition alone)."""
    batch: list[str] = []
    size = 0
    for p in paths:
        if batch and size + rows[p] > ROWS_PER_QUERY:
            yield batch
            batch, size = [], 0
        batch.append(p)
        size += rows[p]
    if batch:
        yield batch


def _split(table: pa.Table, keys: tuple[str, ...]) -> Iterable[tuple[tuple[Any, ...], pa.Table]]:
    """The runs of equal keys of a table sorted by them: a partition starts wherever one of its
    keys' runs ends (run-end encoding of each key column, nulls included)."""
    if table.num_rows == 0:
        return
    ends: set[int] = set()
    for k in keys:
        ree = pc.run_end_encode(table.column(k).combine_chunks())
        ends.update(ree.run_ends.to_pylist())
    start = 0
    for end in sorted(ends):
        first = table.slice(start, 1).select(list(keys)).to_pylist()[0]
        yield tuple(first[k] for k in keys), table.slice(start, end - start)
        start = end


# --- paths and files --------------------------------------------------------------------------

def _path(keys: tuple[str, ...], values: tuple[Any, ...]) -> str:
    return "/".join(f"{k}={_hive(v)}" for k, v in zip(keys, values, strict=True))


def _hive(value: Any) -> str:
    if value is None:
        return NULL_PARTITION
    if isinstance(value, date):
        return value.isoformat()
    return quote(str(value), safe="")


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _write_atomic(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{_TMP}{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            pq.write_table(table, f, compression="zstd")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"{path}: cannot write: {e}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_empty(folder: Path, base: Path) -> None:
    while folder != base and base in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def _sweep_temporaries(base: Path) -> None:
    """Temporary files an interrupted export left behind."""
    if base.is_dir():
        for tmp in base.rglob(f"{_TMP}*"):
            tmp.unlink(missing_ok=True)


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise StoreError(f"{out}: the export folder is a file; give a folder (new or an export's)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"{out}: cannot create the export folder: {e.strerror or e}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise StoreError(f"{out}: the export folder is not writable")


# --- manifest ---------------------------------------------------------------------------------

def _load_manifest(out: Path) -> dict[str, Any]:
    path = out / MANIFEST
    if not path.exists():
        return {"format": "perp-indexer export", "version": MANIFEST_VERSION, "tables": {}}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise StoreError(f"{path}: not a readable export manifest ({e}); move the folder aside "
                         "or delete the manifest to export everything again") from None
    version = manifest.get("version") if isinstance(manifest, dict) else None
    if version != MANIFEST_VERSION or not isinstance(manifest.get("tables"), dict):
        raise StoreError(f"{path}: an export manifest of format version {version!r}; this "
                         f"perp-indexer writes version {MANIFEST_VERSION}: export into a new "
                         "folder (or delete this one)")
    return manifest


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    path = out / MANIFEST
    tmp = out / f".{MANIFEST}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"{path}: cannot write the manifest: {e}") from None
    _fsync_dir(out)


def _checkpoints(run: RunArrow) -> list[dict[str, Any]]:
    rows = run("SELECT source, protocol, chain_id, start_block, block_number, block_hash, "
               "updated_at::VARCHAR AS updated_at FROM checkpoints ORDER BY source").to_pylist()
    return [dict(r) for r in rows]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
