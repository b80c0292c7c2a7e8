"""`run(config, path)`: the whole product behind the CLI, the demo and the Airflow operator.

It only orchestrates the stages, top to bottom:

    input (open the file, resolve its headers, keep one shard)
    → rows (validate and map each chunk to payloads: rows.prepare)
    → state (open the job: its journal says what earlier runs settled)
    → send (the send loop and the worker pool: send.loop)
    → output (reports from the input and the journal, summary.json, notification)
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from .config import Config
from .errors import BatchUpdaterError, InputError, RunAborted
from .input.columns import ColumnPlan, resolve_headers
from .input.reader import open_input
from .input.shards import Shard, ShardedInput
from .input.source import Source
from .input.stdin import STDIN, spooled_stdin
from .outcomes import RowOutcome, Status
from .output.logs import log, run_context
from .output.progress import LOG_INTERVAL, Progress, ProgressWatch
from .output.publish import job_name, metrics_while_running, publish, publish_metrics
from .output.reports import (
    ReportPaths,
    identifier_columns,
    open_private,
    write_failure_message,
    write_private,
    write_reports,
)
from .output.upload import upload_after_failure, upload_run
from .rows.org_fields import check_org_fields
from .rows.prepare import PreparedChunk, PrePassFindings, prepare_chunks, screen_input
from .send.loop import SendResult, next_in_thread, send_chunks
from .state.jobs import LATEST_LINK, Job, JobStatus, job_folder, job_identity, link_latest
from .state.journal import Journal
from .state.stores import open_job_state, open_sync_state
from .state.sync_state import ChangeFilter
from .storage import Origin, is_url
from .summary import RunFacts, RunSummary, add_limit_per_minute, limit_per_minute, log_end, summarise

if TYPE_CHECKING:
    from .input.remote import RemoteInput

__all__ = ["RunSummary", "run"]


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
    try:
        return _run(config, input_path, started, dry_run=dry_run, restart=restart, retry_failed=retry_failed,
                    max_runtime_seconds=max_runtime_seconds, shard=shard, on_progress=on_progress,
                    progress_every=progress_every)
    except BatchUpdaterError as exc:  # the metrics say that the night failed, and how
        shown = STDIN if str(input_path) == STDIN else str(input_path)
        publish_metrics(config, {"exit_code": exc.exit_code, "started": started.isoformat(timespec="seconds")},
                        job_name(config, shown))
        raise


def _run(config: Config, input_path: str | Path, started: datetime, *, dry_run: bool, restart: bool,
         retry_failed: bool, max_runtime_seconds: float | None, shard: Shard | None,
         on_progress: Callable[[Progress], None] | None, progress_every: float) -> RunSummary:
    with _input_file(input_path, config) as (path, remote):
        source: Source = open_input(path, config.input, remote.opener if remote else None)
        origin = remote.origin if remote else None
        piped = str(input_path) == STDIN
        shown = STDIN if piped else origin.url if origin else str(source.path)  # summary.json's "input"
        named = "standard input" if piped else shown  # in messages
        plan = resolve_headers(source.headers, dict(config.columns), named)
        check_org_fields(plan, config.api, named)
        _check_row_count(source, config.input.min_rows, named)
        if shard:
            source = ShardedInput(source, plan, config, shard)
        screen = screen_input(source, plan, config, dry_run=dry_run)  # max_invalid, duplicates
        if dry_run:
            return _dry_run(config, source, plan, RunFacts(shown, "", started, dry_run=True), screen, origin)
        job = open_job_state(config, source.path, restart=restart, shard=shard, origin=origin)
        try:
            reopened = job.journal.reopen_failed() if retry_failed else 0
            if job.finished and not reopened:
                replayed = RunSummary.replayed_from(job.journal.meta()["summary"])
                _judged_otherwise(config, replayed)
                publish_metrics(config, replayed, job_name(config, shown))  # the nightly run did run
                upload_run(config, (job.folder / LATEST_LINK).resolve(), unless_there=True)  # one that failed then
                return replayed
            facts = RunFacts(shown, job.id, started, resumed=job.resuming or job.finished,
                             shard=str(shard) if shard else None)
            observer = metrics_while_running(config, job_name(config, shown), started.isoformat(timespec="seconds"),
                                             on_progress)
            watch = ProgressWatch(_progress(config, source), observer, progress_every)
            return _send_job(config, source, plan, screen, job, facts, watch, max_runtime_seconds)
        finally:
            job.close()


def _judged_otherwise(config: Config, replayed: RunSummary) -> None:
    """Settings that judge answers do not make a new job: say when the finished job was
    judged otherwise, and how to apply them."""
    before = replayed.config.get("api", {})
    warned, enrolled = before.get("fail_on_warnings", False), before.get("already_enrolled", "error")
    if warned != config.api.fail_on_warnings:
        log.warning("job %s finished with fail_on_warnings = %s: run with --restart to judge its rows with"
                    " the setting as it is now", replayed.job_id, str(warned).lower())
    if enrolled != config.api.already_enrolled:
        log.warning("job %s finished with already_enrolled = \"%s\": run with --retry-failed to send its"
                    " refused rows again under the setting as it is now", replayed.job_id, enrolled)


@contextmanager
def _input_file(input_path: str | Path, config: Config) -> Iterator[tuple[Path, RemoteInput | None]]:
    """The file to read: `input_path`; for an object-storage URL, its local copy as it
    arrives (input/remote.py); for "-" standard input, spooled to a private temporary
    file in the output folder (the readers read a file more than once)."""
    if is_url(input_path):
        from .input.remote import remote_input

        with remote_input(str(input_path), config) as remote:
            yield remote.path, remote
        return
    if str(input_path) != STDIN:
        yield Path(input_path), None
        return
    with spooled_stdin(sys.stdin.buffer, Path(config.output.dir)) as path:
        try:
            yield path, None
        except InputError as exc:  # name what the user gave, not a temporary file that is gone
            message = str(exc).replace(f"validate {path}", f"validate {STDIN}")  # a suggested command
            raise InputError(message.replace(str(path), "standard input")) from None


def _send_job(config: Config, source: Source, plan: ColumnPlan, screen: PrePassFindings | None, job: Job,
              facts: RunFacts, watch: ProgressWatch, max_runtime_seconds: float | None) -> RunSummary:
    folder = _run_folder(job.folder, "run", facts.started)
    try:
        summary = _send_run(config, source, plan, screen, job, facts, watch, max_runtime_seconds, folder)
    except BaseException:
        upload_after_failure(config, folder)  # whatever the run folder holds: a crash loses no more than that
        raise
    upload_run(config, folder)
    return summary


def _send_run(config: Config, source: Source, plan: ColumnPlan, screen: PrePassFindings | None, job: Job,
              facts: RunFacts, watch: ProgressWatch, max_runtime_seconds: float | None,
              folder: Path) -> RunSummary:
    job.journal.set_meta(status=JobStatus.RUNNING, last_run=folder.name)
    run_context.set({"run_id": folder.name, "job_id": job.id})
    log.info("%s %s: job %s, reports in %s", "resuming" if facts.resumed else "starting",
             "standard input" if facts.input == STDIN else facts.input, job.id, folder)
    with open_sync_state(config) as state:
        changes = ChangeFilter(state, only_changed=config.state.only_changed)
        sent = asyncio.run(send_chunks(prepare_chunks(source, plan, config, screen, changes), job.journal,
                                       config, max_runtime_seconds=max_runtime_seconds, watch=watch,
                                       changes=changes, run_id=folder.name))
    sent.in_doubt_requests += int(job.journal.meta().get("in_doubt_requests", 0))  # the job's figure
    job.journal.set_meta(in_doubt_requests=str(sent.in_doubt_requests))
    summary = _finish(config, source, job.journal, folder, sent, facts)
    job.journal.set_meta(status=JobStatus.after(summary.exit_code, summary.to_send_again),
                         summary=summary.to_json().decode())
    log_end(summary)
    publish(config, summary, folder, job_name(config, facts.input))
    return summary


def _check_row_count(source: Source, min_rows: int, named: str) -> None:
    """An empty or cut-short nightly export is usually a broken export: with min_rows,
    refuse one with fewer non-blank rows before anything is sent (an extra pass)."""
    if not min_rows:
        return
    rows = sum(int(_filled(chunk.frame).sum()) for chunk in source.chunks())
    if rows < min_rows:
        raise InputError(f"{named}: {rows:,} data rows, fewer than min_rows = {min_rows:,}, so nothing"
                         " was sent; check the export (empty or cut short?), or lower --min-rows")


def _filled(frame):
    """Rows with some non-blank cell."""
    return frame.fillna("").astype(str).apply(lambda column: column.str.strip() != "").any(axis=1)


def _progress(config: Config, source: Source) -> Progress:
    # the CSV reader counts rows while checking
    return Progress(source.row_count, limit_per_minute(config), add_limit_per_minute=add_limit_per_minute(config))


def _dry_run(config: Config, source: Source, plan: ColumnPlan, facts: RunFacts,
             screen: PrePassFindings | None = None, origin: Origin | None = None) -> RunSummary:
    job_id = job_identity(source.path, config, origin=origin)
    facts = replace(facts, job_id=job_id)
    folder = _run_folder(job_folder(config, source.path, job_id, origin=origin), "dry-run", facts.started)
    with Journal(folder / "journal.sqlite") as journal:
        sent = asyncio.run(_preview(prepare_chunks(source, plan, config, screen), journal,
                                    folder / "preview.jsonl", config))
        summary = _finish(config, source, journal, folder, sent, facts)
    publish(config, summary, folder, job_name(config, facts.input))  # report.html, once the journal is closed
    upload_run(config, folder, latest=False)  # latest.json points at real runs only
    return summary


async def _preview(chunks: Iterator[PreparedChunk], journal: Journal, path: Path, config: Config) -> SendResult:
    """A dry run's send loop: each payload goes to preview.jsonl instead of the API."""
    normalised: Counter[str] = Counter()
    with open_private(path, "wb") as out:
        while (prepared := await next_in_thread(chunks)) is not None:
            normalised.update(prepared.rewritten)
            for outcome in prepared.outcomes:
                journal.record(outcome)
            for p in prepared.payloads:
                out.write(orjson.dumps({"row": p.row, "query": p.lookup.query(config.api.use_async),
                                        "body": p.body}) + b"\n")
                journal.record(RowOutcome(p.row, Status.SKIPPED, message="dry run: valid, not sent",
                                          identifier=p.lookup.identifier_value))
    return SendResult(preview=str(path), normalised=dict(normalised))


def _finish(config: Config, source: Source, journal: Journal, folder: Path, sent: SendResult,
            facts: RunFacts) -> RunSummary:
    journal.flush()
    journal.give_up_unanswered()  # before the reports, which show such rows in doubt
    paths = ReportPaths.in_folder(folder)
    mask = identifier_columns(source.headers, config.columns) if config.output.mask_identifiers else ()
    try:
        counts = write_reports(paths, source.headers, source.chunks(), journal, mask=mask)
        summary = summarise(config, facts, paths, counts, sent)
        write_private(paths.summary, summary.to_json())
    except OSError as exc:  # a full disk: the journal is intact, a rerun writes the reports
        raise RunAborted(write_failure_message(folder, exc)) from None
    if not facts.dry_run:  # scripts read <dir>/latest/errors.csv: whole reports of a real run only
        link_latest(folder)
    if summary.rows == 0:
        log.warning("%s has no data rows (a header only): nothing to send; an empty export?"
                    " --min-rows N makes this an error (exit 2)",
                    "standard input" if facts.input == STDIN else facts.input)
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
