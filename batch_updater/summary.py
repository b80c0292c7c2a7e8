"""What a run did: `RunSummary` (summary.json, the CLI's last lines, the Airflow XCom),
built from the reports' counts and the send loop's result."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .config import Config
from .output.logs import log
from .output.reports import ReportCounts, ReportPaths

if TYPE_CHECKING:
    from .send.loop import SendResult  # the send loop's imports (aiohttp, pandas) only when a run sends


class RunStatus(StrEnum):
    COMPLETED = "completed"                          # exit 0
    COMPLETED_WITH_ERRORS = "completed_with_errors"  # exit 1
    ABORTED = "aborted"                              # exit 3
    STOPPED = "stopped"                              # exit 4
    DRY_RUN = "dry_run"


@dataclass
class RunSummary:
    exit_code: int
    status: RunStatus
    input: str
    job_id: str
    rows: int
    success: int                     # updated + created
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
    to_send_again: int = 0           # rows the next run of the job sends (not sent, run-level failures)
    sent_again: int = 0              # rows an earlier run of the job left unsettled, sent by this run
    replayed: bool = False           # the job had finished: nothing sent, its summary repeated
    shard: str | None = None         # "K/N" when the run kept only one shard's customers
    warnings: dict[str, int] = field(default_factory=dict)   # rows with each warning code
    updated_with_warnings: int = 0
    top_errors: list[dict[str, Any]] = field(default_factory=list)  # by cause: count and an example row
    mode: str = "update"             # or "upsert"
    updated: int = 0                 # successes that updated a customer
    created: int = 0                 # upsert: successes that added one
    create_errors: int = 0           # upsert: rows the Add Customer API refused
    add_requests: int = 0            # upsert: POST /v2/customers requests (within `requests`)
    achieved_add_rate_per_minute: float = 0.0
    add_rate_limit_per_minute: int | None = None
    normalised: dict[str, int] = field(default_factory=dict)  # column -> values rewritten before validation
    upload_url: str | None = None    # [output] dir on object storage: where the run's reports go when it ends

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)

    @classmethod
    def replayed_from(cls, stored: str) -> RunSummary:
        values = orjson.loads(stored)
        values.update(replayed=True, status=RunStatus(values["status"]))
        values.setdefault("updated", values["success"] - values.get("created", 0))  # an earlier version's
        return cls(**{name: value for name, value in values.items() if name in _FIELDS})


_FIELDS = set(RunSummary.__dataclass_fields__)


@dataclass(frozen=True)
class RunFacts:
    """The run's own facts that neither the reports nor the send loop know."""

    input: str
    job_id: str
    started: datetime
    dry_run: bool = False
    resumed: bool = False
    shard: str | None = None


def _upload_url(config: Config, run_folder: Path) -> str | None:
    """The run folder's URL on object storage (output/upload.py puts it there), or None."""
    from .output.upload import run_url  # storage's modules only where a URL is set

    return run_url(config.output.url, run_folder) + "/" if config.output.url else None


def summarise(config: Config, facts: RunFacts, paths: ReportPaths, counts: ReportCounts,
              sent: SendResult) -> RunSummary:
    finished = datetime.now(UTC)
    exit_code, status = outcome_of(counts, sent)
    reports = {"success": str(paths.success), "errors": str(paths.errors),
               "skipped": str(paths.skipped), "summary": str(paths.summary)}
    if sent.preview:
        reports["preview"] = sent.preview
    return RunSummary(
        exit_code=exit_code, status=RunStatus.DRY_RUN if facts.dry_run else status, input=facts.input,
        job_id=facts.job_id, rows=counts.rows, success=counts.success, errors=counts.error,
        skipped=counts.skipped, not_sent=counts.not_sent, validation_errors=counts.validation,
        api_errors=counts.api, network_errors=counts.network, in_doubt=counts.in_doubt,
        in_doubt_requests=sent.in_doubt_requests, requests=sent.requests, retries=sent.retries,
        throttled=sent.throttled, http_statuses=sent.http_statuses,
        started=facts.started.isoformat(timespec="seconds"), finished=finished.isoformat(timespec="seconds"),
        duration_seconds=round((finished - facts.started).total_seconds(), 3),
        achieved_rate_per_minute=_per_minute(sent.requests - sent.add_requests,
                                             max(sent.seconds, config.limits.window_seconds)),
        rate_limit_per_minute=limit_per_minute(config), reason=sent.reason, reports=reports,
        config=config.public_dict(), resumed=facts.resumed, shard=facts.shard,
        to_send_again=counts.to_send_again, sent_again=sent.sent_again,
        warnings=dict(counts.warnings.by_code.most_common()), updated_with_warnings=counts.updated_with_warnings,
        top_errors=[group.as_dict() for group in counts.error_groups.top()], mode=config.api.mode,
        updated=counts.success - counts.created, created=counts.created, create_errors=counts.create,
        add_requests=sent.add_requests,
        achieved_add_rate_per_minute=_per_minute(sent.add_requests,
                                                 max(sent.seconds, config.create_limits.window_seconds)),
        add_rate_limit_per_minute=add_limit_per_minute(config), normalised=sent.normalised,
        upload_url=_upload_url(config, paths.summary.parent))


def outcome_of(counts: ReportCounts, sent: SendResult) -> tuple[int, RunStatus]:
    """The exit code and status: the one place that decides them."""
    if sent.aborted:
        return 3, RunStatus.ABORTED
    if sent.stopped:
        return 4, RunStatus.STOPPED
    if counts.error:
        return 1, RunStatus.COMPLETED_WITH_ERRORS
    return 0, RunStatus.COMPLETED


def limit_per_minute(config: Config) -> int:
    limits = config.limits
    return round(limits.rate_per_minute * 60 / limits.window_seconds)


def add_limit_per_minute(config: Config) -> int | None:
    """Upsert mode's second budget, the Add Customer API's; None in update mode."""
    limits = config.create_limits
    return round(limits.rate_per_minute * 60 / limits.window_seconds) if config.api.mode == "upsert" else None


def _per_minute(requests: int, seconds: float) -> float:
    """Over at least one window of the limit (the callers see to it): a run shorter than
    that sent its requests in one window, which the limit allows at any pace."""
    return round(requests / seconds * 60, 1) if seconds > 0 else 0.0


def log_end(summary: RunSummary) -> None:
    level = logging.INFO if summary.exit_code in (0, 1) else logging.WARNING
    log.log(level, "%s: %d rows, %d updated, %d errors, %d skipped, %d not sent; exit %d%s",
            summary.status.value, summary.rows, summary.success, summary.errors, summary.skipped,
            summary.not_sent, summary.exit_code, f" ({summary.reason})" if summary.reason else "")
    if summary.normalised:
        from .rows.rewrite import counts_line

        log.info("%s", counts_line(summary.normalised))
    if summary.updated_with_warnings:  # a warning: --quiet shows it too
        from .output.tallies import describe_warnings

        log.warning("%d rows applied with warnings (%s): see _warnings in success.csv",
                    summary.updated_with_warnings, describe_warnings(summary.warnings))


def human_summary(s: RunSummary) -> str:
    """The lines the CLI prints at the end of a run."""
    from .output.tallies import describe_groups

    lines = [f"job {s.job_id} finished at {s.finished}: nothing sent (run the same command with --restart"
             " to send it all again, or with --retry-failed to send the rows the API refused)"] if s.replayed else []
    if s.resumed:
        again = (f"; {s.sent_again:,} rows they left unsettled (failed for the run's reason, or reopened by"
                 " --retry-failed) were sent again" if s.sent_again else "")
        lines.append(f"job {s.job_id}: continued: the rows earlier runs settled kept their outcome{again}")
    lines.append(_outcome_line(s))
    if s.normalised:
        from .rows.rewrite import counts_line

        lines.append(counts_line(s.normalised))
    if s.top_errors:
        lines.append(f"top errors: {describe_groups(s.top_errors)}")
    if s.status != RunStatus.DRY_RUN:
        adds = (f" ({s.add_requests:,} adds at {s.achieved_add_rate_per_minute:.0f}/min, limit"
                f" {s.add_rate_limit_per_minute})" if s.mode == "upsert" else "")
        lines.append(f"{s.requests:,} requests in {s.duration_seconds:.1f} s {_pace(s)}{adds};"
                     f" {s.retries} retries, {s.throttled} throttled, {_rows(s.in_doubt)} in doubt")
    if s.reason:
        lines.append(f"{'aborted' if s.exit_code == 3 else 'stopped'}: {s.reason}")
    if s.to_send_again and not s.replayed:
        lines.append(f"{s.to_send_again} rows not sent or failed for the run's reason: run the same"
                     " command again to send them")
    lines.append(f"reports: {Path(s.reports['summary']).parent}/ (success.csv, errors.csv, skipped.csv)")
    lines.append(f"summary: {s.reports['summary']}")
    if s.upload_url and s.status != RunStatus.DRY_RUN:
        lines.append(f"uploaded to: {s.upload_url} (the reports, summary.json and report.html; latest.json"
                     " beside the job folders)")
    return "\n".join(lines)


def _pace(s: RunSummary) -> str:
    """'at 598/min (limit 600)'; a run shorter than one window has no rate to set against the
    limit (its requests all fit in one window): it says so instead of a rate that looks low."""
    limits = s.config.get("limits", {})
    window = limits.get("window_seconds") or 60
    if s.duration_seconds < window and limits.get("rate_per_minute"):
        return f"(within one {window:g} s window: the limit is {limits['rate_per_minute']} per window)"
    return f"at {s.achieved_rate_per_minute:.0f}/min (limit {s.rate_limit_per_minute})"


def _rows(count: int) -> str:
    return f"{count:,} row{'' if count == 1 else 's'}"


def _outcome_line(s: RunSummary) -> str:
    """'29 rows: 24 updated (2 with warnings: 91015 x2), 5 errors (...), 0 skipped, 0 not sent'."""
    from .output.tallies import describe_warnings

    refused = f"{s.api_errors:,} refused by the API"
    if s.status == RunStatus.DRY_RUN:
        return (f"{s.rows:,} rows: {s.skipped:,} valid or skipped (a dry run sends nothing),"
                f" {s.validation_errors:,} invalid")
    if s.mode == "upsert":
        done = f"{s.updated:,} updated, {s.created:,} created"
        refused += f", {s.create_errors:,} refused on add"
    else:
        done = f"{s.success:,} updated"
    if s.updated_with_warnings:
        done += f" ({s.updated_with_warnings:,} with warnings: {describe_warnings(s.warnings)})"
    return (f"{s.rows:,} rows: {done}, {s.errors:,} errors ({s.validation_errors:,} invalid, {refused},"
            f" {s.network_errors:,} network), {s.skipped:,} skipped, {s.not_sent:,} not sent")
