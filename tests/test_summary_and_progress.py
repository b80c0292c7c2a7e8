"""summary.json, --json, the human summary lines, and the progress line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from click.testing import CliRunner
from conftest import mobile, write_config, write_csv

from batch_updater.cli import main
from batch_updater.outcomes import RowOutcome, Stage, Status
from batch_updater.output.progress import Progress, ProgressDisplay
from batch_updater.summary import RunSummary, human_summary

SUMMARY_KEYS = {
    "exit_code", "status", "input", "job_id", "rows", "success", "errors", "skipped", "not_sent",
    "validation_errors", "api_errors", "network_errors", "in_doubt", "in_doubt_requests", "requests",
    "retries", "throttled", "http_statuses", "started", "finished", "duration_seconds",
    "achieved_rate_per_minute", "rate_limit_per_minute", "reason", "reports", "config", "resumed",
    "replayed", "shard", "to_send_again", "sent_again", "warnings", "updated_with_warnings", "top_errors",
    "mode", "updated", "created", "create_errors", "add_requests", "achieved_add_rate_per_minute",
    "add_rate_limit_per_minute", "normalised", "upload_url",
}


def test_summary_json_schema_and_json_flag(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(1)]])
    config = write_config(tmp_path, server.url)
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--json", "--quiet"])
    printed = json.loads(result.stdout)
    written = json.loads(Path(printed["reports"]["summary"]).read_text())
    assert printed == written
    assert set(printed) == SUMMARY_KEYS
    assert set(printed["reports"]) == {"success", "errors", "skipped", "summary"}
    assert printed["rate_limit_per_minute"] == 60_000 and printed["http_statuses"] == {"200": 1}
    assert "password" not in printed["config"]["api"] and "notify" not in printed["config"]


def test_human_summary_names_counts_rate_and_reports(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(1)], ["919700000000"]])
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(write_config(tmp_path, server.url))])
    out = result.stdout
    assert out.startswith("2 rows: 1 updated, 1 errors (0 invalid, 1 refused by the API, 0 network), 0 skipped,"
                          " 0 not sent\n")
    assert "requests in" in out and "(within one 60 s window: the limit is 60000 per window)" in out
    assert "reports: " in out and "summary: " in out
    # a run longer than the window has a rate to set against the limit
    summary = RunSummary.replayed_from((tmp_path / "out" / "latest" / "summary.json").read_text())
    longer = human_summary(replace(summary, duration_seconds=90.0, achieved_rate_per_minute=598.0))
    assert "2 requests in 90.0 s at 598/min (limit 60000)" in longer


def test_progress_of_a_resumed_run_counts_its_own_pace_only():
    now = [0.0]
    progress = Progress(10_000, 6000, clock=lambda: now[0])
    progress.count_earlier(7000)  # settled by the run that stopped: done, not this run's pace
    for row in range(100):
        now[0] += 0.6
        progress.count(RowOutcome(row + 2, Status.SUCCESS))
        progress.requests += 1
    assert progress.line() == ("7,100/10,000 rows (71%), 7,000 by earlier runs | 100 requests/min"
                               " (limit 6,000) | ETA 29m00s | this run: updated 100 · errors 0 · skipped 0 · retries 0")


def test_progress_line_and_the_two_displays():
    now = [0.0]
    progress = Progress(1000, 600, clock=lambda: now[0])
    for row in range(2, 302):
        now[0] += 0.1
        outcome = (RowOutcome(row, Status.SUCCESS) if row % 10 else
                   RowOutcome(row, Status.ERROR, Stage.API, "8015"))
        progress.count(outcome)
        progress.requests += 1
    progress.retries = 4
    line = progress.line()
    assert line == ("300/1,000 rows (30%) | 600 requests/min (limit 600) | ETA 1m10s"
                    " | updated 270 · errors 30 · skipped 0 · retries 4")

    class Tty:
        def __init__(self):
            self.text = ""

        def write(self, text):
            self.text += text

        def flush(self):
            pass

        def isatty(self):
            return True

    tty = Tty()
    terminal = ProgressDisplay(stream=tty)
    terminal.show(progress)
    terminal.close()
    assert tty.text == "\r\x1b[K" + line + "\r\x1b[K" and terminal.interval == 0.5
    logged = []
    off_terminal = ProgressDisplay(stream=tty, terminal=False, log=logged.append)
    off_terminal.show(progress)
    assert logged == ["progress: " + line] and off_terminal.interval == 30.0
    ProgressDisplay(stream=tty, quiet=True).show(progress)
    assert tty.text.count(line) == 1
