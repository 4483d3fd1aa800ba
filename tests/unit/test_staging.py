"""Staged partitions (indexer.store.staging) and how a cluster run cuts its range into them."""

from __future__ import annotations

import pytest

from indexer.cluster import partitions
from indexer.store.staging import clear_staged, staged_info, staged_path, write_staged

pytestmark = pytest.mark.unit

END = {"number": "0x1d", "hash": "0x" + "ab" * 32, "parentHash": "0x" + "cd" * 32,
       "timestamp": "0x5"}


def test_partitions_end_at_multiples_of_their_size_so_a_resumed_run_cuts_the_same():
    assert partitions(7, 45, 20) == [(7, 19), (20, 39), (40, 45)]
    # a run resumed from a checkpoint at 19 or 39 cuts the partitions the first run did
    assert partitions(20, 45, 20) == partitions(7, 45, 20)[1:]
    assert partitions(40, 40, 20) == [(40, 40)]
    assert partitions(41, 40, 20) == []


def test_merged_and_half_written_files_are_cleared_and_the_others_kept(tmp_path):
    columns: dict[str, list[object]] = {k: [] for k in (
        "address", "topics", "data", "block_number", "block_hash", "transaction_hash",
        "log_index", "block_timestamp")}
    for lo, hi in ((0, 19), (20, 39), (40, 59)):
        write_staged(staged_path(tmp_path, "gmx", lo, hi), columns, lo, hi, END)
    (tmp_path / "gmx" / ".000000000060-000000000079.parquet.1.2.tmp").write_bytes(b"half")
    assert clear_staged(tmp_path, "gmx", 40) == 3  # two merged, one half written
    assert sorted(p.name for p in (tmp_path / "gmx").iterdir()) == [
        "000000000040-000000000059.parquet"]
    kept = staged_info(staged_path(tmp_path, "gmx", 40, 59))
    assert kept is not None and (kept.lo, kept.hi, kept.logs) == (40, 59, 0)
