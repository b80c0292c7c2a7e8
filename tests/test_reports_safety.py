"""Reports hold personal data and are opened in spreadsheets: formula injection is
neutralised and round-trips, files are private, identifiers can be masked."""

from __future__ import annotations

import csv
import json
import stat
from pathlib import Path

from click.testing import CliRunner
from conftest import config_for, customer_puts, mobile, read_report, write_config, write_csv
from hypothesis import given, settings
from hypothesis import strategies as st

from batch_updater.cli import main
from batch_updater.config import InputSettings
from batch_updater.input.csv_file import CsvInput
from batch_updater.input.reader import open_input
from batch_updater.input.shards import Shard
from batch_updater.outcomes import RowOutcome, Stage, Status
from batch_updater.output.csvsafe import neutralise, restore
from batch_updater.output.merge import merge_reports
from batch_updater.output.reports import ReportPaths, identifier_columns, write_reports
from batch_updater.runner import run
from batch_updater.state.journal import Journal


def mode(path: str | Path) -> int:
    return stat.S_IMODE(Path(path).stat().st_mode)


def raw_rows(path: str | Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


# --- Formula injection --------------------------------------------------------------------

@given(st.text(alphabet=st.sampled_from("'=+-@\t\rab1 "), max_size=6) | st.text(max_size=8))
def test_restore_undoes_neutralise_for_every_value(value):
    safe = neutralise(value)
    assert restore(safe) == value
    assert not safe.startswith(("=", "+", "-", "@", "\t", "\r"))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from("'=+-@\tab1,\" \n"), max_size=6), min_size=3, max_size=3))
def test_an_errors_report_reads_back_as_the_original_cells(tmp_path_factory, cells):
    folder = tmp_path_factory.mktemp("roundtrip")
    headers = ["identifierValue", "firstName", "-lastName"]
    source = folder / "in.csv"
    write_csv(source, headers, [cells])
    reader = CsvInput(source)
    with Journal(folder / "journal.sqlite") as journal:
        journal.record(RowOutcome(2, Status.ERROR, Stage.VALIDATION, "", "=bad"))
        journal.flush()
        paths = ReportPaths.in_folder(folder)
        write_reports(paths, reader.headers, reader.chunks(), journal)
    fed_back = CsvInput(paths.errors)
    assert fed_back.headers[:3] == headers
    [row] = [r for chunk in fed_back.chunks() for r in chunk.frame.values.tolist()]
    # The cells as the first run read them (an apostrophe typed before = is the text marker).
    assert row[:3] == [restore(cell) for cell in cells]
    assert row[3:6] == ["2", "2", "validation"]
    assert row[7] == "=bad"  # the report's own columns round-trip too


HOSTILE = ["=HYPERLINK(\"http://evil.example\",\"x\")", "+1+2", "-2+3", "@SUM(A1)", "-@x"]


def test_report_cells_are_neutralised_and_errors_csv_fed_back_sends_the_original_values(
        tmp_path, sandbox_server):
    server = sandbox_server()
    header = ["identifierValue", "firstName", "lastName", "extendedFields.city",
              "commChannels.email.value", "loyaltyProgramEnrollments.loyaltyPoints"]
    source = write_csv(tmp_path / "in.csv", header, [
        [mobile(1), HOSTILE[0], HOSTILE[1], HOSTILE[2], "", ""],           # sent
        [mobile(2), HOSTILE[3], HOSTILE[4], "=cmd|' /C calc'!A0", "bob@", ""],  # invalid email
        [mobile(3), "Ravi", "", "", "", "-5"],                             # invalid points
    ])
    config = config_for(tmp_path, server.url)
    summary = run(config, source)
    assert (summary.success, summary.validation_errors) == (1, 2)
    [put] = customer_puts(server)
    assert put.body["profiles"][0]["firstName"] == HOSTILE[0]  # the API gets the value as typed

    success = raw_rows(summary.reports["success"])
    assert success[1][10:13] == ["'" + HOSTILE[0], "'" + HOSTILE[1], "'" + HOSTILE[2]]
    errors = raw_rows(summary.reports["errors"])
    assert errors[1][:5] == [mobile(2), "'" + HOSTILE[3], "'-@x", "'=cmd|' /C calc'!A0", "bob@"]
    assert errors[2][5] == "'-5"
    for row in success[1:] + errors[1:]:
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row), row

    # Fix the email in errors.csv, feed the file back unchanged otherwise.
    fixed = tmp_path / "errors-fixed.csv"
    rows = raw_rows(summary.reports["errors"])
    rows[1][4] = "bob@example.com"
    with open(fixed, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    again = run(config, fixed)
    assert (again.success, again.validation_errors) == (1, 1)
    second = customer_puts(server)[1]
    assert second.body["profiles"][0]["firstName"] == HOSTILE[3]
    assert second.body["profiles"][0]["lastName"] == HOSTILE[4]
    assert second.body["extendedFields"]["city"] == "=cmd|' /C calc'!A0"
    [still] = read_report(again.reports["errors"])
    assert still["loyaltyProgramEnrollments.loyaltyPoints"] == "'-5"  # still neutralised...
    assert still["_message"].startswith('loyaltyProgramEnrollments.loyaltyPoints "-5" must be')  # ...read as -5


def test_an_excel_user_who_typed_the_apostrophe_gets_the_value_without_it(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("identifierValue,firstName\n'+919800000001,'@home\n", encoding="utf-8")
    reader = open_input(source, InputSettings(chunk_rows=10, encoding=None, delimiter=None))
    assert [r for c in reader.chunks() for r in c.frame.values.tolist()] == [["+919800000001", "@home"]]


# --- File modes ---------------------------------------------------------------------------

def test_reports_are_0600_and_run_and_job_folders_0700(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(1)], ["12"]])
    config = config_for(tmp_path, server.url)
    summary = run(config, source)
    run_folder = Path(summary.reports["summary"]).parent
    job_folder = run_folder.parent
    assert (mode(run_folder), mode(job_folder)) == (0o700, 0o700)
    for name in ("success", "errors", "skipped", "summary"):
        assert mode(summary.reports[name]) == 0o600, name
    for journal_file in job_folder.glob("journal.sqlite*"):
        assert mode(journal_file) == 0o600, journal_file

    dry = run(config, source, dry_run=True)
    dry_folder = Path(dry.reports["summary"]).parent
    assert mode(dry_folder) == 0o700
    for name in ("success", "errors", "skipped", "summary", "preview"):
        assert mode(dry.reports[name]) == 0o600, name


def test_merged_shard_reports_are_private_too(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(i)] for i in range(1, 9)])
    config = config_for(tmp_path, server.url)
    folders = [Path(run(config, source, shard=Shard(k, 2)).reports["summary"]).parent for k in (1, 2)]
    merged = merge_reports(folders, tmp_path / "merged")
    assert mode(tmp_path / "merged") == 0o700
    for path in merged["reports"].values():
        assert mode(path) == 0o600, path
    assert mode(tmp_path / "merged" / "summary.json") == 0o600


def test_a_job_folder_left_open_by_an_older_version_is_made_private(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue"], [[mobile(1)]])
    config = config_for(tmp_path, server.url)
    job_folder = Path(run(config, source).reports["summary"]).parent.parent
    job_folder.chmod(0o755)
    run(config, source, restart=True)
    assert mode(job_folder) == 0o700


# --- Masking ------------------------------------------------------------------------------

def test_mask_identifiers_masks_success_and_skipped_and_leaves_errors_re_feedable(tmp_path, sandbox_server):
    server = sandbox_server()
    header = ["Mobile No", "firstName", "commChannels.email.value", "identifiers.externalId"]
    source = write_csv(tmp_path / "in.csv", header, [
        [mobile(1), "Asha", "asha@example.com", "EXT00000001"],
        [mobile(2), "Ravi", "bob@", "EXT00000002"],         # invalid: errors.csv
        [mobile(3), "Old", "", ""],                         # held back by duplicates = last
        [mobile(3), "Meera", "", ""],
    ])
    config = write_config(tmp_path, server.url, columns={"Mobile No": "identifierValue"})
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--json",
                                       "--mask-identifiers", "--duplicates", "last"])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["config"]["output"]["mask_identifiers"] is True

    success = read_report(summary["reports"]["success"])
    assert [(r["_identifier"], r["Mobile No"], r["commChannels.email.value"], r["identifiers.externalId"],
             r["firstName"]) for r in success] == [
        ("9198****0001", "9198****0001", "a***@example.com", "EX*******01", "Asha"),
        ("9198****0003", "9198****0003", "", "", "Meera")]
    [skipped] = read_report(summary["reports"]["skipped"])
    assert skipped["Mobile No"] == "9198****0003"
    assert mobile(3) not in skipped["_reason"] and "9198****0003" in skipped["_reason"]
    [error] = read_report(summary["reports"]["errors"])
    assert (error["Mobile No"], error["commChannels.email.value"]) == (mobile(2), "bob@")
    assert [p.query["identifierValue"] for p in customer_puts(server)] == [mobile(1), mobile(3)]


def test_identifier_columns_follow_the_canonical_names():
    headers = ["Mobile No", "IDENTIFIERS.EMAIL", "commChannels.mobile.value", "commChannels.mobile.primary",
               "firstName", "_identifier", ""]
    assert identifier_columns(headers, {"mobile no": "identifierValue"}) == [0, 1, 2]
