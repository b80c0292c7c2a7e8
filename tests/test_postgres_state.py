"""Job state in PostgreSQL ([state] url): through the CLI, against the sandbox and a
throwaway cluster (tests/pg_cluster.py). Runs on one "host" stand in for workers by
their output folders; each test has a database of its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import PASSWORD as API_PASSWORD
from conftest import customer_puts, mobile, read_report, wait_for_requests, write_config, write_csv
from pg_cluster import PASSWORD, pg_cluster  # noqa: F401 - the session's cluster fixture

from batch_updater.cli import main
from batch_updater.integrations.airflow import run_task

CLI = [sys.executable, "-m", "batch_updater.cli"]
ACK_WINDOW = 0.05  # as tests/test_resume.py: from an answer leaving the sandbox to the client's write of it
ARRIVAL_SLACK = 0.1


@pytest.fixture
def state_url(pg_cluster):  # noqa: F811
    return pg_cluster.new_database()


@pytest.fixture
def environ(tmp_path):
    """The workers' environment: the database's password, and this host's state folder."""
    return {**os.environ, "BATCH_UPDATER_STATE_PASSWORD": PASSWORD, "XDG_STATE_HOME": str(tmp_path / "host")}


def _rows(n: int) -> list[list[str]]:
    return [[mobile(i), f"Name{i}"] for i in range(n)]


def _run(environ: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, env=environ, timeout=120)


def _start(environ: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen(CLI + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ)


def _reported_rows(summary: dict) -> list[int]:
    return sorted(int(r["_row"]) for kind in ("success", "errors", "skipped")
                  for r in read_report(summary["reports"][kind]))


def test_a_run_keeps_its_state_in_postgres_and_writes_reports_as_usual(tmp_path, sandbox_server, state_url,
                                                                         environ):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "firstName"], _rows(200))
    config = write_config(tmp_path, server.url, state={"url": state_url})
    done = _run(environ, "run", str(source), "--config", str(config), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["success"] == 200 and _reported_rows(summary) == list(range(2, 202))
    assert summary["config"]["state"]["url"] == state_url.replace("batch@", "***@")
    job_folder = Path(summary["reports"]["success"]).parent.parent
    assert not (job_folder / "journal.sqlite").exists() and not (tmp_path / "out" / "state.sqlite").exists()
    listed = _run(environ, "jobs", "--config", str(config), "--json")
    assert [(job["job_id"], job["status"]) for job in json.loads(listed.stdout)] == [(summary["job_id"], "finished")]
    stats = _run(environ, "state", "stats", "--config", str(config))
    assert "PostgreSQL 127.0.0.1/" in stats.stdout and ": 200 customers" in stats.stdout


@pytest.mark.parametrize("host", ["same host", "another host"])
def test_kill_9_then_resume_from_another_output_folder_resends_nothing_acknowledged(
        tmp_path, sandbox_server, state_url, environ, capsys, host):
    """On another host the killed worker's local ack log is out of reach: the answers it had
    not committed yet are in flight in PostgreSQL, so those rows are sent again, in doubt."""
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "firstName"], _rows(2000))
    config = write_config(tmp_path, server.url, state={"url": state_url},
                          limits={"rate_per_minute": 60_000, "concurrency": 16})
    killed = _start(environ, "run", str(source), "--config", str(config), "--output-dir", str(tmp_path / "worker-a"))
    wait_for_requests(server, 600)
    kill = time.monotonic()
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    sent_before = len(customer_puts(server))
    assert sent_before < 2000, "the run finished before the kill: nothing was in flight"

    if host == "another host":
        environ = {**environ, "XDG_STATE_HOME": str(tmp_path / "host-b")}
    resumed = _run(environ, "run", str(source), "--config", str(config), "--output-dir", str(tmp_path / "worker-b"),
                   "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["resumed"] and summary["success"] == 2000
    assert _reported_rows(summary) == list(range(2, 2002))  # every row in exactly one report
    assert str(tmp_path / "worker-b") in summary["reports"]["success"]

    answered, resent = {}, []
    for request in customer_puts(server):
        key = request.query["identifierValue"]
        if key in answered:  # sent again: only when the kill cut its answer off before the client wrote it
            first = answered[key]
            window = ACK_WINDOW if host == "same host" else 1.0  # a group commit's interval and then some
            assert first.started - ARRIVAL_SLACK <= kill <= first.answered + window, key
            resent.append(key)
        if request.status == 200:
            answered[key] = request
    assert len(answered) == 2000 and summary["in_doubt"] >= len(resent)
    with capsys.disabled():
        print(f"\npg kill test ({host}): {sent_before} requests before the kill, {len(resent)} rows sent again"
              " (in doubt)")


def test_a_second_worker_is_refused_and_the_lock_dies_with_a_killed_holder(tmp_path, sandbox_server, state_url,
                                                                          environ):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(60)])
    config = write_config(tmp_path, server.url, state={"url": state_url}, limits={"rate_per_minute": 600})
    first = _start(environ, "run", str(source), "--config", str(config), "--output-dir", str(tmp_path / "a"))
    try:
        wait_for_requests(server, 2)
        second = _run(environ, "run", str(source), "--config", str(config), "--output-dir", str(tmp_path / "b"))
        assert second.returncode == 2
        assert f"is already running (process {first.pid} on " in second.stderr
        assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
        listed = json.loads(_run(environ, "jobs", "--config", str(config), "--json").stdout)
        assert [job["status"] for job in listed] == ["running"]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    listed = json.loads(_run(environ, "jobs", "--config", str(config), "--json").stdout)
    assert [job["status"] for job in listed] == ["interrupted"]
    third = _run(environ, "run", str(source), "--config", str(config), "--output-dir", str(tmp_path / "b"),
                 "--rate-per-minute", "60000", "--json")
    assert third.returncode == 0, third.stderr
    assert json.loads(third.stdout)["resumed"]


def test_only_changed_state_is_shared_across_output_folders(tmp_path, sandbox_server, state_url, environ):
    server = sandbox_server()
    rows = _rows(50)
    config = write_config(tmp_path, server.url, state={"url": state_url})
    first = write_csv(tmp_path / "monday.csv", ["identifierValue", "firstName"], rows)
    assert _run(environ, "run", str(first), "--config", str(config), "--only-changed",
                "--output-dir", str(tmp_path / "a")).returncode == 0
    rows[7][1] = "Renamed"
    second = write_csv(tmp_path / "tuesday.csv", ["identifierValue", "firstName"], rows)
    before = len(customer_puts(server))
    done = _run(environ, "run", str(second), "--config", str(config), "--only-changed",
                "--output-dir", str(tmp_path / "b"), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["skipped"] == 49
    assert [r.query["identifierValue"] for r in customer_puts(server)[before:]] == [mobile(7)]
    forgot = _run(environ, "state", "forget", mobile(3), "--config", str(config))
    assert forgot.stdout.strip() == "forgot 1 customers"
    assert "PostgreSQL" in _run(environ, "state", "stats", "--config", str(config)).stdout
    assert _run(environ, "state", "forget", "--all", "--config", str(config)).stdout.strip() == "forgot 49 customers"


@pytest.mark.parametrize("in_url", [False, True])
def test_a_wrong_password_is_one_line_exit_3_without_the_password(tmp_path, sandbox_server, state_url, environ,
                                                                  in_url):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(1)]])
    wrong = "Wr0ng-pass-xyz"
    url = state_url.replace("batch@", f"batch:{wrong}@") if in_url else state_url
    config = write_config(tmp_path, server.url, state={"url": url})
    config.chmod(0o600)  # a password in it: readable by others, it would add a warning line
    env = {k: v for k, v in environ.items() if k != "BATCH_UPDATER_STATE_PASSWORD"}
    if not in_url:
        env["BATCH_UPDATER_STATE_PASSWORD"] = wrong
    for command in (["run", str(source)], ["jobs"], ["state", "stats"]):
        done = _run(env, *command, "--config", str(config))
        assert done.returncode == 3, (command, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert "password authentication failed" in done.stderr and f"127.0.0.1/{state_url.rsplit('/', 1)[1]}" \
            in done.stderr
        assert wrong not in done.stderr + done.stdout
    assert customer_puts(server) == []


def test_sqlite_stays_the_default(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(5)])
    config = write_config(tmp_path, server.url)
    done = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--json"], env={
        "BATCH_UPDATER_STATE_URL": None})
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert (Path(summary["reports"]["success"]).parent.parent / "journal.sqlite").exists()
    assert (tmp_path / "out" / "state.sqlite").exists() and summary["config"]["state"]["url"] is None


def test_the_airflow_task_keeps_its_state_in_the_state_connection(tmp_path, sandbox_server, state_url, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "host"))
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(6)])
    summary = run_task(str(source), host=server.url, login="demo.till", password=API_PASSWORD,
                       extras={"rate_per_minute": 60_000}, output_dir=str(tmp_path / "out"), environ={},
                       state=(state_url, PASSWORD))
    assert summary["success"] == 6 and PASSWORD not in json.dumps(summary, default=str)
    again = run_task(str(source), host=server.url, login="demo.till", password=API_PASSWORD,
                     extras={"rate_per_minute": 60_000, "state_url": state_url}, output_dir=str(tmp_path / "other"),
                     environ={"BATCH_UPDATER_STATE_PASSWORD": PASSWORD})
    assert again["job_id"] == summary["job_id"] and len(customer_puts(server)) == 6  # replayed from PostgreSQL


def _terminated_mid_run(tmp_path, server, state_url: str, environ: dict, pg_cluster, *, rows: int,  # noqa: F811
                        connection: str | None = None):
    """A run against the sandbox whose database sessions (or only the one named `connection`)
    the server ends once requests go out: its file, config, stderr and process."""
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(rows)])
    config = write_config(tmp_path, server.url, state={"url": state_url}, limits={"rate_per_minute": 1200})
    run = _start(environ, "run", str(source), "--config", str(config))
    wait_for_requests(server, 5)
    with pg_cluster.admin() as db:
        db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                   " AND (%s::text IS NULL OR application_name = %s)",
                   (state_url.rsplit("/", 1)[1], connection, connection))
    _, err = run.communicate(timeout=60)
    return source, config, err, run


def test_a_database_that_goes_away_mid_run_aborts_with_one_line(tmp_path, sandbox_server, state_url, environ,
                                                                 pg_cluster):  # noqa: F811
    server = sandbox_server()
    _, _, err, run = _terminated_mid_run(tmp_path, server, state_url, environ, pg_cluster, rows=200)
    assert run.returncode == 3, err
    assert err.count("batch-updater: error: ") == 1 and err.endswith("run again to resume\n"), err
    assert "job state in PostgreSQL at 127.0.0.1/" in err and "Traceback" not in err
    assert len(customer_puts(server)) < 200  # nothing was sent once the marks could not be written


def test_the_journals_connection_lost_alone_stops_the_run(tmp_path, sandbox_server, state_url, environ,
                                                          pg_cluster):  # noqa: F811
    """The lock's session lives on, so marks are still committed; but no answer can be: the run
    stops (exit 3) instead of sending for hours what a resume elsewhere would send again."""
    server = sandbox_server()
    source, config, err, run = _terminated_mid_run(tmp_path, server, state_url, environ, pg_cluster, rows=300,
                                                   connection="batch-updater journal")
    assert run.returncode == 3, err
    assert "job state in PostgreSQL at 127.0.0.1/" in err and "Traceback" not in err
    assert len(customer_puts(server)) < 100, "it stopped within seconds, not at the end of the file"
    resumed = _run(environ, "run", str(source), "--config", str(config), "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert _reported_rows(json.loads(resumed.stdout)) == list(range(2, 302))


@pytest.mark.slow
def test_the_benchmark_runs(tmp_path, pg_cluster):  # noqa: F811 - its cluster: skipped without one
    script = Path(__file__).resolve().parent.parent / "bench" / "bench_pg_state.py"
    done = subprocess.run([sys.executable, str(script), "--rows", "200", "--latency-ms", "0", "--repeat", "1",
                           "--json", str(tmp_path / "figures.json")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "200 rows, 0 ms latency" in done.stdout and "ratio" in done.stdout
    assert json.loads((tmp_path / "figures.json").read_text())["0 ms"]["ratio"]["median_of_rounds"] > 0


def test_check_reaches_the_state_database_and_names_a_wrong_password(tmp_path, sandbox_server, state_url):
    from batch_updater.check import check_setup

    config = write_config(tmp_path, sandbox_server().url, state={"url": state_url})
    environ = {"BATCH_UPDATER_STATE_PASSWORD": PASSWORD}
    steps = {step.name: step for step in check_setup(config, environ=environ)}
    assert steps["state"].status == "ok", steps["state"].detail
    assert steps["state"].detail.startswith("PostgreSQL ") and "first run" in steps["state"].detail
    wrong = {step.name: step for step in check_setup(config, environ={"BATCH_UPDATER_STATE_PASSWORD": "Wr0ng-pw"})}
    assert wrong["state"].status == "fail"
    assert wrong["state"].detail.startswith("cannot connect to the job state in PostgreSQL at 127.0.0.1/")
    assert "Wr0ng-pw" not in wrong["state"].detail


def test_a_user_without_create_runs_once_the_tables_exist(tmp_path, sandbox_server, state_url, environ,
                                                          pg_cluster):  # noqa: F811
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "firstName"], _rows(5))
    config = write_config(tmp_path, server.url, state={"url": state_url})
    assert _run(environ, "run", str(source), "--config", str(config)).returncode == 0  # the owner makes them
    database = state_url.rsplit("/", 1)[1]
    with pg_cluster.admin(database) as db:
        db.execute("DROP ROLE IF EXISTS worker_dml")
        db.execute("CREATE ROLE worker_dml LOGIN PASSWORD 'dml-only'")
        db.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO worker_dml")
    worker = write_config(tmp_path, server.url, state={"url": state_url.replace("batch@", "worker_dml@")})
    ran = _run({**environ, "BATCH_UPDATER_STATE_PASSWORD": "dml-only"}, "run", str(source), "--config", str(worker),
               "--restart", "--json")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["success"] == 5


def test_restart_twice_in_a_second_and_the_holder_is_named(tmp_path, sandbox_server, state_url, environ):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "firstName"], _rows(3))
    config = write_config(tmp_path, server.url, state={"url": state_url})
    for _ in range(3):
        ran = _run(environ, "run", str(source), "--config", str(config), "--restart")
        assert ran.returncode == 0, ran.stderr
    assert len(customer_puts(server)) == 9


def test_the_server_finds_a_vanished_worker_within_a_minute(state_url):
    from batch_updater.config import Secret, StateSettings
    from batch_updater.state.postgres import connect

    with connect(StateSettings(None, False, state_url, Secret(PASSWORD)), "test") as db:
        assert [db.execute(f"SHOW {name}").fetchone()[0] for name in
                ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")] == ["30", "10", "3"]


def test_a_user_who_may_not_create_the_tables_is_told_by_check_and_run(tmp_path, sandbox_server, environ,
                                                                       pg_cluster):  # noqa: F811
    url = pg_cluster.new_database()  # owned by USER; its tables not made yet
    with pg_cluster.admin(url.rsplit("/", 1)[1]) as db:
        db.execute("DROP ROLE IF EXISTS no_create")
        db.execute("CREATE ROLE no_create LOGIN PASSWORD 'nc-pass'")  # PG 15: no CREATE on public
    from batch_updater.check import check_setup

    server = sandbox_server()
    config = write_config(tmp_path, server.url, state={"url": url.replace("batch@", "no_create@")})
    steps = {s.name: s for s in check_setup(config, environ={"BATCH_UPDATER_STATE_PASSWORD": "nc-pass"})}
    assert steps["state"].status == "fail"
    assert "no_create may not create them in schema public: GRANT CREATE ON SCHEMA public TO no_create" in \
        steps["state"].detail
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(1)]])
    ran = _run({**environ, "BATCH_UPDATER_STATE_PASSWORD": "nc-pass"}, "run", str(source), "--config", str(config))
    assert ran.returncode == 3 and ran.stderr.count("\n") == 1, ran.stderr
    assert "cannot make the job state's tables" in ran.stderr and "internal error" not in ran.stderr
