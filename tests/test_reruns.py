"""Reruns finish the job: a run that stopped or failed for a reason that is not about the
rows (a wrong password, a dead endpoint, Ctrl-C) is fixed and run again, and that rerun
sends exactly the rows left: not sent, or failed for the run's reason. Rows the API
refused for themselves stay settled unless --retry-failed asks for them again.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import PASSWORD, customer_puts, mobile, read_report, wait_for_requests, write_config, write_csv

from batch_updater.cli import main
from batch_updater.output.reports import NEXT_REFUSED, NEXT_RUN
from batch_updater.sandbox import Faults
from batch_updater.state.journal import Journal

CLI = [sys.executable, "-m", "batch_updater.cli"]


def _run(source: Path, config: Path, *extra: str) -> tuple[int, dict, str]:
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--json", *extra])
    assert result.stdout.startswith("{"), result.output
    return result.exit_code, json.loads(result.stdout), result.stderr


def _reports(summary: dict) -> dict[str, list[dict[str, str]]]:
    return {kind: read_report(summary["reports"][kind]) for kind in ("success", "errors", "skipped")}


def _reported_rows(summary: dict) -> list[int]:
    return sorted(int(r["_row"]) for rows in _reports(summary).values() for r in rows)


def _adds_up(summary: dict) -> bool:
    return summary["rows"] == (summary["success"] + summary["errors"] + summary["skipped"]
                               + summary["not_sent"])


def _answered_200(server) -> Counter:
    return Counter(r.query["identifierValue"] for r in customer_puts(server) if r.status == 200)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# (a) -----------------------------------------------------------------------------------------

def test_a_wrong_password_aborts_then_the_right_one_finishes_every_row(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(200)])
    config = write_config(tmp_path, server.url, password="Wr0ng-Secret!", limits={"concurrency": 4})

    code, aborted, _ = _run(source, config)
    assert code == 3 and "check [api] username and the password" in aborted["reason"]
    assert "rows that failed this way, or were not sent, are sent again" in aborted["reason"]
    reports = _reports(aborted)
    assert reports["errors"] and all(r["_http_status"] == "401" and r["_next"] == NEXT_RUN
                                     for r in reports["errors"])
    assert all(r["_reason"] == "not_sent" and r["_next"] == NEXT_RUN for r in reports["skipped"])
    assert aborted["not_sent"] == len(reports["skipped"]) == 200 - aborted["errors"]
    assert aborted["to_send_again"] == 200 and _adds_up(aborted)

    (tmp_path / "secret").write_text(PASSWORD)  # the operator fixes the password
    code, done, _ = _run(source, config)
    assert code == 0, done["reason"]
    assert done["resumed"] and done["success"] == 200 and done["to_send_again"] == 0
    assert done["sent_again"] == aborted["errors"]  # the 401s; the rest had never been sent
    assert sorted(int(r["_row"]) for r in _reports(done)["success"]) == list(range(2, 202))
    assert set(_answered_200(server).values()) == {1} and len(_answered_200(server)) == 200


# (b) -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_an_unreachable_endpoint_aborts_fast_whatever_the_size_then_the_rerun_finishes(
        tmp_path, sandbox_server):
    port = _free_port()  # nothing listens there yet
    url = f"http://127.0.0.1:{port}"
    for rows in (29, 20_000):
        folder = tmp_path / str(rows)
        folder.mkdir()
        source = write_csv(folder / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(rows)])
        config = write_config(folder, url, limits={"rate_per_minute": 600})
        began = time.monotonic()
        code, aborted, _ = _run(source, config)
        assert code == 3 and time.monotonic() - began < 10
        assert aborted["reason"].startswith(f"cannot reach the API: cannot connect to {url}"
                                            " (Connection refused); check [api] base_url, DNS and the network")
        # nothing reached the API: every row is not sent, none an error
        assert (aborted["requests"], aborted["errors"], aborted["not_sent"]) == (0, 0, rows)
        assert {r["_reason"] for r in _reports(aborted)["skipped"]} == {"not_sent"}

    server = sandbox_server(port=port, customers=20_000)  # the endpoint is up again
    for rows in (29, 20_000):
        folder = tmp_path / str(rows)
        before = len(customer_puts(server))
        code, done, _ = _run(folder / "in.csv", folder / "config.toml", "--rate-per-minute", "1000000")
        assert code == 0, done["reason"]
        assert done["success"] == rows and _reported_rows(done) == list(range(2, rows + 2))
        assert len(customer_puts(server)) - before == rows  # every row once


# (c) -----------------------------------------------------------------------------------------

def test_ctrl_c_leaves_unsent_rows_out_of_errors_and_the_resume_sends_them(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(300)])
    config = write_config(tmp_path, server.url, limits={"rate_per_minute": 1200, "concurrency": 4})
    process = subprocess.Popen(CLI + ["run", str(source), "--config", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_requests(server, 20)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 4, err

    counts = next(line for line in out.splitlines() if line.startswith("300 rows: "))
    summary = json.loads(Path(out.split("summary: ")[1].strip()).read_text())
    assert counts == (f"300 rows: {summary['success']} updated, 0 errors (0 invalid, 0 refused by the API,"
                      f" 0 network), 0 skipped, {summary['not_sent']} not sent")
    assert summary["errors"] == 0 and summary["not_sent"] > 0 and _adds_up(summary)
    reports = _reports(summary)
    assert not reports["errors"]
    assert {(r["_reason"], r["_next"]) for r in reports["skipped"]} == {("not_sent", NEXT_RUN)}
    assert "stopped: stopped by SIGINT; run the same command again to resume" in out

    code, done, _ = _run(source, config, "--rate-per-minute", "1000000")
    assert code == 0 and done["success"] == 300 and _adds_up(done)
    assert set(_answered_200(server).values()) == {1} and len(_answered_200(server)) == 300


# (d) -----------------------------------------------------------------------------------------

def test_retry_failed_resends_exactly_the_rows_the_api_refused(tmp_path, sandbox_server):
    server = sandbox_server()
    rows = [[mobile(i)] for i in range(10)] + [["919700000001"], ["12"], ["919700000002"]]
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], rows)
    config = write_config(tmp_path, server.url)

    code, first, _ = _run(source, config)
    assert code == 1 and (first["api_errors"], first["validation_errors"]) == (2, 1)
    refused = {r["_row"]: r["_next"] for r in _reports(first)["errors"] if r["_stage"] == "api"}
    assert refused == {"12": NEXT_REFUSED, "14": NEXT_REFUSED}
    sent = len(customer_puts(server))

    code, replay, _ = _run(source, config)  # a plain rerun of a finished job sends nothing
    assert code == 1 and replay["replayed"] and len(customer_puts(server)) == sent

    code, retried, _ = _run(source, config, "--retry-failed")
    assert code == 1 and retried["resumed"] and not retried["replayed"] and retried["sent_again"] == 2
    again = customer_puts(server)[sent:]
    assert sorted(r.query["identifierValue"] for r in again) == ["919700000001", "919700000002"]
    assert _reported_rows(retried) == list(range(2, 15))  # the whole file, reported again
    assert (retried["success"], retried["api_errors"], retried["validation_errors"]) == (10, 2, 1)


# (f) -----------------------------------------------------------------------------------------

def test_in_doubt_is_reported_per_row_and_stays_the_jobs_figure(tmp_path, sandbox_server):
    server = sandbox_server(faults=Faults(drop_after=0.3), seed=3)
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(60)])
    config = write_config(tmp_path, server.url, limits={"rate_per_minute": 600, "max_attempts": 8})
    code, stopped, _ = _run(source, config, "--max-runtime", "2s")
    assert code == 4
    code, done, _ = _run(source, config, "--rate-per-minute", "1000000")
    assert code == 0 and done["success"] == 60

    dropped = {r.query["identifierValue"] for r in customer_puts(server) if r.status == 0}
    flagged = {r["identifierValue"] for r in _reports(done)["success"] if r["_in_doubt"] == "true"}
    assert dropped and flagged == dropped
    assert done["in_doubt"] == len(dropped) >= stopped["in_doubt"]
    assert done["in_doubt_requests"] == sum(r.status == 0 for r in customer_puts(server))
    code, replay, _ = _run(source, config)
    assert replay["replayed"] and (replay["in_doubt"], replay["in_doubt_requests"]) == (
        done["in_doubt"], done["in_doubt_requests"])


def test_rows_fed_back_from_errors_csv_keep_their_original_row_number(tmp_path, sandbox_server):
    server = sandbox_server()
    rows = [[mobile(i), "A"] for i in range(30)]
    rows[26] = ["919700000003", "Ghost"]  # row 28 of the nightly file: not found
    rows[5] = ["12", "Short"]             # row 7: not a mobile number
    source = write_csv(tmp_path / "nightly.csv", ["identifierValue", "firstName"], rows)
    config = write_config(tmp_path, server.url)
    code, nightly, _ = _run(source, config)
    assert code == 1

    fed_back = Path(nightly["reports"]["errors"])
    code, second, _ = _run(fed_back, config)
    assert code == 1
    errors = {r["identifierValue"]: (r["_row"], r["_source_row"]) for r in _reports(second)["errors"]}
    assert errors == {"12": ("2", "7"), "919700000003": ("3", "28")}

    again = Path(second["reports"]["errors"])  # and once more: still the nightly file's numbers
    code, third, _ = _run(again, config)
    assert {r["_source_row"] for r in _reports(third)["errors"]} == {"7", "28"}
    assert all(r["_source_row"] == r["_row"] for r in _reports(nightly)["success"])


# The journal's side of it -----------------------------------------------------------------------

def _crashed(path: Path) -> Journal:
    """A journal whose process dies with it open: no flush, no close."""
    return Journal(path)


def test_an_acknowledged_answer_survives_a_crash_before_any_commit(tmp_path):
    from batch_updater.outcomes import RowOutcome, Stage, Status
    from batch_updater.state.journal import IN_FLIGHT, Journal

    path = tmp_path / "journal.sqlite"
    crashed = _crashed(path)
    for row in (2, 3, 4, 5):
        crashed.mark_in_flight(row)
    crashed.acknowledge(RowOutcome(2, Status.SUCCESS, http_status=200, attempts=1, customer_id="c2"))
    crashed.acknowledge(RowOutcome(3, Status.ERROR, Stage.API, "8015", "not found", 400, 1))
    crashed.acknowledge(RowOutcome(4, Status.ERROR, Stage.NETWORK, "", "reset", None, 5, in_doubt=True,
                                   rerun=True))
    acks, torn = crashed._acks, b'[5,"success",null]'
    at = acks._used - acks._base
    acks._map[at + 4:at + 4 + len(torn)] = torn  # the kill came before its length was stored
    with Journal(path) as journal:
        assert journal.states(0, 10) == {2: "success", 3: "error", 4: IN_FLIGHT, 5: IN_FLIGHT}
        assert journal.outcomes(2, 2)[2].customer_id == "c2"
    assert not Path(str(path) + ".acks").exists() and not Path(str(path) + ".inflight").exists()


def test_failures_of_the_run_are_sent_again_and_retry_failed_reopens_the_refusals(tmp_path):
    from batch_updater.outcomes import RowOutcome, Stage, Status
    from batch_updater.state.journal import RESEND, Journal

    with Journal(tmp_path / "journal.sqlite") as journal:
        journal.record(RowOutcome(2, Status.ERROR, Stage.VALIDATION, "", "bad mobile"))
        journal.record(RowOutcome(3, Status.ERROR, Stage.API, "8015", "not found", 400))
        journal.record(RowOutcome(4, Status.ERROR, Stage.API, "", "HTTP 401", 401, rerun=True))
        journal.record(RowOutcome(5, Status.ERROR, Stage.NETWORK, "", "refused", rerun=True))
        journal.flush()
        assert journal.states(0, 10) == {2: "error", 3: "error", 4: RESEND, 5: RESEND}
        assert journal.reopen_failed() == 1
        assert journal.states(0, 10) == {2: "error", 3: RESEND, 4: RESEND, 5: RESEND}


def test_a_run_that_gives_up_on_its_requests_leaves_them_in_flight(tmp_path):
    from batch_updater.outcomes import RowOutcome, Status
    from batch_updater.state.journal import IN_FLIGHT, Journal

    with Journal(tmp_path / "journal.sqlite") as journal:
        for row in (2, 3):
            journal.mark_in_flight(row)
        journal.acknowledge(RowOutcome(2, Status.SUCCESS, http_status=200))
    with Journal(tmp_path / "journal.sqlite") as journal:
        assert journal.states(0, 10) == {2: "success", 3: IN_FLIGHT}
        assert journal.outcomes(3, 3)[3].stage.value == "not_sent" and journal.outcomes(3, 3)[3].in_doubt


def test_a_finished_run_with_5xx_failures_is_completed_by_the_next_run(tmp_path, sandbox_server):
    server = sandbox_server(faults=Faults(error_503=0.3), seed=5)
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(40)])
    config = write_config(tmp_path, server.url, limits={"max_attempts": 1,
                                                        "consecutive_failures_to_abort": 1000})
    code, first, _ = _run(source, config)
    failed = {r["identifierValue"] for r in _reports(first)["errors"]}
    assert code == 1 and failed and first["to_send_again"] == len(failed) == first["api_errors"]
    assert all(r["_http_status"] == "503" and r["_next"] == NEXT_RUN for r in _reports(first)["errors"])

    server.state.faults = Faults()  # the API recovered
    sent = len(customer_puts(server))
    code, second, _ = _run(source, config)
    assert code == 0 and second["resumed"] and not second["replayed"] and second["success"] == 40
    assert {r.query["identifierValue"] for r in customer_puts(server)[sent:]} == failed
    assert len(customer_puts(server)) - sent == len(failed)
    code, third, _ = _run(source, config)
    assert third["replayed"] and len(customer_puts(server)) - sent == len(failed)


@pytest.mark.slow
def test_a_corrected_base_url_takes_over_a_job_that_never_reached_the_api(tmp_path, sandbox_server):
    server = sandbox_server()
    dead = f"http://127.0.0.1:{_free_port()}"
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(50)])
    config = write_config(tmp_path, dead, limits={"rate_per_minute": 600})
    code, aborted, _ = _run(source, config)
    assert code == 3

    code, done, _ = _run(source, config, "--base-url", server.url)  # the operator fixes the URL
    assert code == 0 and done["success"] == 50 and len(customer_puts(server)) == 50

    # A job that did reach an API is not handed over silently: the refusal names the change.
    code, stopped, _ = _run(source, config, "--base-url", server.url, "--restart", "--max-runtime", "1s")
    assert code == 4 and stopped["success"] > 0
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(config)])
    assert result.exit_code == 2
    assert (f"in.csv: [api] base_url (was {server.url}) changed since job {stopped['job_id']} stopped"
            " unfinished") in result.stderr


def test_an_unreachable_endpoint_aborts_fast_with_oauth_too(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}"
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(2000)])
    config = write_config(tmp_path, url, api={"auth": "oauth", "username": "demo-key"})
    code, aborted, _ = _run(source, config)
    assert code == 3 and aborted["reason"].startswith(f"cannot reach the API: cannot connect to {url}")
    assert (aborted["errors"], aborted["not_sent"]) == (0, 2000)


@pytest.mark.slow
def test_restart_after_a_crash_sends_every_row_again(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(300)])
    config = write_config(tmp_path, server.url, limits={"rate_per_minute": 6000})
    process = subprocess.Popen(CLI + ["run", str(source), "--config", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_requests(server, 40)
    process.kill()
    process.wait()
    before = len(customer_puts(server))
    code, restarted, _ = _run(source, config, "--restart", "--rate-per-minute", "1000000")
    assert code == 0 and restarted["success"] == 300 and not restarted["resumed"]
    assert len(customer_puts(server)) - before == 300  # the crashed run's answers are set aside too


@pytest.mark.slow
def test_giving_up_on_requests_in_flight_reports_them_in_doubt(tmp_path, sandbox_server):
    server = sandbox_server(latency_seconds=3.0)
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(50)])
    config = write_config(tmp_path, server.url, limits={"concurrency": 4})
    process = subprocess.Popen(CLI + ["run", str(source), "--config", str(config), "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_requests(server, 4)
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)  # the second Ctrl-C gives up on the 4 requests out
    out, err = process.communicate(timeout=30)
    assert process.returncode == 4, err
    summary = json.loads(out)
    doubtful = [r for r in _reports(summary)["skipped"] if r["_in_doubt"] == "true"]
    assert summary["in_doubt"] == len(doubtful) == 4 and summary["not_sent"] == 50
    assert {r["_reason"] for r in doubtful} == {"not_sent"}


def test_a_job_still_running_is_not_taken_over(tmp_path, sandbox_server):
    server = sandbox_server(latency_seconds=0.5)
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(200)])
    config = write_config(tmp_path, server.url, limits={"concurrency": 2})
    process = subprocess.Popen(CLI + ["run", str(source), "--config", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_requests(server, 2)
        result = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--restart",
                                           "--base-url", f"http://127.0.0.1:{_free_port()}"])
        assert result.exit_code == 2 and "is already running (process" in result.stderr
        assert process.poll() is None  # and the running job is untouched
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 4


def test_a_journal_of_the_earlier_version_sends_its_run_failures_again(tmp_path):
    import sqlite3

    from batch_updater.state.journal import IN_FLIGHT, RESEND, Journal

    path = tmp_path / "journal.sqlite"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE outcome (row INTEGER PRIMARY KEY, status TEXT NOT NULL, stage TEXT, code TEXT,
            message TEXT, http_status INTEGER, attempts INTEGER, customer_id TEXT, warnings TEXT,
            identifier TEXT, in_doubt INTEGER);
        INSERT INTO outcome (row, status, stage, code, http_status, in_doubt) VALUES
            (2, 'success', NULL, '', 200, 0), (3, 'error', 'api', '8015', 400, 0),
            (4, 'error', 'api', '', 503, 0), (5, 'error', 'api', '', 401, 0),
            (6, 'error', 'network', '', NULL, 1), (7, 'error', 'validation', '', NULL, 0),
            (8, 'error', 'api', '8015', 200, 0), (9, 'error', 'api', '', 404, 0);
    """)
    old.commit()
    old.close()
    with Journal(path) as journal:
        assert journal.states(0, 10) == {2: "success", 3: "error", 4: RESEND, 5: RESEND, 6: IN_FLIGHT,
                                         7: "error", 8: "error", 9: RESEND}


def test_a_failed_group_commit_loses_no_acknowledged_row(tmp_path, monkeypatch):
    from batch_updater.outcomes import RowOutcome, Status
    from batch_updater.state.journal import Journal

    journal = Journal(tmp_path / "journal.sqlite")
    for row in (2, 3):
        journal.mark_in_flight(row)
        journal.acknowledge(RowOutcome(row, Status.SUCCESS, http_status=200))
    real_commit = journal._commit
    monkeypatch.setattr(journal, "_commit", lambda rows, runs: (_ for _ in ()).throw(OSError("disk full")))
    try:
        journal.flush()
    except OSError:
        pass
    monkeypatch.setattr(journal, "_commit", real_commit)
    journal.acknowledge(RowOutcome(4, Status.SUCCESS, http_status=200))
    journal.close()
    with Journal(tmp_path / "journal.sqlite") as reopened:
        assert reopened.states(0, 10) == {2: "success", 3: "success", 4: "success"}


def test_an_answer_larger_than_a_log_segment_is_acknowledged(tmp_path):
    from batch_updater.outcomes import RowOutcome, Status

    path = tmp_path / "journal.sqlite"
    crashed = _crashed(path)
    crashed.mark_in_flight(2)
    crashed.acknowledge(RowOutcome(2, Status.SUCCESS, http_status=200, warnings="91015: " + "x" * 600_000))
    with Journal(path) as journal:  # the crashed run's ack log, taken in
        assert journal.states(0, 10) == {2: "success"}
        assert journal.successes(2, 2)[0][6].startswith("91015: xxx")
