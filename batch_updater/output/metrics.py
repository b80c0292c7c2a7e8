"""A run's figures as Prometheus metrics: a textfile-collector file, or a Pushgateway push.

Every metric is a gauge labelled `job="<name>"`: each file or push is one run's snapshot,
and a run starts from zero, which a counter must never do. The metrics of a run in
progress (`running=True`, rewritten every 30 s) carry what its progress knows; those of a
finished run carry its summary.json. `batch_updater_last_success_timestamp_seconds` is the
finish of the last run that ended with exit 0 or 1: a run that failed, or is still
running, keeps the earlier value (read back from the file; on the Pushgateway, left in
place by pushing without it), so "has it succeeded in the last 26 hours?" is one rule.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, pushadd_to_gateway, write_to_textfile
from prometheus_client.exposition import basic_auth_handler, default_handler
from prometheus_client.parser import text_string_to_metric_families

from .logs import log

PREFIX = "batch_updater_"
LAST_SUCCESS = PREFIX + "last_success_timestamp_seconds"
PUSH_TIMEOUT_SECONDS = 10.0
OUTCOMES = {"updated": "updated", "created": "created", "error": "errors", "skipped": "skipped",
            "not_sent": "not_sent"}                     # label value: summary key
STAGES = {"validation": "validation_errors", "api": "api_errors", "create": "create_errors",
          "network": "network_errors"}
SUCCESS_EXIT_CODES = (0, 1)                              # finished; exit 1 only has rows in errors.csv
# One gauge per summary figure: (name, help, summary key)
_SINGLE = (("input_rows", "Rows in the input file", "rows"),
           ("retries", "Requests sent again after a retryable failure", "retries"),
           ("throttled", "Requests answered 429 (rate limited)", "throttled"),
           ("in_doubt_rows", "Rows with an attempt sent and never answered", "in_doubt"),
           ("rows_with_warnings", "Rows applied with a warning of the API", "updated_with_warnings"),
           ("rows_to_send_again", "Rows the next run of the job sends (not sent, failed for the run's reason)",
            "to_send_again"),
           ("duration_seconds", "How long the run has taken", "duration_seconds"),
           ("exit_code", "The run's exit code (0 all applied, 1 some rows in errors.csv, 2-4 failed)", "exit_code"))


def registry_for(summary: Mapping[str, Any], job: str | None, *, running: bool = False,
                 last_success: float | None = None) -> CollectorRegistry:
    """The metrics of one run. `job` None leaves out the job label (the Pushgateway's
    grouping key adds it); `last_success` is the earlier value, kept unless this run succeeded."""
    s = _as_dict(summary)
    registry = CollectorRegistry()
    names, values = (["job"], [job]) if job is not None else ([], [])

    def gauge(name: str, help: str, extra: tuple[str, ...] = ()) -> Gauge:
        return Gauge(PREFIX + name, help, [*names, *extra], registry=registry)

    def single(name: str, help: str, value: float) -> None:
        made = gauge(name, help)
        (made.labels(*values) if values else made).set(value)

    rows = gauge("rows", "Rows by outcome", ("outcome",))
    for outcome, key in OUTCOMES.items():
        if key in s or outcome == "updated":
            rows.labels(*values, outcome).set(_updated(s) if outcome == "updated" else s[key] or 0)
    errors = gauge("errors", "Rows in errors.csv by stage", ("stage",))
    for stage, key in STAGES.items():
        if key in s:
            errors.labels(*values, stage).set(s[key] or 0)
    requests = gauge("requests", "Requests answered, by HTTP status", ("status",))
    for status, count in (s.get("http_statuses") or {}).items():
        requests.labels(*values, str(status)).set(count)
    for name, help, key in _SINGLE:
        if s.get(key) is not None and not (running and key == "exit_code"):
            single(name, help, s[key])
    _rates(gauge, values, s)
    single("running", "1 while the run is in progress, 0 once it ended", int(running))
    started = _timestamp(s.get("started"))
    if started:
        single("run_start_timestamp_seconds", "When the run started", started)
    success = None if running else _success_time(s)
    if success or last_success:
        single("last_success_timestamp_seconds", "When the job's last successful run (exit 0 or 1) finished",
               success or last_success or 0)
    return registry


def _rates(gauge, values: list, s: dict) -> None:
    """Requests sent, achieved rates and limits per API (the add's in upsert mode only)."""
    sent = gauge("requests_sent", "Requests sent, by API", ("api",))
    rate = gauge("rate_per_minute", "Achieved requests per minute, by API (while running: the last minute)",
                 ("api",))
    limit = gauge("rate_limit_per_minute", "The key's limit per minute, by API", ("api",))
    adds = s.get("add_requests") or 0
    apis = [("update", s.get("requests", 0) - adds, "achieved_rate_per_minute", "rate_limit_per_minute")]
    if s.get("mode") == "upsert" or adds:
        apis.append(("add", adds, "achieved_add_rate_per_minute", "add_rate_limit_per_minute"))
    for api, count, rate_key, limit_key in apis:
        if "requests" in s:
            sent.labels(*values, api).set(count)
        if s.get(rate_key) is not None:
            rate.labels(*values, api).set(s[rate_key])
        if s.get(limit_key) is not None:
            limit.labels(*values, api).set(s[limit_key])


def write_metrics_file(path: str | Path, summary: Mapping[str, Any], job: str, *, running: bool = False) -> bool:
    """Write the run's metrics for node_exporter's textfile collector (the path should end in
    .prom), atomically: a temporary file in the same folder, then a rename. One file per job
    name: the earlier last-success time is read back from it. Returns False, after one
    warning line, when the file cannot be written."""
    path = Path(path)
    try:
        registry = registry_for(summary, job, running=running, last_success=_last_success_in(path, job))
        write_to_textfile(str(path), registry)
        return True
    except (OSError, ValueError) as exc:
        log.warning("cannot write the metrics file %s (%s); the run goes on without it", path, exc)
        return False


def push_metrics(url: str, summary: Mapping[str, Any], job: str, *, running: bool = False,
                 timeout: float = PUSH_TIMEOUT_SECONDS) -> bool:
    """Push the run's metrics to a Pushgateway, grouped by job=<job>. A successful finish
    replaces the job's group (PUT); a failed or running one replaces only the metrics it
    sends (POST), leaving the earlier last-success time in place. User and password may
    be in the URL (https://user:password@host:9091). Returns False, after one warning line
    without the password, when the push fails."""
    bare, handler = _without_credentials(url)
    registry = registry_for(summary, None, running=running)
    succeeded = not running and _success_time(_as_dict(summary)) is not None
    push = push_to_gateway if succeeded else pushadd_to_gateway
    try:
        push(bare, job=job, registry=registry, timeout=timeout, handler=handler)
        return True
    except Exception as exc:  # urllib raises many kinds; monitoring must never fail a run
        log.warning("cannot push the metrics to the Pushgateway %s (%s); the run goes on", bare,
                    f"{type(exc).__name__}: {exc}")
        return False


def summary_from_progress(progress: Any, *, started: str | None = None, mode: str = "update") -> dict[str, Any]:
    """A partial summary of a run in progress (output/progress.py's Progress), for
    write_metrics_file(..., running=True): the figures its progress line shows."""
    _, update_rate, add_rate = progress.rates_per_minute()
    upsert = progress.add_limit_per_minute is not None
    partial = {"rows": progress.total, "updated": progress.updated - progress.created, "created": progress.created,
               "errors": progress.errors, "skipped": progress.skipped, "retries": progress.retries,
               "requests": progress.requests + progress.adds, "add_requests": progress.adds,
               "duration_seconds": round(progress.clock() - progress.started, 3),
               "achieved_rate_per_minute": round(update_rate, 1), "rate_limit_per_minute": progress.limit_per_minute,
               "mode": "upsert" if upsert else mode, "started": started}
    if upsert:
        partial.update(achieved_add_rate_per_minute=round(add_rate, 1),
                       add_rate_limit_per_minute=progress.add_limit_per_minute)
    return {key: value for key, value in partial.items() if value is not None}


def _as_dict(summary: Any) -> dict[str, Any]:
    return asdict(summary) if is_dataclass(summary) and not isinstance(summary, type) else dict(summary)


def _updated(s: Mapping[str, Any]) -> int:
    """Rows updated (not created); a summary of an earlier version has only `success`."""
    return s.get("updated", s.get("success", 0) - s.get("created", 0))


def _success_time(s: Mapping[str, Any]) -> float | None:
    """When this run finished successfully (exit 0 or 1, not a dry run), else None; a replayed
    summary (the job had finished: nothing to do) counts as finishing now."""
    if s.get("exit_code") not in SUCCESS_EXIT_CODES or s.get("status") == "dry_run":
        return None
    finished = None if s.get("replayed") else _timestamp(s.get("finished"))
    return finished or time.time()


def _timestamp(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(value)).timestamp() if value else None
    except ValueError:
        return None


def _last_success_in(path: Path, job: str) -> float | None:
    """The job's last-success time in an earlier metrics file, if any."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS and sample.labels.get("job") == job:
                    return sample.value
    except ValueError:  # a file this did not write: start afresh
        return None
    return None


def _without_credentials(url: str):
    """The URL without user:password@, and the push handler that sends them (basic auth)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.username:
        return urlunsplit(parts), default_handler
    host = parts.hostname or ""
    bare = urlunsplit(parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host))
    user, password = parts.username, parts.password or ""

    def handler(url, method, timeout, headers, data):
        return basic_auth_handler(url, method, timeout, headers, data, user, password)

    return bare, handler
