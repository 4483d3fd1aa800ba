"""Fixtures: replay nodes serving the shared recordings, their truth files, an anvil chain with
the GMX v1 test vault. Helpers the tests import are in ``tests/helpers.py``."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from indexer.devnet.chain import Anvil
from indexer.devnet.simulator import Simulator, deploy_vault
from tests.helpers import (
    GMX_V1_DATA,
    GMX_V1_VAULT,
    GMX_V2_DATA,
    ReplayNode,
    dump,
    run_cli,
    write_config,
)


@pytest.fixture
def replay_factory() -> Iterator[object]:
    nodes: list[ReplayNode] = []

    def start(*extra: str, data: Path = GMX_V1_DATA, prefix: str = "gmx_v1") -> ReplayNode:
        node = ReplayNode(data, prefix, *extra)
        nodes.append(node)
        return node

    yield start
    for n in nodes:
        n.stop()


@pytest.fixture(scope="session")
def gmx_v1_clean(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ReplayNode, dict]]:
    """A replay node serving the GMX v1 recording, and the ``dump`` of one clean backfill of
    it: what every fault, crash and daemon scenario on the recording must end equal to."""
    node = ReplayNode(GMX_V1_DATA, "gmx_v1")
    tmp = tmp_path_factory.mktemp("clean")
    cfg = write_config(tmp / "c.yaml", node.url, GMX_V1_VAULT, 0, max_block_range=500)
    try:
        assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 0
        yield node, dump(tmp / "db.duckdb")
    finally:
        node.stop()


@pytest.fixture
def gmx_v1_chain() -> Iterator[tuple[Anvil, str, Simulator]]:
    """anvil with our GMX-v1-style test vault, and a simulator set up to trade on it."""
    anvil = Anvil(accounts=40)
    vault = deploy_vault(anvil)
    sim = Simulator(anvil.rpc, vault, anvil.accounts, seed=11, traders=30)
    sim.setup()
    yield anvil, vault, sim
    anvil.stop()


@pytest.fixture(scope="session")
def gmx_v1_truth() -> dict:
    return json.loads((GMX_V1_DATA / "gmx_v1_truth.json").read_text())


@pytest.fixture(scope="session")
def gmx_v2_truth() -> dict:
    return json.loads((GMX_V2_DATA / "gmx_v2_truth.json").read_text())


@pytest.fixture(scope="session")
def gmx_v1_logs() -> list[dict]:
    with gzip.open(GMX_V1_DATA / "gmx_v1_logs.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f]
