"""Broken and hostile inputs: each gets one clear line (exit 2, nothing sent) or per-row errors.

Small cases are files in tests/corpus/ (see its README); binary and large ones are made
here in tmp_path. Every CLI case checks the exact message and that no traceback shows.
"""

from __future__ import annotations

import csv
import errno
import gzip
import io
import json
import os
import random
import re
import zipfile
from pathlib import Path

import openpyxl
from click.testing import CliRunner
from conftest import customer_puts, mobile, read_report, write_config, write_csv
from hypothesis import given, settings
from hypothesis import strategies as st

import batch_updater.input.reader as reader_module
import batch_updater.output.reports as reports_module
from batch_updater.cli import main
from batch_updater.input.csv_file import CFB_SIGNATURE, CsvInput

CORPUS = Path(__file__).parent / "corpus"
NO_API = "http://127.0.0.1:9"  # validate sends nothing
UNKNOWN_COLUMN_ADVICE = ("rename unknown columns, map them in the config's [columns] table, or start"
                         " their names with _ to have them ignored")


def invoke(tmp_path: Path, *args: str, url: str = NO_API, **sections):
    config = write_config(tmp_path, url, **sections)
    result = CliRunner().invoke(main, [*args, "--config", str(config)])
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    return result


def error_of(tmp_path: Path, path: Path | str, *options: str) -> str:
    """The one-line error `validate` gives for `path` (exit 2, nothing on stdout)."""
    result = invoke(tmp_path, "validate", str(path), *options)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("batch-updater: error: ")
    return line.removeprefix("batch-updater: error: ")


def validated(tmp_path: Path, path: Path, *options: str) -> dict:
    """The summary of `validate` for a file that is read (exit 0 or 1)."""
    result = invoke(tmp_path, "validate", str(path), "--json", *options)
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def errors_in(summary: dict) -> dict[str, str]:
    return {r["_row"]: r["_message"] for r in read_report(summary["reports"]["errors"])}


# --- CSV text ---------------------------------------------------------------------------

def test_an_empty_file(tmp_path):
    path = CORPUS / "empty.csv"
    assert error_of(tmp_path, path) == (f"{path}: the file is empty: expected a header row such as"
                                        " identifierValue,firstName")


def test_a_header_without_rows_is_zero_rows_and_exit_0(tmp_path):
    result = invoke(tmp_path, "validate", str(CORPUS / "header_only.csv"))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("0 rows: 0 valid or skipped (a dry run sends nothing), 0 invalid")
    summary = validated(tmp_path, CORPUS / "header_only.csv")
    assert (summary["rows"], summary["exit_code"]) == (0, 0)


def test_a_wrong_delimiter_names_the_one_in_the_header(tmp_path):
    path = CORPUS / "semicolons.csv"
    assert error_of(tmp_path, path, "--delimiter", ",") == (
        f"{path}: header row: unknown column 'identifierValue;firstName' (it holds ';': if that is"
        f" the file's delimiter, pass --delimiter ';'); {UNKNOWN_COLUMN_ADVICE}; no identifierValue"
        " column (map your identifier column to it in the config's [columns] table, e.g."
        ' "Mobile No" = "identifierValue")')
    assert validated(tmp_path, path)["skipped"] == 2  # sniffed when not forced: both rows valid


def test_a_delimiter_that_is_not_sniffed_is_suggested(tmp_path):
    path = CORPUS / "colons.csv"
    assert error_of(tmp_path, path).startswith(
        f"{path}: header row: unknown column 'identifierValue:firstName' (it holds ':': if that is"
        " the file's delimiter, pass --delimiter ':');")
    assert validated(tmp_path, path, "--delimiter", ":")["skipped"] == 1


def test_a_delimiter_option_must_be_one_character(tmp_path):
    path = CORPUS / "semicolons.csv"
    assert error_of(tmp_path, path, "--delimiter", ";;") == (
        "--delimiter ';;': expected one character, e.g. ',' ';' '|' or '\\t' (tab)")
    assert validated(tmp_path, path, "--delimiter", "semicolon")["skipped"] == 2


def test_ragged_rows_keep_their_extra_cells_and_become_row_errors(tmp_path):
    summary = validated(tmp_path, CORPUS / "ragged_rows.csv")
    assert (summary["rows"], summary["validation_errors"], summary["skipped"]) == (4, 1, 3)
    assert errors_in(summary) == {"3": (
        'column 4 (no header) "Bengaluru" holds a value: the row has more cells than the header row;'
        " check its delimiters and quoting, or give the column a header")}
    with open(summary["reports"]["errors"], newline="", encoding="utf-8") as handle:
        header, row = list(csv.reader(handle))
    assert header[:5] == ["identifierValue", "firstName", "lastName", "", ""]
    assert row[:5] == [mobile(2), "Ravi", "Kumar", "Bengaluru", ""]  # nothing lost


def test_trailing_delimiters_are_read_as_usual(tmp_path):
    summary = validated(tmp_path, CORPUS / "trailing_delimiters.csv")
    assert (summary["rows"], summary["errors"], summary["skipped"]) == (2, 0, 2)


def test_an_unclosed_quote_names_its_line_before_anything_is_sent(tmp_path):
    path = CORPUS / "unbalanced_quote.csv"
    assert error_of(tmp_path, path) == (
        f'{path}: row 3 (line 3): a quote (") opens a cell that is never closed, so the rest of the file'
        ' reads as one cell: close the quote, or write a quote inside a cell as two ("")')


def test_a_quoted_header_over_two_lines(tmp_path):
    path = CORPUS / "multiline_header.csv"
    assert error_of(tmp_path, path) == (
        f"{path}: row 1 runs over lines 1-2 (a quoted header with a line break, or an unclosed"
        " quote): put the header on the first line")


def test_invalid_utf8_without_encoding_names_line_and_byte(tmp_path):
    path = CORPUS / "latin1.csv"
    assert error_of(tmp_path, path) == (f"{path}: line 3: not valid UTF-8 text (byte 0xe9); pass"
                                        " --encoding, e.g. --encoding latin-1 or --encoding cp1252")
    assert validated(tmp_path, path, "--encoding", "latin-1")["skipped"] == 2


def test_an_unknown_or_non_text_encoding(tmp_path):
    path = CORPUS / "latin1.csv"
    assert error_of(tmp_path, path, "--encoding", "klingon") == (
        "unknown encoding 'klingon' (try utf-8, latin-1, cp1252)")
    assert error_of(tmp_path, path, "--encoding", "zlib") == (
        "'zlib' is not a text encoding (try utf-8, latin-1, cp1252)")


def test_duplicate_headers(tmp_path):
    path = CORPUS / "duplicate_headers.csv"
    assert error_of(tmp_path, path) == (
        f"{path}: header row: columns 'firstName' and 'FIRSTNAME' both mean firstName")


def test_unknown_columns_name_the_closest(tmp_path):
    path = CORPUS / "unknown_columns.csv"
    assert error_of(tmp_path, path) == (
        f"{path}: header row: unknown column 'fristName' (did you mean firstName?); unknown column"
        f" 'loyalty_points' (did you mean loyaltyType?); {UNKNOWN_COLUMN_ADVICE}")


def test_no_identifier_column(tmp_path):
    path = CORPUS / "no_identifier_column.csv"
    assert error_of(tmp_path, path).endswith(
        "no identifierValue column (map your identifier column to it in the config's [columns]"
        ' table, e.g. "Mobile No" = "identifierValue")')


def test_a_web_page_saved_as_csv(tmp_path):
    path = CORPUS / "login_page.csv"
    assert error_of(tmp_path, path) == (
        f"{path}: this is a web page (HTML), not CSV text: a sign-in or error page saved instead of"
        " the export? Download the file again")


def test_binary_junk(tmp_path):
    path = tmp_path / "junk.csv"
    path.write_bytes(random.Random(9).randbytes(4096))
    assert error_of(tmp_path, path) == (
        f"{path}: this is binary data, not CSV text (control bytes such as NUL in its first 4,096"
        " bytes): check that it is the exported CSV file")


def test_nul_bytes_in_a_cell_make_that_row_invalid(tmp_path):
    path = tmp_path / "nul.csv"
    path.write_bytes(f"identifierValue,firstName\n{mobile(1)},As\x00ha\n{mobile(2)},Ravi\n".encode())
    summary = validated(tmp_path, path)
    assert (summary["validation_errors"], summary["skipped"]) == (1, 1)
    assert errors_in(summary) == {"2": 'firstName "As\\0ha" holds a NUL byte (\\0): remove it'}


def test_nul_bytes_in_the_header(tmp_path):
    path = tmp_path / "nul-header.csv"
    path.write_bytes(b"identifierValue,first\x00Name\n919800000001,Asha\n")
    assert error_of(tmp_path, path) == f"{path}: row 1 holds NUL bytes: this is not a text CSV file"


def test_a_10_mb_cell_is_a_row_error_and_kept_whole(tmp_path):
    path = tmp_path / "big-cell.csv"
    huge = "x" * (10 * 1024 * 1024)
    write_csv(path, ["identifierValue", "extendedFields.note"], [[mobile(1), huge], [mobile(2), "ok"]])
    summary = validated(tmp_path, path)
    assert (summary["validation_errors"], summary["skipped"]) == (1, 1)
    limit = csv.field_size_limit(len(huge) + 1)
    try:
        [row] = read_report(summary["reports"]["errors"])
    finally:
        csv.field_size_limit(limit)
    assert row["_message"] == ("extendedFields.note holds 10,485,760 characters, more than a"
                               " spreadsheet cell (32,767): check the quoting of this row")
    assert row["extendedFields.note"] == huge  # nothing lost


def test_a_10_mb_header_cell(tmp_path):
    path = tmp_path / "big-header.csv"
    path.write_text("identifierValue," + "h" * (10 * 1024 * 1024) + "\n919800000001,x\n")
    assert error_of(tmp_path, path) == (f"{path}: row 1, column 2: a header of 10,485,760 characters"
                                        " is not a column name: check the quoting of row 1")


def test_utf16_text_asks_for_the_encoding(tmp_path):
    text = f"identifierValue,firstName\n{mobile(1)},Asha\n"
    with_bom = tmp_path / "utf16.csv"
    with_bom.write_bytes(text.encode("utf-16"))
    assert error_of(tmp_path, with_bom) == f"{with_bom}: this is UTF-16 text: pass --encoding utf-16"
    assert validated(tmp_path, with_bom, "--encoding", "utf-16")["skipped"] == 1
    without_bom = tmp_path / "utf16le.csv"
    without_bom.write_bytes(text.encode("utf-16-le"))
    assert error_of(tmp_path, without_bom) == (f"{without_bom}: this looks like UTF-16 text without a"
                                               " byte-order mark: pass --encoding utf-16-le")


def test_gzip_and_zip_under_the_wrong_name(tmp_path):
    gzipped = tmp_path / "export.csv"
    gzipped.write_bytes(gzip.compress(b"identifierValue\n919800000001\n"))
    assert error_of(tmp_path, gzipped) == (f"{gzipped}: this file is gzip-compressed: give it a .gz"
                                           " suffix (e.g. customers.csv.gz)")
    not_gzipped = tmp_path / "plain.csv.gz"
    not_gzipped.write_text("identifierValue\n919800000001\n")
    assert error_of(tmp_path, not_gzipped).startswith(f"{not_gzipped}: cannot read (Not a gzipped file")
    workbook = tmp_path / "book.csv"
    workbook.write_bytes(_xlsx_bytes([["identifierValue"], [919800000001]]))
    assert error_of(tmp_path, workbook) == (
        f"{workbook}: this is a zip archive (an .xlsx workbook?), not CSV text: give a workbook its"
        " .xlsx suffix, or export the sheet as CSV")


# --- Workbooks --------------------------------------------------------------------------

def _xlsx(path: Path, rows: list[list], **edits) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Customers"
    for row in rows:
        sheet.append(row)
    for merged in edits.get("merge", ()):
        sheet.merge_cells(merged)
    book.save(path)
    return path


def _xlsx_bytes(rows: list[list]) -> bytes:
    buffer = io.BytesIO()
    book = openpyxl.Workbook()
    for row in rows:
        book.active.append(row)
    book.save(buffer)
    return buffer.getvalue()


def test_a_csv_renamed_xlsx(tmp_path):
    path = CORPUS / "csv_renamed.xlsx"
    assert error_of(tmp_path, path) == (f"{path}: this is text (a CSV file?), not a .xlsx workbook:"
                                        " give it the .csv suffix")


def test_a_corrupt_xlsx(tmp_path):
    whole = _xlsx_bytes([["identifierValue", "firstName"], [919800000001, "Asha"]])
    truncated = tmp_path / "truncated.xlsx"
    truncated.write_bytes(whole[: len(whole) // 2])
    not_a_book = tmp_path / "archive.xlsx"
    with zipfile.ZipFile(not_a_book, "w") as archive:
        archive.writestr("notes.txt", "not a workbook")
    for path in (truncated, not_a_book):
        message = error_of(tmp_path, path)
        assert message.startswith(f"{path}: cannot read this file as a .xlsx workbook (")
        assert message.endswith("); save it again from the spreadsheet program, or export it as CSV")


def test_an_encrypted_xlsx(tmp_path):
    # Office saves a password-protected .xlsx as an OLE (CFB) container, not a zip.
    path = tmp_path / "locked.xlsx"
    path.write_bytes(CFB_SIGNATURE + bytes(4088))
    assert error_of(tmp_path, path) == (
        f"{path}: the workbook is password-protected (encrypted): remove the password in the"
        " spreadsheet program (File > Info > Protect Workbook) and save it again, or export the"
        " sheet as CSV")


def test_an_empty_xlsx_file_and_an_empty_sheet(tmp_path):
    nothing = tmp_path / "nothing.xlsx"
    nothing.write_bytes(b"")
    assert error_of(tmp_path, nothing) == f"{nothing}: the file is empty: expected a .xlsx workbook"
    blank = _xlsx(tmp_path / "blank.xlsx", [])
    assert error_of(tmp_path, blank) == (
        f"{blank}: sheet 'Customers': row 1 is empty: the header (e.g. identifierValue, firstName)"
        " must be the sheet's first row")


def test_formulas_without_saved_values_and_error_cells(tmp_path):
    formulas = _xlsx(tmp_path / "formulas.xlsx", [
        ["identifierValue", "firstName", "loyaltyProgramEnrollments.loyaltyPoints", "_notes"],
        [919800000001, "Asha", "=10*15", "=NOW()"],
        [919800000002, "Ravi", "=SUM(1,2)", None]])
    assert error_of(tmp_path, formulas) == (
        f"{formulas}: sheet 'Customers': cell C2 holds a formula (=10*15) without a saved value"
        " (1 more cell like it): open the workbook in the spreadsheet program, fix any errors and"
        " save it (saving stores each formula's value), or replace the formulas by their values")
    errors = _xlsx(tmp_path / "errors.xlsx", [["identifierValue", "firstName"],
                                              [919800000001, "Asha"], [919800000002, "#DIV/0!"]])
    assert error_of(tmp_path, errors).startswith(
        f"{errors}: sheet 'Customers': cell B3 holds the spreadsheet error #DIV/0!: open the workbook")


def test_formula_text_typed_as_a_value_is_data(tmp_path):
    # A text cell that looks like a formula is sent as text (and neutralised in reports).
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["identifierValue", "firstName"])
    sheet.append([919800000001, "x"])
    sheet["B2"].value = "=HYPERLINK(\"http://evil\",\"y\")"
    sheet["B2"].data_type = "s"
    book.save(tmp_path / "text.xlsx")
    summary = validated(tmp_path, tmp_path / "text.xlsx")
    assert summary["skipped"] == 1


def test_merged_cells(tmp_path):
    path = _xlsx(tmp_path / "merged.xlsx", [["identifierValue", "firstName", "lastName"],
                                            [919800000001, "Asha", "Rao"],
                                            [919800000002, "Ravi", None]], merge=["C2:C3"])
    assert error_of(tmp_path, path) == (
        f"{path}: sheet 'Customers': merged cells (C2:C3): a merged cell holds its value in its"
        " first cell only; unmerge them, fill in every cell and save")


# --- Paths ------------------------------------------------------------------------------

def test_a_missing_path(tmp_path):
    path = tmp_path / "nowhere.csv"
    assert error_of(tmp_path, path) == f"{path}: file not found"


def test_a_directory(tmp_path):
    assert error_of(tmp_path, tmp_path) == f"{tmp_path}: is a directory, not a file"


def test_an_unreadable_file(tmp_path, monkeypatch):
    path = write_csv(tmp_path / "secret.csv", ["identifierValue"], [[mobile(1)]])
    if os.geteuid() == 0:  # root reads a chmod 000 file: simulate the refusal instead
        real_open = open

        def refusing_open(file, *args, **kwargs):
            if str(file) == str(path):
                raise PermissionError(errno.EACCES, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)
        monkeypatch.setattr(reader_module, "open", refusing_open, raising=False)
    else:
        path.chmod(0)
    assert error_of(tmp_path, path) == (f"{path}: cannot open (Permission denied): check the file's"
                                        " permissions (ls -l), or run as a user who can read it")


# --- Config and output ------------------------------------------------------------------

def test_a_config_with_unknown_keys_and_wrong_types(tmp_path):
    config = write_config(tmp_path, NO_API, limits={"rate_per_minute": "fast", "concurrency": 0},
                          output={"dir": str(tmp_path / "out"), "colour": "blue"})
    result = CliRunner().invoke(main, ["validate", str(CORPUS / "header_only.csv"), "--config", str(config)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        "batch-updater: error: the configuration has problems:\n"
        f"  - {config}: unknown key 'colour' in [output] (known: dir, job_name, mask_identifiers, metrics_file)\n"
        f"  - {config} [limits] rate_per_minute: expected a whole number, got 'fast'\n"
        f"  - {config} [limits] concurrency: must be at least 1, got 0\n")


def test_a_config_that_is_not_toml(tmp_path):
    config = tmp_path / "broken.toml"
    config.write_text("[api\nbase_url = 'x'\n")
    result = CliRunner().invoke(main, ["validate", str(CORPUS / "header_only.csv"), "--config", str(config)])
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"batch-updater: error: {config}: not valid TOML (")


def test_an_output_folder_that_cannot_be_made(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    message = error_of(tmp_path, CORPUS / "semicolons.csv", "--output-dir", str(blocker / "reports"))
    assert re.fullmatch(rf"cannot create the output folder {re.escape(str(blocker))}/reports/"
                        r"semicolons-\w+/dry-run-\w+ \(Not a directory\); choose another with"
                        r" --output-dir", message), message


class _FullDisk:
    """A report file on a disk that fills up after `room` characters."""

    def __init__(self, handle, room: int):
        self.handle, self.room = handle, room

    def write(self, text: str) -> int:
        self.room -= len(text)
        if self.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.handle.write(text)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.handle.close()


def test_a_full_disk_while_writing_reports_is_one_line_and_a_rerun_finishes(tmp_path, sandbox_server,
                                                                             monkeypatch):
    server = sandbox_server()
    source = write_csv(tmp_path / "in.csv", ["identifierValue", "firstName"],
                       [[mobile(i), f"Name{i}"] for i in range(1, 6)] + [["123", "Bad"]])
    real_open_private = reports_module.open_private
    monkeypatch.setattr(reports_module, "open_private",
                        lambda path, mode="w": _FullDisk(real_open_private(path, mode), 200))
    first = invoke(tmp_path, "run", str(source), "--quiet", "--log-level", "error", url=server.url)

    assert first.exit_code == 3, first.output
    [line] = first.stderr.splitlines()
    folder = re.fullmatch(r"batch-updater: error: cannot write the reports in (\S+): no space left on"
                          r" device; free some space, then run the same command again: the job's"
                          r" journal keeps every row's outcome, so nothing is sent twice and the"
                          r" reports are written then", line)
    assert folder, line
    assert sorted(p.name for p in Path(folder.group(1)).iterdir()) == []  # no half reports
    assert len(customer_puts(server)) == 5

    monkeypatch.setattr(reports_module, "open_private", real_open_private)
    second = invoke(tmp_path, "run", str(source), "--json", url=server.url)
    assert second.exit_code == 1, second.output
    summary = json.loads(second.stdout)
    assert (summary["resumed"], summary["success"], summary["validation_errors"]) == (True, 5, 1)
    assert len(customer_puts(server)) == 5  # the rerun sent nothing again
    assert len(read_report(summary["reports"]["success"])) == 5


# --- How a CSV is measured when opened ----------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.lists(st.text(alphabet="ab,é ;'=", max_size=4), min_size=1, max_size=5), max_size=8),
       ending=st.sampled_from(["\n", "\r\n"]), final=st.booleans())
def test_measuring_by_bytes_agrees_with_the_csv_module_and_pandas(tmp_path_factory, rows, ending, final):
    path = tmp_path_factory.mktemp("shape") / "in.csv"
    lines = ["identifierValue,firstName"] + [",".join(row) for row in rows]
    path.write_bytes((ending.join(lines) + (ending if final else "")).encode("utf-8"))
    reader = CsvInput(path, delimiter=",")
    assert reader._shape_by_bytes() is not None  # no quotes: measured from the bytes
    width, count = reader._scan_records(2)
    assert (len(reader.headers), reader.row_count) == (max(width, 2), count)
    assert sum(len(chunk.frame) for chunk in reader.chunks()) == count


def test_a_quoted_last_cell_ending_with_a_line_break_is_not_an_unclosed_quote(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text('identifierValue,extendedFields.address\n919800000001,"12 Main St\n"\n')
    reader = CsvInput(path)
    assert (reader.row_count, reader.headers) == (1, ["identifierValue", "extendedFields.address"])
    [[row]] = [chunk.frame.values.tolist() for chunk in reader.chunks()]
    assert row == ["919800000001", "12 Main St\n"]
