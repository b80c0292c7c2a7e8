"""`run(config, path)`: read → validate → map → send → journal → reports → RunSummary.

This is the whole product behind the CLI, the demo and the Airflow operator. Reading
and validating a chunk happens in a worker thread while the event loop sends the
previous chunk, so the file work overlaps the network work.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import orjson

from .columns import ColumnPlan, resolve_headers
from .config import Config
from .errors import InputError
from .journal import FLUSH_SECONDS, Journal
from .outcomes import RowOutcome, Status
from .prepare import Prepared, prepare_chunks
from .reader import CsvInput, open_input
from .reports import ReportCounts, ReportPaths, open_private, write_private, write_reports


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
    in_doubt: int
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

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)


def run(config: Config, input_path: str | Path, *, dry_run: bool = False) -> RunSummary:
    """Apply every row of `input_path`; raise BatchUpdaterError only for a whole-run failure."""
    started = datetime.now(timezone.utc)
    source = open_input(input_path, config.input)
    plan = resolve_headers(source.headers, dict(config.columns), str(source.path))
    job_id = job_identity(source.path, config)
    folder = _run_folder(config.output.dir, source.path, job_id, started)
    paths = ReportPaths.in_folder(folder)
    journal = Journal(folder / "journal.sqlite")
    try:
        stats = asyncio.run(_process(config, source, plan, journal, folder, dry_run))
        journal.flush()
        reason = stats.get("reason")
        counts = write_reports(paths, source.headers, source.chunks(), journal,
                               reason or ("dry run: not sent" if dry_run else "not sent"))
    finally:
        journal.close()
    summary = _summary(config, source, job_id, paths, counts, stats, started, dry_run)
    write_private(paths.summary, summary.to_json())
    return summary


def job_identity(path: Path, config: Config) -> str:
    """The input's content plus every setting that changes what is sent."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    api = config.api
    digest.update(orjson.dumps([api.base_url, api.source, api.account_id, api.identifier_name,
                                api.use_async, sorted(config.columns.items())]))
    return digest.hexdigest()[:12]


def _run_folder(base: Path, input_path: Path, job_id: str, started: datetime) -> Path:
    stem = input_path.name.split(".")[0] or "input"
    job_folder = Path(base) / f"{stem}-{job_id}"
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    for n in range(1000):
        folder = job_folder / (f"run-{stamp}" + (f"-{n}" if n else ""))
        try:
            folder.mkdir(parents=True, mode=0o700)
            return folder
        except FileExistsError:
            continue
        except OSError as exc:
            raise InputError(f"cannot create the output folder {folder} ({exc.strerror});"
                             " choose another with --output-dir") from None
    raise InputError(f"too many runs in {job_folder} this second")


async def _process(config: Config, source: CsvInput, plan: ColumnPlan, journal: Journal,
                   folder: Path, dry_run: bool) -> dict[str, Any]:
    chunks = prepare_chunks(source, plan, config)
    if dry_run:
        return await _preview(chunks, journal, folder / "preview.jsonl", config)
    return await _send(chunks, journal, config)


async def _next_in_thread(iterator: Iterator[Prepared]) -> Prepared | None:
    return await asyncio.get_running_loop().run_in_executor(None, next, iterator, None)


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


async def _send(chunks: Iterator[Prepared], journal: Journal, config: Config) -> dict[str, Any]:
    from .client import ApiClient
    from .pool import WorkerPool
    from .ratelimit import RateLimiter

    limits = config.limits
    client = ApiClient.open(config.api, limits)
    limiter = RateLimiter(limits.rate_per_minute, limits.window_seconds, limits.burst)
    pool = WorkerPool(client, limiter, limits, journal.record)
    flusher = asyncio.create_task(_flush_every(journal, FLUSH_SECONDS))
    began = time.monotonic()
    pool.start()
    try:
        while not pool.halted and (prepared := await _next_in_thread(chunks)) is not None:
            for outcome in prepared.outcomes:
                journal.record(outcome)
            for payload in prepared.payloads:
                if pool.halted:
                    break
                await pool.submit(payload)
        await pool.finish()
    finally:
        flusher.cancel()
        await client.close()
    elapsed = time.monotonic() - began
    stats = pool.stats
    return {"reason": pool.abort_reason or pool.stop_reason, "aborted": pool.abort_reason is not None,
            "stopped": pool.stop_reason is not None and pool.abort_reason is None,
            "requests": stats.requests, "retries": stats.retries, "throttled": stats.throttled,
            "in_doubt_attempts": stats.in_doubt,
            "http_statuses": {str(k): v for k, v in sorted(stats.status_counts.items())},
            "sending_seconds": elapsed}


async def _flush_every(journal: Journal, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        journal.flush()


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
    finished = datetime.now(timezone.utc)
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
        network_errors=counts.network, in_doubt=counts.in_doubt, requests=requests,
        retries=stats.get("retries", 0), throttled=stats.get("throttled", 0),
        http_statuses=stats.get("http_statuses", {}), started=started.isoformat(timespec="seconds"),
        finished=finished.isoformat(timespec="seconds"),
        duration_seconds=round((finished - started).total_seconds(), 3),
        achieved_rate_per_minute=round(requests / seconds * 60, 1) if seconds > 0 else 0.0,
        rate_limit_per_minute=config.limits.rate_per_minute, reason=stats.get("reason"),
        reports=report_paths, config=config.public_dict())
