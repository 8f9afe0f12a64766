"""The adaptive concurrency limiter, the endpoint pool and the retry budget (no servers).

The queueing behaviour is checked against small in-process "servers" (an asyncio coroutine with
N slots and a fixed service time), the same shapes as the benchmark's one-slot and wide servers,
at millisecond scale.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from prelabel.prediction.load_control import AdaptiveLimit, EndpointPool, RetryBudget
from prelabel.prediction.shapes import ShapeState, classify_rejection


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# --- AdaptiveLimit -------------------------------------------------------------------------------
def test_limit_grows_while_latency_is_flat_up_to_the_bound() -> None:
    clock = FakeClock()
    limit = AdaptiveLimit(32, initial=4, clock=clock)
    for _ in range(200):
        clock.now += 0.2
        limit.on_answer(0.2, alone=False, saturated=True)
    assert limit.permits == 32


def test_limit_does_not_grow_when_it_is_not_used() -> None:
    limit = AdaptiveLimit(32, initial=4, clock=FakeClock())
    for _ in range(100):
        limit.on_answer(0.2, alone=True, saturated=False)
    assert limit.permits == 4


def test_rising_latency_shrinks_the_limit_once_per_round_trip() -> None:
    clock = FakeClock()
    limit = AdaptiveLimit(32, initial=16, clock=clock)
    limit.on_answer(1.0, alone=True, saturated=False)  # base latency 1 s
    clock.now = 10.0
    limit.on_answer(4.0, alone=False, saturated=True)  # 4x the base: the server queues
    assert limit.permits == 8  # 16 * max(0.5, 2 * 1 / 4)
    limit.on_answer(4.0, alone=False, saturated=True)  # same round trip: no second cut
    assert limit.permits == 8
    clock.now = 12.0  # < one round trip (the last answer took 4 s) after the cut: none
    limit.on_answer(3.0, alone=False, saturated=True)
    assert limit.permits == 8
    clock.now = 16.0
    limit.on_answer(3.0, alone=False, saturated=True)
    assert limit.permits == 5  # 8 * 2/3


def test_a_slow_server_is_kept_inside_the_attempt_timeout() -> None:
    """20 s an answer, 60 s per attempt: a second call queued behind the first would take 40 s,
    past half the timeout, so the limit stays at 1; answers nearing the timeout cut it."""
    clock = FakeClock()
    limit = AdaptiveLimit(32, timeout_s=60, clock=clock)
    assert limit.permits == 1  # starts low
    for _ in range(10):
        clock.now += 20
        limit.on_answer(20.0, alone=True, saturated=True)
    assert limit.permits == 1
    fast = AdaptiveLimit(32, initial=3, timeout_s=60, clock=clock)
    fast.on_answer(20.0, alone=True, saturated=False)
    clock.now += 100
    fast.on_answer(35.0, alone=False, saturated=True)  # within 2x base is not enough: past 30 s
    assert fast.permits == 2


def test_overload_halves_and_fixed_mode_never_moves() -> None:
    clock = FakeClock()
    limit = AdaptiveLimit(32, initial=20, clock=clock)
    limit.on_overload()
    assert limit.permits == 10
    fixed = AdaptiveLimit(32, adaptive=False, clock=clock)
    fixed.on_overload()
    fixed.on_answer(100.0, alone=False, saturated=True)
    assert fixed.permits == 32


def test_stale_base_latency_is_probed_alone() -> None:
    clock = FakeClock()
    limit = AdaptiveLimit(8, initial=4, probe_interval_s=30, clock=clock)
    limit.on_answer(1.0, alone=True, saturated=False)
    clock.now = 31.0
    assert limit.due_probe() and limit.permits == 1
    limit.on_answer(2.5, alone=False, saturated=True)  # an older call: not the probe
    assert limit.probing
    limit.on_answer(1.5, alone=True, saturated=False)  # the probe: the server got slower
    assert not limit.probing and limit.base_rtt == 1.5


def test_a_server_that_got_slower_is_not_mistaken_for_a_queue() -> None:
    """Latency jumps 40x while one call at a time is in flight: that is the new base, not queueing."""
    clock = FakeClock()
    limit = AdaptiveLimit(32, initial=1, clock=clock)
    for _ in range(5):
        clock.now += 0.005
        limit.on_answer(0.005, alone=True, saturated=True)
    grown = limit.permits
    clock.now += 0.2
    limit.on_answer(0.2, alone=True, saturated=True)
    assert limit.base_rtt == 0.2 and limit.permits >= grown


# --- the pool against in-process servers ---------------------------------------------------------
class SlotServer:
    """``slots`` requests worked on at a time, ``service_s`` each; the rest wait in order."""

    def __init__(self, slots: int, service_s: float) -> None:
        self.sem = asyncio.Semaphore(slots)
        self.service_s = service_s
        self.in_flight = 0
        self.in_flight_max = 0
        self.arrivals: list[int] = []  # requests already in the server when each one arrived

    async def call(self) -> None:
        self.arrivals.append(self.in_flight)
        self.in_flight += 1
        self.in_flight_max = max(self.in_flight_max, self.in_flight)
        try:
            async with self.sem:
                await asyncio.sleep(self.service_s)
        finally:
            self.in_flight -= 1


async def drive(pool: EndpointPool, server: SlotServer, calls: int) -> list[float]:
    latencies: list[float] = []

    async def one() -> None:
        permit = await pool.acquire()
        started = time.perf_counter()
        try:
            await server.call()
        finally:
            rtt = time.perf_counter() - started
            latencies.append(rtt)
            pool.release(permit, rtt=rtt)

    await asyncio.gather(*(one() for _ in range(calls)))
    return latencies


def test_one_slot_server_keeps_its_queue_short() -> None:
    """32 allowed, one slot: the limiter settles at 1-2 in flight instead of queueing 32."""
    server = SlotServer(1, 0.1)
    pool = EndpointPool(["one"], [AdaptiveLimit(32)], 32)
    asyncio.run(drive(pool, server, 40))
    assert server.in_flight_max <= 5, server.in_flight_max
    assert max(server.arrivals[10:]) <= 3, server.arrivals  # settled: at most 3 ahead of any request
    assert pool.limits[0].permits <= 3


def test_wide_server_reaches_the_upper_bound() -> None:
    server = SlotServer(64, 0.2)
    pool = EndpointPool(["wide"], [AdaptiveLimit(32)], 32)
    started = time.perf_counter()
    asyncio.run(drive(pool, server, 320))
    elapsed = time.perf_counter() - started
    assert server.in_flight_max == 32
    assert pool.limits[0].permits == 32
    assert elapsed < 320 * 0.2 / 32 * 2.0, elapsed  # within 2x of 32 always busy, slow start included


def test_pool_is_fifo_respects_the_total_and_avoids_the_failed_endpoint() -> None:
    async def scenario() -> None:
        pool = EndpointPool(["a", "b"], [AdaptiveLimit(2, adaptive=False), AdaptiveLimit(2, adaptive=False)], 3)
        held = [await pool.acquire() for _ in range(3)]
        assert sorted(pool.in_flight) == [1, 2]  # the total bound (3), not 2 + 2
        order: list[int] = []

        async def waiter(n: int) -> None:
            permit = await pool.acquire()
            order.append(n)
            pool.release(permit)

        waiters = [asyncio.create_task(waiter(n)) for n in range(5)]
        await asyncio.sleep(0)
        cancelled = waiters.pop(2)
        cancelled.cancel()
        for permit in held:
            pool.release(permit)
        await asyncio.gather(*waiters)
        assert order == [0, 1, 3, 4]  # arrival order; the cancelled waiter took nothing
        assert pool.in_flight == [0, 0] and pool.waiting == 0
        first = await pool.acquire()
        retry = await pool.acquire(avoid=first.index)
        assert retry.index != first.index

    asyncio.run(scenario())


# --- retry budget --------------------------------------------------------------------------------
def test_retry_budget_allows_a_share_of_calls_per_window() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.1, min_retries=3, window_s=10, clock=clock)
    for _ in range(100):
        budget.record_call()
    allowed = sum(budget.try_spend() for _ in range(100))
    assert allowed == 13  # 3 + 10% of 100
    assert budget.denied == 87
    clock.now = 11.0  # the window moved on: only the floor is left
    assert sum(budget.try_spend() for _ in range(10)) == 3


# --- request shapes --------------------------------------------------------------------------------
def test_errors_are_classified_by_what_they_blame() -> None:
    assert classify_rejection("Requested tokens (2600) exceed context window of 2048") == "context"
    assert classify_rejection("This model's maximum context length is 4096 tokens. However, you requested") \
        == "context"
    assert classify_rejection("Input should be 'text' or 'json_object' (response_format.type)") == "mode"
    assert classify_rejection("logprobs are not supported by this model") == "logprobs"
    assert classify_rejection("temperature must be <= 2") is None


def test_shape_steps_down_per_part_and_is_probed_again_later() -> None:
    clock = FakeClock()
    shape = ShapeState("json_schema", True, retry_after_s=600, clock=clock)
    assert shape.current() == ("json_schema", True)
    assert shape.reject(("json_schema", True), "mode")
    assert shape.current() == ("json_object", True)  # logprobs kept: only the mode was blamed
    assert shape.reject(("json_schema", True), "mode")  # a concurrent rejection of the same shape
    assert shape.current() == ("json_object", True)  # ... steps down once, not twice
    assert shape.reject(("json_object", True), "logprobs")
    assert shape.current() == ("json_object", False)
    assert not shape.reject(("none", False), "mode")  # nothing simpler left
    clock.now = 601
    assert shape.current() == ("json_schema", True)  # probed again


@pytest.mark.parametrize("start", ["json_schema", "json_object", "none"])
def test_configured_mode_is_where_negotiation_starts(start: str) -> None:
    assert ShapeState(start, False).current() == (start, False)
