"""Several rows for one customer: sequential (default), last, reject — against the sandbox."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from conftest import config_for, customer_puts, mobile, read_report, write_config, write_csv

from batch_updater.cli import main
from batch_updater.rows.duplicates import DuplicateScan
from batch_updater.runner import run

HEADER = ["identifierValue", "firstName"]
ROWS = [[mobile(1), "First"],       # row 2
        [mobile(2), "Other"],       # row 3
        [mobile(1), "Second"],      # row 4
        ["12", "Invalid"],          # row 5
        [f" {mobile(1)} ", "Third"]]  # row 6: the same customer once trimmed


def sent_names(server) -> list[tuple[str, str]]:
    return [(r.query["identifierValue"], r.body["profiles"][0]["firstName"]) for r in customer_puts(server)]


def test_sequential_sends_every_row_of_a_customer_in_file_order(tmp_path, sandbox_server):
    server = sandbox_server()
    summary = run(config_for(tmp_path, server.url, limits={"concurrency": 8}),
                  write_csv(tmp_path / "in.csv", HEADER, ROWS))

    assert (summary.success, summary.validation_errors) == (4, 1)
    assert [name for number, name in sent_names(server) if number == mobile(1)] == ["First", "Second", "Third"]
    assert server.state.customer(100001)["firstName"] == "Third"


def test_last_sends_only_the_last_valid_row_and_skips_the_earlier_ones(tmp_path, sandbox_server):
    server = sandbox_server()
    summary = run(config_for(tmp_path, server.url, input={"duplicates": "last"}),
                  write_csv(tmp_path / "in.csv", HEADER, ROWS))

    assert sorted(sent_names(server)) == sorted([(mobile(2), "Other"), (mobile(1), "Third")])
    skipped = {r["_row"]: r["_reason"] for r in read_report(summary.reports["skipped"])}
    reason = (f"duplicate: row 6 is a later row for the same customer (mobile {mobile(1)}) and is sent"
              " instead ([input] duplicates = \"last\")")
    assert skipped == {"2": reason, "4": reason}
    assert [r["_row"] for r in read_report(summary.reports["errors"])] == ["5"]
    assert (summary.exit_code, summary.success, summary.skipped) == (1, 2, 2)


def test_reject_sends_no_row_of_a_customer_with_several(tmp_path, sandbox_server):
    server = sandbox_server()
    summary = run(config_for(tmp_path, server.url, input={"duplicates": "reject"}),
                  write_csv(tmp_path / "in.csv", HEADER, ROWS))

    assert sent_names(server) == [(mobile(2), "Other")]
    errors = {r["_row"]: (r["_stage"], r["_message"]) for r in read_report(summary.reports["errors"])}
    advice = ("; [input] duplicates = \"reject\" sends none of them: keep one row per customer, or set"
              " duplicates to \"sequential\" or \"last\"")
    customer = f"the same customer (mobile {mobile(1)})"
    assert errors == {
        "2": ("validation", f"{customer} is also in rows 4, 6{advice}"),
        "4": ("validation", f"{customer} is also in rows 2, 6{advice}"),
        "5": ("validation", 'identifierValue "12" is not a mobile number: digits only with the country'
                            ' code, 8 to 15 digits (e.g. 919845012345)'),
        "6": ("validation", f"{customer} is also in rows 2, 4{advice}"),
    }


def test_reject_counts_invalid_rows_of_the_customer_too(tmp_path):
    rows = [[mobile(1), "A"], [mobile(1), "B" * 101]]
    summary = run(config_for(tmp_path, "http://127.0.0.1:9", input={"duplicates": "reject"}),
                  write_csv(tmp_path / "in.csv", HEADER, rows), dry_run=True)
    errors = {r["_row"]: r["_message"] for r in read_report(summary.reports["errors"])}
    assert errors["2"].startswith(f"the same customer (mobile {mobile(1)}) is also in row 3;")
    assert errors["3"].startswith('firstName "BBBB')
    assert "is longer than 100 characters; the same customer" in errors["3"]


def test_the_policy_is_an_option_and_the_dry_run_previews_what_would_be_sent(tmp_path):
    source = write_csv(tmp_path / "in.csv", HEADER, ROWS)
    config = write_config(tmp_path, "http://127.0.0.1:9")
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--dry-run",
                                       "--duplicates", "last", "--json"])
    summary = json.loads(result.stdout)
    preview = [json.loads(line) for line in Path(summary["reports"]["preview"]).read_text().splitlines()]
    assert [p["row"] for p in preview] == [3, 6]
    assert summary["config"]["input"]["duplicates"] == "last"


def test_keys_group_across_chunks():
    scan = DuplicateScan("last")
    scan.add([2, 3], ["mobile:1", "mobile:2"])
    scan.add([4], ["mobile:1"])
    scan.add([5, 6], ["email:a@b.co", "mobile:2"])
    decisions = scan.decide()
    assert [(d.row, d.group) for d in decisions.within(range(2, 7))] == [(2, (2, 4)), (3, (3, 6))]
