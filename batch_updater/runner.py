"""`run(config, path)`: read → validate → map → send → journal → reports → RunSummary.

This is the whole product behind the CLI, the demo and the Airflow operator. Reading
and validating a chunk happens in a worker thread while the event loop sends the
previous chunk, so the file work overlaps the network work.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .config import Config
from .errors import InputError, RunAborted
from .input.columns import ColumnPlan, resolve_headers
from .input.reader import CsvInput, open_input
from .input.shards import Shard, ShardedInput
from .outcomes import RowOutcome, Status
from .output.logs import log, run_context
from .output.notify import notify
from .output.progress import LOG_INTERVAL, Progress, estimate_rows
from .output.reports import (
    ReportCounts,
    ReportPaths,
    identifier_columns,
    open_private,
    write_failure_message,
    write_private,
    write_reports,
)
from .rows.mapping import Payload
from .rows.prepare import Prepared, Screen, prepare_chunks, screen_input
from .state.jobs import INCOMPLETE, Job, job_folder, job_identity, open_job
from .state.journal import FINAL, FLUSH_SECONDS, IN_FLIGHT, Journal
from .state.sync_state import UNCHANGED, ChangeFilter, SyncState


@dataclass
class RunSummary:
    exit_code: int
    status: str                      # completed | completed_with_errors | aborted | stopped | dry_run
    input: str
    job_id: str
    rows: int
    success: int
    errors: int
    skipped: int
    not_sent: int
    validation_errors: int
    api_errors: int
    network_errors: int
    in_doubt: int                    # rows with an attempt sent and never answered (the job's)
    in_doubt_requests: int           # requests sent and never answered (timeouts, drops; the job's)
    requests: int
    retries: int
    throttled: int
    http_statuses: dict[str, int]
    started: str
    finished: str
    duration_seconds: float
    achieved_rate_per_minute: float
    rate_limit_per_minute: int
    reason: str | None
    reports: dict[str, str]
    config: dict[str, Any] = field(default_factory=dict)
    resumed: bool = False            # continued a job an earlier run left unfinished
    to_send_again: int = 0           # rows the next run of the job sends again (not sent, run-level failures)
    sent_again: int = 0              # rows an earlier run of the job left unsettled, sent by this run
    replayed: bool = False           # the job had finished: nothing sent, its summary repeated
    shard: str | None = None         # "K/N" when the run kept only one shard's customers

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)


def run(config: Config, input_path: str | Path, *, dry_run: bool = False, restart: bool = False,
        retry_failed: bool = False, max_runtime_seconds: float | None = None, shard: Shard | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        progress_every: float = LOG_INTERVAL) -> RunSummary:
    """Apply every row of `input_path`; raise BatchUpdaterError only for a whole-run failure.

    A run continues its job where an earlier run stopped: rows settled by an earlier run
    (a success, a skip, a validation error, the API's refusal of the row) keep their
    outcome; rows not sent, or failed for the run's reason (credentials, network, 5xx,
    a stop), are sent again. A finished job replays its summary unless `restart`, or
    `retry_failed`, which sends its rows that failed at the API again. `shard` keeps only
    the rows of one shard; `on_progress` is called every `progress_every` seconds.
    """
    started = datetime.now(UTC)
    source = open_input(input_path, config.input)
    plan = resolve_headers(source.headers, dict(config.columns), str(source.path))
    if shard:
        source = ShardedInput(source, plan, config, shard)
    screen = screen_input(source, plan, config, dry_run=dry_run)  # max_invalid, duplicates
    if dry_run:
        return _dry_run(config, source, plan, started, screen)
    job = open_job(config, source.path, restart=restart, shard=shard)
    try:
        reopened = job.journal.reopen_failed() if retry_failed else 0
        if job.finished and not reopened:
            return _replay(job)
        job.journal.set_meta(status="running")
        folder = _run_folder(job.folder, "run", started)
        run_context.set({"run_id": folder.name, "job_id": job.id})
        resuming = job.resuming or job.finished
        log.info("%s %s: job %s, reports in %s", "resuming" if resuming else "starting",
                 source.path, job.id, folder)
        total = estimate_rows(source)
        progress = Progress(total // shard.count if total and shard else total, _limit_per_minute(config))
        watch = ProgressWatch(progress, on_progress, progress_every)
        with SyncState(config.state_path) as state:
            changes = ChangeFilter(state, only_changed=config.state.only_changed)
            stats = asyncio.run(_send(prepare_chunks(source, plan, config, screen, changes),
                                      job.journal, config, max_runtime_seconds, watch, changes))
        stats["resumed"] = resuming
        stats["shard"] = str(shard) if shard else None
        stats["in_doubt_attempts"] += int(job.journal.meta().get("in_doubt_requests", 0))
        job.journal.set_meta(in_doubt_requests=str(stats["in_doubt_attempts"]))
        summary = _finish(config, source, job.id, job.journal, folder, stats, started)
        job.journal.set_meta(status=_job_status(summary), summary=summary.to_json().decode())
        _log_end(summary)
        notify(config, summary)
        return summary
    finally:
        job.close()


def _job_status(summary: RunSummary) -> str:
    """`incomplete`: the run finished, but some rows failed for the run's reason (network,
    5xx): the next run of the job sends them again rather than replaying the summary."""
    if summary.exit_code in (3, 4):
        return "aborted" if summary.exit_code == 3 else "stopped"
    return INCOMPLETE if summary.to_send_again else "finished"


def _dry_run(config: Config, source: CsvInput, plan: ColumnPlan, started: datetime,
             screen: Screen | None = None) -> RunSummary:
    job_id = job_identity(source.path, config)
    folder = _run_folder(job_folder(config, source.path, job_id), "dry-run", started)
    with Journal(folder / "journal.sqlite") as journal:
        stats = asyncio.run(_preview(prepare_chunks(source, plan, config, screen), journal,
                                     folder / "preview.jsonl", config))
        return _finish(config, source, job_id, journal, folder, stats, started, dry_run=True)


def _replay(job: Job) -> RunSummary:
    stored = orjson.loads(job.journal.meta()["summary"])
    stored["replayed"] = True
    return RunSummary(**stored)


def _finish(config: Config, source: CsvInput, job_id: str, journal: Journal, folder: Path,
            stats: dict[str, Any], started: datetime, dry_run: bool = False) -> RunSummary:
    journal.flush()
    journal.give_up_unanswered()  # before the reports, which show such rows in doubt
    paths = ReportPaths.in_folder(folder)
    mask = identifier_columns(source.headers, config.columns) if config.output.mask_identifiers else ()
    try:
        counts = write_reports(paths, source.headers, source.chunks(), journal, mask=mask)
        summary = _summary(config, source, job_id, paths, counts, stats, started, dry_run)
        write_private(paths.summary, summary.to_json())
    except OSError as exc:  # a full disk: the journal is intact, a rerun writes the reports
        raise RunAborted(write_failure_message(folder, exc)) from None
    return summary


def _run_folder(job_folder: Path, kind: str, started: datetime) -> Path:
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    for n in range(1000):
        folder = job_folder / (f"{kind}-{stamp}" + (f"-{n}" if n else ""))
        try:
            job_folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            folder.mkdir(mode=0o700)
            return folder
        except FileExistsError:
            continue
        except OSError as exc:
            raise InputError(f"cannot create the output folder {folder} ({exc.strerror});"
                             " choose another with --output-dir") from None
    raise InputError(f"too many runs in {job_folder} this second")


async def _next_in_thread(iterator: Iterator[Prepared]) -> Prepared | None:
    return await asyncio.get_running_loop().run_in_executor(None, next, iterator, None)


def _discard(upcoming: asyncio.Future) -> None:
    """Drop a chunk prepared ahead that will not be sent (and an error met preparing it)."""
    if not upcoming.cancel() and not upcoming.cancelled():
        upcoming.exception()


async def _preview(chunks: Iterator[Prepared], journal: Journal, path: Path,
                   config: Config) -> dict[str, Any]:
    with open_private(path, "wb") as out:
        while (prepared := await _next_in_thread(chunks)) is not None:
            for outcome in prepared.outcomes:
                journal.record(outcome)
            for p in prepared.payloads:
                out.write(orjson.dumps({"row": p.row, "query": p.lookup.query(config.api.use_async),
                                        "body": p.body}) + b"\n")
                journal.record(RowOutcome(p.row, Status.SKIPPED, message="dry run: valid, not sent",
                                          identifier=p.lookup.identifier_value))
    return {"reason": None, "preview": str(path)}


async def _send(chunks: Iterator[Prepared], journal: Journal, config: Config,
                max_runtime_seconds: float | None = None,
                watch: ProgressWatch | None = None,
                changes: ChangeFilter | None = None) -> dict[str, Any]:
    from .send.client import ApiClient
    from .send.pool import WorkerPool
    from .send.ratelimit import RateLimiter

    limits = config.limits
    client = ApiClient.open(config.api, limits)
    limiter = RateLimiter(limits.rate_per_minute, limits.window_seconds, limits.burst,
                          margin=limits.window_margin_seconds)
    earlier = EarlierRuns()
    watch = watch or ProgressWatch(Progress(None, limits.rate_per_minute))

    debug = log.isEnabledFor(logging.DEBUG)

    def settle(outcome: RowOutcome) -> None:
        journal.record(outcome)
        watch.progress.count(outcome)

    def answered(outcome: RowOutcome) -> None:
        journal.acknowledge(outcome)  # durable first: a crash after this never re-sends the row
        watch.progress.count(outcome)
        if changes:
            changes.settled(outcome.row, outcome.status is Status.SUCCESS)
        if debug and outcome.status is Status.ERROR:
            log.debug("row %d %s: %s %s %s", outcome.row, outcome.identifier, outcome.stage.value,
                      outcome.code, outcome.message)  # identifiers are masked by the log filter

    def sending(payload: Payload) -> None:
        journal.mark_in_flight(payload.row)
        if payload.row in earlier.unsettled:
            earlier.unsettled.discard(payload.row)
            earlier.sent_again += 1

    pool = WorkerPool(client, limiter, limits, answered, on_send=sending,
                      on_unsent=lambda p: journal.unmark_in_flight(p.row),
                      was_in_doubt=earlier.in_doubt.__contains__)
    writer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="group-commit")
    stores = [journal] + ([changes.state] if changes else [])
    flushers = [asyncio.create_task(_flush_every(store.flush, FLUSH_SECONDS, writer)) for store in stores]
    reporter = asyncio.create_task(watch.run(pool.stats))
    loop = asyncio.get_running_loop()
    remove_handlers = _on_stop_signals(loop, pool)
    timer = (loop.call_later(max_runtime_seconds, pool.stop,
                             f"--max-runtime of {max_runtime_seconds:g} s reached; run again to resume")
             if max_runtime_seconds else None)
    began = time.monotonic()
    pool.start()
    upcoming = asyncio.ensure_future(_next_in_thread(chunks))
    try:
        while not pool.halted and (prepared := await upcoming) is not None:
            # the next chunk is validated and mapped while this one is sent (no stall between chunks)
            upcoming = asyncio.ensure_future(_next_in_thread(chunks))
            states = journal.states(prepared.rows[0], prepared.rows[-1]) if len(prepared.rows) else {}
            settled = _settled_before(prepared.rows, states, watch.progress)
            for outcome in prepared.outcomes:
                if outcome.row not in settled:
                    settle(outcome)
            _skip_unchanged(prepared, settled, journal, watch.progress)
            for payload in _unfinished(prepared.payloads, states, settled, earlier):
                if pool.halted:
                    break
                await pool.submit(payload)
        await pool.finish()
    finally:
        _discard(upcoming)
        remove_handlers()
        if timer:
            timer.cancel()
        for flusher in flushers:
            flusher.cancel()
        writer.shutdown(wait=True)  # a commit under way ends before the last ones (_finish, close)
        reporter.cancel()
        await client.close()
    elapsed = time.monotonic() - began
    stats = pool.stats
    return {"reason": pool.abort_reason or pool.stop_reason, "aborted": pool.abort_reason is not None,
            "stopped": pool.stop_reason is not None and pool.abort_reason is None,
            "requests": stats.requests, "retries": stats.retries, "throttled": stats.throttled,
            "in_doubt_attempts": stats.in_doubt, "sent_again": earlier.sent_again,
            "http_statuses": {str(k): v for k, v in sorted(stats.status_counts.items())},
            "sending_seconds": elapsed}


def _settled_before(rows: Sequence[int], states: dict[int, str], progress: Progress) -> set[int]:
    """The chunk's rows an earlier run of the job settled (they keep that outcome: none is
    sent, recorded or skipped again), counted as done by earlier runs."""
    settled = {row for row, state in states.items() if state in FINAL}
    if settled:  # a resumed run; `states` may name rows of other shards, so count the chunk's own
        progress.count_earlier(sum(1 for row in rows if row in settled))
    return settled


@dataclass
class EarlierRuns:
    """What the send loop learns of the job's earlier runs, row by row."""

    in_doubt: set[int] = field(default_factory=set)  # sent by one of them, never answered
    unsettled: set[int] = field(default_factory=set)  # left for this run to send, not sent yet
    sent_again: int = 0  # of those, the rows this run sent


def _unfinished(payloads: list[Payload], states: dict[int, str], settled: set[int],
                earlier: EarlierRuns) -> Iterator[Payload]:
    """The payloads to send; notes those an earlier run sent without getting an answer."""
    for payload in payloads:
        if payload.row in settled:
            continue
        state = states.get(payload.row)
        if state is not None:
            earlier.unsettled.add(payload.row)
            if state == IN_FLIGHT:
                earlier.in_doubt.add(payload.row)
        yield payload


def _skip_unchanged(prepared: Prepared, settled: set[int], journal: Journal,
                    progress: Progress) -> None:
    """Journal the chunk's unchanged rows as runs of consecutive rows (most rows of a
    nightly export: a record per row would cost more than everything else they need)."""
    unchanged = prepared.unchanged
    if unchanged is None or not unchanged.any():
        return
    if settled:
        unchanged = unchanged & np.fromiter((row not in settled for row in prepared.rows),
                                            dtype=bool, count=len(unchanged))
    numbers = np.asarray(prepared.rows)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], unchanged.view(np.int8), [0]))))
    starts, ends = edges[::2], edges[1::2] - 1  # positions of each run's first and last row
    journal.record_skipped(zip(numbers[starts].tolist(), numbers[ends].tolist()), UNCHANGED)
    skipped = int(unchanged.sum())
    progress.done += skipped
    progress.skipped += skipped


def _on_stop_signals(loop: asyncio.AbstractEventLoop, pool) -> Callable[[], None]:
    """SIGINT/SIGTERM stop dispatching and let requests in flight finish; a second one
    gives up on them at once (their rows stay in flight in the journal: resume is safe)."""
    def on_signal(name: str) -> None:
        if pool.halted:
            pool.cancel()
        else:
            pool.stop(f"stopped by {name}; run the same command again to resume")

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig.name)
            installed.append(sig)
        except (ValueError, RuntimeError, NotImplementedError):
            pass  # not the main thread (e.g. inside a test runner's worker): no handlers

    def remove() -> None:
        for sig in installed:
            loop.remove_signal_handler(sig)
    return remove


class ProgressWatch:
    """Hands the progress figures to an observer at a fixed interval while rows are sent."""

    def __init__(self, progress: Progress, observer: Callable[[Progress], None] | None = None,
                 every: float = LOG_INTERVAL):
        self.progress = progress
        self.observer = observer or _log_progress
        self.every = every

    async def run(self, stats) -> None:
        while True:
            await asyncio.sleep(self.every)
            self.progress.retries = stats.retries
            self.progress.requests = stats.requests
            self.observer(self.progress)


def _log_progress(progress: Progress) -> None:
    log.info("progress: %s", progress.line())


def _limit_per_minute(config: Config) -> int:
    limits = config.limits
    return round(limits.rate_per_minute * 60 / limits.window_seconds)


def _log_end(summary: RunSummary) -> None:
    level = logging.INFO if summary.exit_code in (0, 1) else logging.WARNING
    log.log(level, "%s: %d rows, %d updated, %d errors, %d skipped, %d not sent; exit %d%s",
            summary.status, summary.rows, summary.success, summary.errors, summary.skipped,
            summary.not_sent, summary.exit_code, f" ({summary.reason})" if summary.reason else "")


async def _flush_every(flush: Callable[[], None], seconds: float, writer: ThreadPoolExecutor) -> None:
    """Group commits (of the journal; of the state store), off the event loop's thread:
    SQLite runs there without the GIL while the loop goes on sending, and the loop never
    waits for a commit. Each store's commits run one after another, in order; the two
    stores' side by side, so a long state store write never holds the journal's back."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(seconds)
        try:
            await loop.run_in_executor(writer, _flush_and_trim, flush)
        except Exception as exc:  # e.g. a disk full for a moment: the rows wait for the next commit
            log.warning("a group commit failed (%s); trying again", exc)


def _flush_and_trim(flush: Callable[[], None]) -> None:
    """Each writer thread allocates from a glibc arena of its own, where a commit's large
    buffers (JSON texts of thousands of keys, SQLite's sorter) stay resident once freed;
    malloc_trim hands them back (about 3 µs when there is nothing to hand back). Measured
    with the state store's remembers written 50,000 at a time: a full run of 1M rows
    peaked at 280 MB without it, 199 MB with it (195 MB with commits on the event loop)."""
    flush()
    _malloc_trim(0)


def _find_malloc_trim() -> Callable[[int], object]:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # glibc (Linux); elsewhere there is nothing to do
    except (OSError, AttributeError):
        return lambda pad: 0


_malloc_trim = _find_malloc_trim()


def _exit_code(counts: ReportCounts, stats: dict[str, Any]) -> tuple[int, str]:
    if stats.get("aborted"):
        return 3, "aborted"
    if stats.get("stopped"):
        return 4, "stopped"
    if counts.error:
        return 1, "completed_with_errors"
    return 0, "completed"


def _summary(config: Config, source: CsvInput, job_id: str, paths: ReportPaths, counts: ReportCounts,
             stats: dict[str, Any], started: datetime, dry_run: bool) -> RunSummary:
    finished = datetime.now(UTC)
    exit_code, status = _exit_code(counts, stats)
    if dry_run:
        status = "dry_run"
    seconds = stats.get("sending_seconds", 0.0)
    requests = stats.get("requests", 0)
    report_paths = {"success": str(paths.success), "errors": str(paths.errors),
                    "skipped": str(paths.skipped), "summary": str(paths.summary)}
    if stats.get("preview"):
        report_paths["preview"] = stats["preview"]
    return RunSummary(
        exit_code=exit_code, status=status, input=str(source.path), job_id=job_id, rows=counts.rows,
        success=counts.success, errors=counts.error, skipped=counts.skipped,
        not_sent=counts.not_sent, validation_errors=counts.validation, api_errors=counts.api,
        network_errors=counts.network, in_doubt=counts.in_doubt,
        in_doubt_requests=stats.get("in_doubt_attempts", 0), requests=requests,
        retries=stats.get("retries", 0), throttled=stats.get("throttled", 0),
        http_statuses=stats.get("http_statuses", {}), started=started.isoformat(timespec="seconds"),
        finished=finished.isoformat(timespec="seconds"),
        duration_seconds=round((finished - started).total_seconds(), 3),
        achieved_rate_per_minute=round(requests / seconds * 60, 1) if seconds > 0 else 0.0,
        rate_limit_per_minute=_limit_per_minute(config), reason=stats.get("reason"),
        reports=report_paths, config=config.public_dict(), resumed=stats.get("resumed", False),
        shard=stats.get("shard"), to_send_again=counts.to_send_again, sent_again=stats.get("sent_again", 0))
