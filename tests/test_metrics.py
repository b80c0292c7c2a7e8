"""Prometheus metrics (output/metrics.py): the textfile written from a real run's summary.json
and parsed back with prometheus-client's own parser; the last success kept across failed
and running runs; the Pushgateway push against a small fake gateway."""

from __future__ import annotations

import base64
import json
import logging
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import mobile, write_config, write_csv
from prometheus_client.parser import text_string_to_metric_families

from batch_updater.cli import main
from batch_updater.outcomes import CREATED, RowOutcome, Stage, Status
from batch_updater.output.metrics import push_metrics, summary_from_progress, write_metrics_file
from batch_updater.output.progress import Progress
from batch_updater.sandbox import RateLimit

JOB = "nightly"


def samples(text: str) -> dict[tuple, float]:
    """{(name, (label, value)...): value} for every sample."""
    return {(s.name, *sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict[tuple, float], name: str, job: str | None = JOB, **labels: str) -> float | None:
    if job is not None:
        labels["job"] = job
    return found.get((f"batch_updater_{name}", *sorted(labels.items())))


def finished_at(summary: dict) -> float:
    return datetime.fromisoformat(summary["finished"]).timestamp()


@pytest.fixture
def real_summary(tmp_path, sandbox_server) -> dict:
    server = sandbox_server(rate_limit=RateLimit(10, 1.0))
    config = write_config(tmp_path, server.url, limits={"rate_per_minute": 6_000, "backoff_base_seconds": 0.05})
    rows = [[mobile(i), f"Name{i}"] for i in range(25)] + [["55555", "Bad"], ["919912345678", "Ghost"]]
    source = write_csv(tmp_path / "nightly.csv", ["identifierValue", "firstName"], rows)
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--json"])
    assert result.exit_code == 1, result.output
    return json.loads(result.stdout)


def test_the_metrics_file_holds_the_summary_figures_by_job(tmp_path, real_summary):
    s = real_summary
    path = tmp_path / "batch_updater_nightly.prom"
    assert write_metrics_file(path, s, JOB)
    text = path.read_text()
    found = samples(text)
    assert all(sample.labels["job"] == JOB for family in text_string_to_metric_families(text)
               for sample in family.samples)
    for outcome, key in {"updated": "updated", "created": "created", "error": "errors", "skipped": "skipped",
                         "not_sent": "not_sent"}.items():
        assert value(found, "rows", outcome=outcome) == s[key]
    assert sum(v for k, v in found.items() if k[0] == "batch_updater_rows") == s["rows"]
    for stage, key in {"validation": "validation_errors", "api": "api_errors", "network": "network_errors"}.items():
        assert value(found, "errors", stage=stage) == s[key]
    assert s["throttled"] and s["http_statuses"]["429"]  # the sandbox's limit was met
    for status, count in s["http_statuses"].items():
        assert value(found, "requests", status=status) == count
    figures = {"input_rows": "rows", "retries": "retries", "throttled": "throttled", "in_doubt_rows": "in_doubt",
               "duration_seconds": "duration_seconds", "exit_code": "exit_code"}
    for name, key in figures.items():
        assert value(found, name) == s[key], name
    assert value(found, "rate_per_minute", api="update") == s["achieved_rate_per_minute"]
    assert value(found, "rate_limit_per_minute", api="update") == s["rate_limit_per_minute"]
    assert value(found, "requests_sent", api="update") == s["requests"]
    assert value(found, "rate_limit_per_minute", api="add") is None  # update mode: no add budget
    assert value(found, "running") == 0
    assert value(found, "last_success_timestamp_seconds") == finished_at(s)
    assert not list(tmp_path.glob("*.prom.*"))  # the temporary file was renamed


def test_the_last_success_is_kept_across_a_failed_run_and_while_running(tmp_path, real_summary):
    path = tmp_path / "nightly.prom"
    success = finished_at(real_summary)
    write_metrics_file(path, real_summary, JOB)
    aborted = dict(real_summary, exit_code=3, status="aborted", finished="2030-01-01T02:00:00+00:00")
    write_metrics_file(path, aborted, JOB)
    found = samples(path.read_text())
    assert value(found, "exit_code") == 3 and value(found, "last_success_timestamp_seconds") == success

    partial = {"rows": 1000, "updated": 10, "errors": 1, "skipped": 0, "requests": 12,
               "started": "2030-01-02T02:00:00+00:00"}
    write_metrics_file(path, partial, JOB, running=True)
    found = samples(path.read_text())
    assert value(found, "running") == 1 and value(found, "exit_code") is None
    assert value(found, "last_success_timestamp_seconds") == success
    assert value(found, "rows", outcome="updated") == 10 and value(found, "rows", outcome="not_sent") is None

    fresh = tmp_path / "other.prom"
    write_metrics_file(fresh, aborted, JOB)  # never succeeded: no value (alert on absent())
    assert value(samples(fresh.read_text()), "last_success_timestamp_seconds") is None


def test_upsert_runs_have_the_add_rate_and_limit_and_created_rows(tmp_path):
    summary = {"exit_code": 0, "status": "completed", "rows": 10, "success": 10, "updated": 6, "created": 4,
               "errors": 0, "skipped": 0, "not_sent": 0, "create_errors": 0, "requests": 18, "add_requests": 4,
               "mode": "upsert", "achieved_rate_per_minute": 40.0, "rate_limit_per_minute": 50,
               "achieved_add_rate_per_minute": 12.5, "add_rate_limit_per_minute": 100,
               "finished": "2030-01-01T02:00:00+00:00", "http_statuses": {"200": 14, "400": 4}}
    path = tmp_path / "m.prom"
    write_metrics_file(path, summary, "migration")
    found = samples(path.read_text())
    assert value(found, "rows", "migration", outcome="created") == 4
    assert value(found, "rows", "migration", outcome="updated") == 6
    assert value(found, "errors", "migration", stage="create") == 0
    assert value(found, "rate_per_minute", "migration", api="add") == 12.5
    assert value(found, "rate_limit_per_minute", "migration", api="add") == 100
    assert value(found, "requests_sent", "migration", api="add") == 4
    assert value(found, "requests_sent", "migration", api="update") == 14


def test_a_progress_makes_a_partial_summary_for_the_running_file(tmp_path):
    now = [100.0]
    progress = Progress(500, 600, clock=lambda: now[0], add_limit_per_minute=100)
    for row in range(2, 12):
        progress.count(RowOutcome(row, Status.SUCCESS, action=CREATED if row < 4 else ""))
    progress.count(RowOutcome(12, Status.ERROR, Stage.API))
    progress.requests, progress.adds, progress.retries = 11, 2, 1
    now[0] = 130.0
    partial = summary_from_progress(progress, started="2030-01-02T02:00:00+00:00")
    assert partial["updated"] == 8 and partial["created"] == 2 and partial["requests"] == 13
    path = tmp_path / "run.prom"
    write_metrics_file(path, partial, JOB, running=True)
    found = samples(path.read_text())
    assert value(found, "running") == 1 and value(found, "duration_seconds") == 30.0
    assert value(found, "rows", outcome="error") == 1 and value(found, "input_rows") == 500
    assert value(found, "rate_limit_per_minute", api="add") == 100
    assert value(found, "run_start_timestamp_seconds") == datetime.fromisoformat(partial["started"]).timestamp()


def test_an_unwritable_metrics_file_is_one_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="batch_updater"):
        assert not write_metrics_file(tmp_path / "missing" / "m.prom", {"exit_code": 0}, JOB)
    assert len(caplog.records) == 1 and "cannot write the metrics file" in caplog.records[0].getMessage()


class Gateway(BaseHTTPRequestHandler):
    received: list[tuple[str, str, str, str]] = []   # method, path, authorization, body

    def _take(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        self.received.append((self.command, self.path, self.headers.get("Authorization", ""), body))
        self.send_response(200)
        self.end_headers()

    do_PUT = do_POST = _take

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def gateway():
    Gateway.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", Gateway.received
    server.shutdown()
    server.server_close()


def test_a_push_replaces_the_group_on_success_and_keeps_the_last_success_otherwise(gateway, real_summary):
    address, received = gateway
    assert push_metrics(f"http://pusher:pa55word@{address}", real_summary, JOB)
    method, path, authorization, body = received[-1]
    assert (method, path) == ("PUT", "/metrics/job/nightly")
    assert authorization == "Basic " + base64.b64encode(b"pusher:pa55word").decode()
    found = samples(body)
    assert value(found, "last_success_timestamp_seconds", job=None) == finished_at(real_summary)
    assert value(found, "rows", job=None, outcome="error") == real_summary["errors"]  # the gateway adds job=

    assert push_metrics(f"http://{address}", dict(real_summary, exit_code=4, status="stopped"), JOB)
    method, path, authorization, body = received[-1]
    assert (method, authorization) == ("POST", "")  # replaces only what it sends: the last success stays
    assert value(samples(body), "last_success_timestamp_seconds", job=None) is None
    assert value(samples(body), "exit_code", job=None) == 4


def test_a_failed_push_is_one_warning_line_without_the_password(caplog, real_summary):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with caplog.at_level(logging.WARNING, logger="batch_updater"):
        assert not push_metrics(f"http://user:s3cret@127.0.0.1:{port}", real_summary, JOB, timeout=2)
    assert len(caplog.records) == 1
    line = caplog.records[0].getMessage()
    assert "cannot push the metrics" in line and "s3cret" not in line and "\n" not in line


def test_metrics_need_no_import_of_matplotlib():
    import subprocess
    import sys

    code = "import sys, batch_updater.output.metrics; print('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.stdout.strip() == "False"
