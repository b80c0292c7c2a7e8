"""Inputs and reports on object storage, against a real S3-protocol server (moto's server
mode on 127.0.0.1) and the built-in sandbox, through the CLI where the user would be.

Skipped when moto or s3fs is missing, unless BATCH_UPDATER_REQUIRE_S3=1 (CI) makes that a
failure.
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
import uuid
from types import SimpleNamespace

import orjson
import pytest
from click.testing import CliRunner
from conftest import customer_puts, mobile, wait_for_requests, write_config
from pg_cluster import PASSWORD as PG_PASSWORD
from pg_cluster import pg_cluster  # noqa: F401 - the session's cluster fixture

from batch_updater.cli import main

HEADER = "identifierValue,firstName\n"


def _missing(what: str) -> None:
    if os.environ.get("BATCH_UPDATER_REQUIRE_S3") == "1":
        pytest.fail(f"{what} is not installed, and BATCH_UPDATER_REQUIRE_S3=1")
    pytest.skip(f"{what} is not installed (pip install -e '.[test]')")


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on a free port of 127.0.0.1, for the whole session."""
    try:
        import s3fs  # noqa: F401
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        _missing(exc.name or "moto or s3fs")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch, tmp_path):
    """Dummy credentials and the endpoint in the environment, and a new bucket."""
    import s3fs

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the default staging folder
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)
    bucket = f"bkt-{uuid.uuid4().hex[:10]}"
    fs.mkdir(bucket)
    return SimpleNamespace(fs=fs, bucket=bucket, url=f"s3://{bucket}", endpoint=s3_endpoint)


def _csv(count: int, start: int = 0, name: str = "A", pad: int = 0) -> bytes:
    """Rows of seeded customers; `pad` characters in an ignored column make the file bigger."""
    if pad:
        return ("identifierValue,firstName,_pad\n" + "".join(
            f"{mobile(i)},{name}{i},{'x' * pad}\n" for i in range(start, start + count))).encode()
    return (HEADER + "".join(f"{mobile(i)},{name}{i}\n" for i in range(start, start + count))).encode()


def _config(tmp_path, server, **sections):
    return str(write_config(tmp_path, server.url, **sections))


def _run(*args: str) -> SimpleNamespace:
    result = CliRunner().invoke(main, ["run", *args, "--json"])
    summary = orjson.loads(result.stdout) if result.stdout.startswith("{") else None
    return SimpleNamespace(code=result.exit_code, summary=summary, stderr=result.stderr, result=result)


def _read_json(s3, key: str) -> dict:
    return orjson.loads(s3.fs.cat_file(f"{s3.bucket}/{key}"))


def test_an_s3_input_runs_into_a_local_output_folder(tmp_path, sandbox_server, s3):
    server = sandbox_server()
    s3.fs.pipe_file(f"{s3.bucket}/exports/customers.csv", _csv(5))
    ran = _run(f"{s3.url}/exports/customers.csv", "--config", _config(tmp_path, server))
    assert ran.code == 0, ran.stderr
    assert ran.summary["success"] == 5 and len(customer_puts(server)) == 5
    assert ran.summary["input"] == f"{s3.url}/exports/customers.csv"
    job = ran.summary["job_id"]
    assert (tmp_path / "out" / f"customers-{job}").is_dir()
    assert not list((tmp_path / "out").glob(".remote-*")), "the local copy is removed"


def test_a_local_input_writes_its_reports_to_s3_with_a_latest_pointer(tmp_path, sandbox_server, s3):
    server = sandbox_server()
    source = tmp_path / "customers.csv"
    source.write_bytes(_csv(4))
    ran = _run(str(source), "--config", _config(tmp_path, server), "--output-dir", f"{s3.url}/batch-updater")
    assert ran.code == 0, ran.stderr
    latest = _read_json(s3, "batch-updater/latest.json")
    run_url = latest["run"]
    assert run_url.startswith(f"{s3.url}/batch-updater/customers-{ran.summary['job_id']}/run-")
    names = {path.rsplit("/", 1)[1] for path in s3.fs.ls(run_url)}
    assert {"summary.json", "success.csv", "errors.csv", "skipped.csv", "report.html"} <= names
    assert "journal.sqlite" not in names
    uploaded = orjson.loads(s3.fs.cat_file(latest["summary"]))
    assert uploaded["success"] == 4 and uploaded["upload_url"] == run_url + "/"
    staged = tmp_path / "home" / ".cache" / "batch-updater" / "outputs" / "s3" / s3.bucket / "batch-updater"
    assert (staged / f"customers-{ran.summary['job_id']}" / "journal.sqlite").is_file()


def test_s3_to_s3_with_the_endpoint_from_the_storage_section(tmp_path, sandbox_server, s3, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    server = sandbox_server()
    s3.fs.pipe_file(f"{s3.bucket}/in/customers.csv.gz", __import__("gzip").compress(_csv(3)))
    config = _config(tmp_path, server, storage={"endpoint_url": s3.endpoint, "region": "us-east-1",
                                                "local_dir": str(tmp_path / "staging")},
                     output={"dir": f"{s3.url}/reports"})
    ran = _run(f"{s3.url}/in/customers.csv.gz", "--config", config)
    assert ran.code == 0, ran.stderr
    assert ran.summary["success"] == 3
    assert _read_json(s3, "reports/latest.json")["job"] == f"customers-{ran.summary['job_id']}"
    assert (tmp_path / "staging" / "s3" / s3.bucket / "reports").is_dir()


def _slow_spools(monkeypatch) -> list:
    """Spools that download 64 KiB per tenth of a second (a slow network); the list fills with
    them as runs start them."""
    from batch_updater.input import remote

    spools: list = []

    class Watched(remote.Spool):
        def __init__(self, *args, **kwargs):
            spools.append(self)
            super().__init__(*args, **kwargs)

        def _copy(self, fs):
            super()._copy(SimpleNamespace(open=lambda *a, **k: _Slow(fs.open(*a, **k))))

    monkeypatch.setattr(remote, "Spool", Watched)
    monkeypatch.setattr(remote, "BLOCK", 1 << 16)
    return spools


def _after_first_request(server, action) -> threading.Thread:
    def wait_then_act():
        wait_for_requests(server, 1, timeout=60)
        action()

    thread = threading.Thread(target=wait_then_act)
    thread.start()
    return thread


def test_the_first_request_goes_out_before_the_object_is_down(tmp_path, sandbox_server, s3, monkeypatch):
    """A slowed download: the sandbox sees a request while the spool is still filling."""
    server = sandbox_server()
    data = _csv(10_000, pad=100)
    s3.fs.pipe_file(f"{s3.bucket}/big/customers.csv", data)
    spools = _slow_spools(monkeypatch)
    seen: dict = {}
    watcher = _after_first_request(server, lambda: seen.update(complete=spools[0].complete,
                                                                arrived=spools[0].arrived))
    ran = _run(f"{s3.url}/big/customers.csv", "--config",
               _config(tmp_path, server, input={"chunk_rows": 500}, limits={"rate_per_minute": 600_000}))
    watcher.join()
    assert ran.code == 0, ran.stderr
    assert ran.summary["success"] == 10_000
    assert seen["complete"] is False and seen["arrived"] < len(data)


def test_an_object_overwritten_while_it_is_read_stops_the_run(tmp_path, sandbox_server, s3, monkeypatch):
    server = sandbox_server()
    key = f"{s3.bucket}/big/customers.csv"
    s3.fs.pipe_file(key, _csv(10_000, pad=100))
    _slow_spools(monkeypatch)
    writer = _after_first_request(server, lambda: s3.fs.pipe_file(key, _csv(10_000, pad=101)))
    ran = _run(f"s3://{key}", "--config", _config(tmp_path, server, input={"chunk_rows": 500}))
    writer.join()
    assert ran.code == 3, ran.stderr
    assert ran.stderr.strip().splitlines()[-1] == (f"batch-updater: error: s3://{key}: the object changed while"
                                                   " it was being read: run again with --restart to send its new"
                                                   " content")
    config = str(tmp_path / "config.toml")
    refused = _run(f"s3://{key}", "--config", config)
    assert refused.code == 2 and "--restart" in refused.stderr
    restarted = _run(f"s3://{key}", "--config", config, "--restart")
    assert restarted.code == 0, restarted.stderr
    assert restarted.summary["rows"] == 10_000


class _Slow:
    """A file object whose reads take a while: a slow network."""

    def __init__(self, inner):
        self.inner = inner

    def read(self, size=-1):
        time.sleep(0.1)
        return self.inner.read(size)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.inner.close()


def test_the_same_object_resumes_its_job_and_a_changed_one_is_a_new_job(tmp_path, sandbox_server, s3):
    server = sandbox_server()
    key = f"{s3.bucket}/in/customers.csv"
    s3.fs.pipe_file(key, _csv(3))
    config = _config(tmp_path, server)
    first = _run(f"s3://{key}", "--config", config)
    again = _run(f"s3://{key}", "--config", config)
    assert first.code == again.code == 0, again.stderr
    assert again.summary["job_id"] == first.summary["job_id"]
    assert len(customer_puts(server)) == 3, "a finished job replays its summary"
    s3.fs.pipe_file(key, _csv(4))
    changed = _run(f"s3://{key}", "--config", config)
    assert changed.code == 0, changed.stderr
    assert changed.summary["job_id"] != first.summary["job_id"]
    assert len(customer_puts(server)) == 7


def test_a_stopped_run_uploads_its_partial_reports(tmp_path, sandbox_server, s3):
    server = sandbox_server(latency_seconds=0.05)
    s3.fs.pipe_file(f"{s3.bucket}/in/customers.csv", _csv(2000))
    config = _config(tmp_path, server, limits={"concurrency": 2})

    def stop():
        wait_for_requests(server, 5)
        os.kill(os.getpid(), signal.SIGTERM)

    stopper = threading.Thread(target=stop)
    stopper.start()
    ran = _run(f"{s3.url}/in/customers.csv", "--config", config, "--output-dir", f"{s3.url}/reports")
    stopper.join()
    assert ran.code == 4, ran.stderr
    latest = _read_json(s3, "reports/latest.json")
    uploaded = orjson.loads(s3.fs.cat_file(latest["summary"]))
    assert uploaded["exit_code"] == 4 and 0 < uploaded["success"] < 2000
    success = s3.fs.cat_file(latest["run"] + "/success.csv").decode().splitlines()
    assert len(success) == uploaded["success"] + 1


def test_an_aborted_run_uploads_its_reports(tmp_path, sandbox_server, s3):
    server = sandbox_server()
    s3.fs.pipe_file(f"{s3.bucket}/in/customers.csv", _csv(20))
    config = str(write_config(tmp_path, server.url, password="wrong-password"))
    ran = _run(f"{s3.url}/in/customers.csv", "--config", config, "--output-dir", f"{s3.url}/reports")
    assert ran.code == 3, ran.stderr
    latest = _read_json(s3, "reports/latest.json")
    uploaded = orjson.loads(s3.fs.cat_file(latest["summary"]))
    assert uploaded["exit_code"] == 3 and uploaded["not_sent"] + uploaded["errors"] == 20


@pytest.mark.parametrize("where", ["key", "bucket"])
def test_a_missing_input_is_one_line_and_exit_2(tmp_path, sandbox_server, s3, where):
    server = sandbox_server()
    url = f"{s3.url}/no/such.csv" if where == "key" else "s3://no-such-bucket-here/in.csv"
    ran = _run(url, "--config", _config(tmp_path, server))
    assert ran.code == 2
    assert ran.stderr.strip() == f"batch-updater: error: {url}: no such object or bucket"
    assert not customer_puts(server)


def test_no_credentials_is_one_line_naming_the_url_and_exit_3(tmp_path, sandbox_server, s3, monkeypatch):
    server = sandbox_server()
    s3.fs.pipe_file(f"{s3.bucket}/in/customers.csv", _csv(1))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    ran = _run(f"{s3.url}/in/customers.csv", "--config", _config(tmp_path, server))
    assert ran.code == 3, ran.stderr
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"batch-updater: error: {s3.url}/in/customers.csv: no credentials")
    assert "Traceback" not in ran.stderr


def test_an_output_bucket_that_does_not_exist_is_exit_3(tmp_path, sandbox_server, s3):
    server = sandbox_server()
    source = tmp_path / "customers.csv"
    source.write_bytes(_csv(2))
    ran = _run(str(source), "--config", _config(tmp_path, server), "--output-dir", "s3://no-such-bucket-out/r")
    assert ran.code == 3
    assert ran.stderr.strip().splitlines()[-1] == ("batch-updater: error: s3://no-such-bucket-out/r:"
                                                   " no such object or bucket")


def test_a_rerun_uploads_what_a_failed_upload_left_behind(tmp_path, sandbox_server, s3):
    server = sandbox_server()
    source = tmp_path / "customers.csv"
    source.write_bytes(_csv(2))
    bucket = f"late-{uuid.uuid4().hex[:8]}"
    config = _config(tmp_path, server, output={"dir": f"s3://{bucket}/r"},
                     storage={"local_dir": str(tmp_path / "staging")})
    failed = _run(str(source), "--config", config)
    assert failed.code == 3 and len(customer_puts(server)) == 2
    s3.fs.mkdir(bucket)
    again = _run(str(source), "--config", config)
    assert again.code == 0, again.stderr
    assert len(customer_puts(server)) == 2, "the finished job replays"
    latest = orjson.loads(s3.fs.cat_file(f"{bucket}/r/latest.json"))
    assert orjson.loads(s3.fs.cat_file(latest["summary"]))["success"] == 2
    # latest.json moves forward only: another file's newer run, then a replay of the first
    other = tmp_path / "others.csv"
    other.write_bytes(_csv(1, start=5))
    time.sleep(1.1)  # run folders are named by the second they start in
    assert _run(str(other), "--config", config).code == 0
    uploaded = s3.fs.info(latest["summary"])["LastModified"]
    time.sleep(1.1)
    assert _run(str(source), "--config", config).code == 0
    assert orjson.loads(s3.fs.cat_file(f"{bucket}/r/latest.json"))["job"].startswith("others-")
    s3.fs.invalidate_cache()
    assert s3.fs.info(latest["summary"])["LastModified"] == uploaded, "a replay does not upload its run again"


def test_shards_on_s3_merge_into_s3(tmp_path, sandbox_server, s3):
    server = sandbox_server()
    s3.fs.pipe_file(f"{s3.bucket}/in/customers.csv", _csv(30))
    config = _config(tmp_path, server, output={"dir": f"{s3.url}/reports"})
    jobs = []
    for k in (1, 2, 3):
        ran = _run(f"{s3.url}/in/customers.csv", "--config", config, "--shard", f"{k}/3")
        assert ran.code == 0, ran.stderr
        jobs.append(f"{s3.url}/reports/customers-shard{k}of3-{ran.summary['job_id']}")
    result = CliRunner().invoke(main, ["merge", *jobs, "--output-dir", f"{s3.url}/merged", "--json"])
    assert result.exit_code == 0, result.stderr
    merged = _read_json(s3, "merged/summary.json")
    assert merged["rows"] == merged["success"] == 30
    success = s3.fs.cat_file(f"{s3.bucket}/merged/success.csv").decode().splitlines()
    assert len(success) == 31


def test_the_airflow_operator_takes_s3_paths(tmp_path, sandbox_server, s3):
    from batch_updater.integrations.airflow import run_task

    server = sandbox_server()
    s3.fs.pipe_file(f"{s3.bucket}/in/customers.csv", _csv(4))
    summary = run_task(f"{s3.url}/in/customers.csv", host=server.url, login="demo.till",
                       password="demo-password", extras={"rate_per_minute": 60_000},
                       output_dir=f"{s3.url}/airflow")
    assert summary["exit_code"] == 0 and summary["success"] == 4
    assert _read_json(s3, "airflow/latest.json")["job"] == f"customers-{summary['job_id']}"


def test_a_workbook_from_s3(tmp_path, sandbox_server, s3):
    import openpyxl

    server = sandbox_server()
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["identifierValue", "firstName"])
    for i in range(3):
        sheet.append([mobile(i), f"W{i}"])
    data = io.BytesIO()
    book.save(data)
    s3.fs.pipe_file(f"{s3.bucket}/in/customers.xlsx", data.getvalue())
    ran = _run(f"{s3.url}/in/customers.xlsx", "--config", _config(tmp_path, server))
    assert ran.code == 0, ran.stderr
    assert ran.summary["success"] == 3


def test_a_scheme_whose_package_is_missing_names_the_extra(tmp_path):
    import importlib.util

    if importlib.util.find_spec("gcsfs"):
        pytest.skip("gcsfs is installed")
    result = CliRunner().invoke(main, ["validate", "gs://bucket/customers.csv", "--output-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.strip() == ("batch-updater: error: gs://bucket/customers.csv: gs:// URLs need the"
                                     " gcsfs package: pip install 'batch-updater[gcs]'")


def test_an_objects_version_is_its_stores_own_word_for_its_content():
    from batch_updater.storage import describe, staging_dir

    class Store:
        def __init__(self, info):
            self.info = lambda url: info

    s3_info = {"ETag": '"abc"', "VersionId": None, "size": 10, "type": "file"}
    gcs_info = {"etag": "CJ3", "generation": "1712", "size": 5, "type": "file"}
    azure_info = {"etag": "0x8D", "version_id": "2024-01-01", "size": 7, "type": "file"}
    assert describe("s3://b/k/customers.csv", Store(s3_info)).version == "abc"
    assert describe("gs://b/customers.csv", Store(gcs_info)).version == "1712"
    assert describe("az://c/customers.csv", Store(azure_info)).version == "2024-01-01"
    origin = describe("s3://b/k/customers.csv", Store(s3_info))
    assert (origin.name, origin.size) == ("customers.csv", 10)
    assert staging_dir("s3://bucket/a/b/", None).parts[-4:] == ("s3", "bucket", "a", "b")


def test_an_s3_input_with_postgres_state_resumes_from_another_output_folder(tmp_path, sandbox_server, s3,
                                                                             pg_cluster, monkeypatch):  # noqa: F811
    """Two workers: the same object is the same job (known by its ETag, not by a spool that is
    still arriving), so the second worker, with another output folder, finds it finished."""
    monkeypatch.setenv("BATCH_UPDATER_STATE_PASSWORD", PG_PASSWORD)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "host"))
    server = sandbox_server()
    key = f"{s3.bucket}/in/customers.csv"
    s3.fs.pipe_file(key, _csv(6))
    state = {"url": pg_cluster.new_database()}
    for worker in "ab":
        (tmp_path / worker).mkdir()
    first = _run(f"s3://{key}", "--config", _config(tmp_path / "a", server, state=state))
    second = _run(f"s3://{key}", "--config", _config(tmp_path / "b", server, state=state))
    assert first.code == second.code == 0, second.stderr
    assert second.summary["job_id"] == first.summary["job_id"]
    assert len(customer_puts(server)) == 6, "the second worker replays the finished job"
    listed = CliRunner().invoke(main, ["jobs", "--config", _config(tmp_path / "b", server, state=state), "--json"])
    assert [job["input"] for job in orjson.loads(listed.stdout)] == [f"s3://{key}"]


def test_check_says_whether_the_output_bucket_answers(tmp_path, sandbox_server, s3):
    from batch_updater.check import check_setup

    server = sandbox_server()
    steps = {step.name: step for step in check_setup(_config(tmp_path, server, output={"dir": f"{s3.url}/reports"}),
                                                       environ={})}
    assert steps["output"].status == "ok", steps["output"].detail
    assert steps["output"].detail.startswith(f"{s3.url} answers; reports are staged in ")
    missing = {step.name: step for step in check_setup(
        _config(tmp_path, server, output={"dir": "s3://no-such-bucket-here/reports"}), environ={})}
    assert (missing["output"].status, missing["output"].detail) == (
        "fail", "s3://no-such-bucket-here: no such object or bucket")


def test_an_output_url_this_tool_cannot_write_is_a_config_error(tmp_path):
    source = tmp_path / "in.csv"
    source.write_bytes(_csv(1))
    refused = CliRunner().invoke(main, ["validate", str(source), "--output-dir", "https://example.com/reports"])
    assert refused.exit_code == 2
    assert refused.stderr.strip().endswith("--output-dir: expected a folder or an object-storage URL (s3://, gs://,"
                                           " az://), got 'https://example.com/reports'")


def test_an_object_of_the_same_name_elsewhere_is_another_job(tmp_path, s3, pg_cluster, monkeypatch):  # noqa: F811
    """Job state in PostgreSQL goes by file name for local files (their paths differ by worker),
    but an object is its URL: an unfinished job of one bucket's customers.csv does not block
    another bucket's."""
    monkeypatch.setenv("BATCH_UPDATER_STATE_PASSWORD", PG_PASSWORD)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "host"))
    s3.fs.mkdir(f"{s3.bucket}-b")
    for bucket, count in ((s3.bucket, 30), (f"{s3.bucket}-b", 31)):  # enough failures to abort the run
        s3.fs.pipe_file(f"{bucket}/in/customers.csv", _csv(count))
    config = str(write_config(tmp_path, "http://127.0.0.1:9", state={"url": pg_cluster.new_database()},
                              limits={"max_attempts": 1, "connect_timeout_seconds": 1}))
    first = _run(f"s3://{s3.bucket}/in/customers.csv", "--config", config)
    other = _run(f"s3://{s3.bucket}-b/in/customers.csv", "--config", config)
    assert (first.code, other.code) == (3, 3), other.stderr  # both aborted (nothing listens), neither refused


def test_jobs_of_an_s3_output_say_they_are_this_machines(tmp_path, s3):
    listed = CliRunner().invoke(main, ["jobs", "--output-dir", f"{s3.url}/reports"])
    assert listed.exit_code == 0, listed.output
    assert f"(the staging folder of {s3.url}/reports: the jobs run on this machine; with [state] url," \
           " every worker's)" in listed.output
