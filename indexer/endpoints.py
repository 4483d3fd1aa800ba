"""How hard to use each RPC endpoint of a chain: how many requests at once and how many a
second, learnt from its answers, and which endpoint takes the next request.

A provider is used well when it is kept busy without tripping its limits. Two limits are
learnt per endpoint, each by additive increase and multiplicative decrease (AIMD, as TCP):

* **Requests at once** (``window``): grows by one per round trip while the window is full and
  answers come back as fast as the endpoint's unloaded round trip; halves on a timeout, and
  shrinks by a fifth when the answers slow down well past that round trip (the node is
  queueing our requests).
* **Requests a second** (``rate``): none at first. A rate-limit answer (HTTP 429, a provider's
  JSON-RPC rate error) sets it just under the rate the endpoint was accepting, then it grows a
  little each second until the next refusal cuts it again. Starts are paced to it, and a
  ``Retry-After`` pauses the endpoint for that long. A configured ``requests_per_second`` caps
  it from the start.

Several endpoints of a chain are used at once: each request goes to the endpoint expected to
answer it soonest (its recent latency, scaled by how full its window is). An endpoint that keeps
failing is left out for ``recover_after`` seconds (failover), unless every endpoint is.

What was learnt is kept between runs (:meth:`Endpoints.learnt`, given back as ``remembered``),
keyed by a hash of each URL (never the URL: it may hold an API key).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

#: Requests at once an endpoint starts with when nothing is remembered of it.
START_WINDOW = 2.0
#: Share of the accepted rate a rate-limit answer sets the rate to.
RATE_CUT = 0.9
#: Growth of the rate per second since the last cut, as a share of the rate then: slow, so a
#: refusal comes about every 1 / (RATE_GROWTH * (1 / RATE_CUT - 1)) = 22 s at a steady limit.
RATE_GROWTH = 0.005
#: Seconds over which the accepted rate is measured when a refusal comes: short, for while we
#: are over the limit, the provider accepts exactly its limit; longer (up to RATE_SPAN_MAX) when
#: a low limit gave fewer than MIN_SAMPLE answers in it.
RATE_SPAN, RATE_SPAN_MAX = 1.0, 10.0
#: After this many seconds without a refusal the rate grows faster (quadratically): a rate cut
#: too deep (the provider was busy) is won back in a minute or two, not in ten.
PROBE_AFTER = 30.0
#: Slowest rate a refusal can set (requests a second).
MIN_RATE = 0.2
#: When at least this share of the requests (of NOISY_SAMPLE or more) since the last cut is still
#: refused, and about as many as before it, refusals do not follow our rate (see ``_refused``).
NOISY_SHARE, NOISY_SAMPLE = 0.2, 10
#: Seconds refusals are then taken as noise, not as a rate to keep to.
NOISE_HOLD = 300.0
#: Answers the accepted rate is measured from, if the last RATE_SPAN_MAX seconds have them.
MIN_SAMPLE = 10
#: Answers slower than this many unloaded round trips (plus LATENCY_SLACK) shrink the window.
LATENCY_GROWTH = 3.0
LATENCY_SLACK = 0.05
#: Weight of the newest answer in the latency average.
LATENCY_WEIGHT = 0.2
#: Consecutive failures after which an endpoint is left out for ``recover_after`` seconds.
FAILURES_TO_FAILOVER = 2
#: Longest wait for a free slot before looking again (a release wakes waiters sooner).
WAIT_STEP = 0.25


class Pacer(Protocol):
    """Requests a second per endpoint, kept by one process for several (a cluster's workers)."""

    def start(self, key: str, calls: int = 1) -> float:
        """0.0 when a request of ``calls`` calls to endpoint ``key`` may start now (counted),
        else seconds to wait."""

    def ended(self, key: str, outcome: str, seconds: float, retry_after: float | None,
              calls: int = 1) -> None:
        """The request ended (as :meth:`Endpoints.release`)."""


class SharedRates:
    """The rate half of :class:`Endpoints` for several processes that use the same endpoints:
    one process holds it (in a cluster, a Dask actor) and the others ask it before each
    request starts and tell it how each ended, so the endpoints' rates, learnt or configured,
    hold for all of them together. Each process keeps its own requests-in-flight windows."""

    def __init__(self, names: Sequence[str], keys: Sequence[str], max_rate: float | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.endpoints = Endpoints(names, keys, 1 << 30, max_rate, clock=clock)
        self.by_key = {e.key: e for e in self.endpoints.all}

    def start(self, key: str, calls: int = 1) -> float:
        return self.endpoints.try_start(self.by_key[key], calls)

    def ended(self, key: str, outcome: str, seconds: float, retry_after: float | None,
              calls: int = 1) -> None:
        self.endpoints.release(self.by_key[key], outcome, seconds, retry_after, calls)

    def summary(self) -> list[dict[str, Any]]:
        return self.endpoints.summary()


def endpoint_key(url: str) -> str:
    """What an endpoint is remembered by: a hash of its URL (which may hold an API key)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


@dataclass(slots=True)
class Endpoint:
    """One endpoint's learnt limits and live counts."""

    index: int
    #: The URL redacted, for messages.
    name: str
    key: str
    window: float = START_WINDOW
    #: Learnt requests a second (None: no refusal seen yet).
    rate: float | None = None
    #: When the rate was last cut or held (it grows from there), and last cut (refusals of
    #: requests sent before it are not counted).
    cut_at: float = 0.0
    counted_from: float = 0.0
    in_flight: int = 0
    #: Average seconds of a successful answer, and the fastest seen (the unloaded round trip).
    latency: float | None = None
    fastest: float | None = None
    failures: int = 0
    failed_at: float = 0.0
    paused_until: float = 0.0
    next_start: float = 0.0
    last_window_cut: float = 0.0
    #: Times of recent successful answers (to measure the accepted rate), since the first.
    answered: deque[float] = field(default_factory=deque)
    first_answer: float | None = None
    requests: int = 0
    refused: int = 0
    #: Requests and refusals since the rate was last cut; the cuts in force, the rate before
    #: the first of them, and the share of refusals before the last.
    requests_since_cut: int = 0
    refused_since_cut: int = 0
    cuts: int = 0
    rate_before_cuts: float | None = None
    share_before_cut: float = 0.0
    #: Until when refusals are taken as noise (no cut).
    noise_until: float = 0.0
    #: The rate the endpoint is known to take: what it accepted at the last cut, raised to
    #: each rate at which it refused no larger share than below it (see ``_refused``).
    known_rate: float = 0.0
    #: Requests started since the last cut below ``known_rate`` and at or above it, and the
    #: refusals of each.
    below: list[int] = field(default_factory=lambda: [0, 0])
    above: list[int] = field(default_factory=lambda: [0, 0])


class Endpoints:
    """The endpoints of one chain and the requests in flight to them; thread safe.

    ``ceiling``: requests in flight at most, over all endpoints (``requests_in_flight``).
    ``max_rate``: a configured requests-a-second cap per endpoint (None: learnt only).
    """

    def __init__(self, names: Sequence[str], keys: Sequence[str], ceiling: int,
                 max_rate: float | None = None, recover_after: float = 60.0,
                 remembered: dict[str, dict[str, Any]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ceiling = max(1, ceiling)
        self.max_rate = max_rate
        self.recover_after = recover_after
        self.clock = clock
        self.all = [Endpoint(i, n, k) for i, (n, k) in enumerate(zip(names, keys, strict=True))]
        now = clock()
        for ep in self.all:
            known = (remembered or {}).get(ep.key, {})
            ep.window = min(max(float(known.get("window", START_WINDOW)), 1.0), self.ceiling)
            rate = known.get("rate")
            ep.rate = float(rate) if isinstance(rate, int | float) and rate > 0 else None
            ep.cut_at = now
            latency = known.get("latency")
            if isinstance(latency, int | float) and latency > 0:
                ep.latency = ep.fastest = float(latency)
        #: Paces requests a second for several processes at once (see SharedRates); None:
        #: this process paces them itself.
        self.pacer: Pacer | None = None
        self._changed = threading.Condition(threading.RLock())

    # -- limits ----------------------------------------------------------------------------

    def rate_of(self, ep: Endpoint, now: float) -> float | None:
        """Requests a second ``ep`` may start now (None: unpaced)."""
        rate = ep.rate
        if rate is not None:
            quiet = max(now - ep.cut_at, 0.0)
            rate *= 1 + RATE_GROWTH * quiet + (0.01 * max(quiet - PROBE_AFTER, 0.0)) ** 2
        if self.max_rate is not None:
            rate = self.max_rate if rate is None else min(rate, self.max_rate)
        return rate

    def capacity(self) -> int:
        """Requests worth having in flight now: the healthy endpoints' windows, within the
        ceiling (the fetch stage keeps about this many ranges ahead)."""
        now = self.clock()
        with self._changed:
            usable = [e for e in self.all if not self._down(e, now)] or self.all
            return max(1, min(self.ceiling, sum(int(e.window) for e in usable)))

    # -- requests --------------------------------------------------------------------------

    def acquire(self, skip: frozenset[int] = frozenset(), stop: threading.Event | None = None,
                calls: int = 1) -> Endpoint | None:
        """An endpoint for one request, once one has room (blocks); None when every endpoint
        is in ``skip`` (the caller has tried each enough), or ``stop`` is set."""
        with self._changed:
            while True:
                got = self.try_acquire(skip, calls)
                if not isinstance(got, float):
                    return got
                self._changed.wait(got)
                if stop is not None and stop.is_set():
                    return None

    def try_acquire(self, skip: frozenset[int] = frozenset(),
                    calls: int = 1) -> Endpoint | None | float:
        """An endpoint with room for one request now (counted in flight), None when every
        endpoint is in ``skip``, else the seconds after which to try again."""
        with self._changed:
            now = self.clock()
            open_ = [e for e in self.all if e.index not in skip]
            if not open_:
                return None
            for e in open_:
                if e.failures and now - e.failed_at >= self.recover_after:
                    # its time out is over: tried first again (as yet unmeasured)
                    e.failures, e.latency = 0, None
            healthy = [e for e in open_ if not self._down(e, now)] or open_
            in_flight = sum(e.in_flight for e in self.all)
            paced_here = self.pacer is None
            ready = [e for e in healthy if in_flight < self.ceiling
                     and e.in_flight < int(e.window) and (not paced_here or (
                         e.paused_until <= now and e.next_start <= now))]
            if not ready:
                wake = [t for e in healthy for t in (e.paused_until, e.next_start)
                        if t > now and paced_here]
                return min([WAIT_STEP] + [t - now for t in wake])
            ep = min(ready, key=lambda e: (self._expected(e), e.index))
            if self.pacer is not None:
                wait = self._shared_wait(ep, calls)
                if wait:
                    return min(wait, WAIT_STEP)
            self._start(ep, now, self.pacer is None, calls)
            return ep

    def try_start(self, ep: Endpoint, calls: int = 1) -> float:
        """For a shared pacer: 0.0 when a request to ``ep`` may start now (counted), else the
        seconds to wait (its rate and ``Retry-After`` only, not its window)."""
        with self._changed:
            now = self.clock()
            wait = max(ep.paused_until, ep.next_start) - now
            if wait > 0:
                return wait
            self._start(ep, now, True, calls)
            return 0.0

    def _start(self, ep: Endpoint, now: float, paced: bool, calls: int) -> None:
        """Count a request of ``calls`` calls to ``ep`` started; if ``paced`` here, the next
        start is put off by as many calls at its rate (a provider counts each call of a
        JSON-RPC batch)."""
        ep.in_flight += 1
        ep.requests += 1
        if not paced:
            return
        ep.requests_since_cut += 1
        rate = self.rate_of(ep, now)
        if rate is not None:
            ep.next_start = max(now, ep.next_start) + calls / rate
            (ep.below if rate < ep.known_rate else ep.above)[0] += 1

    def _shared_wait(self, ep: Endpoint, calls: int) -> float:
        """Seconds the shared pacer says to wait before a request to ``ep`` (0: start now); a
        pacer that is gone leaves the pace to this process from then on."""
        assert self.pacer is not None
        try:
            return self.pacer.start(ep.key, calls)
        except Exception as e:  # the process holding it is gone: whatever the error is
            logger.warning("the shared rate limiter is gone (%s): this process keeps to its "
                           "own share from now on", e)
            self.pacer = None
            return 0.0

    def _down(self, ep: Endpoint, now: float) -> bool:
        """Left out (failover): it failed FAILURES_TO_FAILOVER times in a row less than
        ``recover_after`` seconds ago, and there is another endpoint."""
        return (len(self.all) > 1 and ep.failures >= FAILURES_TO_FAILOVER
                and now - ep.failed_at < self.recover_after)

    @staticmethod
    def _expected(ep: Endpoint) -> float:
        """Seconds ``ep`` is expected to take for one more request (unknown: 0, to be tried)."""
        return (ep.latency or 0.0) * (1 + ep.in_flight / max(ep.window, 1.0)) + ep.failures

    def release(self, ep: Endpoint, outcome: str, seconds: float,
                retry_after: float | None = None, calls: int = 1) -> None:
        """A request of ``calls`` calls to ``ep`` ended: ``ok`` (answered, an error answer
        included), or the kind of transient failure (``rate_limited``, ``http_429``,
        ``timeout``, ``transport``...)."""
        with self._changed:
            now = self.clock()
            ep.in_flight -= 1
            if self.pacer is not None:
                try:
                    self.pacer.ended(ep.key, outcome, seconds, retry_after, calls)
                except Exception:  # noqa: S110 -- gone: the next start says so and falls back
                    pass
            if outcome == "ok":
                self._answered(ep, now, seconds, calls)
            elif outcome in ("rate_limited", "http_429"):
                if self.pacer is None:
                    self._refused(ep, now, retry_after)
                else:
                    ep.refused += 1
            else:
                ep.failures += 1
                ep.failed_at = now
                if outcome == "timeout":
                    self._cut_window(ep, now, 0.5)
            self._changed.notify_all()

    def _answered(self, ep: Endpoint, now: float, seconds: float, calls: int) -> None:
        ep.failures = 0
        if ep.first_answer is None:
            ep.first_answer = now
        ep.answered.extend([now] * calls)  # the accepted rate is in calls, as it is paced
        while ep.answered and ep.answered[0] < now - RATE_SPAN_MAX:
            ep.answered.popleft()
        ep.fastest = seconds if ep.fastest is None else min(ep.fastest, seconds)
        ep.latency = (seconds if ep.latency is None
                      else (1 - LATENCY_WEIGHT) * ep.latency + LATENCY_WEIGHT * seconds)
        if ep.latency > LATENCY_GROWTH * ep.fastest + LATENCY_SLACK:
            self._cut_window(ep, now, 0.8)
        elif ep.in_flight + 1 >= int(ep.window):  # the window was full: it may grow
            ep.window = min(ep.window + 1 / ep.window, float(self.ceiling))

    def _cut_window(self, ep: Endpoint, now: float, factor: float) -> None:
        """At most once a round trip: the answers in flight saw the same load."""
        if now - ep.last_window_cut >= (ep.latency or 0.0):
            ep.window = max(1.0, ep.window * factor)
            ep.last_window_cut = now

    def _refused(self, ep: Endpoint, now: float, retry_after: float | None) -> None:
        ep.refused += 1
        if retry_after:
            ep.paused_until = max(ep.paused_until, now + min(retry_after, 60.0))
        if now - ep.counted_from < 2 * (ep.latency or 0.0) + 0.1:
            return  # sent before the last cut took effect: nothing new
        ep.refused_since_cut += 1
        share = ep.refused_since_cut / max(ep.requests_since_cut, 1)
        if now < ep.noise_until:
            return
        if ep.cuts:
            if ep.requests_since_cut < NOISY_SAMPLE:
                return  # too soon to tell what the last cut did
            if share >= NOISY_SHARE and 0.5 * share <= ep.share_before_cut <= 1.25 * share:
                # the last cut did not change the many refusals: they are not about our rate
                # (a provider refusing at random, or under its own load), and cutting again
                # would starve the endpoint: the last cut is undone. (Many refusals where
                # there were few before the cut are a limit that fell.)
                ep.rate, ep.cuts, ep.share_before_cut = ep.rate_before_cuts, 0, 0.0
                ep.noise_until = now + NOISE_HOLD
                return
        current = self.rate_of(ep, now)
        if ep.cuts and current is not None and not self._about_our_rate(ep, current):
            return
        accepted = self._accepted(ep, now)
        if accepted is None:
            return  # not one answer yet: nothing to size the rate by
        new = RATE_CUT * (accepted if current is None else min(current, max(accepted, 1e-9)))
        if not ep.cuts:
            ep.rate_before_cuts = ep.rate
        ep.share_before_cut = share
        ep.rate = max(new, MIN_RATE)
        # what it accepted, if measured over a span long enough (a short one overstates it,
        # by the provider's burst): refusals below it are weighed as not about our rate
        assert ep.first_answer is not None
        ep.known_rate = accepted if now - ep.first_answer >= RATE_SPAN else 0.0
        ep.below, ep.above = [0, 0], [0, 0]
        ep.cuts += 1
        ep.cut_at = ep.counted_from = now
        ep.requests_since_cut = ep.refused_since_cut = 0
        ep.next_start = max(ep.next_start, now + 1 / ep.rate)

    @staticmethod
    def _about_our_rate(ep: Endpoint, current: float) -> bool:
        """Whether a refusal (after a cut) says the endpoint's limit is below ``current``.

        At a rate limit, nothing is refused below it and more and more above it. Refusals that
        are not about our rate (every ninth request refused, a quota shared with others) come
        at one share whatever the rate; each cut would lower the answers the endpoint gives
        and so the next cut, down to nothing. So the share refused at or above the rate known
        to be taken is weighed against the share refused below it: about the same, and the
        known rate rises to ``current`` (no cut); more, and it is a limit. Below the known rate
        only a share past NOISY_SHARE cuts (the limit fell)."""
        below = ep.below[1] / ep.below[0] if ep.below[0] >= NOISY_SAMPLE else 0.0
        if current < ep.known_rate:
            ep.below[1] += 1
            return ep.below[0] >= NOISY_SAMPLE and below >= NOISY_SHARE
        ep.above[1] += 1
        above = ep.above[1] / max(ep.above[0], 1)
        if below > 0 and above <= 2 * below + 0.01:
            ep.known_rate = current
            return False
        return True

    @staticmethod
    def _accepted(ep: Endpoint, now: float) -> float | None:
        """Answers a second ``ep`` gave lately: over RATE_SPAN, or longer when that holds
        fewer than MIN_SAMPLE (a low limit); None before its first answer."""
        if ep.first_answer is None:
            return None
        known = max(now - ep.first_answer, 0.05)
        span = RATE_SPAN
        while True:
            span = min(span, known, RATE_SPAN_MAX)
            answers = sum(1 for t in ep.answered if t >= now - span)
            if answers >= MIN_SAMPLE or span >= min(known, RATE_SPAN_MAX):
                return answers / span
            span *= 2

    # -- what is kept ----------------------------------------------------------------------

    def learnt(self) -> dict[str, dict[str, Any]]:
        """Each endpoint's learnt limits, to give back as ``remembered`` on the next run."""
        now = self.clock()
        with self._changed:
            return {e.key: {"name": e.name, "window": round(e.window, 2),
                            "rate": None if e.rate is None else round(self.rate_of(e, now)
                                                                      or e.rate, 3),
                            "latency": None if e.latency is None else round(e.latency, 4)}
                    for e in self.all}

    def summary(self) -> list[dict[str, Any]]:
        """Per endpoint: requests, refused, window, rate, latency (for logs and metrics)."""
        now = self.clock()
        with self._changed:
            return [{"endpoint": e.name, "requests": e.requests, "refused": e.refused,
                     "window": e.window, "rate": self.rate_of(e, now), "latency": e.latency}
                    for e in self.all]


def load_learnt(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """What earlier runs learnt, by chain name, then endpoint key ({} when nothing is kept, or
    the file is unreadable: it is only a head start)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        logger.warning("%s: cannot read the endpoints' learnt limits (%s); learning anew", path, e)
        return {}
    return data if isinstance(data, dict) else {}


def save_learnt(path: Path, learnt: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Keep what was learnt (written aside, then renamed: never a half-written file)."""
    kept = load_learnt(path)
    kept.update(learnt)
    temporary = path.with_name(path.name + ".tmp")
    try:
        temporary.write_text(json.dumps(kept, indent=1, sort_keys=True))
        os.replace(temporary, path)
    except OSError as e:
        logger.warning("%s: cannot keep the endpoints' learnt limits (%s)", path, e)
