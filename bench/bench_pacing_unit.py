"""Pace on the real clock: achieved share of the limit and the worst rolling window.

    .venv/bin/python bench/bench_pacing_unit.py [limit] [window_seconds] [windows] [workers]

No server involved: this measures the limiter alone (defaults: 100 per 2 s, 3 windows).
"""

from __future__ import annotations

import asyncio
import bisect
import sys
import time

from batch_updater.send.ratelimit import RateLimiter


async def pace(limit: int, window: float, windows: int, workers: int) -> list[float]:
    limiter = RateLimiter(limit, window)
    end = time.monotonic() + windows * window
    starts: list[float] = []

    async def worker() -> None:
        while True:
            await limiter.acquire()
            now = time.monotonic()
            if now >= end:
                return
            starts.append(now)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return sorted(starts)


def max_in_window(starts: list[float], window: float) -> int:
    return max(bisect.bisect_left(starts, s + window) - i for i, s in enumerate(starts))


def main(argv: list[str]) -> None:
    limit, window, windows, workers = (int(argv[0]) if argv else 100, float(argv[1]) if len(argv) > 1 else 2.0,
                                       int(argv[2]) if len(argv) > 2 else 3, int(argv[3]) if len(argv) > 3 else 8)
    starts = asyncio.run(pace(limit, window, windows, workers))
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    print(f"limit {limit} per {window:g} s, {windows} windows, {workers} workers")
    print(f"achieved {len(starts)} / {windows * limit} = {len(starts) / (windows * limit):.2%}")
    print(f"max in any rolling window: {max_in_window(starts, window)} (limit {limit})")
    print(f"gap min/mean/max: {min(gaps) * 1e3:.2f} / {sum(gaps) / len(gaps) * 1e3:.2f} / "
          f"{max(gaps) * 1e3:.2f} ms (target {window / limit * 1e3:.2f})")


if __name__ == "__main__":
    main(sys.argv[1:])
