"""Operator tools, through the CLI against the sandbox: warnings counted and shown (and
--fail-on-warnings), the org's field names, errors grouped, `latest` links and `jobs`,
validate without secrets, the already-enrolled policy, --min-rows, the lock's mode,
suggested commands that run as written, and the help texts."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from click.testing import CliRunner
from conftest import mobile, read_report, write_config, write_csv

from batch_updater.cli import main
from batch_updater.output.reports import NEXT_WARNED


def _cli(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, list(map(str, args)), env=env)


def _run_json(source: Path, config: Path, *extra: str) -> tuple[int, dict]:
    result = _cli("run", source, "--config", config, "--json", *extra)
    assert result.stdout.startswith("{"), result.output
    return result.exit_code, json.loads(result.stdout)


def _warned_file(tmp_path: Path) -> Path:
    """Rows 2 and 3 name an extended field the sandbox's org has not configured (91015)."""
    rows = [[mobile(1), "Pune", ""], [mobile(2), "Goa", ""], [mobile(3), "", "Delhi"], [mobile(4), "", ""]]
    return write_csv(tmp_path / "warned.csv", ["identifierValue", "extendedFields.cty", "extendedFields.city"],
                     [[m, cty, city] for m, cty, city in rows])


def test_warnings_are_counted_in_the_summary_and_shown_in_the_one_line_summary(tmp_path, sandbox_server):
    server = sandbox_server()
    config = write_config(tmp_path, server.url)
    code, summary = _run_json(_warned_file(tmp_path), config)
    assert code == 0
    assert summary["success"] == 4 and summary["updated_with_warnings"] == 2
    assert summary["warnings"] == {"91015": 2}
    warned = [r for r in read_report(summary["reports"]["success"]) if r["_warnings"]]
    assert [r["_row"] for r in warned] == ["2", "3"]
    assert "91015: Extended field 'cty' is not configured" in warned[0]["_warnings"]

    human = _cli("run", _warned_file(tmp_path), "--config", config, "--restart")
    assert "4 rows: 4 updated (2 with warnings: 91015 x2), 0 errors" in human.stdout


def test_fail_on_warnings_puts_the_warned_rows_in_errors_csv_and_exits_1(tmp_path, sandbox_server):
    server = sandbox_server()
    config = write_config(tmp_path, server.url)
    code, summary = _run_json(_warned_file(tmp_path), config, "--fail-on-warnings")
    assert code == 1
    assert (summary["success"], summary["errors"], summary["api_errors"]) == (2, 2, 2)
    errors = read_report(summary["reports"]["errors"])
    assert [(r["_row"], r["_stage"], r["_code"], r["_next"]) for r in errors] == [
        ("2", "api", "91015", NEXT_WARNED), ("3", "api", "91015", NEXT_WARNED)]
    assert errors[0]["_message"].startswith("applied, with warnings (fail_on_warnings): 91015:")
    assert summary["top_errors"][0]["code"] == "91015" and summary["top_errors"][0]["count"] == 2

    # The config setting does the same; errors.csv fed back is a file like any other.
    config = write_config(tmp_path, server.url, api={"fail_on_warnings": True})
    code, again = _run_json(Path(summary["reports"]["errors"]), config)
    assert code == 1 and again["errors"] == 2


def test_the_orgs_field_lists_refuse_unknown_names_before_sending_with_a_suggestion(tmp_path, sandbox_server):
    server = sandbox_server()
    config = write_config(tmp_path, server.url, api={"extended_fields": ["city", "gender"],
                                                     "custom_fields": ["preferred_language"]})
    source = write_csv(tmp_path / "fields.csv", ["identifierValue", "extendedFields.cty", "fields.prefered_language"],
                       [[mobile(1), "Pune", "en"]])
    for command in ("validate", "run"):
        result = _cli(command, source, "--config", config)
        assert result.exit_code == 2, result.output
        assert "'cty' is not an extended field of the org ([api] extended_fields) (did you mean 'city'?)" \
            in result.stderr
        assert "(did you mean 'preferred_language'?)" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert server.state.requests == []

    known = write_csv(tmp_path / "known.csv", ["identifierValue", "extendedFields.city"], [[mobile(1), "Pune"]])
    assert _cli("run", known, "--config", config).exit_code == 0


def test_errors_are_grouped_by_cause_with_counts_and_an_example_row(tmp_path, sandbox_server):
    server = sandbox_server()
    config = write_config(tmp_path, server.url)
    rows = ([[mobile(i)] for i in range(3)] + [["919899999999"]] * 0
            + [[f"9198{90000000 + i}"] for i in range(4)] + [["12"], ["34"]])
    source = write_csv(tmp_path / "mixed.csv", ["identifierValue"], rows)
    code, summary = _run_json(source, config)
    assert code == 1
    top = summary["top_errors"]
    assert [(g["stage"], g["code"], g["count"], g["example_row"]) for g in top] == [
        ("api", "8015", 4, 5), ("validation", "", 2, 9)]
    assert top[1]["message"].startswith("identifierValue is not a mobile number")
    assert '"12"' not in top[1]["message"]  # no cell value in the summary

    human = _cli("run", source, "--config", config, "--restart").stdout
    assert "top errors: 8015 Customer not found for the given identifiers x 4 (e.g. row 5);" \
           " identifierValue is not a mobile number" in human


def test_latest_links_point_at_the_newest_run_and_jobs_lists_every_job(tmp_path, sandbox_server):
    server = sandbox_server()
    config = write_config(tmp_path, server.url)
    first = write_csv(tmp_path / "first.csv", ["identifierValue"], [[mobile(1)], ["12"]])
    second = write_csv(tmp_path / "second.csv", ["identifierValue"], [[mobile(2)]])
    out = tmp_path / "out"
    _, one = _run_json(first, config)
    _, two = _run_json(second, config)
    one_folder, two_folder = (Path(s["reports"]["summary"]).parent for s in (one, two))
    assert (one_folder.parent / "latest").resolve() == one_folder.resolve()
    assert (out / "latest").resolve() == two_folder.resolve()
    assert os.readlink(out / "latest") == f"{two_folder.parent.name}/{two_folder.name}"  # relative
    assert (out / "latest" / "summary.json").is_file()

    _, again = _run_json(first, config, "--restart")
    again_folder = Path(again["reports"]["summary"]).parent
    assert (out / "latest").resolve() == again_folder.resolve()
    assert (one_folder.parent / "latest").resolve() == again_folder.resolve()

    listed = json.loads(_cli("jobs", "--config", config, "--json").stdout)
    assert [(Path(j["input"]).name, j["status"], j["rows"], j["success"], j["errors"], j["exit_code"])
            for j in listed] == [("first.csv", "finished", 2, 1, 1, 1), ("second.csv", "finished", 1, 1, 0, 0)]
    assert listed[0]["last_run"] == again_folder.name and listed[0]["job_id"] == again["job_id"]

    table = _cli("jobs", "--output-dir", out).stdout.splitlines()
    assert table[0].split() == ["file", "job", "status", "rows", "updated", "errors", "last", "run", "exit"]
    assert table[1].split()[:3] == ["first.csv", again["job_id"], "finished"]
    assert len(table) == 3
    assert _cli("jobs", "--output-dir", tmp_path / "nothing").stdout.startswith(f"no jobs in {tmp_path / 'nothing'}/")


def test_validate_and_dry_run_need_no_password_base_url_or_username(tmp_path):
    source = write_csv(tmp_path / "laptop.csv", ["identifierValue", "firstName"], [[mobile(1), "Asha"], ["12", "x"]])
    env = {key: "" for key in os.environ if key.startswith("BATCH_UPDATER_")}
    for args in (["validate", source], ["run", source, "--dry-run"]):
        result = _cli(*args, "--output-dir", tmp_path / "out", "--json", env=env)
        assert result.exit_code == 1, result.output
        summary = json.loads(result.stdout)
        assert (summary["status"], summary["validation_errors"]) == ("dry_run", 1)
    # Sending still needs them, each named.
    result = _cli("run", source, "--output-dir", tmp_path / "out", env=env)
    assert result.exit_code == 2
    assert "base_url: required" in result.stderr and "no password" in result.stderr


def test_validate_help_shows_only_the_options_that_matter_to_it():
    text = _cli("validate", "--help").stdout
    for shown in ("--config", "--delimiter", "--encoding", "--max-invalid", "--min-rows", "--identifier-name"):
        assert shown in text
    for hidden in ("--base-url", "--username", "--rate-per-minute", "--concurrency", "--ca-bundle",
                   "--insecure", "--auth", "--max-attempts", "--fail-on-warnings"):
        assert hidden not in text
    assert "--base-url" in _cli("run", "--help").stdout
    assert "CSV and Excel" in _cli("--help").stdout
    sandbox = _cli("sandbox", "--help").stdout
    assert "919800000000" in sandbox and "customer0@example.com" in sandbox and "EXT00000000" in sandbox


def test_already_enrolled_is_an_error_by_default_and_a_success_with_a_warning_when_set(tmp_path, sandbox_server):
    server = sandbox_server()
    header = ["identifierValue", "firstName", "loyaltyProgramEnrollments.programId"]
    night = [[mobile(1), "Asha", "699"], [mobile(2), "Ravi", "699"]]
    config = write_config(tmp_path, server.url)
    assert _run_json(write_csv(tmp_path / "enrol.csv", header, night), config)[1]["success"] == 2
    night[0][1] = "Asha Renamed"  # the second night's full export: the enrolment again, a new name
    source = write_csv(tmp_path / "enrol.csv", header, night)
    code, night2 = _run_json(source, config)
    assert code == 1 and night2["errors"] == 2
    assert read_report(night2["reports"]["errors"])[0]["_message"] == "Customer is already enrolled in program 699"
    assert server.state.customers.get(100001)["firstName"] == "Asha"  # the refusal applied nothing

    config = write_config(tmp_path, server.url, api={"already_enrolled": "success"})
    code, night3 = _run_json(source, config, "--restart")
    assert code == 0 and night3["success"] == 2 and night3["errors"] == 0
    success = read_report(night3["reports"]["success"])
    assert success[0]["_warnings"] == (
        '1216: Customer is already enrolled in program 699 (counted as applied: already_enrolled = "success";'
        " the rest of the row was sent without the enrolment)")
    assert success[0]["_http_status"] == "200" and success[0]["_customer_id"] == "100001"
    assert server.state.customers.get(100001)["firstName"] == "Asha Renamed"  # the rest was applied
    assert night3["warnings"] == {"1216": 2}
    asha = [("loyaltyProgramEnrollments" in r.body, r.status) for r in server.state.requests
            if r.query.get("identifierValue") == mobile(1)]
    assert asha[-2:] == [(True, 400), (False, 200)]
    # The option says the same; a row with nothing but the enrolment needs no second request.
    only = write_csv(tmp_path / "only.csv", ["identifierValue", "loyaltyProgramEnrollments.programId"],
                     [[mobile(1), "699"]])
    before = len(server.state.requests)
    code, night4 = _run_json(only, write_config(tmp_path, server.url), "--already-enrolled", "success")
    assert code == 0 and night4["success"] == 1 and len(server.state.requests) == before + 1


def test_a_header_only_file_warns_and_min_rows_refuses_a_short_file(tmp_path, sandbox_server):
    server = sandbox_server()
    config = write_config(tmp_path, server.url)
    empty = write_csv(tmp_path / "empty.csv", ["identifierValue"], [])
    result = _cli("run", empty, "--config", config)
    assert result.exit_code == 0
    assert "empty.csv has no data rows (a header only)" in result.stderr

    short = write_csv(tmp_path / "short.csv", ["identifierValue"], [[mobile(i)] for i in range(3)])
    result = _cli("run", short, "--config", config, "--min-rows", "4")
    assert result.exit_code == 2
    assert "3 data rows, fewer than min_rows = 4, so nothing was sent" in result.stderr
    assert server.state.requests == []
    assert _cli("run", short, "--config", config, "--min-rows", "3").exit_code == 0


def test_min_rows_counts_an_excel_sheet_too(tmp_path, sandbox_server):
    import openpyxl

    book = openpyxl.Workbook()
    book.active.append(["identifierValue"])
    book.active.append([mobile(1)])
    book.save(tmp_path / "one.xlsx")
    config = write_config(tmp_path, sandbox_server().url)
    result = _cli("run", tmp_path / "one.xlsx", "--config", config, "--min-rows", "2")
    assert result.exit_code == 2 and "1 data rows, fewer than min_rows = 2" in result.stderr


def test_the_job_lock_is_private_even_when_an_older_version_made_it_0644(tmp_path, sandbox_server):
    server = sandbox_server()
    config = write_config(tmp_path, server.url)
    source = write_csv(tmp_path / "lock.csv", ["identifierValue"], [[mobile(1)]])
    _, summary = _run_json(source, config)
    lock = Path(summary["reports"]["summary"]).parent.parent / "lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    lock.chmod(0o644)
    _run_json(source, config, "--restart")
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600


def test_a_suggested_command_carries_the_config_it_was_run_with(tmp_path, sandbox_server):
    config = write_config(tmp_path, sandbox_server().url, input={"max_invalid": 0})
    source = write_csv(tmp_path / "bad.csv", ["identifierValue"], [["12"]])
    result = _cli("run", source, "--config", config)
    assert result.exit_code == 2
    assert f"`batch-updater validate {source} --config {config}`" in result.stderr


def test_jobs_tells_a_running_job_from_one_whose_process_died(tmp_path, sandbox_server):
    import fcntl

    from batch_updater.state.journal import set_status

    config = write_config(tmp_path, sandbox_server().url)
    _, summary = _run_json(write_csv(tmp_path / "night.csv", ["identifierValue"], [[mobile(1)]]), config)
    job = Path(summary["reports"]["summary"]).parent.parent
    set_status(job / "journal.sqlite", "running")  # as a killed run leaves it
    assert json.loads(_cli("jobs", "--config", config, "--json").stdout)[0]["status"] == "interrupted"
    with open(job / "lock", "a") as lock:  # a live run holds the lock
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert json.loads(_cli("jobs", "--config", config, "--json").stdout)[0]["status"] == "running"


def test_standard_input_is_read_as_a_file_and_the_same_content_continues_its_job(tmp_path, sandbox_server):
    server = sandbox_server()
    config = write_config(tmp_path, server.url)
    content = write_csv(tmp_path / "export.csv", ["identifierValue", "firstName"],
                        [[mobile(i), f"N{i}"] for i in range(5)] + [["12", "bad"]]).read_bytes()
    first = CliRunner().invoke(main, ["run", "-", "--config", str(config), "--json"], input=content)
    assert first.exit_code == 1, first.output
    summary = json.loads(first.stdout)
    assert (summary["input"], summary["success"], summary["errors"]) == ("-", 5, 1)
    assert Path(summary["reports"]["summary"]).parent.parent.name == f"stdin-{summary['job_id']}"
    assert [r["identifierValue"] for r in read_report(summary["reports"]["success"])] == [mobile(i) for i in range(5)]
    assert not list((tmp_path / "out").glob(".stdin-*"))  # the spooled copy is gone

    again = CliRunner().invoke(main, ["run", "-", "--config", str(config), "--json"], input=content)
    replay = json.loads(again.stdout)
    assert replay["job_id"] == summary["job_id"] and replay["replayed"] is True
    assert len(server.state.requests) == 5

    checked = CliRunner().invoke(main, ["validate", "-", "--output-dir", str(tmp_path / "v"), "--json"], input=content)
    assert json.loads(checked.stdout)["validation_errors"] == 1
    empty = CliRunner().invoke(main, ["run", "-", "--config", str(config)], input=b"")
    assert empty.exit_code == 2 and "standard input is empty" in empty.stderr


def test_an_in_doubt_row_refused_as_already_enrolled_still_gets_the_rest_of_its_changes(tmp_path, sandbox_server):
    from batch_updater.state.journal import Journal

    server = sandbox_server()
    header = ["identifierValue", "firstName", "loyaltyProgramEnrollments.programId"]
    config = write_config(tmp_path, server.url)
    _run_json(write_csv(tmp_path / "n1.csv", header, [[mobile(7), "Old", "699"]]), config)
    night2 = write_csv(tmp_path / "n2.csv", header, [[mobile(7), "New", "699"]])
    code, first = _run_json(night2, config)
    assert code == 1
    # As if night 2's request had gone out and its answer been lost (a kill): the row is in doubt.
    with Journal(Path(first["reports"]["summary"]).parent.parent / "journal.sqlite") as journal:
        journal._db.execute("UPDATE outcome SET status = 'in_flight', rerun = 1, in_doubt = 1")
        journal.set_meta(status="stopped")
    code, resumed = _run_json(night2, config)
    assert code == 0 and resumed["success"] == 1
    [row] = read_report(resumed["reports"]["success"])
    assert "may have enrolled the customer; the rest of the row was sent without the enrolment" in row["_warnings"]
    assert server.state.customers.get(100007)["firstName"] == "New"


def test_only_changed_does_not_remember_a_row_the_api_applied_with_warnings(tmp_path, sandbox_server):
    server = sandbox_server()
    config = write_config(tmp_path, server.url)
    source = _warned_file(tmp_path)
    code, first = _run_json(source, config, "--only-changed")
    assert code == 0 and first["updated_with_warnings"] == 2
    code, second = _run_json(source, config, "--only-changed", "--restart")
    assert (second["skipped"], second["requests"]) == (2, 2)  # the two warned rows are sent again
    assert sorted(r["_row"] for r in read_report(second["reports"]["success"])) == ["2", "3"]
    code, third = _run_json(source, config, "--only-changed", "--restart", "--fail-on-warnings")
    assert code == 1 and third["errors"] == 2


def test_the_summary_line_says_how_many_causes_it_leaves_out():
    from batch_updater.output.tallies import describe_groups

    groups = [{"stage": "api", "code": str(8000 + i), "message": "m", "count": 5 - i, "example_row": i + 2}
              for i in range(5)]
    assert describe_groups(groups).endswith("; and 2 more causes (summary.json top_errors, errors.csv)")
    assert "more" not in describe_groups(groups[:3])


def test_jobs_names_each_shard(tmp_path, sandbox_server):
    server = sandbox_server()
    config = write_config(tmp_path, server.url)
    source = write_csv(tmp_path / "night.csv", ["identifierValue"], [[mobile(i)] for i in range(6)])
    for k in (1, 2):
        assert _cli("run", source, "--config", config, "--shard", f"{k}/2").exit_code == 0
    listed = _cli("jobs", "--config", config).stdout
    assert "night.csv (shard 1/2)" in listed and "night.csv (shard 2/2)" in listed
