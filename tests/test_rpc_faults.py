"""RPC faults never become missing or duplicated data: the recording of the unmodified GMX v1
contracts is backfilled through our fault-injecting proxy (``tests/faultproxy.py``)
and must equal a clean run, table for table; each major provider's range-cap error text is
recognised; rate limits are paced; a dead endpoint fails over and the first one is taken back;
a request that cannot succeed is not retried; and a backfill or a sync killed with SIGKILL at
random moments, then restarted, ends equal to the clean run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from itertools import pairwise

import pytest

from indexer import rpc as rpc_module
from indexer.chains import evm as evm_module
from indexer.config import ChainConfig
from indexer.engine import fetch as engine_fetch
from indexer.engine.source import Tuning
from indexer.errors import AnswerTooLarge, RpcError, StoreError
from indexer.provider_errors import is_rate_limit, parse_range_error
from indexer.rpc import Rpc
from indexer.scanner import RangeSizer
from indexer.store import Store
from tests.faultproxy import KINDS, PROVIDER_ERRORS, FaultProxy
from tests.helpers import GMX_V1_VAULT as VAULT
from tests.helpers import dump, run_cli, write_config

#: Retries without waiting (the faults are injected, not real load).
QUICK_RETRIES = Tuning(backoff=lambda attempt: 0.01)

pytestmark = pytest.mark.replay


#: provider -> (its error text as reported, where it was seen, the block count we should try)
CATALOGUE = {
    # Infura docs, eth_getLogs constraints (-32005, result cap, suggested range)
    "infura_results": (100, 140, 40),
    # INFURA/infura issue 237: the live -32602 block-range form
    "infura_range": (100, 400, 40),
    # BobTheBuidler/dank_mids issue 772, cartesi/rollups-node PR 655 (-32600, hex suggestion)
    "alchemy": (100, 400, 40),
    # bancorprotocol/webapp issue 523 (no number: halve)
    "alchemy_size": (100, 400, None),
    # QuickNode docs (10,000-block limit; the number has a thousands separator)
    "quicknode": (100, 20_400, 10_000),
    # AlphaWallet issue 2736 (BSC-style geth forks, publicnode)
    "geth_fork": (100, 400, 40),
    # erigontech/erigon PR 19721 (--rpc.blockrange.limit)
    "erigon": (100, 400, 40),
    # paradigmxyz/reth issue 23810 (decimal suggested range)
    "reth_results": (100, 400, 40),
    # AlphaWallet iOS issue 5277 (no number: halve)
    "block_range_too_high": (100, 400, None),
}


@pytest.mark.parametrize("provider", sorted(PROVIDER_ERRORS))
def test_each_provider_range_error_is_recognised(provider):
    lo, hi, suggested = CATALOGUE[provider]
    code, message, data = PROVIDER_ERRORS[provider](lo, hi, 40 if suggested != 10_000 else 10_000)
    err = parse_range_error(code, message, data)
    assert err is not None, message
    assert err.suggested == suggested, message
    assert not is_rate_limit(code, message)


@pytest.mark.parametrize("code, message, data, suggested", [
    # Ankr (ponder-sh/ponder issue 1940)
    (-32602, "maximum [from, to] blocks distance: 10000", None, 10_000),
    # Tenderly: the reason is in data.payload (bobanetwork/boba_legacy issue 827)
    (-32602, "invalid params", {"error_id": "4ed94073", "payload":
                                "range 9009594 is bigger than range limit 2000"}, 2000),
    # a geth fork with a configured limit (enviodev/hyperindex issue 605)
    (-32000, ("block range is larger than max block range, block range = 5120, max block range "
              "= 5000"), None, 5000),
    # scroll-tech/go-ethereum PR 529 (no number: halve)
    (-32000, "block range is bigger than maxBlockRange", None, None),
    # reth suggesting the very range that failed (base/base issue 2421): the sizer halves it
    (-32602, "query exceeds max results 20000, retry with the range 25766988-25775072", None,
     8085),
])
def test_more_provider_range_errors_from_their_reports(code, message, data, suggested):
    err = parse_range_error(code, message, data)
    assert err is not None and err.suggested == suggested
    assert parse_range_error(-32602, "invalid params", {"payload": "missing fromBlock"}) is None


def test_a_suggestion_no_smaller_than_the_failed_range_halves_it():
    sizer = RangeSizer(max_size=8085)
    sizer.shrink(parse_range_error(-32602, "query exceeds max results 20000, retry with the "
                                   "range 25766988-25775072", None), tried=8085)
    assert sizer.size == 4042


@pytest.mark.parametrize("code, message", [
    (429, "Your app has exceeded its compute units per second capacity."),  # Alchemy
    (-32012, "credits limited to 6000/sec"),  # QuickNode
    (-32005, "daily request count exceeded, request rate limited"),  # Infura
])
def test_rate_limit_errors_are_transient_not_range_errors(code, message):
    assert is_rate_limit(code, message) and parse_range_error(code, message, None) is None


def _backfill_through(proxy: FaultProxy, tmp_path, tuning: Tuning = Tuning(), **chain) -> dict:
    cfg = write_config(tmp_path / "c.yaml", proxy.url, VAULT, 0, **chain)
    assert run_cli("backfill", "--config", str(cfg), "--no-progress", tuning=tuning) == 0
    return dump(tmp_path / "db.duckdb")


def test_backfill_through_every_fault_equals_a_clean_run(gmx_v1_clean, tmp_path):
    node, want = gmx_v1_clean
    proxy = FaultProxy(node.url, rate=0.35, seed=11, hang=1.5)
    try:
        got = _backfill_through(proxy, tmp_path, QUICK_RETRIES, max_block_range=25,
                                request_timeout=0.5,
                                max_attempts=12)
    finally:
        proxy.stop()
    assert got == want
    assert set(proxy.injected) == set(KINDS), proxy.injected  # every kind happened


@pytest.mark.parametrize("provider", ["infura_results", "reth_results", "alchemy_size"])
def test_backfill_under_a_provider_range_cap_equals_a_clean_run(gmx_v1_clean, tmp_path, provider):
    node, want = gmx_v1_clean
    proxy = FaultProxy(node.url, range_cap=60, provider=provider)
    try:
        got = _backfill_through(proxy, tmp_path, max_block_range=5000)
    finally:
        proxy.stop()
    assert got == want and proxy.injected[f"cap_{provider}"] >= 1


def test_answers_over_the_memory_budget_are_dropped_and_split_losing_nothing(
        gmx_v1_clean, tmp_path, monkeypatch):
    """Whatever the range, no multi-block answer over the byte budget is kept: it is dropped
    as it arrives and its range split (with three requests in flight), and the result equals
    a clean run."""
    node, want = gmx_v1_clean
    budget = 40_000  # about 40 GMX v1 logs
    kept, dropped = [], []
    real = Rpc.fetch_logs

    def fetch_logs(self, addresses, topics, lo, hi, max_bytes=None):
        try:
            logs = real(self, addresses, topics, lo, hi, max_bytes)
        except AnswerTooLarge as e:
            dropped.append(e.size)
            raise
        kept.append((hi - lo + 1, max_bytes, len(logs), engine_fetch.log_bytes(logs)))
        return logs

    monkeypatch.setattr(Rpc, "fetch_logs", fetch_logs)
    cfg = write_config(tmp_path / "c.yaml", node.url, VAULT, 0, max_block_range=5000,
                       requests_in_flight=3)
    assert run_cli("backfill", "--config", str(cfg), "--no-progress",
                   tuning=Tuning(response_bytes=budget)) == 0
    assert dump(tmp_path / "db.duckdb") == want
    assert dropped and all(size > budget for size in dropped)
    assert all(m == budget for _, m, _, _ in kept)
    # what was kept from several blocks fit the budget (the estimate is within 2x of the JSON)
    assert all(est <= 2 * budget for blocks, _, _, est in kept if blocks > 1)
    assert sum(n for _, _, n, _ in kept) > 10 * budget // 1000  # 10 budgets' worth of logs


def _record_commits(monkeypatch) -> list[tuple[int, int, int]]:
    """Every commit from here on, as (lo, hi, ledger rows), in the list returned."""
    commits = []
    real = Store.commit_range

    def commit_range(self, rows, lo, hi, hi_hash, start_block, staged=None):
        commits.append((lo, hi, len(rows.changes["block_number"])))
        return real(self, rows, lo, hi, hi_hash, start_block, staged)

    monkeypatch.setattr(Store, "commit_range", commit_range)
    return commits


def test_small_answers_are_joined_into_large_ranges_losing_nothing(
        gmx_v1_clean, tmp_path, monkeypatch):
    """The sizer aims each answer at REQUEST_BYTES, well under the byte budget, and consecutive
    answers are joined into one committed range of about the budget: small answers arrive
    sooner and hold less memory, a commit has a fixed cost. The result equals a clean run."""
    node, want = gmx_v1_clean
    budget, request = 60_000, 12_000  # about 60 and 12 GMX v1 logs
    # each range committed alone
    tuning = Tuning(response_bytes=budget, request_bytes=request, commit_rows=1)
    answers = []
    real_fetch = Rpc.fetch_logs

    def fetch_logs(self, addresses, topics, lo, hi, max_bytes=None):
        logs = real_fetch(self, addresses, topics, lo, hi, max_bytes)
        answers.append((lo, hi, engine_fetch.log_bytes(logs)))
        return logs

    monkeypatch.setattr(Rpc, "fetch_logs", fetch_logs)
    ranges = _record_commits(monkeypatch)
    cfg = write_config(tmp_path / "c.yaml", node.url, VAULT, 0, max_block_range=5000,
                       requests_in_flight=2)
    assert run_cli("backfill", "--config", str(cfg), "--no-progress", tuning=tuning) == 0
    assert dump(tmp_path / "db.duckdb") == want
    # answers aim at the request size (density varies: some exceed it), never over the budget
    sizes = sorted(size for _, _, size in answers if size)
    assert len(sizes) > 20 and sizes[-1] <= budget and sizes[len(sizes) // 2] <= request
    # ranges are contiguous, and many join several answers, up to JOIN_MAX
    assert all(a[1] + 1 == b[0] for a, b in pairwise(ranges))
    per_range = [sum(1 for lo, hi, _ in answers if r_lo <= lo and hi <= r_hi)
                 for r_lo, r_hi, _ in ranges]
    assert max(per_range) <= engine_fetch.JOIN_MAX
    assert sum(1 for n in per_range if n >= 2) >= len(ranges) // 2
    assert len(ranges) < len(answers) // 2


def test_small_ranges_are_committed_together_losing_nothing(
        gmx_v1_clean, tmp_path, monkeypatch):
    """Consecutive ranges are committed in one transaction until they hold COMMIT_ROWS ledger
    rows (a commit has a fixed cost; a GMX v2 range of the byte budget holds few rows, its logs
    being large). Commits stay contiguous, each but the last reaches the row target, and the
    result equals a clean run."""
    node, want = gmx_v1_clean
    target = 40  # ledger rows a commit gathers (the recording holds 269)
    tuning = Tuning(response_bytes=20_000, commit_rows=target)
    prepared = []
    real_prepare = evm_module.prepare

    def prepare(*args, **kwargs):
        p = real_prepare(*args, **kwargs)
        prepared.append((p.lo, p.hi, p.rows.change_count))
        return p

    monkeypatch.setattr(evm_module, "prepare", prepare)
    commits = _record_commits(monkeypatch)
    cfg = write_config(tmp_path / "c.yaml", node.url, VAULT, 0, max_block_range=5000)
    assert run_cli("backfill", "--config", str(cfg), "--no-progress", tuning=tuning) == 0
    assert dump(tmp_path / "db.duckdb") == want
    assert all(a[1] + 1 == b[0] for a, b in pairwise(commits))
    assert commits[0][0] == prepared[0][0] and commits[-1][1] == prepared[-1][1]
    assert all(rows >= target for _, _, rows in commits[:-1])
    # each commit is a run of whole prepared ranges, and most gather several
    ends = {hi for _, hi, _ in prepared}
    assert all(hi in ends for _, hi, _ in commits)
    assert sum(rows for _, _, rows in commits) == sum(rows for _, _, rows in prepared) == 269
    assert len(commits) < len(prepared) // 2


def test_rate_limits_are_retried_counted_then_reported(gmx_v1_clean):
    node, _ = gmx_v1_clean
    proxy = FaultProxy(node.url, rate=1.0, kinds=("429", "rate_limit_jsonrpc"))
    client = Rpc([proxy.url], timeout=5, max_attempts=3, backoff=lambda attempt: 0.0)
    try:
        with pytest.raises(rpc_module.RpcUnavailable, match="after 3 attempts"):
            client.fetch_head()
        # a refusal counts as a quarter of an attempt: the limiter is there to slow down
        assert proxy.requests == 12
        refused = client.errors[(client.endpoint, "rate_limited")] + client.errors[
            (client.endpoint, "http_429")]
        assert refused == 12
        proxy.rate = 0.0
        for _ in range(30):
            client.fetch_head()
        (endpoint,) = client.endpoints.all
        assert endpoint.refused == 12 and endpoint.requests == 42 == proxy.requests
    finally:
        client.close()
        proxy.stop()


def test_a_node_that_never_answers_is_reported_within_half_a_minute(gmx_v1_clean, caplog):
    """It takes connections, then says nothing: the first request's short timeout reports it
    (a line at the first timeout, the error after two), not the 30 s x 5 attempts of later
    requests."""
    node, _ = gmx_v1_clean
    proxy = FaultProxy(node.url, rate=1.0, kinds=("hang",), hang=60.0)
    chain = evm_module.EvmChain.connect(
        ChainConfig(name="dev", chain_id=31337, rpc_urls=(proxy.url,),
                               confirmations=0, use_finalized_tag=False, max_block_range=100,
                               request_timeout=30.0, max_attempts=5, poll_interval=1.0),
        QUICK_RETRIES)
    started = time.monotonic()
    try:
        with pytest.raises(rpc_module.RpcUnavailable, match="takes connections but does not "
                                                            "answer"):
            chain.check()
        took = time.monotonic() - started
        assert rpc_module.FIRST_TIMEOUT * 2 <= took < 30, took
        first = [r for r in caplog.records if "timeout after 10s" in r.getMessage()]
        assert first and first[0].levelname == "WARNING"
    finally:
        chain.close()
        proxy.stop()


def test_failover_and_back_to_the_first_endpoint(gmx_v1_clean):
    node, _ = gmx_v1_clean
    dead = FaultProxy(node.url, rate=1.0, kinds=("503",))
    client = Rpc([dead.url, node.url], timeout=5, max_attempts=2, backoff=lambda attempt: 0.0,
                 recover_after=0.5)
    try:
        head = client.fetch_head()  # retried at once on the other endpoint
        assert client._active == 1 and dead.requests == 1
        dead.rate = 0.0
        assert client.fetch_head() == head and client._active == 1  # not yet
        assert dead.requests == 1
        time.sleep(0.6)  # past recover_after
        assert client.fetch_head() == head and client._active == 0 and dead.requests == 2
    finally:
        client.close()
        dead.stop()


def test_a_request_that_cannot_succeed_is_not_retried(gmx_v1_clean):
    node, _ = gmx_v1_clean
    proxy = FaultProxy(node.url)
    client = Rpc([proxy.url], timeout=5, max_attempts=5)
    try:
        with pytest.raises(RpcError, match="eth_getBlockByNumber"):
            client.call("eth_getBlockByNumber", ["not-a-block", False])
        assert proxy.requests == 1
    finally:
        client.close()
        proxy.stop()


@pytest.mark.parametrize("command", [["backfill", "--no-progress"], ["sync", "--once"]])
def test_kill_9_at_random_moments_then_resume_equals_a_clean_run(gmx_v1_clean, tmp_path, command):
    node, want = gmx_v1_clean
    cfg = write_config(tmp_path / "c.yaml", node.url, VAULT, 0, max_block_range=7)
    cmd = [sys.executable, "-m", "indexer", *command, "--config", str(cfg)]
    rng = random.Random(3)
    kills = 0
    for _ in range(8):  # until 3 runs were killed mid-way (one may end first, on a fast day)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 2.5))  # start-up is ~1 s; the whole run several more
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(30)
        if kills == 3:
            break
    assert kills == 3
    assert subprocess.run(cmd, check=False, capture_output=True, timeout=300).returncode == 0
    assert dump(tmp_path / "db.duckdb") == want


def test_dense_answers_shrink_the_range_so_memory_stays_bounded():
    sizer = RangeSizer(max_size=10_000, max_bytes=20_000_000)
    assert sizer.size == 10  # a slow start, not 10,000 blocks at once
    sizer.size = 100
    sizer.succeeded(100, 80_000_000)  # 4x the bytes per request we aim below
    assert sizer.size == 17  # 70 % of the budget: density varies
    for _ in range(3):
        sizer.succeeded(17, 5_000_000)
    assert sizer.size == 34
    sizer.size = 50
    for _ in range(3):
        sizer.succeeded(50, 15_000_000)  # more than half the target: no growth
    assert sizer.size == 50
    # an answer dropped over the memory budget shrinks the range to the (smaller) target
    sizer.shrink(AnswerTooLarge(200_000_000, 100_000_000, True), 50)
    assert sizer.size == 3  # 50 blocks * 70 % of 20 MB / 200 MB


def test_a_commit_failing_on_the_writer_thread_stops_the_backfill_and_loses_nothing(
        gmx_v1_clean, tmp_path, monkeypatch):
    """Ranges are committed on a writer thread while the next one is decoded: a commit that
    fails there stops the backfill with its error (exit 1), the ranges committed before it stay
    with their checkpoint, and the next run ends equal to the clean run."""
    node, want = gmx_v1_clean
    alone = Tuning(commit_rows=1)  # each range committed alone (as dense ones are)
    real = Store.commit_range
    calls = []

    def failing(self, rows, lo, hi, hi_hash, start_block, staged=None):
        calls.append(threading.current_thread().name)
        if len(calls) == 3:
            raise StoreError("disk full (injected)")
        return real(self, rows, lo, hi, hi_hash, start_block, staged)

    monkeypatch.setattr(Store, "commit_range", failing)
    cfg = write_config(tmp_path / "c.yaml", node.url, VAULT, 0, max_block_range=50)
    assert run_cli("backfill", "--config", str(cfg), "--no-progress", tuning=alone) == 1
    assert len(calls) == 3 and all(name.startswith("commit") for name in calls)
    store = Store(tmp_path / "db.duckdb", read_only=True)
    try:
        (checkpoint,) = store.query("SELECT block_number FROM checkpoints")[1][0]
        (above,) = store.query("SELECT count(*) FROM position_changes WHERE block_number > ?",
                               [checkpoint])[1][0]
    finally:
        store.close()
    assert 0 < checkpoint and above == 0
    monkeypatch.setattr(Store, "commit_range", real)
    assert run_cli("backfill", "--config", str(cfg), "--no-progress", tuning=alone) == 0
    assert dump(tmp_path / "db.duckdb") == want
