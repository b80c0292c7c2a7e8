"""The asyncio worker pool: paced sending, retries, one customer at a time, abort rules.

Payloads enter through a bounded queue (so memory stays flat). A worker that takes a
customer also takes every later row of that customer that arrives while it is busy,
in file order, so two requests for one customer are never in flight together.
Every row handed to `submit` comes back through `on_outcome` exactly once, unless
the run halts (abort or stop) before its first request goes out: such rows get no
outcome and are reported as not sent. A row halted between attempts comes back with
its last attempt's failure, marked `rerun` (the next run of the job sends it again).

Each request takes its slot from the shared RateLimiter right before it goes out (the
client calls the pool's pacing hook after any OAuth renewal), so the limiter's start
times stay close to the arrival times the API counts. A 429 pauses and slows the whole
pool; 401/403, a wrong URL (FATAL), rows failing after every retry and a host that
cannot be reached at the start of a run abort the run.

Upsert mode: a row the update cannot find (8015) is added (POST /v2/customers) by the
same worker, paced by the add limiter (the Add Customer API's own budget); an add that
finds the customer exists (8006: created meanwhile, or by an earlier attempt whose
answer was lost) sends the update again, once. The worker holds the customer all along,
so one customer never has two requests in flight, across both APIs.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from ..config import LimitSettings
from ..errors import RunAborted
from ..outcomes import CREATED, UPDATED, RowOutcome, Stage, Status
from ..rows.payload import Payload
from .answers import AnswerPolicy, Attempt, Verdict
from .backoff import retry_delay
from .client import ApiClient
from .ratelimit import RateLimiter
from .timeline import Timeline

RETRYABLE = frozenset({Verdict.THROTTLED, Verdict.RETRY, Verdict.NETWORK})
# Connection failures before the API ever answered that abort the run: the host is
# wrong or down, and spending every row's retries on it would take hours.
UNREACHABLE_TO_ABORT = 3
DEFAULT_POLICY = AnswerPolicy()
RERUN_HINT = "then run the same command again: rows that failed this way, or were not sent, are sent again"


class _Halted(Exception):
    """Raised by the pacing hook when the run halted while a worker waited for a slot."""


NOT_FOUND = "8015"       # the update's lookup found no customer: upsert adds it
ALREADY_EXISTS = "8006"  # the add found the customer: upsert updates it instead


@dataclass
class PoolStats:
    requests: int = 0        # every request, adds included
    add_requests: int = 0    # upsert mode: POST /v2/customers
    retries: int = 0
    throttled: int = 0
    in_doubt: int = 0
    status_counts: dict[int, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Tries:
    """One row's attempts so far, across both APIs."""

    in_doubt: bool                 # some attempt (this run's, or an earlier run's) went unanswered
    attempts: int = 0
    tries: int = 0                 # attempts of the current kind: max_attempts is per kind
    reached: bool = False          # some request of this run for the row got through to the API
    add: bool = False              # the current kind: an update, or (upsert) an add
    added: bool = False            # an add was tried: a second 8015 is final
    updated_again: bool = False    # 8006 sent the update again: a second 8006 is final
    last: Attempt | None = None
    note: str = ""                 # a warning of ours for its success (an enrolment left out)
    sent_at: float = 0.0           # when the current request got its slot (time.monotonic)

    def took(self, attempt: Attempt) -> None:
        self.attempts += 1
        self.tries += 1
        self.reached = self.reached or not attempt.unreachable
        self.in_doubt = self.in_doubt or attempt.in_doubt
        self.last = attempt

    def switch(self, add: bool) -> None:
        self.add, self.tries = add, 0
        if add:
            self.added = True
        else:
            self.updated_again = True


class WorkerPool:
    def __init__(self, client: ApiClient, limiter: RateLimiter, limits: LimitSettings,
                 on_outcome: Callable[[RowOutcome], None], *,
                 rng: random.Random | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 on_send: Callable[[Payload], Awaitable[None] | None] = lambda payload: None,
                 on_unsent: Callable[[Payload], None] = lambda payload: None,
                 was_in_doubt: Callable[[int], bool] = lambda row: False,
                 policy: AnswerPolicy = DEFAULT_POLICY, add_limiter: RateLimiter | None = None):
        """`add_limiter` (the Add Customer API's budget) turns upsert mode on."""
        self._client = client
        self._limiter = limiter
        self._limiters = {False: limiter, True: add_limiter or limiter}
        self._upsert = add_limiter is not None
        self._limits = limits
        self._on_outcome = on_outcome
        # the journal marks the row in flight right before each request (PostgreSQL's journal
        # returns its commit, which the request waits for)
        self._on_send = on_send
        self._on_unsent = on_unsent  # ...and forgets the mark when that request did not go out
        self._was_in_doubt = was_in_doubt  # in flight when an earlier run stopped
        self._policy = policy
        self._rng = rng or random.Random()
        self._sleep = sleep
        # (payload, its customer key) per customer taken; None tells a worker to stop
        self._queue: asyncio.Queue[tuple[Payload, str] | None] = asyncio.Queue(maxsize=limits.concurrency * 4)
        # A full queue wakes the submitter once it is half empty, not at every row taken.
        self._room = asyncio.Event()
        self._low_water = limits.concurrency * 2
        self._waiting: dict[str, deque[Payload]] = {}  # customers in a worker's hands
        self._workers: list[asyncio.Task] = []
        self._auth_failures = 0
        self._fatal_answers = 0
        self._failure_streak = 0
        self._answered = False  # the API answered at least once in this run
        self._unreachable = 0
        self.stats = PoolStats()
        self.timeline = Timeline()
        self.abort_reason: str | None = None
        self.stop_reason: str | None = None
        self._interruptible: set[asyncio.Task] = set()  # tasks waiting, not sending
        self._cancelled = False

    @property
    def halted(self) -> bool:
        return self.abort_reason is not None or self.stop_reason is not None

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._work()) for _ in range(self._limits.concurrency)]

    async def submit(self, payload: Payload) -> None:
        key = payload.lookup.customer_key
        held = self._waiting.get(key)
        if held is not None:
            held.append(payload)  # the worker holding this customer sends it next
            return
        self._waiting[key] = deque()
        while self._queue.full():
            self._room.clear()
            if not await self._unless_halted(self._room.wait()):  # workers may be gone once halted
                return
        if not self.halted:
            self._queue.put_nowait((payload, key))

    async def finish(self) -> None:
        """Wait for every submitted row, then stop the workers (or for their cancellation)."""
        closing = asyncio.ensure_future(self._close_queue())
        results = await asyncio.gather(*self._workers, return_exceptions=True)
        closing.cancel()
        for result in results:
            if isinstance(result, Exception):  # a bug, not a cancellation: surface it
                raise result

    async def _close_queue(self) -> None:
        for _ in self._workers:
            await self._queue.put(None)

    def stop(self, reason: str) -> None:
        """Stop dispatching (signal, --max-runtime): in-flight requests complete."""
        self.stop_reason = self.stop_reason or reason
        self._interrupt_waits()

    def abort(self, reason: str) -> None:
        self.abort_reason = self.abort_reason or reason
        self._interrupt_waits()

    def cancel(self) -> None:
        """Give up on requests still in flight: their rows stay in flight in the journal."""
        self._cancelled = True
        for worker in self._workers:
            worker.cancel()

    async def _unless_halted(self, waiting: Awaitable[object]) -> bool:
        """Wait for a pacing slot, a backoff or queue space; False when the run halts first.

        A halt cancels the waiting tasks (cheaper than racing every wait against an event).
        """
        if self.halted:
            getattr(waiting, "close", lambda: None)()
            return False
        task = asyncio.current_task()
        assert task is not None  # always called from a worker's or the submitter's task
        self._interruptible.add(task)
        try:
            await waiting
            return True
        except asyncio.CancelledError:
            if self.halted and not self._cancelled:
                task.uncancel()  # our own halt, not a cancellation from outside
                return False
            raise
        finally:
            self._interruptible.discard(task)

    def _interrupt_waits(self) -> None:
        for task in list(self._interruptible):
            task.cancel()

    async def _work(self) -> None:
        try:
            await self._take_customers()
        except Exception as exc:
            # A bug, not a row's failure: halt, so that no submitter waits for room that no
            # worker will make any more; finish() raises the exception.
            self.abort(f"internal error in a worker: {exc!r}")
            raise

    async def _take_customers(self) -> None:
        while (taken := await self._queue.get()) is not None:
            if not self._room.is_set() and self._queue.qsize() <= self._low_water:
                self._room.set()
            first, key = taken
            payload: Payload | None = first
            while payload is not None:
                outcome = None if self.halted else await self._deliver(payload)
                if outcome is not None:
                    self._on_outcome(outcome)
                pending = self._waiting[key]
                payload = pending.popleft() if pending else None
            del self._waiting[key]

    async def _deliver(self, payload: Payload) -> RowOutcome | None:
        row = _Tries(in_doubt=self._was_in_doubt(payload.row))
        while True:
            try:
                attempt = await self._client.send(payload, pace=functools.partial(self._pace, payload, row),
                                                  add=row.add)
            except _Halted:  # no request went out for this attempt
                return self._halted(payload, row)
            except RunAborted as exc:  # e.g. the OAuth key was refused: nothing was sent
                self.abort(str(exc))
                self._on_unsent(payload)
                return self._halted(payload, row)
            row.took(attempt)
            self._count(attempt, row)
            if attempt.verdict is Verdict.SUCCESS:
                self._limiters[row.add].succeeded()
                self._auth_failures = self._fatal_answers = self._failure_streak = 0
                return _outcome(payload, self._policy.judged(attempt), row)
            if self._upsert and (kind := _next_kind(attempt, row)) is not None:
                row.switch(add=kind)
                continue
            if (rest := self._policy.without_enrolment(payload, attempt, row.in_doubt)) is not None:
                (payload, row.note), row.tries = rest, 0
                if not payload.body:  # the enrolment was all the row had to change
                    return _outcome(payload, Attempt(Verdict.SUCCESS, attempt.http_status), row)
                continue
            if attempt.verdict is Verdict.AUTH:
                return self._auth_failed(payload, attempt, row)
            if attempt.verdict is Verdict.FATAL:
                return self._fatal(payload, attempt, row)
            if attempt.unreachable:
                self._unreachable_at_start(attempt)
            if attempt.verdict in RETRYABLE:
                if self.halted:  # its retries are cut short by the halt, not spent
                    return self._halted(payload, row)
                if row.tries < self._limits.max_attempts:
                    if not await self._unless_halted(self._back_off(attempt, row)):
                        return self._halted(payload, row)
                    self.stats.retries += 1
                    self.timeline.retry()
                    continue
            return self._failed(payload, attempt, row)

    def _pace(self, payload: Payload, row: _Tries) -> Awaitable[None] | None:
        """A slot from the kind's limiter, right before a request goes out: None when one
        was free at once (nobody queues for one), else an awaitable that waits for it.
        Either raises _Halted when the run halted first. With the slot, the row is
        marked in flight: the journal knows of every request that may have gone out."""
        if self.halted:
            raise _Halted
        limiter = self._limiters[row.add]
        if limiter.try_acquire():
            marked = self._on_send(payload)
            if marked is not None:
                return self._after_mark(marked, limiter, row)
            row.sent_at = time.monotonic()
            return None
        return self._wait_for_slot(payload, limiter, row)

    async def _wait_for_slot(self, payload: Payload, limiter: RateLimiter, row: _Tries) -> None:
        if not await self._unless_halted(limiter.acquire()) or self.halted:
            raise _Halted
        marked = self._on_send(payload)
        if marked is not None:
            await self._after_mark(marked, limiter, row)
            return
        row.sent_at = time.monotonic()

    @staticmethod
    async def _after_mark(marked: Awaitable[None], limiter: RateLimiter, row: _Tries) -> None:
        """A mark committed by another thread (PostgreSQL): the request goes when it is."""
        start = limiter.last_start
        await marked  # a failed mark raises RunAborted: the request does not go out
        limiter.went_late(start)
        row.sent_at = time.monotonic()

    def _halted(self, payload: Payload, row: _Tries) -> RowOutcome | None:
        """A row the run halted on: None (not sent) when none of this run's requests for
        it reached the API, else its last attempt's failure, for the next run to send again."""
        if not row.reached and not row.in_doubt:
            self._on_unsent(payload)
            return None
        if row.last is None:  # an earlier run's attempt went unanswered: still in doubt
            return None
        return replace(_outcome(payload, row.last, row), rerun=True)

    def _unreachable_at_start(self, attempt: Attempt) -> None:
        if self._answered:
            return  # the API answered before: the failure streak rule applies
        self._unreachable += 1
        if self._unreachable >= UNREACHABLE_TO_ABORT:
            self.abort(f"cannot reach the API: {attempt.message.removeprefix('not sent: ')};"
                       f" check [api] base_url, DNS and the network (firewall, proxy), {RERUN_HINT}")

    async def _back_off(self, attempt: Attempt, row: _Tries) -> None:
        delay = retry_delay(row.tries, attempt.retry_after, rng=self._rng,
                            base=self._limits.backoff_base_seconds, cap=self._limits.backoff_cap_seconds)
        if attempt.verdict is Verdict.THROTTLED:
            # The whole pool slows down together (on that API's budget), not each worker on its own.
            limiter = self._limiters[row.add]
            limiter.throttled()
            limiter.pause(delay)
        await self._sleep(delay)

    def _auth_failed(self, payload: Payload, attempt: Attempt, row: _Tries) -> RowOutcome:
        self._auth_failures += 1
        if self._auth_failures >= self._limits.auth_failures_to_abort:
            self.abort(f"the API refused the credentials {self._auth_failures} times in a row"
                       f" (HTTP {attempt.http_status}: {attempt.message or 'authentication failed'});"
                       f" check [api] username and the password (BATCH_UPDATER_PASSWORD or [api] password_file),"
                       f" {RERUN_HINT}")
        return _outcome(payload, attempt, row)

    def _fatal(self, payload: Payload, attempt: Attempt, row: _Tries) -> RowOutcome:
        self._fatal_answers += 1
        if self._fatal_answers >= self._limits.auth_failures_to_abort:
            self.abort(f"the API answered {self._fatal_answers} rows in a row with {attempt.message},"
                       " which no row can get past; check [api] base_url (the cluster's host, e.g."
                       f" https://eu.api.capillarytech.com), {RERUN_HINT}")
        return _outcome(payload, attempt, row)

    def _failed(self, payload: Payload, attempt: Attempt, row: _Tries) -> RowOutcome:
        if attempt.verdict in RETRYABLE:
            self._failure_streak += 1
            if self._failure_streak >= self._limits.consecutive_failures_to_abort:
                self.abort(f"the API looks down: {self._failure_streak} rows in a row failed after"
                           f" {self._limits.max_attempts} attempts (last: {attempt.message});"
                           f" wait for it to recover, {RERUN_HINT}")
        else:
            self._failure_streak = self._fatal_answers = 0
        return _outcome(payload, attempt, row)

    def _count(self, attempt: Attempt, row: _Tries) -> None:
        counts = self.stats.status_counts
        if attempt.http_status is not None:
            self._answered = True
        if attempt.renewed:  # the 401 that made the client renew its token
            self.stats.requests += 1
            counts[401] = counts.get(401, 0) + 1
            self.timeline.request(row.sent_at, 401, None, row.add)
        if not attempt.sent:
            return
        self.stats.requests += 1
        self.stats.add_requests += row.add
        now = time.monotonic()
        self.timeline.request(now, attempt.http_status, now - row.sent_at, row.add)
        if attempt.verdict is Verdict.THROTTLED:
            self.stats.throttled += 1
        if attempt.in_doubt:
            self.stats.in_doubt += 1
        status = attempt.http_status or 0
        counts[status] = counts.get(status, 0) + 1


def _next_kind(attempt: Attempt, row: _Tries) -> bool | None:
    """Upsert: the kind of request to send next (True: an add), or None to go on as usual.
    Each switch happens at most once per row, so a row never loops between the APIs."""
    if attempt.verdict is not Verdict.BUSINESS:
        return None
    if not row.add and attempt.code == NOT_FOUND and not row.added:
        return True
    if row.add and attempt.code == ALREADY_EXISTS and not row.updated_again:
        return False
    return None


def _outcome(payload: Payload, attempt: Attempt, row: _Tries) -> RowOutcome:
    identifier = payload.lookup.identifier_value
    warnings = attempt.warnings  # ours, if any, first
    if row.note:
        warnings = f"{row.note} | {warnings}" if warnings else row.note
    if attempt.verdict is Verdict.SUCCESS:
        return RowOutcome(payload.row, Status.SUCCESS, None, "", "", attempt.http_status, row.attempts,
                          attempt.customer_id, warnings, identifier, row.in_doubt,
                          action=CREATED if row.add else UPDATED, api_warned=bool(attempt.warnings))
    if attempt.verdict is Verdict.NETWORK:
        stage = Stage.NETWORK
    else:
        stage = Stage.CREATE if row.add else Stage.API
    return RowOutcome(payload.row, Status.ERROR, stage, attempt.code, attempt.message,
                      attempt.http_status, row.attempts, "", warnings, identifier, row.in_doubt,
                      rerun=attempt.verdict is not Verdict.BUSINESS)


