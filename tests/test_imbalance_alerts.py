"""Imbalance alerts: episodes opening between looks, against the skews of the GMX v1 recording's
truth snapshots; the webhook against a local HTTP receiver; an unreachable webhook never stops
the daemon."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from indexer.alerts import ImbalanceWatch
from indexer.metrics import Metrics
from indexer.store import Store
from tests.helpers import free_port, run_cli, start_sync, write_config

pytestmark = pytest.mark.replay


class Receiver:
    """A local webhook: every POSTed JSON body, in order."""

    def __init__(self) -> None:
        bodies: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers["Content-Length"])
                bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.bodies = bodies
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def truth_sides(snap: dict, tokens: dict, threshold: float) -> dict[str, str]:
    """market (index token) -> side of its imbalance at the snapshot, from the Vault's OI."""
    out = {}
    for sym, oi in snap["openInterest"].items():
        long_, short = int(oi["longOpenInterestUsd"]), int(oi["shortOpenInterestUsd"])
        if long_ + short and abs(long_ - short) / (long_ + short) >= threshold:
            out[tokens[sym]["address"].lower()] = "long" if long_ > short else "short"
    return out


def test_episodes_opening_between_snapshots_are_alerted(tmp_path, replay_factory, gmx_v1_truth,
                                                        receiver):
    node = replay_factory()
    cfg = write_config(tmp_path / "c.yaml", node.url, gmx_v1_truth["contracts"]["Vault"],
                       gmx_v1_truth["deploymentBlock"])
    metrics = Metrics({"gmx_v1_dev": "dev"}, stale_after=60)
    watch = ImbalanceWatch(0.5, receiver.url, metrics)
    tokens = gmx_v1_truth["tokens"]
    before: dict[str, str] = {}
    expected = 0
    for i, snap in enumerate(gmx_v1_truth["snapshots"]):
        assert run_cli("backfill", "--config", str(cfg), "--to", str(snap["blockNumber"]),
                       "--no-progress") == 0
        watch.changed()  # as the daemon's on_range says after each commit
        with Store(tmp_path / "db.duckdb") as store:
            opened = watch.check(store)
        now = truth_sides(snap, tokens, 0.5)
        got = {(o.market, o.side) for o in opened if o.scope == "market"}
        want = {(m, s) for m, s in now.items() if i > 0 and before.get(m) != s}
        assert got == want, snap["blockNumber"]
        expected += len(opened)
        before = now
    watch.wait_sent()
    assert expected > 0 and len(receiver.bodies) == expected
    for body in receiver.bodies:
        assert body["event"] == "imbalance_episode_opened" and body["threshold"] == 0.5
        assert abs(body["skew"]) >= 0.5 and body["side"] == ("long" if body["skew"] > 0
                                                             else "short")
    text = metrics.render()
    assert f"perp_indexer_imbalance_alerts_total{{}} {expected}" in text


@pytest.mark.parametrize("webhook", ["receiver", "unreachable"])
def test_the_daemon_alerts_and_an_unreachable_webhook_never_stops_it(
        tmp_path: Path, replay_factory, gmx_v1_truth, receiver, webhook):
    node = replay_factory("--head", "300", "--grow-per-sec", "400")
    url = receiver.url if webhook == "receiver" else f"http://127.0.0.1:{free_port()}/x"
    cfg = write_config(tmp_path / "c.yaml", node.url, gmx_v1_truth["contracts"]["Vault"],
                       gmx_v1_truth["deploymentBlock"], poll_interval=0.2)
    cfg.write_text(cfg.read_text() + f"analytics:\n  alert_webhook: {url}\n")
    proc = start_sync(cfg, "--until", "1289")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "imbalance episode opened" in out
    if webhook == "receiver":
        assert receiver.bodies and all(b["event"] == "imbalance_episode_opened"
                                       for b in receiver.bodies)
    else:
        assert "webhook" in out and "failed" in out
