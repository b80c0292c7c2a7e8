"""Input formats: Excel workbooks (real .xlsx files), CSV dialects and encodings, gzip."""

from __future__ import annotations

import gzip
import json
from datetime import date, datetime, time
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner
from conftest import config_for, read_report, write_config

from batch_updater.cli import main
from batch_updater.config import InputSettings
from batch_updater.errors import InputError
from batch_updater.input.csv_file import CsvInput
from batch_updater.input.excel_file import ExcelInput, excel_text
from batch_updater.input.reader import open_input
from batch_updater.runner import run

HEADER = ["identifierValue", "firstName", "loyaltyProgramEnrollments.programId",
          "loyaltyProgramEnrollments.tierExpiryDate", "commChannels.email.value",
          "commChannels.email.primary", "extendedFields.dateOfBirth"]


def settings(**values) -> InputSettings:
    return InputSettings(**{"chunk_rows": 10_000, "encoding": None, "delimiter": None, **values})


def workbook(path: Path) -> Path:
    """Two sheets, as a spreadsheet program saves them: numbers, dates, booleans, blanks."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Customers"
    sheet.append(HEADER)
    sheet.append([919845012345, "Asha", 699, date(2027, 12, 31), "asha@example.com", True,
                  date(1990, 2, 28)])
    sheet.append([919845012346.0, "Ravi", 699.0, datetime(2027, 6, 30, 10, 30), None, None, None])
    sheet.append([None, None, None, None, None, None, None])           # a blank row stays a row
    sheet.append(["0919845012347", " Meera ", None, None, "meera@example.com", False, None])
    sheet.append([12345, "Too short", None, None, None, None, None])
    sheet["D3"].number_format = "yyyy-mm-dd hh:mm"
    other = book.create_sheet("Second")
    other.append(["identifierValue", "lastName"])
    other.append([919800000001, "Iyer"])
    book.save(path)
    return path


def rows(reader) -> list[list[str]]:
    return [row for chunk in reader.chunks() for row in chunk.frame.values.tolist()]


def test_an_xlsx_reads_identifiers_as_digits_and_dates_as_iso_text(tmp_path):
    reader = open_input(workbook(tmp_path / "in.xlsx"), settings(chunk_rows=2))
    assert isinstance(reader, ExcelInput)
    assert reader.headers == HEADER
    assert [(c.first_row, len(c.frame)) for c in reader.chunks()] == [(2, 2), (4, 2), (6, 1)]
    assert rows(reader) == [
        ["919845012345", "Asha", "699", "2027-12-31", "asha@example.com", "true", "1990-02-28"],
        ["919845012346", "Ravi", "699", "2027-06-30T10:30:00", "", "", ""],
        ["", "", "", "", "", "", ""],
        ["0919845012347", " Meera ", "", "", "meera@example.com", "false", ""],
        ["12345", "Too short", "", "", "", "", ""],
    ]


def test_the_sheet_is_chosen_by_name_or_position_from_one(tmp_path):
    path = workbook(tmp_path / "in.xlsx")
    for sheet in ("Second", "second", "2"):
        reader = open_input(path, settings(sheet=sheet))
        assert reader.headers == ["identifierValue", "lastName"]
        assert rows(reader) == [["919800000001", "Iyer"]]
    assert open_input(path, settings(sheet="1")).headers == HEADER
    with pytest.raises(InputError) as error:
        open_input(path, settings(sheet="Archive"))
    assert str(error.value) == (f"{path}: no sheet 'Archive' (the sheets are 1: 'Customers', 2: 'Second');"
                                " pass --sheet with a name or a position from 1")


def test_a_dry_run_of_an_xlsx_sends_what_the_spreadsheet_shows(tmp_path):
    config = config_for(tmp_path, "http://127.0.0.1:9", input={"timezone": "Asia/Kolkata"},
                        types={"extendedFields.dateOfBirth": "date"})
    summary = run(config, workbook(tmp_path / "in.xlsx"), dry_run=True)

    preview = [json.loads(line) for line in Path(summary.reports["preview"]).read_text().splitlines()]
    assert [(p["row"], p["query"]["identifierValue"]) for p in preview] == [
        (2, "919845012345"), (3, "919845012346"), (5, "0919845012347")]
    assert preview[0]["body"] == {
        "profiles": [{"firstName": "Asha", "commChannels": [
            {"type": "email", "value": "asha@example.com", "primary": True}]}],
        "extendedFields": {"dateOfBirth": "1990-02-28"},
        "loyaltyProgramEnrollments": [{"programId": 699, "tierExpiryDate": "2027-12-31T23:59:59+05:30"}],
    }
    assert preview[1]["body"]["loyaltyProgramEnrollments"] == [
        {"programId": 699, "tierExpiryDate": "2027-06-30T10:30:00+05:30"}]
    assert preview[2]["body"] == {"profiles": [{"firstName": "Meera", "commChannels": [
        {"type": "email", "value": "meera@example.com", "primary": False}]}]}
    [invalid] = read_report(summary.reports["errors"])
    assert invalid["_row"] == "6" and invalid["identifierValue"] == "12345"
    skipped = {r["_row"]: r["_reason"] for r in read_report(summary.reports["skipped"])}
    assert skipped == {"2": "dry run: valid, not sent", "3": "dry run: valid, not sent",
                       "4": "blank row", "5": "dry run: valid, not sent"}


def test_the_errors_report_of_an_xlsx_run_is_a_csv_that_reads_back(tmp_path):
    config = config_for(tmp_path, "http://127.0.0.1:9")
    first = run(config, workbook(tmp_path / "in.xlsx"), dry_run=True)
    again = open_input(first.reports["errors"], config.input)
    assert isinstance(again, CsvInput)
    assert rows(again)[0][:2] == ["12345", "Too short"]


@pytest.mark.parametrize("cell, text", [
    (919845012345.0, "919845012345"),
    (919845012345, "919845012345"),
    (1e20, "100000000000000000000"),
    (12.5, "12.5"),
    (0.00001, "0.00001"),
    (-3.0, "-3"),
    (True, "true"),
    (False, "false"),
    (datetime(2027, 12, 31, 23, 59, 58, 999_600), "2027-12-31T23:59:59"),  # Excel's float time
    (datetime(2027, 12, 31), "2027-12-31"),
    (date(2027, 12, 31), "2027-12-31"),
    (time(10, 30), "10:30:00"),
    ("  text  ", "  text  "),
    ("", ""),
    (None, ""),
])
def test_excel_cells_become_the_text_a_user_typed(cell, text):
    assert excel_text(cell) == text


def test_an_empty_sheet_or_a_header_below_row_one_is_an_input_error(tmp_path):
    book = openpyxl.Workbook()
    book.active.title = "Empty"
    lower = book.create_sheet("Lower")
    lower["A3"] = "identifierValue"
    lower["A4"] = "919845012345"
    path = tmp_path / "odd.xlsx"
    book.save(path)
    for sheet in ("Empty", "Lower"):
        with pytest.raises(InputError) as error:
            open_input(path, settings(sheet=sheet))
        assert str(error.value) == (f"{path}: sheet '{sheet}': row 1 is empty: the header (e.g."
                                    " identifierValue, firstName) must be the sheet's first row")


def test_a_file_that_is_not_a_workbook_says_what_to_do(tmp_path):
    path = tmp_path / "fake.xlsx"
    path.write_text("identifierValue\n919845012345\n")
    with pytest.raises(InputError) as error:
        open_input(path, settings())
    assert str(error.value) == f"{path}: this is text (a CSV file?), not a .xlsx workbook: give it the .csv suffix"


def test_a_csv_with_a_bom_and_semicolons_is_read(tmp_path):
    path = tmp_path / "excel-export.csv"
    path.write_bytes("\ufeffidentifierValue;firstName;extendedFields.city\r\n"
                     "919845012345;Asha;Mysuru\r\n0919845012346;\"Rao; Jr\";\r\n".encode("utf-8"))
    reader = open_input(path, settings())
    assert reader.delimiter == ";"
    assert reader.headers == ["identifierValue", "firstName", "extendedFields.city"]
    assert rows(reader) == [["919845012345", "Asha", "Mysuru"], ["0919845012346", "Rao; Jr", ""]]


def test_a_latin1_file_needs_encoding_and_reads_with_it(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("identifierValue,firstName,extendedFields.city\n919845012345,José,São Paulo\n"
                     .encode("latin-1"))
    config = write_config(tmp_path, "http://127.0.0.1:9")
    without = CliRunner().invoke(main, ["validate", str(path), "--config", str(config)])
    assert without.exit_code == 2
    assert without.output == (f"batch-updater: error: {path}: line 2: not valid UTF-8 text (byte 0xe9);"
                              " pass --encoding, e.g. --encoding latin-1 or --encoding cp1252\n")

    result = CliRunner().invoke(main, ["validate", str(path), "--config", str(config),
                                       "--encoding", "latin-1", "--json"])
    assert result.exit_code == 0, result.output
    preview = Path(json.loads(result.stdout)["reports"]["preview"]).read_text(encoding="utf-8")
    assert json.loads(preview)["body"] == {"profiles": [{"firstName": "José"}],
                                           "extendedFields": {"city": "São Paulo"}}


def test_bad_text_past_the_first_64_kb_names_its_line(tmp_path):
    path = tmp_path / "long.csv"
    lines = ["identifierValue,firstName"] + [f"9198{i:08d},Name{i}" for i in range(5000)]
    path.write_bytes(("\n".join(lines) + "\n919800009999,José\n").encode("latin-1"))
    with pytest.raises(InputError) as error:  # found when the file is opened: before anything is sent
        open_input(path, settings(chunk_rows=1000))
    assert str(error.value) == (f"{path}: line 5002: not valid UTF-8 text (byte 0xe9); pass --encoding,"
                                " e.g. --encoding latin-1 or --encoding cp1252")


def test_a_gzipped_csv_is_read(tmp_path):
    path = tmp_path / "in.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        handle.write("identifierValue|firstName\n919845012345|Asha\n")
    reader = open_input(path, settings())
    assert (reader.delimiter, rows(reader)) == ("|", [["919845012345", "Asha"]])


def test_the_sheet_option_reaches_the_reader_from_the_command_line(tmp_path):
    config = write_config(tmp_path, "http://127.0.0.1:9")
    path = workbook(tmp_path / "in.xlsx")
    result = CliRunner().invoke(main, ["validate", str(path), "--config", str(config), "--sheet", "Second",
                                       "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["rows"], summary["skipped"], summary["config"]["input"]["sheet"]) == (1, 1, "Second")
