"""What a run leaves beside its reports: report.html, the Prometheus metrics (a
textfile-collector file, a Pushgateway push) and the webhook notification.

None of it changes the run's outcome: a report or metrics that cannot be written are a
warning. The plotting and Prometheus libraries are imported only when used, so start-up
stays fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Config
from .logs import log
from .notify import notify
from .progress import Progress, log_progress

METRICS_EVERY = 30.0  # seconds between the metrics of a run in progress


def job_name(config: Config, input_shown: str) -> str:
    """The metrics' job label: [output] job_name, else the input's stem ("stdin" for "-")."""
    if config.output.job_name:
        return config.output.job_name
    return "stdin" if input_shown == "-" else Path(input_shown).name.split(".")[0] or "input"


def publish(config: Config, summary: Any, folder: Path, job: str) -> None:
    """At the end of a run (or a dry run): report.html, metrics, the webhook."""
    write_report_page(folder)
    if summary.status != "dry_run":
        publish_metrics(config, summary, job)
        notify(config, summary)


def publish_metrics(config: Config, summary: Any, job: str, *, running: bool = False) -> None:
    """The metrics file and the Pushgateway, when configured. `summary`: a RunSummary, or a
    dict of what is known (a run in progress, or a whole-run failure: its exit code)."""
    if not (config.output.metrics_file or config.notify.pushgateway_url):
        return
    from .metrics import push_metrics, write_metrics_file

    if config.output.metrics_file:
        write_metrics_file(config.output.metrics_file, summary, job, running=running)
    if config.notify.pushgateway_url:
        push_metrics(config.notify.pushgateway_url, summary, job, running=running)


def metrics_while_running(config: Config, job: str, started: str,
                          observer: Callable[[Progress], None] | None) -> Callable[[Progress], None] | None:
    """The progress observer, plus the metrics of the run in progress every METRICS_EVERY
    seconds (when metrics are configured)."""
    if not (config.output.metrics_file or config.notify.pushgateway_url):
        return observer
    due = [time.monotonic() + METRICS_EVERY]

    def observe(progress: Progress) -> None:
        (observer or log_progress)(progress)
        if time.monotonic() >= due[0]:
            from .metrics import summary_from_progress

            due[0] = time.monotonic() + METRICS_EVERY
            publish_metrics(config, summary_from_progress(progress, started=started, mode=config.api.mode), job,
                            running=True)
    return observe


def write_report_page(folder: Path) -> None:
    """report.html, or a warning saying how to build it later."""
    from .html_report import write_report_html

    try:
        write_report_html(folder)
    except Exception as exc:  # the reports and summary.json are written: the page is extra
        log.warning("could not write report.html in %s (%s: %s); `batch-updater report %s` builds it again",
                    folder, exc.__class__.__name__, exc, folder)
