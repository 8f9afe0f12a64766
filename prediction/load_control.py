"""How many LLM calls to keep in flight per endpoint, and how many retries to allow.

An LLM server's capacity is unknown and changes: llama.cpp with one slot answers one request at
a time (the rest queue inside the server, so their latency grows by one answer each), vLLM takes
dozens at once with flat latency, a hosted API throttles with 429. A fixed concurrency is wrong
for most of them: 32 requests on a one-slot server wait up to 32 answers and time out, which
turns into retries that pile more work on the same queue; 1 request on a wide server wastes it.

``AdaptiveLimit`` is a delay-gradient limiter in the spirit of TCP Vegas / Netflix's
concurrency-limits. It keeps the lowest latency seen while nothing queued (``base_rtt``) and
compares every answer's latency with it:

* latency within ``tolerance`` x base while the limit is in use: grow (+1 per answer during the
  start, like TCP slow start, then about +1 per round trip), unless one more call in flight
  would push a queueing server's answers past half the attempt timeout;
* latency above that, or above half the attempt timeout: the server is queueing; shrink in
  proportion (at most halve), at most once per round trip so one burst of slow answers does not
  collapse the limit. So a slow one-slot server (20 s an answer, 60 s timeout) is sent one call
  at a time, and queueing never turns into timeouts;
* a timeout, 429, 503 or a refused connection: halve (at most once per round trip);
* the base is what the last call sent *alone* (nothing else of ours in flight on the endpoint)
  took, or a lower latency seen since. When it has not been confirmed for ``probe_interval_s``,
  new calls wait until the endpoint is idle and one call is sent alone (BBR's ProbeRTT): a
  one-slot server kept at two calls in flight never shows its base latency otherwise, and a
  stale base would let the limit creep up (or, if the server got slower, pin it at 1).

``PRELABEL_LLM_CONCURRENCY`` is the upper bound; ``PRELABEL_LLM_ADAPTIVE=false`` pins the limit
to it (the old fixed behaviour).

``RetryBudget`` bounds retries to a share of recent calls (Finagle's retry budget): in any
``window_s``, at most ``min_retries + ratio x first attempts`` retries. Under overload most
calls fail; without a budget each failure sends up to ``max_retries`` more requests to the very
server that is overloaded.

``EndpointPool`` hands out permits: FIFO over all waiting calls, to the endpoint with free
capacity (round-robin among them, avoiding the endpoint a retry just failed on), never more
than the process-wide bound in flight. Waiting for a permit is *queueing* and is measured apart
from the request itself: an attempt's timeout starts when the request is sent.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

Clock = Callable[[], float]
T = TypeVar("T")


class AdaptiveLimit:
    """The concurrency limit of one endpoint (see the module docstring for the rules)."""

    def __init__(
        self,
        max_limit: int,
        *,
        adaptive: bool = True,
        initial: int = 1,
        tolerance: float = 2.0,
        timeout_s: float = math.inf,
        probe_interval_s: float = 30.0,
        clock: Clock = time.monotonic,
    ) -> None:
        if max_limit < 1:
            raise ValueError("max_limit must be >= 1")
        self.max_limit = max_limit
        self.adaptive = adaptive
        self.tolerance = tolerance
        self.headroom_s = timeout_s / 2  # answers must stay well inside the attempt timeout
        self.probe_interval_s = probe_interval_s
        self._clock = clock
        self.limit = float(min(max_limit, initial) if adaptive else max_limit)
        self.base_rtt: float | None = None
        self._base_at = 0.0
        self.queue_delay_s = 0.0  # smoothed (latency - base): the server's own queueing
        self.probing = False
        self.last_rtt = 0.0
        self._growing = True  # slow start until the first sign of queueing
        self._last_cut = -math.inf

    @property
    def permits(self) -> int:
        """Calls that may be in flight now: the limit, or 1 while probing the base latency."""
        return 1 if self.probing else max(1, min(self.max_limit, int(self.limit)))

    def due_probe(self) -> bool:
        """True when the base latency is stale and the next call should go out alone."""
        if not self.adaptive or self.base_rtt is None or self.probing:
            return self.probing
        if self._clock() - self._base_at > self.probe_interval_s:
            self.probing = True
        return self.probing

    def on_answer(self, rtt: float, *, alone: bool, saturated: bool) -> None:
        """An answer took ``rtt`` seconds; ``alone``: nothing else was in flight on this endpoint
        when it was sent; ``saturated``: the limit was in use (growing is only justified then)."""
        if not self.adaptive:
            return
        now = self._clock()
        self.last_rtt = rtt
        if alone:  # nothing of ours queued ahead of it: what one call costs now, higher or lower
            self.base_rtt, self._base_at, self.probing = rtt, now, False
        elif self.base_rtt is None or rtt <= self.base_rtt * 1.1:  # confirmed (or lowered)
            self.base_rtt, self._base_at = min(rtt, self.base_rtt or rtt), now
        delay = max(0.0, rtt - self.base_rtt)
        self.queue_delay_s = 0.8 * self.queue_delay_s + 0.2 * delay
        ceiling = min(self.tolerance * self.base_rtt, self.headroom_s)
        if rtt <= ceiling:
            # one more call in flight must not push a queueing server's answers past the headroom
            if saturated and rtt * (self.permits + 1) / self.permits <= self.headroom_s:
                step = 1.0 if self._growing else 1.0 / max(1.0, self.limit)
                self.limit = min(float(self.max_limit), self.limit + step)
            return
        self._growing = False
        self._cut(now, max(0.5, ceiling / rtt))

    def on_overload(self) -> None:
        """A timeout, 429, 503 or refused connection: the server has too much to do."""
        if self.adaptive:
            self._growing = False
            self._cut(self._clock(), 0.5)

    def _cut(self, now: float, factor: float) -> None:
        # At most one cut per round trip: the answers of one overloaded round all report it.
        if now - self._last_cut < max(self.base_rtt or 0.0, self.last_rtt):
            return
        self._last_cut = now
        self.limit = max(1.0, self.limit * factor)


class RetryBudget:
    """Retries allowed in a sliding window: ``min_retries + ratio x first attempts``."""

    def __init__(
        self, ratio: float = 0.1, min_retries: int = 3, window_s: float = 10.0, clock: Clock = time.monotonic
    ) -> None:
        self.ratio = ratio
        self.min_retries = min_retries
        self.window_s = window_s
        self._clock = clock
        self._calls: deque[float] = deque()
        self._retries: deque[float] = deque()
        self.denied = 0

    def _trim(self, now: float) -> None:
        for times in (self._calls, self._retries):
            while times and now - times[0] > self.window_s:
                times.popleft()

    def record_call(self) -> None:
        """A first attempt: it earns ``ratio`` of a retry."""
        self._calls.append(self._clock())

    def available(self) -> float:
        self._trim(self._clock())
        return self.min_retries + self.ratio * len(self._calls) - len(self._retries)

    def try_spend(self) -> bool:
        """Take one retry from the budget; False (and counted) when it is spent."""
        if self.available() >= 1.0:
            self._retries.append(self._clock())
            return True
        self.denied += 1
        return False

    def snapshot(self) -> dict[str, float]:
        available = self.available()
        return {"ratio": self.ratio, "window_s": self.window_s, "calls_in_window": len(self._calls),
                "retries_in_window": len(self._retries), "available": round(max(0.0, available), 2),
                "denied_total": self.denied}


@dataclass
class Permit(Generic[T]):
    """One call's right to be in flight on ``endpoint``; ``waited_s`` is its queueing time."""

    endpoint: T
    index: int
    waited_s: float
    alone: bool
    saturated: bool


class EndpointPool(Generic[T]):
    """Permits over several endpoints, each with its own ``AdaptiveLimit``; FIFO for waiters."""

    def __init__(self, endpoints: list[T], limits: list[AdaptiveLimit], max_total: int,
                 clock: Clock = time.monotonic) -> None:
        if len(endpoints) != len(limits) or not endpoints:
            raise ValueError("one limit per endpoint, at least one endpoint")
        self.endpoints = endpoints
        self.limits = limits
        self.max_total = max_total
        self.in_flight = [0] * len(endpoints)
        self._clock = clock
        self._waiters: deque[tuple[asyncio.Future[int], int | None]] = deque()
        self._next = 0

    @property
    def waiting(self) -> int:
        return sum(1 for future, _ in self._waiters if not future.done())

    def _free(self, index: int) -> bool:
        limit = self.limits[index]
        if limit.due_probe():
            return self.in_flight[index] == 0
        return self.in_flight[index] < limit.permits

    def _pick(self, avoid: int | None) -> int | None:
        if sum(self.in_flight) >= self.max_total:
            return None
        count = len(self.endpoints)
        order = [(self._next + i) % count for i in range(count)]
        free = [i for i in order if self._free(i)]
        if not free:
            return None
        chosen = next((i for i in free if i != avoid), free[0])
        self._next = (chosen + 1) % count
        return chosen

    async def acquire(self, avoid: int | None = None) -> Permit[T]:
        """Wait for a permit (FIFO); ``avoid`` = an endpoint index not to use if another is free."""
        started = self._clock()
        index = self._pick(avoid) if not self.waiting else None
        if index is None:
            future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._waiters.append((future, avoid))
            try:
                index = await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._release_slot(future.result())  # granted just as we were cancelled
                raise
        else:
            self.in_flight[index] += 1
        limit = self.limits[index]
        return Permit(
            endpoint=self.endpoints[index], index=index, waited_s=self._clock() - started,
            alone=self.in_flight[index] == 1,
            saturated=self.in_flight[index] >= limit.permits or bool(self.waiting),
        )

    def release(self, permit: Permit[T], *, rtt: float | None = None, overloaded: bool = False) -> None:
        """Give the permit back; ``rtt`` of a successful answer, ``overloaded`` for a timeout/429/503."""
        limit = self.limits[permit.index]
        if rtt is not None:
            limit.on_answer(rtt, alone=permit.alone, saturated=permit.saturated)
        elif overloaded:
            limit.on_overload()
        self._release_slot(permit.index)

    def _release_slot(self, index: int) -> None:
        self.in_flight[index] -= 1
        self._dispatch()

    def _dispatch(self) -> None:
        while self._waiters:
            future, avoid = self._waiters[0]
            if future.done():  # cancelled while waiting
                self._waiters.popleft()
                continue
            index = self._pick(avoid)
            if index is None:
                return
            self._waiters.popleft()
            self.in_flight[index] += 1
            future.set_result(index)

    def snapshot(self, labels: list[str]) -> list[dict[str, Any]]:
        """Per endpoint: limit, in flight, base latency and queueing delay (for /metrics, status)."""
        return [
            {"endpoint": label, "limit": limit.permits, "limit_raw": round(limit.limit, 2),
             "max_limit": limit.max_limit, "adaptive": limit.adaptive, "in_flight": self.in_flight[i],
             "base_rtt_s": None if limit.base_rtt is None else round(limit.base_rtt, 4),
             "queue_delay_s": round(limit.queue_delay_s, 4), "probing": limit.probing}
            for i, (label, limit) in enumerate(zip(labels, self.limits))
        ]
