"""End-of-run notification: a Slack-compatible webhook when a run had errors or aborted.

A failed post is logged and never changes the run's outcome. The URL carries a token,
so it is never logged or written to a report.
"""

from __future__ import annotations

import urllib.error
import urllib.request

import orjson

from .logs import log

NOTIFY_EXIT_CODES = (1, 3)
TIMEOUT_SECONDS = 10


def message(summary) -> str:
    headline = {1: "finished with errors", 3: "aborted"}.get(summary.exit_code, summary.status)
    text = (f"batch-updater {headline}: {summary.input} — {summary.rows:,} rows,"
            f" {summary.success:,} updated, {summary.errors:,} errors, {summary.not_sent:,} not sent"
            f" (exit {summary.exit_code})")
    if summary.reason:
        text += f"\n{summary.reason}"
    return text + f"\nerrors: {summary.reports['errors']}"


def notify(config, summary) -> bool:
    url = config.notify.webhook_url
    if not url or summary.exit_code not in NOTIFY_EXIT_CODES:
        return False
    body = orjson.dumps({"text": message(summary), "summary": {
        "exit_code": summary.exit_code, "status": summary.status, "rows": summary.rows,
        "success": summary.success, "errors": summary.errors, "not_sent": summary.not_sent,
        "job_id": summary.job_id}})
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            response.read()
        return True
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc.__class__.__name__
        log.warning("could not post the end-of-run notification to the webhook (%s)", reason)
        return False
