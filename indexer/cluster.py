"""Backfill over a Dask cluster (``backfill --cluster ADDRESS``): the only module that imports
dask.

The range to backfill is cut into partitions of ``partition_blocks`` blocks. Workers fetch
partitions (the part a provider's latency and limits bound), out of order and several at once,
and stage each as one immutable Parquet file with a deterministic name in a staging folder they
share with the writer (``store.staging``). The writer, this process, reads the files in block
order, prepares them (decoding and the adapter, with the prior state adapters read from the
ledger) and commits each with its checkpoint and a row in the ``staged_partitions`` manifest, in
one transaction; then the file goes. A task that is retried, or a worker that dies, rewrites the
same file; a writer killed with SIGKILL resumes from its checkpoint and takes the files already
staged as they are, so it redoes at most the partitions in flight.

Each endpoint's requests a second hold for the cluster as a whole: a ``SharedRates`` actor on
one worker paces every request of the run, the workers' and the writer's, to the endpoint's
``requests_per_second`` or to the rate it learns from the provider's refusals (each process
keeps its own requests-in-flight windows). Should that worker die, each process keeps to its
share of ``requests_per_second`` (the rate split between the workers) and learns the rest alone.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from distributed import Actor, Client, Future, Worker, get_worker

from indexer.backfill import ensure_markets
from indexer.chains import Chain
from indexer.chains.evm import EvmChain
from indexer.config import load_config
from indexer.endpoints import SharedRates
from indexer.engine.commit import CommitQueue
from indexer.engine.fetch import fetch_ahead
from indexer.engine.ranges import BlockRange
from indexer.engine.source import ScanState, Source, build_source
from indexer.errors import ConfigError, IndexerError
from indexer.rpc import Log, as_logs
from indexer.store import Store
from indexer.store.staging import (
    Staged,
    clear_staged,
    read_staged,
    staged_info,
    staged_path,
    write_staged,
)

logger = logging.getLogger(__name__)

#: Seconds to wait for the scheduler before reporting it unreachable.
CONNECT_TIMEOUT = 30
#: Seconds between looks for the next partition's file, and between notes that it is late.
STAGED_POLL, WAIT_NOTE = 0.01, 5.0
#: Partitions per worker thread kept submitted ahead of the one being merged: enough to keep the
#: cluster busy, few enough to bound the staging folder.
AHEAD_PER_THREAD = 2
#: Request timeouts a partition may be late (waited for by the writer, its file missing)
#: before the writer fetches it itself.
LATE_AFTER = 4
#: Seconds to wait for the shared rate limiter's answer before pacing alone.
PACER_TIMEOUT = 5.0


class ClusterError(IndexerError):
    """The cluster cannot be reached or cannot run this source."""


def partitions(lo: int, hi: int, size: int) -> list[tuple[int, int]]:
    """[lo, hi] cut into consecutive ranges that end at multiples of ``size`` blocks (the first
    and last may be shorter): a run resumed from a checkpoint cuts the same partitions as the
    run before, so the files that run's tasks staged are taken as they are."""
    cut, a = [], lo
    while a <= hi:
        b = min((a // size + 1) * size - 1, hi)
        cut.append((a, b))
        a = b + 1
    return cut


class ActorPacer:
    """An ``endpoints.Pacer`` that asks the run's ``SharedRates`` actor, named by the worker
    holding it and its key (not handed to tasks as the actor itself: a task that depends on
    the actor fails with its worker, where asking it can fall back)."""

    def __init__(self, address: str, key: str) -> None:
        # bound to this worker now: the fetch threads that ask it are not Dask's, and an actor
        # looks for its worker in the asking thread
        try:
            worker: Worker | None = get_worker()
        except ValueError:
            worker = None  # the writer: it asks through its client
        self.actor = Actor(SharedRates, address, key, worker=worker)
        self.key = key

    def start(self, key: str, calls: int = 1) -> float:
        return float(self.actor.start(key, calls).result(timeout=PACER_TIMEOUT))

    def ended(self, key: str, outcome: str, seconds: float, retry_after: float | None,
              calls: int = 1) -> None:
        self.actor.ended(key, outcome, seconds, retry_after, calls)  # not waited for


# -- on a worker -----------------------------------------------------------------------------

#: Each worker process builds a source and its chain client once (the client keeps the
#: endpoints' learnt limits across the partitions it fetches).
_WORKER_SOURCES: dict[tuple[str, str, int], tuple[Source, EvmChain]] = {}
_WORKER_LOCK = threading.Lock()
#: The run whose SharedRates actor each of them was given.
_WORKER_PACED: dict[tuple[str, str, int], str] = {}


def _worker_source(config_file: str, name: str, workers: int,
                   rates: tuple[str, str] | None) -> tuple[Source, EvmChain]:
    key = (config_file, name, workers)
    with _WORKER_LOCK:
        if key not in _WORKER_SOURCES:
            cfg = load_config(config_file)
            source = build_source(cfg, cfg.protocol(name))
            chain = source.chain
            if chain.requests_per_second is not None:  # its share, should the actor go
                chain = replace(chain, requests_per_second=chain.requests_per_second / workers)
            _WORKER_SOURCES[key] = (source, EvmChain.connect(chain))
        source, evm = _WORKER_SOURCES[key]
        if rates is not None and _WORKER_PACED.get(key) != rates[1]:
            # this run's, once: a pacer found gone is not asked again
            evm.rpc.endpoints.pacer = ActorPacer(*rates)
            _WORKER_PACED[key] = rates[1]
        return source, evm


def _log_columns(logs: list[Log]) -> dict[str, list[Any]]:
    return {"address": [lg.address for lg in logs], "topics": [lg.topics for lg in logs],
            "data": [lg.data for lg in logs], "block_number": [lg.block_number for lg in logs],
            "block_hash": [lg.block_hash for lg in logs],
            "transaction_hash": [lg.transaction_hash for lg in logs],
            "log_index": [lg.log_index for lg in logs],
            "block_timestamp": [lg.block_timestamp for lg in logs]}


def stage_partition(config_file: str, name: str, lo: int, hi: int, staging: str,
                    workers: int, rates: tuple[str, str] | None = None) -> Staged:
    """The task a worker runs: fetch blocks [lo, hi] of source ``name`` and stage their logs
    (a file already staged, by an earlier try or run, is taken as it is)."""
    path = staged_path(Path(staging), name, lo, hi)
    done = staged_info(path)
    if done is not None:
        return done
    source, chain = _worker_source(config_file, name, workers, rates)
    return fetch_and_stage(source, chain, lo, hi, path)


def fetch_and_stage(source: Source, chain: EvmChain, lo: int, hi: int, path: Path) -> Staged:
    """Fetch blocks [lo, hi] of ``source`` and stage their logs at ``path``."""
    state = source.new_state()
    logs: list[Log] = []
    end: dict[str, Any] | None = None
    for fetched in fetch_ahead(state, chain.rpc, lo, hi):
        logs += fetched.logs
        end = fetched.end
    assert end is not None, "a partition covers at least one block"
    return write_staged(path, _log_columns(logs), lo, hi, end)


# -- on the writer ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    """One source's run over the cluster: task keys of their own (a killed writer's tasks may
    linger on the scheduler under theirs; the files, not the keys, make a partition's work
    happen once), and its shared rate limiter."""

    name: str
    workers: int
    id: str
    #: The SharedRates actor's worker address and key.
    rates: tuple[str, str] | None


@dataclass
class Cluster:
    """A connection to a Dask scheduler, and where its workers stage partitions."""

    client: Client
    config_file: str
    staging: Path
    partition_blocks: int

    @classmethod
    def connect(cls, address: str, config_file: str, staging: Path,
                partition_blocks: int) -> Cluster:
        try:
            client = Client(address, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as e:
            raise ClusterError(f"cannot reach the Dask scheduler at {address} within "
                               f"{CONNECT_TIMEOUT} s ({e}); start one with `dask scheduler` "
                               "and workers with `dask worker ADDRESS`") from None
        staging.mkdir(parents=True, exist_ok=True)
        return cls(client, config_file, staging, partition_blocks)

    def close(self) -> None:
        self.client.close()

    @property
    def threads(self) -> tuple[int, int]:
        """(workers, their threads in all)."""
        workers = self.client.scheduler_info().get("workers", {})
        return max(len(workers), 1), max(sum(w.get("nthreads", 1) for w in workers.values()), 1)

    def check(self, state: ScanState) -> None:
        """Sources whose fetch depends on what earlier ranges found cannot be partitioned."""
        source = state.source
        if source.chain.kind != "evm" or source.adapter.scans_markets:
            why = ("its markets are found as it goes (each range's fetch depends on the ranges "
                   "before it)" if source.adapter.scans_markets else
                   f"the cluster fetches EVM logs; {source.chain.kind} blocks are fetched by the "
                   "writer")
            raise ConfigError(self.config_file, "--cluster", source.name,
                              f"a source the cluster can partition, but {why}: backfill "
                              f"{source.name} without --cluster")

    def run(self, state: ScanState, chain: Chain, store: Store, lo: int, hi: int,
            start_block: int, stop: threading.Event,
            on_range: Callable[[ScanState, BlockRange], None] | None = None,
            writer: ThreadPoolExecutor | None = None) -> int:
        """Backfill [lo, hi] of one source through the cluster; returns the last block
        committed."""
        self.check(state)
        ensure_markets(state, store)  # what earlier runs listed, as the local path reads it
        source = state.source
        size = self.partition_blocks or 4 * source.chain.max_block_range
        workers, threads = self.threads
        parts = deque(partitions(lo, hi, size))
        cleared = clear_staged(self.staging, source.name, lo)
        if cleared:
            logger.info("%s: %d staged files left by earlier runs removed (merged already, or "
                        "half written)", source.name, cleared)
        run = _Run(source.name, workers, uuid.uuid4().hex[:8], None)
        rates = self._shared_rates(chain, run)
        if rates is not None:
            _, (_, address, key) = rates.result(timeout=CONNECT_TIMEOUT).__reduce__()
            run = replace(run, rates=(address, key))
        evm = chain if isinstance(chain, EvmChain) else None
        if evm is not None and run.rates is not None:
            evm.rpc.endpoints.pacer = ActorPacer(*run.rates)  # the writer's requests too
        pending: deque[tuple[int, int, Future]] = deque()
        done = lo - 1
        in_order = source.adapter.reads_prior_state
        logger.info("%s: %d partitions of %d blocks on %d workers (%d threads)", source.name,
                    len(parts), size, workers, threads)

        def committed(r: BlockRange) -> None:
            assert r.staged is not None
            (self.staging / r.staged[0]).unlink(missing_ok=True)
            if on_range:
                on_range(state, r)

        with CommitQueue(store, start_block, 0, committed, writer) as queue:
            try:
                while pending or parts:
                    while parts and len(pending) < AHEAD_PER_THREAD * threads:
                        a, b = parts.popleft()
                        pending.append((a, b, self._submit(run, a, b)))
                    a, b, future = pending.popleft()
                    staged = self._staged(run, a, b, future, state.source, evm)
                    if stop.is_set():
                        break
                    fetched = self._read(staged)
                    if in_order:  # its prior state is the previous partition's commit
                        queue.wait()
                    prepared = chain.prepare(state, store, fetched)
                    prepared.staged = (os.path.relpath(staged.file, self.staging), staged.logs)
                    done = prepared.hi
                    queue.add(prepared, now=True)
            finally:
                for _, _, future in pending:
                    future.cancel()
                if evm is not None:
                    evm.rpc.endpoints.pacer = None
                if rates is not None:
                    rates.release()
        clear_staged(self.staging, source.name, done + 1)  # what killed runs' tasks left
        return done

    def _shared_rates(self, chain: Chain, run: _Run) -> Future | None:
        """The run's ``SharedRates`` actor, on one worker (None for a chain without RPC
        endpoints)."""
        if not isinstance(chain, EvmChain):
            return None
        eps = chain.rpc.endpoints
        return self.client.submit(SharedRates, [e.name for e in eps.all],
                                  [e.key for e in eps.all], chain.config.requests_per_second,
                                  actor=True, key=f"rates-{run.name}-{run.id}")

    def _submit(self, run: _Run, lo: int, hi: int, retry: str = "") -> Future:
        return self.client.submit(stage_partition, self.config_file, run.name, lo, hi,
                                  str(self.staging), run.workers, run.rates,
                                  key=f"stage-{run.name}-{lo}-{hi}-{run.id}{retry}",
                                  pure=False, retries=3)

    def _staged(self, run: _Run, lo: int, hi: int, future: Future, source: Source,
                evm: EvmChain | None) -> Staged:
        """The partition's file once a worker staged it. The file is the result (no result
        travels back through the scheduler, which can lose it with a worker): a task that fails
        raises its error here, a task the cluster lost is submitted again, and a partition
        still missing LATE_AFTER request timeouts after it was first waited for is fetched
        here (a worker can be stuck: the same file, whoever writes it first)."""
        path = staged_path(self.staging, run.name, lo, hi)
        said = since = time.monotonic()
        late = LATE_AFTER * source.chain.request_timeout
        while True:
            if evm is not None and time.monotonic() - since > late:
                logger.warning("partition %d-%d of %s is %.0f s late on the cluster (its task: "
                               "%s): fetched by the writer", lo, hi, run.name,
                               time.monotonic() - since, future.status)
                return fetch_and_stage(source, evm, lo, hi, path)
            if time.monotonic() - said > WAIT_NOTE:
                logger.info("waiting for partition %d-%d of %s (its task: %s)", lo, hi, run.name,
                            future.status)
                said = time.monotonic()
            done = staged_info(path)
            if done is not None:
                return done
            if future.status == "error":
                future.result()  # raises the worker's error
            if future.status in ("lost", "cancelled") or (
                    future.status == "finished" and staged_info(path) is None):
                logger.warning("partition %d-%d of %s was lost with a worker: submitted again",
                               lo, hi, run.name)
                future = self._submit(run, lo, hi, retry="r")
            time.sleep(STAGED_POLL)

    @staticmethod
    def _read(staged: Staged) -> BlockRange:
        logs, end, lo, hi = read_staged(Path(staged.file))
        typed = as_logs(logs)
        size = sum(len(lg.data) for lg in typed) + 400 * len(typed)
        return BlockRange(lo, hi, end, typed, hi - lo + 1, size, len(typed))
