"""RateLimiter on a fake clock: exact rolling-window limit, even spacing, pauses, throttling."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import FakeClock, max_in_window, run_for
from hypothesis import given, settings
from hypothesis import strategies as st

from batch_updater.send.ratelimit import RateLimiter

EPS = 1e-9


def make(limit: int, window: float = 60.0, burst: int = 1, late: float = 0.0) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock(late=late)
    return RateLimiter(limit, window, burst, clock=clock, sleep=clock.sleep), clock


async def start(limiter: RateLimiter, clock: FakeClock, starts: list[float]) -> None:
    await limiter.acquire()
    starts.append(clock.now)


def assert_spacing(starts: list[float], interval: float, burst: int) -> None:
    """Any k+1 consecutive starts span at least (k + 1 - burst) intervals."""
    for i in range(len(starts)):
        for j in range(i + burst, len(starts)):
            assert starts[j] - starts[i] >= (j - i + 1 - burst) * interval - 1e-6


def test_rejects_bad_arguments():
    for args in [(0,), (10, 0.0), (10, -1.0), (10, 60.0, 0)]:
        with pytest.raises(ValueError):
            RateLimiter(*args)


async def test_first_window_is_evenly_spaced_without_burst():
    limiter, clock = make(limit=60, window=60.0)
    t0 = clock.now
    starts = await run_for(limiter, clock, 60.0)
    assert starts == pytest.approx([t0 + k for k in range(60)])


async def test_burst_allows_that_many_back_to_back_then_spaces():
    limiter, clock = make(limit=60, window=60.0, burst=5)
    t0 = clock.now
    starts = await run_for(limiter, clock, 120.0)
    assert starts[:5] == [t0] * 5
    assert starts[5:8] == pytest.approx([t0 + 1, t0 + 2, t0 + 3])
    assert_spacing(starts, 1.0, burst=5)
    assert max_in_window(starts, 60.0) == 60  # the guard absorbs the burst


@pytest.mark.parametrize("limit, window", [(50, 60.0), (600, 60.0), (1000, 60.0), (7, 0.7), (100, 2.0)])
async def test_long_run_achieves_the_limit_and_never_exceeds_it(limit, window):
    limiter, clock = make(limit, window)
    starts = await run_for(limiter, clock, 10 * window)
    assert len(starts) >= 0.99 * 10 * limit
    assert max_in_window(starts, window) == limit


async def test_late_wakeups_neither_lower_the_rate_nor_break_the_limit():
    limiter, clock = make(limit=100, window=2.0, late=0.006)  # oversleep up to 30% of an interval
    starts = await run_for(limiter, clock, 20.0)
    assert len(starts) >= 0.99 * 10 * 100
    assert max_in_window(starts, 2.0) == 100


async def test_pause_delays_every_start_and_only_extends():
    limiter, clock = make(limit=60, window=60.0)
    await limiter.acquire()
    t = clock.now
    limiter.pause(10.0)
    limiter.pause(3.0)  # shorter: ignored
    limiter.pause(-5.0)  # nonsense: ignored
    await limiter.acquire()
    assert clock.now == pytest.approx(t + 10.0)
    limiter.pause(4.0)
    clock.now += 1.0
    limiter.pause(5.0)  # later and longer: extends to t + 10 + 6
    await limiter.acquire()
    assert clock.now == pytest.approx(t + 16.0)


async def test_short_pause_leaves_spacing_in_charge():
    limiter, clock = make(limit=60, window=60.0)
    await limiter.acquire()
    limiter.pause(0.25)
    await limiter.acquire()
    assert clock.now == pytest.approx(1001.0)


async def test_pause_during_a_wait_is_honoured():
    limiter, clock = make(limit=60, window=60.0)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)  # the waiter sleeps until 1001 (the fake clock is already there)
    limiter.pause(10.0)
    await waiter
    assert clock.now == pytest.approx(1011.0)


async def test_throttle_lowers_rate_multiplicatively_with_a_floor():
    limiter, clock = make(limit=100, window=60.0)
    limiter.throttled()
    assert limiter.effective_rate == pytest.approx(80.0)
    assert limiter.interval == pytest.approx(60.0 / 80.0)
    for _ in range(50):
        clock.now += 10.0  # past the cooldown each time
        limiter.throttled()
    assert limiter.effective_rate == pytest.approx(10.0)


async def test_throttles_within_the_cooldown_count_once():
    limiter, clock = make(limit=100, window=60.0)
    for _ in range(20):  # the 429s of one burst of in-flight requests
        limiter.throttled()
        clock.now += 0.1
    assert limiter.effective_rate == pytest.approx(80.0)


async def test_throttle_widens_spacing_and_success_recovers_to_the_limit():
    limiter, clock = make(limit=100, window=60.0)
    await limiter.acquire()
    limiter.throttled()
    t = clock.now
    await limiter.acquire()
    assert clock.now - t == pytest.approx(60.0 / 80.0)  # the owed interval is re-spaced
    for _ in range(19):
        limiter.succeeded()
    assert limiter.effective_rate == pytest.approx(99.0)
    for _ in range(5):
        limiter.succeeded()
    assert limiter.effective_rate == 100.0  # never above the limit


async def test_recovery_from_the_floor_takes_under_a_window_of_successes():
    limiter, clock = make(limit=200, window=60.0)
    for _ in range(30):
        limiter.throttled()
        clock.now += 60.0
    assert limiter.effective_rate == pytest.approx(20.0)
    for _ in range(200):
        limiter.succeeded()
    assert limiter.effective_rate == 200.0


async def test_throttled_run_still_never_exceeds_limit():
    limiter, clock = make(limit=100, window=6.0)
    starts = await run_for(limiter, clock, 6.0)
    limiter.throttled()
    starts += await run_for(limiter, clock, 12.0)
    assert 100 + 2 * 80 - 2 <= len(starts) <= 100 + 2 * 80 + 2
    assert max_in_window(starts, 6.0) <= 100


async def test_many_concurrent_waiters_are_served_in_order_at_the_limit():
    limiter, clock = make(limit=50, window=10.0)
    order: list[int] = []
    starts: list[float] = []

    async def worker(i: int) -> None:
        await limiter.acquire()
        order.append(i)
        starts.append(clock.now)

    t0 = clock.now
    await asyncio.gather(*(worker(i) for i in range(300)))
    assert order == list(range(300))
    assert starts == pytest.approx([t0 + 0.2 * k for k in range(300)])
    assert max_in_window(starts, 10.0) == 50


async def test_cancelled_waiters_leave_no_trace():
    limiter, clock = make(limit=60, window=60.0)
    starts: list[float] = []
    await start(limiter, clock, starts)
    sleeping = asyncio.create_task(start(limiter, clock, starts))  # will hold the lock, sleeping
    queued = asyncio.create_task(start(limiter, clock, starts))  # waits for the lock
    later = asyncio.create_task(start(limiter, clock, starts))
    await asyncio.sleep(0)
    sleeping.cancel()
    queued.cancel()
    await asyncio.gather(sleeping, queued, later, return_exceptions=True)
    assert sleeping.cancelled() and queued.cancelled()
    assert starts == pytest.approx([1000.0, 1001.0])  # `later` took the slot the others gave up
    await start(limiter, clock, starts)
    assert starts[-1] == pytest.approx(1002.0)


async def test_async_with_acquires():
    limiter, clock = make(limit=60, window=60.0)
    async with limiter:
        pass
    async with limiter:
        assert clock.now == pytest.approx(1001.0)


async def test_real_clock_smoke():
    limiter = RateLimiter(50, window_seconds=1.0)  # one start every 20 ms
    starts = []
    for _ in range(6):
        await limiter.acquire()
        starts.append(time.monotonic())
    assert 0.1 - 0.005 <= starts[-1] - starts[0] < 0.3


# Random scenarios: arrivals, concurrent batches, pauses, 429s and successes.
operations = st.one_of(
    st.tuples(st.just("advance"), st.floats(0.0, 5.0)),
    st.tuples(st.just("acquire"), st.integers(1, 6)),
    st.tuples(st.just("pause"), st.floats(0.0, 3.0)),
    st.tuples(st.just("throttle"), st.none()),
    st.tuples(st.just("succeed"), st.integers(1, 10)),
)


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 12),
    window=st.sampled_from([1.0, 2.5, 6.0]),
    burst=st.integers(1, 4),
    late=st.sampled_from([0.0, 0.05]),
    ops=st.lists(operations, max_size=40),
)
def test_random_scenarios_keep_every_guarantee(limit, window, burst, late, ops):
    async def scenario() -> tuple[list[float], list[tuple[int, float]]]:
        limiter, clock = make(limit, window, burst, late)
        starts: list[float] = []
        pauses: list[tuple[int, float]] = []  # (starts so far, paused until)
        for op, arg in ops:
            if op == "advance":
                clock.now += arg
            elif op == "acquire":
                await asyncio.gather(*(start(limiter, clock, starts) for _ in range(arg)))
            elif op == "pause":
                limiter.pause(arg)
                pauses.append((len(starts), clock.now + arg))
            elif op == "throttle":
                limiter.throttled()
            else:
                for _ in range(arg):
                    limiter.succeeded()
            assert limit * 0.1 - EPS <= limiter.effective_rate <= limit
        return starts, pauses

    starts, pauses = asyncio.run(scenario())
    assert starts == sorted(starts)
    assert max_in_window(starts, window) <= limit
    if not late:  # a late start may be followed by an on-time one
        assert_spacing(starts, window / limit, burst)  # never faster than the configured rate
    for before, until in pauses:
        assert all(s >= until - EPS for s in starts[before:])


@pytest.mark.parametrize("told", [True, False])
async def test_a_start_that_went_late_counts_from_when_it_went(told):
    """Requests held back after their slots (a stalled commit of their in-flight marks) reach
    the server together, later: told so, the guard keeps every window of what the server
    sees at the limit; not told, the next window holds more (what the test shows can fail)."""
    limiter, clock = make(10, 10.0, burst=10)
    held = []
    for _ in range(10):
        await limiter.acquire()
        held.append(limiter.last_start)
    clock.now += 3.0  # the stall
    for start in held:
        if told:
            limiter.went_late(start)
    sent = [clock.now] * len(held) + await run_for(limiter, clock, 40.0)
    assert (max_in_window(sent, 10.0) <= 10) is told
