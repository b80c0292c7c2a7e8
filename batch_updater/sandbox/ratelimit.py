"""The sandbox's strict rolling-window rate limit, and the measure that checks it."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable


class RollingWindow:
    """Admits a credential's request only if fewer than `limit` admitted requests of that
    credential started within the last `window_seconds` (the window (now - window, now])."""

    def __init__(self, limit: int, window_seconds: float):
        self.limit = limit
        self.window_seconds = window_seconds
        self._starts: dict[str, deque[float]] = defaultdict(deque)

    def admit(self, credential: str, now: float) -> float | None:
        """None if admitted (the request takes a slot), else the seconds until a slot frees."""
        starts = self._starts[credential]
        while starts and starts[0] <= now - self.window_seconds:
            starts.popleft()
        if len(starts) < self.limit:
            starts.append(now)
            return None
        return starts[0] + self.window_seconds - now


def max_in_window(timestamps: Iterable[float], window_seconds: float) -> int:
    """The most timestamps inside any window (t - window_seconds, t]: the count that
    RollingWindow keeps at or below its limit."""
    ordered = sorted(timestamps)
    best = left = 0
    for right, t in enumerate(ordered):
        while left <= right and ordered[left] <= t - window_seconds:
            left += 1
        best = max(best, right - left + 1)
    return best
