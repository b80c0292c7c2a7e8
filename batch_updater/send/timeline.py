"""A run's requests minute by minute: counts, HTTP statuses and answer times.

report.html draws its charts from these rows, which the journal keeps (one row per minute
of sending, never one per request: a day-long run is 1,440 rows). Answer times of the
current minute are held until it ends, then reduced to the median, the 95th percentile
and the maximum.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson


@dataclass
class _Minute:
    requests: int = 0
    adds: int = 0
    retries: int = 0
    throttled: int = 0
    server_errors: int = 0       # 5xx
    network: int = 0             # no answer: refused, dropped, timed out
    statuses: Counter[int] = field(default_factory=Counter)
    seconds: list[float] = field(default_factory=list)


class Timeline:
    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._minutes: dict[int, _Minute] = {}

    def _now(self) -> _Minute:
        start = int(self._clock() // 60 * 60)
        minute = self._minutes.get(start)
        if minute is None:
            minute = self._minutes[start] = _Minute()
        return minute

    def request(self, status: int | None, seconds: float | None, *, add: bool = False) -> None:
        """One request that went out: its HTTP status (None: no answer) and answer time."""
        minute = self._now()
        minute.requests += 1
        minute.adds += add
        if status is None:
            minute.network += 1
            return
        minute.statuses[status] += 1
        minute.throttled += status == 429
        minute.server_errors += status >= 500
        if seconds is not None:
            minute.seconds.append(seconds)

    def retry(self) -> None:
        self._now().retries += 1

    def take(self, *, finished_only: bool = True) -> list[tuple]:
        """The minutes that are over (or all of them), as journal rows (state.journal's
        MINUTE_COLUMNS); they are let go."""
        current = int(self._clock() // 60 * 60)
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
