"""The endpoint limiter (indexer.endpoints) against simulated providers, on a virtual clock:
a provider with a request-rate limit (a token bucket answering 429 past it), one whose answers
slow down under load, endpoints of different latency, and one that fails."""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

import pytest

from indexer.endpoints import Endpoint, Endpoints, SharedRates, load_learnt, save_learnt

pytestmark = pytest.mark.unit


@dataclass
class Provider:
    """A provider's behaviour: round trip ``latency`` (± ``jitter``), a token bucket of
    ``rate`` requests a second (``burst`` deep; None: no limit), and ``per_request`` seconds
    of work per request in flight (a node that queues)."""

    latency: float
    rate: float | None = None
    burst: float = 5.0
    jitter: float = 0.02
    per_request: float = 0.0
    fails: bool = False
    #: Share of requests refused at random, whatever the rate (a provider under its own load).
    refuse_share: float = 0.0
    #: Every Nth request refused, whatever the rate (a test node's fault, or a provider's quota
    #: shared with others).
    refuse_every: int = 0
    #: (from when, the new limit): the provider's limit changes mid-run.
    new_rate: tuple[float, float] | None = None
    seen: int = field(init=False, default=0)
    tokens: float = field(init=False, default=0.0)
    refill_at: float = field(init=False, default=0.0)
    in_flight: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def admit(self, now: float) -> bool:
        self.seen += 1
        if self.refuse_every and self.seen % self.refuse_every == 0:
            return False
        if self.new_rate is not None and now >= self.new_rate[0]:
            self.rate = self.new_rate[1]
        if self.rate is None:
            return True
        self.tokens = min(self.burst, self.tokens + (now - self.refill_at) * self.rate)
        self.refill_at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class Run:
    answered: list[tuple[float, int]] = field(default_factory=list)  # (time, endpoint)
    refused: int = 0
    requests: int = 0


def simulate(providers: list[Provider], seconds: float, workers: int = 32, ceiling: int = 32,
             seed: int = 1, processes: int = 1,
             shared: bool = False) -> tuple[Run, Endpoints]:
    """``workers`` callers each send one request after another for ``seconds`` of virtual
    time, through the limiter, to the providers. With ``processes``, the callers are spread
    over that many limiters (processes), which pace their rates together when ``shared``.
    Returns the run and the first limiter (the shared pacer's, when shared)."""
    rng = random.Random(seed)
    clock = [0.0]
    names, keys = [f"p{i}" for i in range(len(providers))], [f"k{i}" for i in range(len(providers))]
    limiters = [Endpoints(names, keys, ceiling, recover_after=5.0, clock=lambda: clock[0])
                for _ in range(processes)]
    pacer = SharedRates(names, keys, None, clock=lambda: clock[0])
    for limiter in limiters if shared else []:
        limiter.pacer = pacer
    run = Run()
    events: list[tuple[float, int, str, int, Endpoint | None, float]] = []
    seq = 0

    def push(t: float, kind: str, worker: int, ep: Endpoint | None = None,
             sent: float = 0.0) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, worker, ep, sent))

    for w in range(workers):
        push(0.0, "try", w)
    while events:
        t, _, kind, worker, ep, sent = heapq.heappop(events)
        if t > seconds:
            break
        clock[0] = t
        limiter = limiters[worker % processes]
        if kind == "try":
            got = limiter.try_acquire()
            if isinstance(got, float):
                push(t + got, "try", worker)
                continue
            assert got is not None
            run.requests += 1
            p = providers[got.index]
            p.in_flight += 1
            took = p.latency + rng.uniform(-p.jitter, p.jitter) + p.per_request * p.in_flight
            push(t + max(took, 0.001), "answer", worker, got, t)
        else:
            assert ep is not None
            p = providers[ep.index]
            p.in_flight -= 1
            if p.fails:
                limiter.release(ep, "http_503", t - sent)
            elif rng.random() >= p.refuse_share and p.admit(t - p.latency / 2):
                run.answered.append((t, ep.index))
                limiter.release(ep, "ok", t - sent)
            else:
                run.refused += 1
                limiter.release(ep, "http_429", t - sent)
            push(t, "try", worker)
    return run, pacer.endpoints if shared else limiters[0]


def test_a_rate_limit_is_learnt_and_kept_busy_with_few_refusals():
    limit = 50.0
    run, limiter = simulate([Provider(latency=0.16, rate=limit)], seconds=300)
    after_warmup = [t for t, _ in run.answered if t >= 30]
    useful = len(after_warmup) / 270 / limit
    assert useful >= 0.90, f"{useful:.1%} of the limit turned into answers"
    assert run.refused / run.requests < 0.01, f"{run.refused} of {run.requests} refused"
    (ep,) = limiter.all
    assert ep.rate is not None and 0.8 * limit <= limiter.rate_of(ep, 300) <= 1.05 * limit


def test_without_a_limit_the_window_grows_to_keep_a_slow_endpoint_busy():
    run, limiter = simulate([Provider(latency=0.2)], seconds=60, workers=40, ceiling=32)
    (ep,) = limiter.all
    assert ep.rate is None and run.refused == 0
    assert ep.window >= 30  # the ceiling bounds it, nothing else
    late = [t for t, _ in run.answered if t >= 40]
    assert len(late) / 20 >= 0.9 * 32 / 0.2  # ~160 answers a second at 32 in flight


def test_a_node_that_queues_gets_a_small_window():
    # each request in flight adds 50 ms: past a few at once, more only adds waiting
    run, limiter = simulate([Provider(latency=0.02, jitter=0.0, per_request=0.05)],
                            seconds=60, workers=32, ceiling=32)
    (ep,) = limiter.all
    assert ep.window <= 6  # about where answers slow to three unloaded round trips


def test_endpoints_share_by_speed_and_a_failing_one_is_left_out():
    # 12 requests at once: the fast endpoint is held to 40 a second (2 of them in flight),
    # the slow one takes the other 10 (50 a second), the failing one none
    run, limiter = simulate([Provider(latency=0.05, rate=40), Provider(latency=0.2),
                             Provider(latency=0.05, fails=True)], seconds=60, workers=12,
                            ceiling=12)
    by = [sum(1 for t, i in run.answered if i == k and t > 20) / 40 for k in range(3)]
    assert by[2] == 0 and by[0] >= 20 and by[1] >= 20 and sum(by) >= 0.9 * 90, by
    assert run.refused / run.requests < 0.01
    failing = limiter.all[2]
    assert failing.requests < 0.01 * run.requests  # tried again only after each time out


def test_refusals_at_random_do_not_starve_the_endpoint():
    # a third refused whatever the pace: cutting the rate on each would end near zero
    run, limiter = simulate([Provider(latency=0.1, refuse_share=0.35)], seconds=120,
                            workers=8, ceiling=8)
    late = [t for t, _ in run.answered if t >= 60]
    assert len(late) / 60 >= 0.5 * 0.65 * 8 / 0.1, len(late) / 60  # half of what 8 get


def test_refusals_every_ninth_request_do_not_starve_the_endpoint():
    # a share of refusals too low to be taken as noise, that a cut does not lower: each cut
    # lowers the rate the endpoint is seen to accept, so cutting on each would end near zero
    run, limiter = simulate([Provider(latency=0.1, refuse_every=9)], seconds=300, workers=8,
                            ceiling=8)
    late = [t for t, _ in run.answered if t >= 240]
    assert len(late) / 60 >= 0.5 * 8 / 9 * 8 / 0.1, len(late) / 60  # half of what 8 get


def test_a_limit_that_halves_is_followed_down():
    run, limiter = simulate([Provider(latency=0.16, rate=50.0, new_rate=(120.0, 25.0))],
                            seconds=300)
    (ep,) = limiter.all
    assert 0.8 * 25 <= limiter.rate_of(ep, 300) <= 1.05 * 25
    late = [t for t, _ in run.answered if t >= 180]
    assert len(late) / 120 >= 0.9 * 25, len(late) / 120


def test_processes_sharing_a_rate_keep_to_the_limit_together():
    # three processes (a cluster's workers) on one provider's limit, paced together by one
    # shared pacer: the limit is learnt once, for all. (Each pacing itself, about half of the
    # requests were refused: a process's refusals follow the others' rates, not its own.)
    limit = 50.0
    run, limiter = simulate([Provider(latency=0.16, rate=limit)], seconds=300, workers=36,
                            processes=3, shared=True)
    after_warmup = [t for t, _ in run.answered if t >= 30]
    useful = len(after_warmup) / 270 / limit
    assert useful >= 0.90, f"{useful:.1%} of the limit turned into answers"
    assert run.refused / run.requests < 0.01, f"{run.refused} of {run.requests} refused"
    (ep,) = limiter.all
    assert 0.8 * limit <= limiter.rate_of(ep, 300) <= 1.05 * limit


def test_retry_after_pauses_the_endpoint():
    clock = [100.0]
    limiter = Endpoints(["a"], ["k"], 4, clock=lambda: clock[0])
    ep = limiter.try_acquire()
    assert isinstance(ep, Endpoint)
    limiter.release(ep, "http_429", 0.1, retry_after=2.0)
    assert limiter.try_acquire() == pytest.approx(0.25)  # waits, in steps
    clock[0] = 102.01
    assert isinstance(limiter.try_acquire(), Endpoint)


def test_a_configured_rate_paces_from_the_start():
    clock = [0.0]
    limiter = Endpoints(["a"], ["k"], 8, max_rate=4.0, clock=lambda: clock[0])
    assert isinstance(limiter.try_acquire(), Endpoint)
    assert limiter.try_acquire() == pytest.approx(0.25)


def test_learnt_limits_are_kept_by_url_hash_and_given_back(tmp_path):
    run, limiter = simulate([Provider(latency=0.16, rate=20.0)], seconds=120)
    path = tmp_path / "db.duckdb.endpoints.json"
    save_learnt(path, {"arbitrum": limiter.learnt()})
    kept = load_learnt(path)["arbitrum"]
    assert set(kept) == {"k0"} and "http" not in path.read_text()
    again = Endpoints(["p0"], ["k0"], 32, remembered=kept, clock=lambda: 0.0)
    (ep,) = again.all
    assert ep.rate == pytest.approx(kept["k0"]["rate"]) and 15 <= ep.rate <= 21
    assert ep.window == pytest.approx(kept["k0"]["window"])
    path.write_text("{not json")
    assert load_learnt(path) == {}
