"""A run's requests minute by minute: counts, HTTP statuses and answer times.

report.html draws its charts from these rows, which the journal keeps (one row per minute
of sending, never one per request: a day-long run is 1,440 rows). Sending only appends
each request's facts to a list (the send loop's hot path); the list is folded into
minutes when they are taken, every few seconds, and each minute's answer times are
reduced to the median, the 95th percentile and the maximum.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

RETRY = -1  # a status that is no request: a retry's backoff began


@dataclass(slots=True)
class _Minute:
    requests: int = 0
    adds: int = 0
    retries: int = 0
    throttled: int = 0
    server_errors: int = 0       # 5xx
    network: int = 0             # no answer: refused, dropped, timed out
    statuses: dict[int, int] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)

    def count(self, status: int | None, seconds: float | None, add: bool) -> None:
        if status == RETRY:
            self.retries += 1
            return
        self.requests += 1
        self.adds += add
        if status is None:
            self.network += 1
            return
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.throttled += status == 429
        self.server_errors += status >= 500
        if seconds is not None:
            self.seconds.append(seconds)


class Timeline:
    def __init__(self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self._clock = clock
        self._offset = wall() - clock()  # the clock's time + offset = epoch seconds
        self._log: list[tuple[float, int | None, float | None, bool]] = []
        self._minutes: dict[int, _Minute] = {}

    def request(self, at: float, status: int | None, seconds: float | None, add: bool = False) -> None:
        """One request that went out at `at` (the clock's time): its HTTP status (None: no
        answer) and answer time."""
        self._log.append((at, status, seconds, add))

    def retry(self) -> None:
        self._log.append((self._clock(), RETRY, None, False))

    def take(self, *, finished_only: bool = True) -> list[tuple]:
        """The minutes that are over (or all of them), as journal rows (state.journal's
        MINUTE_COLUMNS); they are let go."""
        log, self._log = self._log, []
        for at, status, seconds, add in log:
            start = int((at + self._offset) // 60 * 60)
            minute = self._minutes.get(start)
            if minute is None:
                minute = self._minutes[start] = _Minute()
            minute.count(status, seconds, add)
        current = int((self._clock() + self._offset) // 60 * 60)
        taken = [start for start in sorted(self._minutes) if not finished_only or start < current]
        return [_row(start, self._minutes.pop(start)) for start in taken]


def _row(start: int, m: _Minute) -> tuple:
    times = sorted(m.seconds)
    p50, p95, top = (_at(times, 0.5), _at(times, 0.95), round(times[-1] * 1000, 2)) if times else (None, None, None)
    statuses = orjson.dumps({str(k): v for k, v in sorted(m.statuses.items())}).decode()
    return (start, m.requests, m.adds, m.retries, m.throttled, m.server_errors, m.network, statuses, p50, p95, top)


def _at(ordered: list[float], share: float) -> float:
    """The nearest-rank percentile, in milliseconds."""
    index = min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))
    return round(ordered[index] * 1000, 2)
