"""dYdX v4 end to end: the CometBFT source and the dydx_v4 adapter against a replay node serving a
simulated dYdX chain (tests/dydx_chain). The simulator keeps its own subaccount state by its own
matching rules; that state is the truth the ledger is held to, at many heights: positions, open
interest, entry prices, liquidations, funding indexes, settled funding and the chain's own
``open_interest``. Then: a resumed backfill and a daemon killed with SIGKILL equal one run,
provider faults change nothing, a lying or broken node is stopped before anything is written,
and malformed events are quarantined with their reasons."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import pytest

from indexer.store import Store
from tests.dydx_chain.node import Faults, ReplayNode
from tests.dydx_chain.simulator import Truth, simulate
from tests.helpers import dump, run_cli, start_sync, write_dydx_config

pytestmark = pytest.mark.cometbft

#: Heights of the simulated run: they cross the v4.0.0 height (12,791,712), where
#: settled_funding changed its key form; the chain's open_interest is read from OI_FROM on.
START, BLOCKS, OI_FROM, MALFORMED = 12_791_400, 1_200, 12_791_900, 12_791_555
#: Below this height the node sends attribute keys and values base64-encoded (CometBFT 0.34).
BASE64_BELOW = START + 150
USD = 10**18


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> tuple[Path, Truth]:
    folder = tmp_path_factory.mktemp("dydx_chain")
    truth = simulate(folder, seed=3, start_height=START, blocks=BLOCKS, open_interest_from=OI_FROM,
                     malformed_at=MALFORMED, base64_attributes_below=BASE64_BELOW)
    return folder, truth


@pytest.fixture(scope="module")
def clean(chain, tmp_path_factory) -> tuple[Path, dict]:
    """One plain backfill of the whole run: its database and its dump."""
    folder, truth = chain
    tmp = tmp_path_factory.mktemp("dydx_clean")
    with ReplayNode(folder) as node:
        cfg = write_dydx_config(tmp / "c.yaml", node.url, START, max_block_range=40,
                                open_interest_from=OI_FROM)
        assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 0
    return tmp / "db.duckdb", dump(tmp / "db.duckdb")


def rows_of(db: Path, *sqls: str) -> list[list[tuple]]:
    """The rows of each query, from the database opened read-only."""
    store = Store(db, read_only=True)
    try:
        return [store.query(sql)[1] for sql in sqls]
    finally:
        store.close()


def ledger(db: Path) -> list[tuple]:
    (rows,) = rows_of(db, "SELECT block_number, log_index, position_key, is_long, kind, "
                          "size_after_tokens_raw::VARCHAR, entry_price_raw::VARCHAR, tx_hash "
                          "FROM position_changes ORDER BY block_number, log_index")
    return rows


def positions_by_height(rows: list[tuple], heights: list[int]
                        ) -> dict[int, dict[tuple[str, int, int], int]]:
    """Signed base quantums per (owner, number, perpetual) after each of ``heights``, replayed
    from the ledger rows (not from our positions table)."""
    out: dict[int, dict[tuple[str, int, int], int]] = {}
    held: dict[str, int] = {}
    i = 0
    for h in sorted(heights):
        while i < len(rows) and rows[i][0] <= h:
            _, _, key, is_long, _, size, _, _ = rows[i]
            held[key] = int(size) if is_long else -int(size)
            i += 1
        snapshot = {}
        for key, q in held.items():
            if q:
                owner, number, perp = key.split("/")
                snapshot[(owner, int(number), int(perp))] = q
        out[h] = snapshot
    return out


def test_positions_and_open_interest_equal_the_chain_at_every_checkpoint(chain, clean):
    _, truth = chain
    db, _ = clean
    rows = ledger(db)
    ours = positions_by_height(rows, truth.heights)
    assert len(truth.heights) >= 40
    compared = 0
    for h in truth.heights:
        assert ours[h] == truth.positions(h), f"positions differ at height {h}"
        long_oi: dict[int, int] = defaultdict(int)
        for (_, _, perp), q in ours[h].items():
            if q > 0:
                long_oi[perp] += q
        assert {p: v for p, v in long_oi.items() if v} == {
            p: v for p, v in truth.open_interest(h).items() if v}, h
        compared += len(ours[h])
    assert compared >= 500  # enough positions to mean something


def test_entry_prices_follow_the_indexer_rule(chain, clean):
    _, truth = chain
    db, _ = clean
    (rows,) = rows_of(db, "SELECT position_key, entry_price_raw::VARCHAR, "
                          "size_tokens_raw::VARCHAR FROM positions WHERE status = 'open'")
    want = truth.entry_price(truth.last_height)
    assert len(rows) == len(want) and rows
    for key, entry, _ in rows:
        owner, number, perp = key.split("/")
        exact = want[(owner, int(number), int(perp))] * USD
        # entry prices are stored truncated to 1e-18 USD after each fill that adds to a position
        assert abs(Fraction(int(entry)) - exact) <= 50, key


def test_liquidations_deleverages_and_final_settlement(chain, clean):
    _, truth = chain
    db, _ = clean
    rows = ledger(db)
    liquidated = sorted((b, k) for b, _, k, _, kind, _, _, _ in rows if kind == "liquidation")
    want = sorted((x["height"], f"{x['owner']}/{x['number']}/{x['perpetual_id']}")
                  for x in truth.liquidations if x["kind"] in ("liquidation", "deleverage"))
    assert want and liquidated == want
    settled = [x for x in truth.liquidations if x["kind"] == "final_settlement"]
    assert settled, "the run must wind a market down"
    closes = {(b, k) for b, _, k, _, kind, _, _, _ in rows if kind in ("close", "decrease")}
    for x in settled:
        assert (x["height"], f"{x['owner']}/{x['number']}/{x['perpetual_id']}") in closes


def test_funding_indexes_payments_and_the_chains_open_interest(chain, clean):
    _, truth = chain
    db, _ = clean
    funding, oi, paid, assets = rows_of(
        db, "SELECT block_number, market, rate_raw::VARCHAR FROM funding_updates",
        "SELECT block_number, market, next_value_raw::VARCHAR FROM protocol_open_interest "
        "WHERE unit = 'tokens' AND is_long",
        "SELECT position_key, sum(amount_raw)::VARCHAR FROM funding_payments GROUP BY 1",
        "SELECT market, asset FROM market_assets")
    ticks = sorted({b for b, _, _ in funding})
    assert len(ticks) >= 10
    for h in ticks:
        assert {int(m): int(v) for b, m, v in funding if b == h} == truth.funding_index(h), h
    oi_heights = sorted({b for b, _, _ in oi})
    assert oi_heights and min(oi_heights) >= OI_FROM
    assert [h for h in ticks if h >= OI_FROM] == oi_heights
    for h in oi_heights:
        assert {int(m): int(v) for b, m, v in oi if b == h} == truth.open_interest(h), h
    want: dict[str, int] = defaultdict(int)
    for x in truth.settled_funding:
        want[f"{x['owner']}/{x['number']}/{x['perpetual_id']}"] += x["paid"] * 10**12
    assert {k: int(v) for k, v in paid} == dict(want)
    assert any(x["height"] < 12_791_712 for x in truth.settled_funding)  # the old key form
    assert any(x["height"] >= 12_791_712 for x in truth.settled_funding)
    tickers = {str(p): m["ticker"] for p, m in truth.markets.items()}
    assert dict(assets) == {p: t.split("-")[0] for p, t in tickers.items()
                            if p in dict(assets)} and len(assets) >= 4


def test_malformed_events_are_quarantined_with_reasons(chain, clean):
    _, truth = chain
    db, _ = clean
    (rows,) = rows_of(db, "SELECT block_number, topics, reason FROM quarantine")
    assert sorted(b for b, _, _ in rows) == [MALFORMED] * len(truth.malformed) and rows
    reasons = " | ".join(r for _, _, r in rows)
    assert "not an integer" in reasons and "lacks perpetual_id" in reasons
    assert all(t == ["match"] for _, t, _ in rows)


def test_a_resumed_backfill_equals_one_run(chain, clean, tmp_path):
    """A backfill stopped at four heights (one of them twice in a row) and resumed equals one
    run: prior positions, carried sumOpen and markets are read back from the ledger; so does
    replaying an indexed middle range afterwards."""
    folder, _ = chain
    _, want = clean
    with ReplayNode(folder) as node:
        cfg = write_dydx_config(tmp_path / "c.yaml", node.url, START, max_block_range=40,
                                open_interest_from=OI_FROM)
        for stop in (START + 97, START + 450, START + 451, START + 900):
            assert run_cli("backfill", "--config", str(cfg), "--to", str(stop),
                           "--no-progress") == 0
        assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 0
        assert dump(tmp_path / "db.duckdb") == want
        # replaying an indexed middle range reads prior state from the ledger
        assert run_cli("backfill", "--config", str(cfg), "--from", str(START + 300), "--to",
                       str(START + 700), "--no-progress") == 0
    assert dump(tmp_path / "db.duckdb") == want


def test_provider_faults_change_nothing(chain, clean, tmp_path):
    folder, _ = chain
    _, want = clean
    with ReplayNode(folder, faults=Faults(error_rate=0.15, rate_limit_every=9)) as node:
        cfg = write_dydx_config(tmp_path / "c.yaml", node.url, START, max_block_range=40,
                                open_interest_from=OI_FROM, max_attempts=8)
        assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 0
    assert dump(tmp_path / "db.duckdb") == want


@pytest.mark.parametrize("fault", ["lie_height", "broken_link_at"])
def test_a_lying_or_broken_node_is_stopped_before_writing(chain, tmp_path, capsys, fault):
    folder, _ = chain
    bad = START + 333
    with ReplayNode(folder, faults=Faults(**{fault: bad})) as node:
        cfg = write_dydx_config(tmp_path / "c.yaml", node.url, START, max_block_range=40,
                                open_interest_from=OI_FROM)
        assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 1
    err = " ".join(capsys.readouterr().err.split())
    assert ("asked for height" in err) if fault == "lie_height" else ("does not link" in err), err
    ((cp,),) = rows_of(tmp_path / "db.duckdb", "SELECT block_number FROM checkpoints")[0]
    assert cp < bad  # everything before the bad block, nothing from it on


def test_a_node_without_the_results_says_what_it_must_keep(chain, tmp_path, capsys):
    folder, _ = chain
    with ReplayNode(folder, faults=Faults(drop_results_at=START + 77)) as node:
        cfg = write_dydx_config(tmp_path / "c.yaml", node.url, START, max_block_range=40)
        assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"does not keep block {START + 77}" in err and "discard_abci_responses = false" in err


def test_a_node_that_never_answers_is_reported_not_waited_on(chain, tmp_path, capsys):
    """A node that accepts connections and never answers: the backfill ends with an error naming
    the node, after request_timeout x max_attempts, having stored what it fetched before."""
    folder, _ = chain
    with ReplayNode(folder, faults=Faults(hang_after=30)) as node:
        cfg = write_dydx_config(tmp_path / "c.yaml", node.url, START, max_block_range=40,
                                request_timeout=0.5, max_attempts=2)
        started = time.monotonic()
        code = run_cli("backfill", "--config", str(cfg), "--no-progress")
        took = time.monotonic() - started
    err = " ".join(capsys.readouterr().err.split())
    assert code != 0 and "cannot reach RPC http://127.0.0.1" in err and "timeout" in err, err
    assert took < 30


def test_every_request_is_batched_within_the_nodes_limit(chain, tmp_path):
    folder, truth = chain
    with ReplayNode(folder) as node:  # refuses batches over 10, as CometBFT does by default
        cfg = write_dydx_config(tmp_path / "c.yaml", node.url, START, max_block_range=40)
        assert run_cli("backfill", "--config", str(cfg), "--to", str(START + 399),
                       "--no-progress") == 0
        counts = dict(node.requests)
    assert counts["block"] == counts["block_results"] == 400
    assert counts["batch"] == 80  # 5 heights (10 requests) per HTTP request


def test_wrong_network_is_refused(chain, tmp_path, capsys):
    folder, _ = chain
    with ReplayNode(folder) as node:
        cfg = write_dydx_config(tmp_path / "c.yaml", node.url, START)
        cfg.write_text(cfg.read_text().replace("network: dydx-mainnet-1",
                                               "network: dydx-testnet-4"))
        assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 2
    err = capsys.readouterr().err
    assert "dydx-mainnet-1" in err and "dydx-testnet-4" in err


def test_kill_9_of_the_daemon_following_a_growing_head(chain, clean, tmp_path):
    """The node's head grows from the middle of the run; the daemon follows it and is killed
    with SIGKILL at random moments, three times; restarted, it ends equal to the clean run."""
    folder, truth = chain
    _, want = clean
    with ReplayNode(folder, head=START + 200) as node:
        stop = threading.Event()

        def grow() -> None:
            head = START + 200
            while not stop.is_set() and head < truth.last_height:
                head = min(truth.last_height, head + 15)
                node.set_head(head)
                stop.wait(0.1)

        grower = threading.Thread(target=grow)
        grower.start()
        cfg = write_dydx_config(tmp_path / "c.yaml", node.url, START, max_block_range=40,
                                open_interest_from=OI_FROM, poll_interval=0.2)
        rng = random.Random(4)
        kills = 0
        try:
            for _ in range(3):
                proc = start_sync(cfg)
                time.sleep(rng.uniform(1.5, 3.0))
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
                    kills += 1
                proc.communicate(timeout=30)
        finally:
            stop.set()
            grower.join()
        node.set_head(truth.last_height)
        assert kills == 3
        proc = start_sync(cfg, "--until", str(truth.last_height))
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
    assert dump(tmp_path / "db.duckdb") == want
