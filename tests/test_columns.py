"""Headers: case and spaces, [columns] renames, report columns, unknown and duplicate names."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import config_for, customer_puts, mobile, read_report, write_config, write_csv

from batch_updater.cli import main
from batch_updater.errors import InputError
from batch_updater.input.columns import resolve_headers
from batch_updater.runner import run


def test_headers_match_any_case_after_trimming_and_through_renames():
    plan = resolve_headers([" IDENTIFIERVALUE ", "firstname", "Mobile No", "City", "EXTENDEDFIELDS.Gender",
                            "commchannels.EMAIL.Value", "commChannels.email.META.residence"],
                           {"mobile no": "identifiers.mobile", "city": "extendedFields.city"}, "in.csv")
    assert plan.canonical == ("identifierValue", "firstName", "identifiers.mobile", "extendedFields.city",
                              "extendedFields.Gender", "commChannels.email.value",
                              "commChannels.email.meta.residence")


def test_report_columns_and_empty_headers_are_ignored():
    plan = resolve_headers(["identifierValue", "", "_row", "_message", "  "], {}, "errors.csv")
    assert plan.canonical == ("identifierValue", None, None, None, None)
    assert plan.unnamed == (1, 4)
    assert plan.used == [(0, "identifierValue")]


@pytest.mark.parametrize("headers, renames, message", [
    (["identifierValue", "Fist Name", "loyalty_type"], {},
     "unknown column 'Fist Name' (did you mean firstName?); unknown column 'loyalty_type' (did you mean"
     " loyaltyType?); rename unknown columns, map them in the config's [columns] table, or start their"
     " names with _ to have them ignored"),
    (["identifierValue", "commChannels.fax.value"], {},
     "unknown column 'commChannels.fax.value' (fax is not a channel type: mobile, email, wechat, ios,"
     " android, line, mobilePush); rename unknown columns, map them in the config's [columns] table, or"
     " start their names with _ to have them ignored"),
    (["identifierValue", "identifiers.passport"], {},
     "unknown column 'identifiers.passport' (passport is not an identifier type: mobile, email, externalId,"
     " wechat, martjackId, fbId, tmall_uname, cuid, ali_uname, jd_uname, vip_uname, line); rename unknown"
     " columns, map them in the config's [columns] table, or start their names with _ to have them ignored"),
    (["Mobile", "firstName"], {"mobile": "identifierValu"},
     "the config's [columns] maps 'Mobile' to 'identifierValu', which is not a column name (did you mean"
     " identifierValue?): fix the [columns] table; no identifierValue column (map your identifier column"
     " to it in the config's [columns] table, e.g. \"Mobile No\" = \"identifierValue\")"),
    (["identifierValue", "FirstName", "first name"], {"first name": "firstName"},
     "columns 'FirstName' and 'first name' both mean firstName"),
    (["identifierValue", "identifierValue"], {}, "columns 'identifierValue' and 'identifierValue' both mean"
                                                 " identifierValue"),
    (["identifierValue", "commChannels.email.lastViewedDate"], {},
     "column 'commChannels.email.lastViewedDate': lastViewedDate is only for the mobilePush channel"
     " (commChannels.mobilePush.lastViewedDate)"),
    (["firstName"], {}, "no identifierValue column (map your identifier column to it in the config's"
                        " [columns] table, e.g. \"Mobile No\" = \"identifierValue\")"),
])
def test_bad_headers_are_one_input_error_naming_each(headers, renames, message):
    with pytest.raises(InputError) as error:
        resolve_headers(headers, renames, "in.csv")
    assert str(error.value) == f"in.csv: header row: {message}"


def test_an_unknown_column_stops_the_cli_with_exit_2_before_anything_is_sent(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "Fist Name"], [[mobile(1), "A"]])
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(write_config(tmp_path, server.url))])

    assert result.exit_code == 2
    assert result.output == (f"batch-updater: error: {source}: header row: unknown column 'Fist Name'"
                             " (did you mean firstName?); rename unknown columns, map them in the config's"
                             " [columns] table, or start their names with _ to have them ignored\n")
    assert customer_puts(server) == []


def test_renamed_headers_reach_the_api_and_the_reports_keep_the_original_headers(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["Mobile No", "First Name", "_note", ""],
                       [[mobile(1), "Asha", "ignored", ""], ["12", "Bad", "", ""]])
    config = config_for(tmp_path, server.url,
                        columns={"Mobile No": "identifierValue", "First Name": "firstName"})
    summary = run(config, source)

    [request] = customer_puts(server)
    assert request.body == {"profiles": [{"firstName": "Asha"}]}
    [error] = read_report(summary.reports["errors"])
    assert list(error)[:3] == ["Mobile No", "First Name", ""]  # _columns are the reports' own
    assert (error["_row"], error["Mobile No"]) == ("3", "12")


def test_the_errors_report_fed_back_after_a_fix_is_sent(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "firstName", "loyaltyType"],
                       [[mobile(1), "A", "loyalty"], [mobile(2), "B", "gold"]])
    config = config_for(tmp_path, server.url)
    first = run(config, source)
    rows = read_report(first.reports["errors"])
    assert [r["_message"] for r in rows] == ['loyaltyType "gold" is not loyalty or non_loyalty']
    fixed = tmp_path / "fixed.csv"
    header = list(rows[0])
    write_csv(fixed, header, [[("loyalty" if h == "loyaltyType" else rows[0][h]) for h in header]])
    again = run(config, fixed)

    assert (again.success, again.errors) == (1, 0)
    assert customer_puts(server)[-1].body == {"loyaltyInfo": {"loyaltyType": "loyalty"},
                                              "profiles": [{"firstName": "B"}]}


def test_validate_prints_the_summary_and_exits_1_when_rows_are_invalid(tmp_path):
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "firstName"], [[mobile(1), "A"], ["1", "B"]])
    result = CliRunner().invoke(main, ["validate", str(source), "--config",
                                       str(write_config(tmp_path, "http://127.0.0.1:9")), "--json"])
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert (summary["status"], summary["validation_errors"], summary["requests"]) == ("dry_run", 1, 0)
