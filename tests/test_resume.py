"""Crash safety: SIGKILL at random points, SIGTERM, --max-runtime, locks, replays, restarts.

The CLI runs as a real subprocess against a sandbox in this process, so the sandbox's
request record and the kill times share one clock (time.monotonic).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from click.testing import CliRunner

from batch_updater.cli import main
from batch_updater.journal import FLUSH_SECONDS
from batch_updater.sandbox import Faults

from conftest import customer_puts, mobile, read_report, write_config, write_csv

CLI = [sys.executable, "-m", "batch_updater.cli"]
ARRIVAL_SLACK = 0.1  # far less than a new process needs to start sending


def _rows(n: int, start: int = 0) -> list[list[str]]:
    return [[mobile(i), f"Name{i}"] for i in range(start, start + n)]


def _start(source: Path, config: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(CLI + ["run", str(source), "--config", str(config), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _all_reported_rows(summary: dict) -> list[int]:
    rows = []
    for kind in ("success", "errors", "skipped"):
        rows += [int(r["_row"]) for r in read_report(summary["reports"][kind])]
    return sorted(rows)


def _wait_for_requests(server, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while len(customer_puts(server)) < count:
        assert time.monotonic() < deadline, "the run never got going"
        time.sleep(0.01)


def test_sigkill_at_random_points_then_resume_loses_nothing_and_resends_nothing_acknowledged(
        tmp_path, sandbox_server):
    rng = random.Random(20261128)
    server = sandbox_server(faults=Faults(error_503=0.05, drop_before=0.02, drop_after=0.02), seed=7)
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "firstName"], _rows(600))
    config = write_config(tmp_path, server.url, limits={"rate_per_minute": 12_000, "concurrency": 8,
                                                        "max_attempts": 6})
    kills: list[float] = []
    for _ in range(6):
        process = _start(source, config)
        _wait_for_requests(server, len(customer_puts(server)) + rng.randint(5, 60))
        kills.append(time.monotonic())
        process.send_signal(signal.SIGKILL)
        process.wait()
    final = _start(source, config, "--json")
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    summary = json.loads(out)

    assert _all_reported_rows(summary) == list(range(2, 602))
    assert summary["success"] == 600 and summary["resumed"]
    # A row the API answered 200 is sent again only if the kill came before the client
    # journaled that answer: in flight at the kill, or answered within the last group
    # commit's interval. Such rows count as in doubt.
    answered: dict[str, float] = {}
    resent_after_200 = defaultdict(int)
    for request in customer_puts(server):
        key = request.query["identifierValue"]
        if key in answered:
            resent_after_200[key] += 1
            # (a request the killed process wrote just before dying may arrive just after)
            assert any(answered[key] - ARRIVAL_SLACK <= kill <= request.started for kill in kills), key
            assert min(k - answered[key] for k in kills
                       if k >= answered[key] - ARRIVAL_SLACK) < FLUSH_SECONDS + ARRIVAL_SLACK
        if request.status == 200:
            answered[key] = request.started
    assert summary["in_doubt"] >= len(resent_after_200)


def test_sigterm_stops_cleanly_with_exit_4_then_resume_completes(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "firstName"], _rows(100))
    config = write_config(tmp_path, server.url, limits={"rate_per_minute": 1200, "concurrency": 4})
    process = _start(source, config, "--json")
    _wait_for_requests(server, 10)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 4, err
    stopped = json.loads(out)
    assert stopped["status"] == "stopped" and "stopped by SIGTERM" in stopped["reason"]
    assert _all_reported_rows(stopped) == list(range(2, 102))
    assert 0 < stopped["not_sent"] < 100
    sent_before = len(customer_puts(server))

    resumed = _start(source, config, "--json")
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    summary = json.loads(out)
    assert summary["success"] == 100 and summary["resumed"]
    assert len(customer_puts(server)) - sent_before == stopped["not_sent"]


def test_max_runtime_stops_with_exit_4_and_the_next_run_finishes(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(60)])
    config = write_config(tmp_path, server.url, limits={"rate_per_minute": 600})
    runner = CliRunner()
    first = runner.invoke(main, ["run", str(source), "--config", str(config), "--max-runtime", "2s", "--json"])
    assert first.exit_code == 4, first.output
    stopped = json.loads(first.stdout)
    assert "--max-runtime of 2 s reached" in stopped["reason"]
    assert 1 <= stopped["success"] < 60 and stopped["success"] + stopped["not_sent"] == 60

    second = runner.invoke(main, ["run", str(source), "--config", str(config), "--rate-per-minute", "60000"])
    # a changed rate does not change what is sent: same job, resumed
    assert second.exit_code == 0, second.output
    assert "resumed" in second.output
    assert len(customer_puts(server)) == 60


def test_a_second_run_of_the_same_job_is_refused_while_the_first_runs(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(40)])
    config = write_config(tmp_path, server.url, limits={"rate_per_minute": 600})
    first = _start(source, config)
    try:
        _wait_for_requests(server, 2)
        second = subprocess.run(CLI + ["run", str(source), "--config", str(config)],
                                capture_output=True, text=True, timeout=30)
        assert second.returncode == 2
        assert f"is already running (process {first.pid} on " in second.stderr
        assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the dead process's lock is taken over
    after = subprocess.run(CLI + ["run", str(source), "--config", str(config), "--rate-per-minute", "60000"],
                           capture_output=True, text=True, timeout=60)
    assert after.returncode == 0, after.stderr


def test_rerunning_a_finished_job_sends_nothing_and_repeats_its_summary(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(1)], ["919700000000"]])
    config = write_config(tmp_path, server.url)
    runner = CliRunner()
    first = runner.invoke(main, ["run", str(source), "--config", str(config), "--json"])
    again = runner.invoke(main, ["run", str(source), "--config", str(config), "--json"])

    assert first.exit_code == again.exit_code == 1
    assert len(customer_puts(server)) == 2
    replay = json.loads(again.stdout)
    assert replay["replayed"] and replay["reports"] == json.loads(first.stdout)["reports"]
    restarted = runner.invoke(main, ["run", str(source), "--config", str(config), "--restart", "--json"])
    assert restarted.exit_code == 1 and len(customer_puts(server)) == 4
    assert json.loads(restarted.stdout)["in_doubt"] == 0  # nothing of the old job carries over


def test_a_changed_file_is_refused_while_its_earlier_job_is_unfinished(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(30)])
    config = write_config(tmp_path, server.url, limits={"rate_per_minute": 600})
    runner = CliRunner()
    stopped = runner.invoke(main, ["run", str(source), "--config", str(config), "--max-runtime", "0.5s"])
    assert stopped.exit_code == 4, stopped.output

    write_csv(source, ["identifierValue"], [[mobile(i)] for i in range(31)])
    refused = runner.invoke(main, ["run", str(source), "--config", str(config)])
    assert refused.exit_code == 2
    assert "or the settings changed since job" in refused.output
    assert "run with --restart to start over" in refused.output

    restarted = runner.invoke(main, ["run", str(source), "--config", str(config), "--restart",
                                     "--rate-per-minute", "60000"])
    assert restarted.exit_code == 0, restarted.output


def test_reports_after_a_resume_cover_the_whole_file_once(tmp_path, sandbox_server):
    server = sandbox_server()
    rows = _rows(40) + [["919700000000", "Ghost"], ["123", "Invalid"]]
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "firstName"], rows)
    config = write_config(tmp_path, server.url, limits={"rate_per_minute": 600})
    runner = CliRunner()
    assert runner.invoke(main, ["run", str(source), "--config", str(config), "--max-runtime", "2s"]).exit_code == 4
    done = runner.invoke(main, ["run", str(source), "--config", str(config), "--rate-per-minute", "60000", "--json"])
    summary = json.loads(done.stdout)

    assert done.exit_code == 1
    assert _all_reported_rows(summary) == list(range(2, 44))
    errors = {r["_row"]: r["_stage"] for r in read_report(summary["reports"]["errors"])}
    assert errors == {"42": "api", "43": "validation"}
    assert oct(os.stat(summary["reports"]["errors"]).st_mode & 0o777) == "0o600"
