"""Issue 7: masking, logs, summary.json, --json, progress, shards and merging, webhook, Airflow logic."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import customer_puts, mobile, read_report, write_config, write_csv

from batch_updater.cli import main
from batch_updater.input.shards import Shard
from batch_updater.integrations.airflow import connection_overrides, run_task, task_failed
from batch_updater.outcomes import RowOutcome, Stage, Status
from batch_updater.output.masking import mask_identifier, mask_text
from batch_updater.output.progress import Progress, ProgressDisplay
from batch_updater.rows.mapping import customer_key

SUMMARY_KEYS = {
    "exit_code", "status", "input", "job_id", "rows", "success", "errors", "skipped", "not_sent",
    "validation_errors", "api_errors", "network_errors", "in_doubt", "in_doubt_requests", "requests",
    "retries", "throttled", "http_statuses", "started", "finished", "duration_seconds",
    "achieved_rate_per_minute", "rate_limit_per_minute", "reason", "reports", "config", "resumed",
    "replayed", "shard", "to_send_again", "sent_again",
}


@pytest.mark.parametrize("value, masked", [
    ("919800000042", "9198****0042"),
    ("asha@example.com", "a***@example.com"),
    ("EXT00000042", "EX*******42"),
    ("abc", "***"),
    ("", ""),
])
def test_identifiers_are_masked(value, masked):
    assert mask_identifier(value) == masked


def test_masking_inside_log_text():
    assert (mask_text("row 5: 919800000042 and asha.k@example.co.in failed")
            == "row 5: 9198****0042 and a***@example.co.in failed")


def test_json_logs_carry_run_and_job_ids_and_mask_identifiers(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(1)], ["919700000000"]])
    config = write_config(tmp_path, server.url)
    log_file = tmp_path / "run.log"
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--log-format", "json",
                                       "--log-level", "debug", "--log-file", str(log_file), "--json"])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert lines, "no log lines"
    run_id = Path(summary["reports"]["summary"]).parent.name
    assert all(line["run_id"] == run_id and line["job_id"] == summary["job_id"] for line in lines)
    assert {"time", "level", "message"} <= set(lines[0])
    text = log_file.read_text()
    assert "919700000000" not in text and "9197****0000" in text
    assert any(line["message"].startswith("completed_with_errors: 2 rows") for line in lines)


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
    assert "requests in" in out and "(limit 60000)" in out
    assert "reports: " in out and "summary: " in out


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


def test_shards_partition_every_row_once_and_keep_customers_together():
    keys = [customer_key("mobile", mobile(i)) for i in range(3000)]
    for count in (1, 2, 3, 8):
        owners = [[k for k in range(1, count + 1) if Shard(k, count).owns(key)] for key in keys]
        assert all(len(o) == 1 for o in owners)
        sizes = [sum(o == [k] for o in owners) for k in range(1, count + 1)]
        assert min(sizes) > 0.7 * len(keys) / count
    assert Shard.parse("2/8") == Shard(2, 8)
    for bad in ("0/3", "4/3", "x", "1/0"):
        with pytest.raises(Exception, match="--shard"):
            Shard.parse(bad)


def test_sharded_runs_merge_into_one_complete_report(tmp_path, sandbox_server):
    server = sandbox_server()
    rows = []
    for i in range(120):
        rows.append([mobile(i % 40), f"Name{i}"])   # three rows per customer
    rows.append(["919700000000", "Ghost"])
    rows.append(["12", "Invalid"])
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "firstName"], rows)
    config = write_config(tmp_path, server.url, limits={"rate_per_minute": 60_000})
    runner = CliRunner()
    folders = []
    for k in (1, 2, 3):
        result = runner.invoke(main, ["run", str(source), "--config", str(config), "--shard", f"{k}/3", "--json"])
        assert result.exit_code in (0, 1), (result.output, result.exc_info)
        summary = json.loads(result.stdout)
        assert summary["shard"] == f"{k}/3" and summary["rate_limit_per_minute"] == 20_000
        folders.append(str(Path(summary["reports"]["summary"]).parent))
    per_customer_shard = {}
    for request in customer_puts(server):
        per_customer_shard.setdefault(request.query["identifierValue"], set()).add(request.started)
    assert len(customer_puts(server)) == 121  # every valid row sent once, across the shards

    merged_dir = tmp_path / "merged"
    result = runner.invoke(main, ["merge", *folders, "--output-dir", str(merged_dir), "--json"])
    assert result.exit_code == 1, result.output
    merged = json.loads(result.stdout)
    assert (merged["rows"], merged["success"], merged["errors"]) == (122, 120, 2)
    rows_seen = [int(r["_row"]) for name in ("success", "errors", "skipped")
                 for r in read_report(merged_dir / f"{name}.csv")]
    assert sorted(rows_seen) == list(range(2, 124))
    success_rows = [int(r["_row"]) for r in read_report(merged_dir / "success.csv")]
    assert success_rows == sorted(success_rows)

    missing = runner.invoke(main, ["merge", *folders[:2], "--output-dir", str(tmp_path / "m2")])
    assert missing.exit_code == 2 and "pass exactly one run of every shard" in missing.output


def test_one_customers_rows_stay_in_file_order_within_a_shard(tmp_path, sandbox_server):
    server = sandbox_server(processing_seconds=0.01)
    rows = [[mobile(i % 5), f"Name{i}"] for i in range(40)]
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "firstName"], rows)
    config = write_config(tmp_path, server.url)
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--shard", "1/2"])
    assert result.exit_code == 0, result.output
    for i in range(5):
        names = [r.body["profiles"][0]["firstName"] for r in customer_puts(server)
                 if r.query["identifierValue"] == mobile(i)]
        assert names in ([], [f"Name{j}" for j in range(i, 40, 5)])
    assert all(r.status == 200 for r in customer_puts(server))


class _Webhook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Webhook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    _Webhook.received = []
    server = HTTPServer(("127.0.0.1", 0), _Webhook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", _Webhook.received
    server.shutdown()


def test_webhook_is_posted_only_when_a_run_has_errors(tmp_path, sandbox_server, webhook):
    url, received = webhook
    server = sandbox_server()
    good = write_csv(tmp_path / "good.csv", ["identifierValue"], [[mobile(1)]])
    bad = write_csv(tmp_path / "bad.csv", ["identifierValue"], [[mobile(2)], ["919700000000"]])
    config = write_config(tmp_path, server.url, notify={"webhook_url": url})
    runner = CliRunner()
    assert runner.invoke(main, ["run", str(good), "--config", str(config)]).exit_code == 0
    assert received == []
    result = runner.invoke(main, ["run", str(bad), "--config", str(config)])
    assert result.exit_code == 1
    [post] = received
    assert post["text"].startswith(f"batch-updater finished with errors: {bad}")
    assert post["summary"]["errors"] == 1 and "errors: " in post["text"]
    assert url not in result.output


def test_unreachable_webhook_is_a_warning_not_a_failure(tmp_path, sandbox_server):
    server = sandbox_server()
    bad = write_csv(tmp_path / "bad.csv", ["identifierValue"], [["919700000000"]])
    config = write_config(tmp_path, server.url, notify={"webhook_url": "http://127.0.0.1:9/hook"})
    result = CliRunner().invoke(main, ["run", str(bad), "--config", str(config)])
    assert result.exit_code == 1
    assert "could not post the end-of-run notification to the webhook" in result.output


def test_airflow_operator_logic_through_the_library(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(6)])
    extras = {"source": "WEBSITE", "identifier_name": "mobile", "rate_per_minute": 60_000}
    assert connection_overrides(server.url, "demo.till", extras)["api.source"] == "WEBSITE"
    summaries = [run_task(str(source), host=server.url, login="demo.till", password="demo-password",
                          extras=extras, shard=f"{k}/2", output_dir=str(tmp_path / "out"), environ={})
                 for k in (1, 2)]
    assert sum(s["success"] for s in summaries) == 6
    assert all(task_failed(s) is None for s in summaries)
    assert {r.query["source"] for r in customer_puts(server)} == {"WEBSITE"}
    assert task_failed({"exit_code": 1, "errors": 3, "reports": {"errors": "e.csv"}}) == "3 rows failed; see e.csv"
    assert task_failed({"exit_code": 1, "errors": 3, "reports": {}}, fail_on_row_errors=False) is None
    assert task_failed({"exit_code": 3, "reason": "API down"}) == "batch-updater exit 3: API down"
