"""[input] date_order (day- or month-first dates) and [values."<column>"] maps."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import config_for, customer_puts, mobile, read_report, write_config, write_csv

from batch_updater.cli import main
from batch_updater.config import ValueMap
from batch_updater.errors import ConfigError
from batch_updater.input.columns import resolve_headers
from batch_updater.input.reader import open_input
from batch_updater.rows.cells import DateOrder
from batch_updater.rows.checks import DATE_ERROR
from batch_updater.rows.prepare import prepare_chunks

DATED = ["identifierValue", "extendedFields.dateOfBirth", "loyaltyProgramEnrollments.programId",
         "loyaltyProgramEnrollments.tierExpiryDate"]
TYPES = {"types": {"extendedFields.dateOfBirth": "date"}}
GENDER = 'values."extendedFields.gender"'


def _validate(tmp_path: Path, header: list[str], rows: list[list[str]], **sections) -> tuple[list[dict], dict]:
    """validate: the preview (what would be sent) and the errors by row."""
    preview, errors, _ = _validated(tmp_path, header, rows, **sections)
    return preview, errors


def _validated(tmp_path: Path, header: list[str], rows: list[list[str]], **sections) -> tuple[list[dict], dict, dict]:
    """_validate's, and summary.json."""
    source = write_csv(tmp_path / "in.csv", header, rows)
    config = write_config(tmp_path, "http://127.0.0.1:9", **sections)
    result = CliRunner().invoke(main, ["validate", str(source), "--config", str(config), "--json"])
    assert result.exit_code in (0, 1), result.output
    summary = json.loads(result.stdout)
    preview = [json.loads(line) for line in Path(summary["reports"]["preview"]).read_text().splitlines()]
    return preview, {int(e["_row"]): e["_message"] for e in read_report(summary["reports"]["errors"])}, summary


# --- dates -------------------------------------------------------------------------------------

def test_day_first_dates_in_every_separator_and_with_a_time(tmp_path):
    preview, errors = _validate(tmp_path, DATED, [
        [mobile(1), "17/05/1990", "699", "31/12/2027 23:59"],
        [mobile(2), "17-05-1990", "699", "31.12.2027"],
        [mobile(3), "17.05.1990", "699", "2027-12-31T10:30:00"],     # ISO (a spreadsheet's date cell) still reads
        [mobile(4), "1990-05-17", "699", "1/2/2027 7:05:09+05:30"],
    ], input={"date_order": "DMY"}, **TYPES)

    assert errors == {}
    assert [p["body"]["extendedFields"]["dateOfBirth"] for p in preview] == ["1990-05-17"] * 4
    assert [p["body"]["loyaltyProgramEnrollments"][0]["tierExpiryDate"] for p in preview] == [
        "2027-12-31T23:59:00+00:00", "2027-12-31T23:59:59+00:00", "2027-12-31T10:30:00+00:00",
        "2027-02-01T07:05:09+05:30"]


def test_leap_days_and_impossible_or_ambiguous_dates_name_the_order(tmp_path):
    preview, errors = _validate(tmp_path, DATED[:2], [
        [mobile(1), "29/02/2024"], [mobile(2), "29/02/2023"], [mobile(3), "31/02/1990"],
        [mobile(4), "05/17/1990"], [mobile(5), "17/13/1990"], [mobile(6), "1990/05/17"], [mobile(7), "05/06/1990"],
    ], input={"date_order": "DMY"}, **TYPES)

    column = "extendedFields.dateOfBirth"
    order = '[input] date_order = "DMY" (day/month/year)'
    assert [p["body"]["extendedFields"]["dateOfBirth"] for p in preview] == ["2024-02-29", "1990-06-05"]
    assert errors == {
        3: f'{column} "29/02/2023" is not a date under {order}: February 2023 has no day 29',
        4: f'{column} "31/02/1990" is not a date under {order}: February 1990 has no day 31',
        5: f'{column} "05/17/1990" is not a date under {order}: its month is over 12 (read month/day/year, it'
           " is a date: check date_order)",
        6: f'{column} "17/13/1990" is not a date under {order}: its month is over 12',
        7: f'{column} "1990/05/17" is not a date (use DD/MM/YYYY, as [input] date_order = "DMY", or YYYY-MM-DD)',
    }


def test_errors_grouped_by_cause_keep_the_setting_and_drop_the_value(tmp_path):
    _, _, summary = _validated(tmp_path, DATED[:2], [[mobile(1), "31/02/1990"], [mobile(2), "31/02/1990"]],
                               input={"date_order": "DMY"}, **TYPES)
    [group] = summary["top_errors"]
    assert (group["count"], group["message"]) == (2, 'extendedFields.dateOfBirth is not a date under [input]'
                                                     ' date_order = "DMY" (day/month/year): February 1990 has no'
                                                     ' day 31')


def test_month_first(tmp_path):
    preview, errors = _validate(tmp_path, DATED[:2], [
        [mobile(1), "05/17/1990"], [mobile(2), "02/29/2024"], [mobile(3), "02/29/2023"], [mobile(4), "17/05/1990"],
    ], input={"date_order": "MDY"}, **TYPES)

    order = '[input] date_order = "MDY" (month/day/year)'
    assert [p["body"]["extendedFields"]["dateOfBirth"] for p in preview] == ["1990-05-17", "2024-02-29"]
    assert errors == {
        4: f'extendedFields.dateOfBirth "02/29/2023" is not a date under {order}: February 2023 has no day 29',
        5: f'extendedFields.dateOfBirth "17/05/1990" is not a date under {order}: its month is over 12 (read'
           " day/month/year, it is a date: check date_order)",
    }


def test_iso_only_by_default_as_before(tmp_path):
    preview, errors = _validate(tmp_path, DATED[:2], [[mobile(1), "17/05/1990"], [mobile(2), "2024-02-29"],
                                                      [mobile(3), "2023-02-29"]], **TYPES)

    assert [p["body"]["extendedFields"]["dateOfBirth"] for p in preview] == ["2024-02-29"]
    assert errors == {2: f'extendedFields.dateOfBirth "17/05/1990" {DATE_ERROR}',
                      4: f'extendedFields.dateOfBirth "2023-02-29" {DATE_ERROR}'}


def test_a_date_type_takes_no_time_and_a_datetime_field_and_last_viewed_date_are_reordered(tmp_path):
    header = ["identifierValue", "extendedFields.dateOfBirth", "fields.visited", "commChannels.mobilePush.value",
              "commChannels.mobilePush.lastViewedDate"]
    preview, errors = _validate(tmp_path, header, [
        [mobile(1), "17/05/1990 10:00", "17/05/2026 08:15", "fcm-token-0123456789abcdef", "20/11/2026"],
    ], input={"date_order": "DMY"}, types={"extendedFields.dateOfBirth": "date", "fields.visited": "datetime"})

    assert preview == []
    assert errors == {2: 'extendedFields.dateOfBirth "17/05/1990 10:00" is not a date (use DD/MM/YYYY, as'
                         ' [input] date_order = "DMY", or YYYY-MM-DD)'}
    preview, errors = _validate(tmp_path, header, [
        [mobile(1), "17/05/1990", "17/05/2026 08:15", "fcm-token-0123456789abcdef", "20/11/2026"],
    ], input={"date_order": "DMY"}, types={"extendedFields.dateOfBirth": "date", "fields.visited": "datetime"})
    profile = preview[0]["body"]["profiles"][0]
    assert profile["fields"] == {"visited": "2026-05-17T08:15:00+00:00"}
    assert profile["commChannels"][0]["meta"] == {"lastViewedDate": "2026-11-20"}


def test_excel_date_cells_keep_working_under_day_first(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(DATED)
    sheet.append([mobile(1), date(1990, 5, 17), 699, datetime(2027, 12, 31, 23, 59)])
    sheet.append([mobile(2), "17/05/1990", 699, "31/12/2027"])
    book.save(tmp_path / "in.xlsx")
    config = write_config(tmp_path, "http://127.0.0.1:9", input={"date_order": "DMY"}, **TYPES)
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "in.xlsx"), "--config", str(config), "--json"])

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    preview = [json.loads(line) for line in Path(summary["reports"]["preview"]).read_text().splitlines()]
    assert [p["body"]["extendedFields"]["dateOfBirth"] for p in preview] == ["1990-05-17", "1990-05-17"]
    assert [p["body"]["loyaltyProgramEnrollments"][0]["tierExpiryDate"] for p in preview] == [
        "2027-12-31T23:59:00+00:00", "2027-12-31T23:59:59+00:00"]


def test_date_order_is_a_choice(tmp_path):
    with pytest.raises(ConfigError, match=r"\[input\] date_order: 'YDM' is not one of YMD, DMY, MDY"):
        config_for(tmp_path, "http://127.0.0.1:9", input={"date_order": "ydm"})
    assert config_for(tmp_path, "http://127.0.0.1:9", input={"date_order": "dmy"}).input.date_order == "DMY"


def test_date_order_iso():
    day_first = DateOrder("DMY")
    assert day_first.iso("7/5/1990") == "1990-05-07"
    assert day_first.iso("17/05/1990T23:59") == "1990-05-17T23:59"
    assert day_first.iso("17/05-1990") == "17/05-1990"  # two separators: not a date of this shape
    assert day_first.iso("Mysuru") == "Mysuru"


# --- value maps --------------------------------------------------------------------------------

def test_a_value_map_rewrites_before_validation_and_the_api_gets_the_targets(tmp_path, sandbox_server):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "extendedFields.gender", "loyaltyType"],
                       [[mobile(1), " f ", "Y"], [mobile(2), "M", "y"], [mobile(3), "Other", "Y"],
                        [mobile(4), "female", ""]])
    config = write_config(tmp_path, server.url, **{GENDER: {"F": "Female", "M": "Male"},
                                                   "values.loyaltyType": {"Y": "loyalty", "N": "non_loyalty"}})
    result = CliRunner().invoke(main, ["run", str(source), "--config", str(config), "--json"])

    assert result.exit_code == 0, result.output
    puts = sorted(customer_puts(server), key=lambda r: r.query["identifierValue"])  # 8 at a time: any order
    assert [(r.body["extendedFields"]["gender"], (r.body.get("loyaltyInfo") or {}).get("loyaltyType"))
            for r in puts] == [("Female", "loyalty"), ("Male", "loyalty"),
                                                ("Other", "loyalty"), ("Female", None)]


def test_a_strict_map_refuses_other_values_listing_the_allowed_ones(tmp_path):
    preview, errors = _validate(tmp_path, ["identifierValue", "extendedFields.gender"], [
        [mobile(1), "F"], [mobile(2), "Male"], [mobile(3), "MALE"], [mobile(4), "x"], [mobile(5), ""],
    ], **{GENDER: {"F": "Female", "M": "Male", "strict": True}})

    assert [p["body"].get("extendedFields") for p in preview] == [
        {"gender": "Female"}, {"gender": "Male"}, {"gender": "Male"}, None]
    assert errors == {5: 'extendedFields.gender "x" is not one of the values [values."extendedFields.gender"]'
                         " allows: F, M, Female, Male"}


def test_the_rewritten_values_are_counted_per_column(tmp_path):
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "extendedFields.gender", "extendedFields.dateOfBirth"],
                       [[mobile(1), "F", "17/05/1990"], [mobile(2), "Female", "1990-05-17"], [mobile(3), "m", "x"]])
    config = config_for(tmp_path, "http://127.0.0.1:9", input={"date_order": "DMY"},
                        **{GENDER: {"F": "Female", "M": "Male"}}, **TYPES)
    opened = open_input(source, config.input)
    plan = resolve_headers(opened.headers, {}, "in.csv")

    [prepared] = list(prepare_chunks(opened, plan, config))
    assert prepared.rewritten == {"extendedFields.gender": 2, "extendedFields.dateOfBirth": 1}


@pytest.mark.parametrize(("table", "problem"), [
    ({'values."extendedFields.gender"': {"F": 1}},
     "[values.\"extendedFields.gender\"] 'F': expected the text to send (in quotes), got 1"),
    ({'values."extendedFields.gender"': {"F": "Female", "strict": "yes"}},
     "[values.\"extendedFields.gender\"] strict: expected true or false, got 'yes'"),
    ({'values."extendedFields.gender"': {"F": "Female", " f": "Feminine"}},
     "[values.\"extendedFields.gender\"]: keys 'F' and ' f' are the same (keys match in any case)"),
    ({'values."extendedFields.gender"': {"strict": True}},
     "[values.\"extendedFields.gender\"]: no values to rewrite (e.g. F = \"Female\")"),
    ({'values."gender"': {"F": "Female"}},
     "[values.\"gender\"]: 'gender' is not a column name (e.g. [values.\"extendedFields.gender\"] with"
     " F = \"Female\")"),
    ({"values.extendedFields.gender": {"F": "Female"}},
     "[values.\"extendedFields\"]: 'extendedFields' is not a column name: quote the column name,"
     " [values.\"extendedFields.gender\"]"),
])
def test_value_map_config_errors(tmp_path, table, problem):
    with pytest.raises(ConfigError) as refused:
        config_for(tmp_path, "http://127.0.0.1:9", **table)
    assert problem in refused.value.problems


def test_value_maps_are_kept_by_canonical_column(tmp_path):
    config = config_for(tmp_path, "http://127.0.0.1:9", **{'values."EXTENDEDFIELDS.gender"': {"F": "Female"}})
    assert config.input.values == {"extendedFields.gender": ValueMap((("F", "Female"),))}


def test_a_map_of_identifier_names_decides_which_identifiers_are_mobiles(tmp_path):
    preview, errors = _validate(tmp_path, ["identifierValue", "identifierName"], [
        ["+91 98000 00001", "M"], ["b@example.com", "E"],
    ], input={"default_country": "IN"}, **{"values.identifierName": {"M": "mobile", "E": "email"}})

    assert errors == {}
    assert [(p["query"]["identifierName"], p["query"]["identifierValue"]) for p in preview] == [
        ("mobile", mobile(1)), ("email", "b@example.com")]


def test_the_job_identity_of_a_config_without_the_new_settings_is_unchanged(tmp_path):
    """Job ids and --only-changed digests hash repr(config.input): unset, the new settings stay out."""
    plain = config_for(tmp_path, "http://127.0.0.1:9").input
    assert repr(plain) == (
        "InputSettings(chunk_rows=10000, encoding=None, delimiter=None, sheet=None, timezone='UTC',"
        " max_invalid=None, duplicates='sequential', types={})")
    used = config_for(tmp_path, "http://127.0.0.1:9", input={"default_country": "IN", "date_order": "DMY"},
                      **{GENDER: {"F": "Female"}}).input
    assert repr(used).endswith("types={}, default_country='IN', date_order='DMY', values={'extendedFields.gender':"
                               " ValueMap(pairs=(('F', 'Female'),), strict=False)})")


@pytest.mark.parametrize(("sections", "warned"), [({}, True), (TYPES, False)])
def test_date_order_with_no_date_column_to_read_says_so(tmp_path, sections, warned):
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "extendedFields.dateOfBirth"],
                       [[mobile(1), "17/05/1990"]])
    config = write_config(tmp_path, "http://127.0.0.1:9", input={"date_order": "DMY"}, **sections)
    result = CliRunner().invoke(main, ["validate", str(source), "--config", str(config)])
    said = '[input] date_order = "DMY" reads date columns, and this file has none: declare yours in [types]'
    assert (said in result.stderr) is warned, result.stderr
