"""The Airflow operator's logic, through the library (Airflow itself is no dependency)."""

from __future__ import annotations

import pytest
from conftest import customer_puts, mobile, write_csv

from batch_updater.integrations.airflow import connection_overrides, run_task, state_url, task_failed


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


def test_the_earlier_import_path_still_works_with_a_warning():
    import importlib
    import sys

    sys.modules.pop("batch_updater.airflow", None)
    with pytest.warns(DeprecationWarning, match="batch_updater.integrations.airflow"):
        module = importlib.import_module("batch_updater.airflow")
    from batch_updater.integrations.airflow import run_task
    assert module.run_task is run_task


def test_a_postgres_connection_becomes_the_state_url():
    assert state_url("db.internal", 5433, "jobs", "batch") == "postgresql://batch@db.internal:5433/jobs"
    assert state_url("db", None, None, None) == "postgresql://db/postgres"
    assert state_url("::1", 5432, "jobs", "b", {"sslmode": "verify-full", "sslrootcert": "/ca.pem", "x": 1}) == (
        "postgresql://b@[::1]:5432/jobs?sslmode=verify-full&sslrootcert=%2Fca.pem")  # libpq's, not others
    extras = {"state_url": "postgresql://batch@db/jobs"}
    assert connection_overrides("https://x", "till", extras)["state.url"] == "postgresql://batch@db/jobs"
