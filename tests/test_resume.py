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
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import customer_puts, mobile, read_report, wait_for_requests, write_config, write_csv

from batch_updater.cli import main
from batch_updater.sandbox import Faults

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


# A kill between the answer leaving the sandbox and the client's one write of it is the
# only way a row answered 200 is sent again: the client reads, classifies and appends
# the answer in well under this (a group commit's interval is 0.2 s).
ACK_WINDOW = 0.05


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_resends_no_row_answered_200(tmp_path, sandbox_server, capsys):
    rng = random.Random(20261204)
    faults = Faults(error_503=0.05, drop_before=0.02, drop_after=0.02, slow=0.03, slow_seconds=0.3)
    server = sandbox_server(faults=faults, seed=7)
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "firstName"], _rows(1500))
    config = write_config(tmp_path, server.url, limits={"rate_per_minute": 12_000, "concurrency": 8,
                                                        "max_attempts": 8})
    kills: list[float] = []
    for _ in range(5):
        process = _start(source, config)
        wait_for_requests(server, len(customer_puts(server)) + rng.randint(20, 250))
        kills.append(time.monotonic())
        process.send_signal(signal.SIGKILL)
        process.wait()
    final = _start(source, config, "--json")
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    summary = json.loads(out)
    assert _all_reported_rows(summary) == list(range(2, 1502))
    assert summary["success"] == 1500 and summary["resumed"]

    puts = customer_puts(server)
    answered: dict[str, object] = {}  # each customer's last request answered 200
    resent_after_200 = []
    gaps = []  # from the answer leaving the sandbox to the kill, for each row sent again
    for request in puts:
        key = request.query["identifierValue"]
        if key in answered:
            first = answered[key]
            # allowed only when a kill came before the client could have written the answer down
            # (a request written just before the kill may arrive just after it)
            assert any(first.started - ARRIVAL_SLACK <= kill <= min(first.answered + ACK_WINDOW, request.started)
                       for kill in kills), (key, first.answered, kills)
            resent_after_200.append(key)
            # the kill the assertion above allowed (a request may arrive just after the kill)
            gaps.append(min(kill - first.answered for kill in kills if kill >= first.started - ARRIVAL_SLACK))
        if request.status == 200:
            answered[key] = request
    assert summary["in_doubt"] >= len(resent_after_200)
    delivered = sum(gap >= 0 for gap in gaps)  # answered before the kill, yet sent again
    with capsys.disabled():
        print(f"\nkill test: {len(kills)} kills, {len(puts)} requests at {_sending_rate(puts, kills):.0f}/s"
              f" while the killed runs sent, {sum(r.status == 200 for r in puts)} answered 200;"
              f" sent again: {len(resent_after_200) - delivered} whose answer the kill cut off,"
              f" {delivered} answered before the kill (at most"
              f" {max([gap for gap in gaps if gap >= 0], default=0) * 1000:.1f} ms before it)")


def _sending_rate(puts: list, kills: list[float]) -> float:
    """Requests per second of the killed runs, each from its first request to its kill."""
    count = span = 0.0
    begin = 0.0
    for kill in kills:
        run = [r for r in puts if begin < r.started <= kill]
        if len(run) > 1:
            count += len(run)
            span += kill - run[0].started
        begin = kill
    return count / span if span else 0.0


@pytest.mark.slow
def test_sigterm_stops_cleanly_with_exit_4_then_resume_completes(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "firstName"], _rows(100))
    config = write_config(tmp_path, server.url, limits={"rate_per_minute": 1200, "concurrency": 4})
    process = _start(source, config, "--json")
    wait_for_requests(server, 10)
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
    assert "continued: the rows earlier runs settled kept their outcome" in second.output
    assert len(customer_puts(server)) == 60


def test_a_second_run_of_the_same_job_is_refused_while_the_first_runs(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(40)])
    config = write_config(tmp_path, server.url, limits={"rate_per_minute": 600})
    first = _start(source, config)
    try:
        wait_for_requests(server, 2)
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
    assert "in.csv: the file's content changed since job" in refused.output
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
