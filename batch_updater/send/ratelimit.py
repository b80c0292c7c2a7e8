"""Pace request starts so that no rolling window ever holds more than the limit.

Two rules decide when the next request may start:

* spacing, at the effective rate (``limit`` per window, lowered after a 429): starts
  come window/rate apart, with at most ``burst`` back to back, from the very first
  one (GCRA, i.e. a token bucket of ``burst`` tokens kept as one timestamp). The
  API's window algorithm is unknown and may be enforced over shorter spans.
* a rolling-window guard: a start is allowed only when the start ``limit`` places
  back is at least a window old. Spacing alone overshoots by 1-4 per window (float
  drift, late callers); the guard makes the limit exact whatever spacing did.
  The server counts *arrival* times, which trail our start times by a varying
  delay (a new connection, a busy loop, network jitter): ``margin`` seconds added
  to the guard's window absorb that, at a cost of margin/window of the rate.

We write our own because aiolimiter lets about 2N through in the first minute
(see bench/RESULTS.md, "pacing").

The pool slows down together: ``pause`` (from a 429's Retry-After) and ``throttled``
(multiplicative decrease) act on every waiter; ``succeeded`` recovers additively.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable


class RateLimiter:
    """Shared by all workers: ``await limiter.acquire()`` before starting each request."""

    THROTTLE_FACTOR = 0.8  # rate multiplier per 429
    MIN_RATE_SHARE = 0.1  # never slower than 10% of the limit
    RECOVERY_PER_SUCCESS = 1.0  # requests/window regained per success: floor to full in < limit successes
    DECREASE_COOLDOWN_SHARE = 0.1  # of a window: the 429s of requests already in flight count once
    PRUNE_AT = 4096  # start times kept before old ones are dropped (only limits above this)

    def __init__(
        self,
        limit: int,
        window_seconds: float = 60.0,
        burst: int = 1,
        *,
        margin: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if not window_seconds > 0:
            raise ValueError(f"window_seconds must be positive, got {window_seconds}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        if not 0.0 <= margin < float(window_seconds):
            raise ValueError(f"margin must be at least 0 and shorter than the window, got {margin}")
        self._limit = limit
        self._window = float(window_seconds)
        self._burst = burst
        self._margin = float(margin)
        self._clock = clock
        self._sleep = sleep
        self._rate = float(limit)
        self._due = clock()  # when the next start is due at perfect spacing (GCRA's TAT)
        self._starts: deque[float] = deque(maxlen=limit)  # the last `limit` start times (see _start)
        self._paused_until = -math.inf
        self._decreased_at = -math.inf
        self._lock = asyncio.Lock()  # FIFO: waiters start in the order they arrived
        self._acquiring = 0  # callers inside acquire(), waiting for the lock or a start

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def window_seconds(self) -> float:
        return self._window

    @property
    def burst(self) -> int:
        return self._burst

    @property
    def margin(self) -> float:
        return self._margin

    @property
    def effective_rate(self) -> float:
        """Current target in starts per window (``limit`` unless throttled)."""
        return self._rate

    @property
    def interval(self) -> float:
        """Current spacing between starts, in seconds."""
        return self._window / self._rate

    async def acquire(self) -> None:
        """Wait until this caller may start a request, and record the start."""
        arrived = self._clock()
        self._acquiring += 1
        try:
            async with self._lock:
                while True:
                    now = self._clock()
                    scheduled = max(self._earliest_start(), arrived)
                    if now >= scheduled:
                        break
                    # Re-check after waking: a pause or a throttle may have moved the time.
                    await self._sleep(scheduled - now)
                self._start(scheduled, now)
        finally:
            self._acquiring -= 1

    def try_acquire(self) -> bool:
        """Record a start and return True when ``acquire()`` would not wait at all: nobody
        is waiting in it and a start is due now. Otherwise change nothing and return False.

        The no-wait path of the unlimited (or unsaturated) case, without a coroutine.
        """
        if self._acquiring:  # callers wait in acquire(): they go first (FIFO)
            return False
        now = self._clock()
        scheduled = max(self._earliest_start(), now)
        if now < scheduled:
            return False
        self._start(scheduled, now)
        return True

    def _start(self, scheduled: float, now: float) -> None:
        # Space from when this start was scheduled, not from when the sleep ended,
        # so waking late does not drift the rate down (the guard uses real times).
        self._due = max(self._due, scheduled) + self._window / self._rate
        starts = self._starts
        starts.append(now)
        if len(starts) > self.PRUNE_AT:
            # Only with a limit above PRUNE_AT (a "no limit" setting of 10**9, say): drop the
            # starts older than the guard's window, which can never hold a start back again,
            # so memory follows the rate over one window, not the number of requests.
            horizon = now - self._window - self._margin
            while starts[0] <= horizon:
                starts.popleft()

    @property
    def last_start(self) -> float:
        """The start just recorded: read it right after ``acquire()`` or ``try_acquire()``."""
        return self._starts[-1]

    def went_late(self, start: float) -> None:
        """The request of the start recorded at ``start`` went out only now (it waited after
        its slot, e.g. for its row's in-flight mark to commit): the guard counts it from now,
        as the server will, so the window after a stall is not over the limit."""
        starts = self._starts
        for i in range(len(starts) - 1, -1, -1):  # among the last few: starts since are few
            if starts[i] == start:
                del starts[i]
                break
        else:
            return
        now = self._clock()
        at = len(starts)
        while at and starts[at - 1] > now:
            at -= 1
        starts.insert(at, now)

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    def pause(self, seconds: float) -> None:
        """Let no request start for ``seconds`` from now; never shortens a pause."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def throttled(self) -> None:
        """A 429 arrived: lower the rate for the whole pool (at most once per cooldown)."""
        now = self._clock()
        if now - self._decreased_at < self._window * self.DECREASE_COOLDOWN_SHARE:
            return
        self._decreased_at = now
        self._set_rate(now, max(self._rate * self.THROTTLE_FACTOR, self._limit * self.MIN_RATE_SHARE))

    def succeeded(self) -> None:
        """A request succeeded: creep back toward the configured rate."""
        if self._rate < self._limit:
            self._set_rate(self._clock(), min(self._rate + self.RECOVERY_PER_SUCCESS, self._limit))

    def _set_rate(self, now: float, rate: float) -> None:
        # Starts already owed keep their count but are re-spaced at the new rate.
        owed = max(self._due - now, 0.0)
        self._due = now + owed * self._rate / rate
        self._rate = rate

    def _earliest_start(self) -> float:
        start = self._due - (self._burst - 1) * self.interval
        if len(self._starts) == self._limit:
            start = max(start, self._starts[0] + self._window + self._margin)
        return max(start, self._paused_until)
