"""Upsert mode through the CLI against the sandbox: a customer the update cannot find (8015)
is added (POST /v2/customers) on its own budget; 8006 sends the update again, once; the
reports say which rows were created; reruns, --only-changed and lost answers never create
a customer twice."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from click.testing import CliRunner
from conftest import max_in_window, mobile, read_report, write_config, write_csv

from batch_updater.cli import main
from batch_updater.sandbox import Faults, RateLimit

UPSERT = {"mode": "upsert"}


def unknown(i: int) -> str:
    """A mobile number no seeded sandbox customer has."""
    return f"9199{i:08d}"


def _run(source: Path, config: Path, *extra: str) -> tuple[int, dict]:
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--json", *extra])
    assert result.stdout.startswith("{"), result.output
    return result.exit_code, json.loads(result.stdout)


def _requests(server, method: str) -> list:
    return [r for r in server.state.requests if r.method == method]


def _mixed_file(tmp_path: Path, rows: int = 100) -> tuple[Path, set[str]]:
    """Every third-or-so row (30%) is a customer the org does not have yet."""
    mobiles = [unknown(i) if i % 10 < 3 else mobile(i) for i in range(rows)]
    source = write_csv(tmp_path / "migration.csv", ["identifierValue", "firstName", "extendedFields.city"],
                       [[m, f"Name{i}", "Pune"] for i, m in enumerate(mobiles)])
    return source, {m for m in mobiles if m.startswith("9199")}


def test_unknown_customers_are_created_and_a_rerun_updates_them_all(tmp_path, sandbox_server):
    server = sandbox_server()
    config = write_config(tmp_path, server.url, api=UPSERT)
    source, new = _mixed_file(tmp_path)

    code, first = _run(source, config)
    assert code == 0, first
    counts = (first["rows"], first["success"], first["created"], first["updated"], first["errors"])
    assert counts == (100, 100, 30, 70, 0)
    assert first["add_requests"] == 30 and first["requests"] == 130  # 100 updates (30 answered 8015) + 30 adds
    success = read_report(first["reports"]["success"])
    assert Counter(r["_action"] for r in success) == {"created": 30, "updated": 70}
    created = {r["identifierValue"]: r["_customer_id"] for r in success if r["_action"] == "created"}
    assert set(created) == new and all(int(customer_id) for customer_id in created.values())
    assert sorted(r.query["source"] for r in _requests(server, "POST")) == ["INSTORE"] * 30
    added_mobiles = [next(i["value"] for i in r.body["profiles"][0]["identifiers"] if i["type"] == "mobile")
                     for r in _requests(server, "POST")]
    assert sorted(added_mobiles) == sorted(new)

    code, rerun = _run(source, config, "--restart")  # the same file again: every customer exists now
    assert code == 0 and (rerun["updated"], rerun["created"], rerun["add_requests"]) == (100, 0, 0)
    updated_ids = {r["identifierValue"]: r["_customer_id"] for r in read_report(rerun["reports"]["success"])}
    assert all(updated_ids[m] == customer_id for m, customer_id in created.items())  # the same customers

    before = len(server.state.requests)
    code, unchanged = _run(source, config, "--restart", "--only-changed")
    assert code == 0 and unchanged["skipped"] == 100 and len(server.state.requests) == before


def test_two_rows_of_one_new_customer_are_one_add_then_one_update_in_file_order(tmp_path, sandbox_server):
    server = sandbox_server()
    config = write_config(tmp_path, server.url, api=UPSERT)
    source = write_csv(tmp_path / "twice.csv", ["identifierValue", "firstName"],
                       [[unknown(1), "First"], [unknown(1), "Second"]])
    code, summary = _run(source, config)
    assert code == 0 and (summary["created"], summary["updated"]) == (1, 1)
    sent = [(r.method, (r.body or {}).get("profiles", [{}])[0].get("firstName"), r.status)
            for r in server.state.requests]
    assert sent == [("PUT", "First", 400), ("POST", "First", 200), ("PUT", "Second", 200)]
    assert [r["_action"] for r in read_report(summary["reports"]["success"])] == ["created", "updated"]


def test_an_add_whose_answer_was_lost_never_creates_a_second_customer(tmp_path, sandbox_server):
    # Every request may be applied and then have its connection dropped: the add is sent
    # again, answered 8006 (the lost attempt created the customer), and the row is updated.
    server = sandbox_server(faults=Faults(drop_after=0.3), seed=7)
    config = write_config(tmp_path, server.url, api=UPSERT,
                          limits={"max_attempts": 8, "backoff_base_seconds": 0.05, "backoff_cap_seconds": 0.2})
    source, new = _mixed_file(tmp_path, rows=60)
    code, summary = _run(source, config)
    assert code == 0, read_report(summary["reports"]["errors"])
    assert summary["success"] == 60 and summary["in_doubt"] > 0
    applied_adds = Counter(next(i["value"] for i in r.body["profiles"][0]["identifiers"] if i["type"] == "mobile")
                           for r in _requests(server, "POST") if r.applied)
    assert set(applied_adds) == new and set(applied_adds.values()) == {1}  # one customer each
    assert any(r.status == 0 and r.applied for r in _requests(server, "POST"))  # some add was in doubt


def test_an_add_left_in_flight_by_a_killed_run_is_resolved_by_the_next_run(tmp_path, sandbox_server):
    from batch_updater.state.journal import Journal

    server = sandbox_server()
    config = write_config(tmp_path, server.url, api=UPSERT)
    source = write_csv(tmp_path / "one.csv", ["identifierValue", "firstName"], [[unknown(5), "Asha"]])
    code, first = _run(source, config)
    assert first["created"] == 1
    # As if the run had been killed right after the add went out: the row is in flight.
    journal_path = Path(first["reports"]["summary"]).parent.parent / "journal.sqlite"
    with Journal(journal_path) as journal:
        journal._db.execute("UPDATE outcome SET status = 'in_flight', rerun = 1, in_doubt = 1")
        journal.set_meta(status="stopped")
    code, resumed = _run(source, config)
    assert code == 0 and resumed["updated"] == 1 and resumed["created"] == 0 and resumed["in_doubt"] == 1
    assert len(_requests(server, "POST")) == 1  # still one customer


def test_an_add_the_api_refuses_is_an_error_of_stage_create(tmp_path, sandbox_server):
    server = sandbox_server()
    config = write_config(tmp_path, server.url, api=UPSERT)
    source = write_csv(tmp_path / "bad.csv", ["identifierValue", "loyaltyProgramEnrollments.programId"],
                       [[unknown(1), "12345"], [mobile(1), ""]])
    code, summary = _run(source, config)
    assert code == 1 and (summary["create_errors"], summary["errors"], summary["updated"]) == (1, 1, 1)
    [error] = read_report(summary["reports"]["errors"])
    assert (error["_stage"], error["_code"]) == ("create", "1213")
    human = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--restart"]).stdout
    assert "1 updated, 0 created, 1 errors (0 invalid, 0 refused by the API, 1 refused on add, 0 network)" in human


def test_update_mode_reports_8015_as_before_and_sends_no_add(tmp_path, sandbox_server):
    server = sandbox_server()
    config = write_config(tmp_path, server.url)
    code, summary = _run(write_csv(tmp_path / "u.csv", ["identifierValue"], [[unknown(1)]]), config)
    assert code == 1 and summary["errors"] == 1 and _requests(server, "POST") == []
    assert summary["mode"] == "update" and summary["add_rate_limit_per_minute"] is None


def test_both_budgets_are_paced_exactly_and_used_fully(tmp_path, sandbox_server):
    # A short window keeps the test quick: updates 20 per 2 s, adds 10 per 2 s; half the
    # customers are new, so both budgets have work all along.
    window = 2.0
    server = sandbox_server(rate_limit=RateLimit(20, window), create_rate_limit=RateLimit(10, window))
    config = write_config(tmp_path, server.url, api=UPSERT,
                          limits={"rate_per_minute": 20, "window_seconds": window, "window_margin_seconds": 0.05,
                                  "concurrency": 16},
                          **{"limits.create": {"rate_per_minute": 10, "window_seconds": window}})
    rows = 160
    source = write_csv(tmp_path / "paced.csv", ["identifierValue"],
                       [[unknown(i) if i % 2 else mobile(i)] for i in range(rows)])
    code, summary = _run(source, config)
    assert code == 0 and summary["throttled"] == 0 and summary["created"] == rows // 2
    updates = sorted(r.started for r in _requests(server, "PUT"))
    adds = sorted(r.started for r in _requests(server, "POST"))
    assert max_in_window(updates, window) <= 20 and max_in_window(adds, window) <= 10
    # Used to >= 95% while there was work for it: from its first request to its last.
    assert (len(updates) - 1) / (updates[-1] - updates[0]) >= 0.95 * 20 / window
    assert (len(adds) - 1) / (adds[-1] - adds[0]) >= 0.95 * 10 / window


def test_add_requires_refuses_rows_a_new_customer_could_not_be_made_from_before_sending(tmp_path, sandbox_server):
    server = sandbox_server()
    config = write_config(tmp_path, server.url, api={**UPSERT, "add_requires": ["loyaltytype"]})
    source = write_csv(tmp_path / "needs.csv", ["identifierValue", "loyaltyType"],
                       [[unknown(1), "loyalty"], [unknown(2), ""], [mobile(3), "loyalty"]])
    code, summary = _run(source, config)
    assert code == 1 and (summary["created"], summary["updated"], summary["validation_errors"]) == (1, 1, 1)
    [error] = read_report(summary["reports"]["errors"])
    assert error["_stage"] == "validation" and error["_row"] == "3"
    assert error["_message"] == "loyaltyType is required to add a customer ([api] add_requires, upsert mode)"
    assert {r.query.get("identifierValue") for r in _requests(server, "PUT")} == {unknown(1), mobile(3)}

    no_column = write_csv(tmp_path / "bare.csv", ["identifierValue"], [[unknown(3)]])
    result = CliRunner().invoke(main, ["run", str(no_column), "--config", str(config)])
    assert result.exit_code == 2 and "[api] add_requires says need loyaltyType" in result.stderr
    bad = write_config(tmp_path, server.url, api={**UPSERT, "add_requires": ["loyalty_kind"]})
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(bad)])
    assert result.exit_code == 2 and "'loyalty_kind' is not a column name" in result.stderr
