"""The send loop: prepared chunks in, each row's outcome out to the journal.

A chunk is read, validated and mapped in a worker thread while the event loop sends
the one before it, so the file work overlaps the network work. Rows an earlier run of
the job settled are not sent again (state.resume); everything else goes through the
worker pool, and its answers are journaled durably the moment they are known.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..config import Config
from ..errors import RunAborted
from ..outcomes import RowOutcome, Status
from ..output.logs import log
from ..output.progress import Progress, ProgressWatch
from ..rows.payload import Payload
from ..rows.prepare import PreparedChunk
from ..state.group_commit import flush_every
from ..state.journal import FLUSH_SECONDS, Journal
from ..state.resume import EarlierRuns, settled_before, skip_unchanged, unfinished
from ..state.sync_state import ChangeFilter

if TYPE_CHECKING:
    from .pool import WorkerPool

MINUTES_EVERY = 10.0  # seconds between writes of finished minutes


@dataclass
class SendResult:
    """What a run's sending did, for its summary."""

    reason: str | None = None        # why it halted: an abort's or a stop's message
    aborted: bool = False
    stopped: bool = False
    requests: int = 0                # every request, adds included
    add_requests: int = 0            # upsert mode: POST /v2/customers
    retries: int = 0
    throttled: int = 0
    in_doubt_requests: int = 0       # sent and never answered
    sent_again: int = 0              # rows an earlier run left unsettled, sent by this run
    http_statuses: dict[str, int] = field(default_factory=dict)
    normalised: dict[str, int] = field(default_factory=dict)  # column -> cells rewritten (rows/rewrite.py)
    seconds: float = 0.0
    preview: str | None = None       # a dry run's preview.jsonl


async def send_chunks(chunks: Iterator[PreparedChunk], journal: Journal, config: Config, *,
                      max_runtime_seconds: float | None = None, watch: ProgressWatch | None = None,
                      changes: ChangeFilter | None = None, run_id: str = "") -> SendResult:
    """Send every row of `chunks` that the job has not settled; stop on a signal or at
    `max_runtime_seconds`, abort on the pool's rules."""
    from .answers import AnswerPolicy
    from .client import ApiClient  # aiohttp is imported only when a run sends (not for a dry run)
    from .pool import WorkerPool
    from .ratelimit import RateLimiter

    limits = config.limits
    client = ApiClient.open(config.api, limits)
    limiter = RateLimiter(limits.rate_per_minute, limits.window_seconds, limits.burst,
                          margin=limits.window_margin_seconds)
    add_limiter = (RateLimiter(config.create_limits.rate_per_minute, config.create_limits.window_seconds,
                               limits.burst, margin=limits.window_margin_seconds)
                   if config.api.mode == "upsert" else None)
    watch = watch or ProgressWatch(Progress(None, limits.rate_per_minute))
    books = _Books(journal, watch.progress, changes)
    pool = WorkerPool(client, limiter, limits, books.answered, on_send=books.sending,
                      on_unsent=lambda p: journal.unmark_in_flight(p.row),
                      was_in_doubt=books.earlier.in_doubt.__contains__,
                      policy=AnswerPolicy(config.api.fail_on_warnings, config.api.already_enrolled == "success"),
                      add_limiter=add_limiter)
    writer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="group-commit")
    stores = [journal] + ([changes.state] if changes else [])
    background = [asyncio.create_task(flush_every(store.flush, FLUSH_SECONDS, writer, pool.abort))
                  for store in stores]
    background.append(asyncio.create_task(watch.run(pool.stats)))
    background.append(asyncio.create_task(_keep_minutes(pool, journal, run_id)))
    loop = asyncio.get_running_loop()
    remove_handlers = _on_stop_signals(loop, pool)
    timer = (loop.call_later(max_runtime_seconds, pool.stop,
                             f"--max-runtime of {max_runtime_seconds:g} s reached; run again to resume")
             if max_runtime_seconds else None)
    began = time.monotonic()
    try:
        await _feed(pool, chunks, journal, books)
    finally:
        remove_handlers()
        if timer:
            timer.cancel()
        for task in background:
            task.cancel()
        writer.shutdown(wait=True)  # a commit under way ends before the last ones (reports, close)
        await client.close()
        journal.record_minutes(run_id, pool.timeline.take(finished_only=False))  # may fail: PostgreSQL gone
    return _result(pool, books, time.monotonic() - began)


async def _keep_minutes(pool: WorkerPool, journal: Journal, run_id: str) -> None:
    """The minutes that are over go to the journal: a killed run keeps its charts."""
    while True:
        await asyncio.sleep(MINUTES_EVERY)
        try:
            journal.record_minutes(run_id, pool.timeline.take())
        except RunAborted as exc:  # PostgreSQL gone: the run stops, as for a failed commit
            pool.abort(str(exc))
            return


async def _feed(pool: WorkerPool, chunks: Iterator[PreparedChunk], journal: Journal, books: _Books) -> None:
    """Hand each chunk's unsettled rows to the pool, preparing the next chunk meanwhile."""
    pool.start()
    upcoming = asyncio.ensure_future(next_in_thread(chunks))
    try:
        while not pool.halted and (prepared := await upcoming) is not None:
            upcoming = asyncio.ensure_future(next_in_thread(chunks))
            books.normalised.update(prepared.rewritten)
            states = journal.states(prepared.rows[0], prepared.rows[-1]) if len(prepared.rows) else {}
            settled = settled_before(prepared.rows, states, books.progress)
            for outcome in prepared.outcomes:
                if outcome.row not in settled:
                    books.decided(outcome)
            skip_unchanged(prepared, settled, journal, books.progress)
            books.settled_earlier([payload.row for payload in prepared.payloads if payload.row in settled])
            for payload in unfinished(prepared.payloads, states, settled, books.earlier):
                if pool.halted:
                    break
                await pool.submit(payload)
        await pool.finish()
    finally:
        discard(upcoming)


class _Books:
    """Where each row's outcome goes: the journal, the progress, the sync state."""

    def __init__(self, journal: Journal, progress: Progress, changes: ChangeFilter | None):
        self.journal, self.progress, self.changes = journal, progress, changes
        self.earlier = EarlierRuns()
        self.normalised: Counter[str] = Counter()
        self.debug = log.isEnabledFor(logging.DEBUG)

    def decided(self, outcome: RowOutcome) -> None:
        """An outcome decided before sending (a validation error, a skip)."""
        self.journal.record(outcome)
        self.progress.count(outcome)

    def settled_earlier(self, rows: list[int]) -> None:
        """Rows an earlier run of the job settled: preparing the chunk forgot their customers in
        the --only-changed state, as for every row to send; their earlier answers decide again
        (else a resumed job's next night would send them all, unchanged)."""
        if not self.changes or not rows:
            return
        earlier = self.journal.outcomes(rows[0], rows[-1])
        for row in rows:
            outcome = earlier.get(row)
            self.changes.answered(row, outcome is not None and outcome.status is Status.SUCCESS
                                  and not outcome.api_warned)

    def sending(self, payload: Payload) -> Awaitable[None] | None:
        if payload.row in self.earlier.unsettled:
            self.earlier.unsettled.discard(payload.row)
            self.earlier.sent_again += 1
        return self.journal.mark_in_flight(payload.row)  # PostgreSQL's: the commit to wait for

    def answered(self, outcome: RowOutcome) -> None:
        self.journal.acknowledge(outcome)  # durable first: a crash after this never re-sends the row
        self.progress.count(outcome)
        if self.changes:
            self.changes.answered(outcome.row, outcome.status is Status.SUCCESS and not outcome.api_warned)
        if self.debug and outcome.status is Status.ERROR and outcome.stage:
            log.debug("row %d %s: %s %s %s", outcome.row, outcome.identifier, outcome.stage.value,
                      outcome.code, outcome.message)  # identifiers are masked by the log filter


def _result(pool: WorkerPool, books: _Books, seconds: float) -> SendResult:
    stats, earlier = pool.stats, books.earlier
    return SendResult(reason=pool.abort_reason or pool.stop_reason, aborted=pool.abort_reason is not None,
                      stopped=pool.stop_reason is not None and pool.abort_reason is None,
                      requests=stats.requests, add_requests=stats.add_requests, retries=stats.retries,
                      throttled=stats.throttled,
                      in_doubt_requests=stats.in_doubt, sent_again=earlier.sent_again,
                      http_statuses={str(k): v for k, v in sorted(stats.status_counts.items())},
                      normalised=dict(books.normalised), seconds=seconds)


async def next_in_thread(iterator: Iterator[PreparedChunk]) -> PreparedChunk | None:
    return await asyncio.get_running_loop().run_in_executor(None, next, iterator, None)


def discard(upcoming: asyncio.Future) -> None:
    """Drop a chunk prepared ahead that will not be sent (and an error met preparing it)."""
    if not upcoming.cancel() and not upcoming.cancelled():
        upcoming.exception()


def _on_stop_signals(loop: asyncio.AbstractEventLoop, pool: WorkerPool) -> Callable[[], None]:
    """SIGINT/SIGTERM stop dispatching and let requests in flight finish; a second one
    gives up on them at once (their rows stay in flight in the journal: resume is safe)."""
    def on_signal(name: str) -> None:
        if pool.halted:
            pool.cancel()
        else:
            pool.stop(f"stopped by {name}; run the same command again to resume")

    installed = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            before = signal.getsignal(sig)
            loop.add_signal_handler(sig, on_signal, sig.name)
            installed[sig] = before
        except (ValueError, RuntimeError, NotImplementedError):
            pass  # not the main thread (e.g. inside a test runner's worker): no handlers

    def remove() -> None:
        """Put back the handlers the process had (an Airflow task's SIGTERM handler, say):
        the loop's own removal would leave Python's defaults instead."""
        for sig, before in installed.items():
            loop.remove_signal_handler(sig)
            if before is not None:  # None: set outside Python, which cannot be put back
                signal.signal(sig, before)
    return remove
