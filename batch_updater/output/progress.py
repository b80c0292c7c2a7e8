"""Progress: rows done of total, rate against the limit, ETA, and outcome counts.

On a terminal one line is redrawn in place; elsewhere (cron, Airflow) the same
figures go to the log every LOG_INTERVAL seconds, so logs stay short.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from ..outcomes import CREATED, RowOutcome, Status

LOG_INTERVAL = 30.0
TERMINAL_INTERVAL = 0.5
RATE_WINDOW = 60.0


@dataclass
class Progress:
    """Rows done of the total (an earlier run's rows count as done); the rates and the
    ETA count this run's work only, so a resumed run shows its own pace."""

    total: int | None
    limit_per_minute: int
    clock: Callable[[], float] = time.monotonic
    add_limit_per_minute: int | None = None  # upsert mode: the Add Customer API's budget
    done: int = 0
    earlier: int = 0       # of `done`: rows an earlier run of the job settled
    updated: int = 0
    errors: int = 0
    skipped: int = 0
    retries: int = 0
    requests: int = 0      # sent by this run (updates; adds are counted apart)
    adds: int = 0          # upsert: adds sent by this run
    created: int = 0       # upsert: of `updated`, the customers added
    started: float = field(default=0.0)
    _recent: deque = field(default_factory=deque)  # (time, rows this run, requests, adds) samples

    def __post_init__(self) -> None:
        self.started = self.clock()

    def count(self, outcome: RowOutcome) -> None:
        self.done += 1
        if outcome.status is Status.SUCCESS:
            self.updated += 1
            self.created += outcome.action == CREATED
        elif outcome.status is Status.SKIPPED:
            self.skipped += 1
        else:
            self.errors += 1

    def count_earlier(self, rows: int) -> None:
        self.done += rows
        self.earlier += rows

    def rates_per_minute(self) -> tuple[float, float, float]:
        """This run's rows, update requests and adds per minute over the last RATE_WINDOW seconds."""
        now = self.clock()
        self._recent.append((now, self.done - self.earlier, self.requests, self.adds))
        while len(self._recent) > 1 and now - self._recent[0][0] > RATE_WINDOW:
            self._recent.popleft()
        first_time, first_rows, first_requests, first_adds = self._recent[0]
        if now <= first_time:  # the first sample: since the run started
            first_time, first_rows, first_requests, first_adds = self.started, 0, 0, 0
        span = now - first_time
        if span <= 0:
            return 0.0, 0.0, 0.0
        return ((self.done - self.earlier - first_rows) / span * 60,
                (self.requests - first_requests) / span * 60, (self.adds - first_adds) / span * 60)

    def line(self) -> str:
        rows_rate, request_rate, add_rate = self.rates_per_minute()
        if self.total:
            done = f"{self.done:,}/{self.total:,} rows ({self.done / self.total:.0%})"
            left = max(self.total - self.done, 0)
            eta = f" | ETA {_duration(left / rows_rate * 60)}" if rows_rate > 0 and left else ""
        else:
            done, eta = f"{self.done:,} rows", ""
        earlier, counts = (f", {self.earlier:,} by earlier runs", "this run: ") if self.earlier else ("", "")
        adds, created = "", ""
        if self.add_limit_per_minute is not None:
            adds = f", {add_rate:,.0f} adds/min (limit {self.add_limit_per_minute:,})"
            created = f" · created {self.created:,}"
        return (f"{done}{earlier} | {request_rate:,.0f} requests/min (limit {self.limit_per_minute:,}){adds}{eta}"
                f" | {counts}updated {self.updated - self.created:,}{created} · errors {self.errors:,}"
                f" · skipped {self.skipped:,} · retries {self.retries:,}")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class ProgressDisplay:
    """Draws the progress line on a terminal, or logs it at a fixed interval elsewhere."""

    def __init__(self, *, stream: TextIO = sys.stderr, quiet: bool = False,
                 log: Callable[[str], None] | None = None, terminal: bool | None = None):
        self.stream = stream
        self.terminal = stream.isatty() if terminal is None else terminal
        self.quiet = quiet
        self.log = log
        self.interval = TERMINAL_INTERVAL if self.terminal else LOG_INTERVAL
        self._drawn = False

    def show(self, progress: Progress) -> None:
        if self.quiet:
            return
        if self.terminal:
            self.stream.write("\r\x1b[K" + progress.line())
            self.stream.flush()
            self._drawn = True
        elif self.log:
            self.log("progress: " + progress.line())

    def clear(self) -> None:
        """Wipe the drawn line (before a log line is printed, and at the end)."""
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False

    close = clear


class ProgressWatch:
    """Hands the progress figures to an observer at a fixed interval while rows are sent."""

    def __init__(self, progress: Progress, observer: Callable[[Progress], None] | None = None,
                 every: float = LOG_INTERVAL):
        self.progress = progress
        self.observer = observer or log_progress
        self.every = every

    async def run(self, stats) -> None:
        while True:
            await asyncio.sleep(self.every)
            self.progress.retries = stats.retries
            self.progress.requests = stats.requests - stats.add_requests
            self.progress.adds = stats.add_requests
            self.observer(self.progress)


def log_progress(progress: Progress) -> None:
    from .logs import log

    log.info("progress: %s", progress.line())
