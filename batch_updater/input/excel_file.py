"""Excel input: workbooks read by python-calamine, which holds the whole sheet in memory
while its rows are converted to text and cut into chunks. Numbers that are whole become
digits without `.0` or an exponent (a phone number stored as a number reads 919845012345),
dates become ISO text (2027-12-31, or 2027-12-31T10:30:00 when the cell has a time).
An encrypted or corrupt workbook, merged cells and formulas without a saved value each get
one line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:

    pass

from ..errors import InputError
from ..output.csvsafe import restore
from .csv_file import CFB_SIGNATURE, SNIFF_BYTES, ZIP_SIGNATURE, _not_text
from .reader import Chunk, _check_readable, _first_line, restored_cells

# Bytes that text never holds (not tab, line feed, form feed or carriage return).


class ExcelInput:
    """One sheet of a workbook: its header (row 1) and its rows as text, in chunks."""

    def __init__(self, path: str | Path, *, sheet: str | None = None, chunk_rows: int = 10_000):
        self.path = Path(path)
        self.chunk_rows = chunk_rows
        _check_readable(self.path)
        self.sheet_name = self._choose_sheet(sheet)
        sheet = self._sheet()
        header = next(self._rows(sheet), None)
        self._loaded = sheet  # kept for the first pass: loading a sheet is slow
        if header is None or all(cell == "" for cell in header):
            raise InputError(f"{self.path}: sheet '{self.sheet_name}': row 1 is empty: the header"
                             " (e.g. identifierValue, firstName) must be the sheet's first row")
        self.headers = [restore(cell.strip()) for cell in header]
        self.row_count: int | None = None  # not counted: the progress estimate goes without it
        self._check_merged(sheet)
        self._check_formulas()

    def _workbook(self):
        from python_calamine import CalamineWorkbook

        try:
            return CalamineWorkbook.from_path(str(self.path))
        except BaseException as exc:  # calamine raises several unrelated types, even Rust panics
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise InputError(self._unreadable(exc)) from None

    def _unreadable(self, exc: BaseException) -> str:
        """Why calamine cannot open the file, said in the user's terms where the bytes tell."""
        try:
            with open(self.path, "rb") as handle:
                head = handle.read(SNIFF_BYTES)
        except OSError:
            head = b""
        suffix = self.path.suffix.lower()
        if not head:
            return f"{self.path}: the file is empty: expected a {suffix} workbook"
        if head.startswith(CFB_SIGNATURE) and suffix != ".xls":
            return (f"{self.path}: the workbook is password-protected (encrypted): remove the password"
                    " in the spreadsheet program (File > Info > Protect Workbook) and save it again,"
                    " or export the sheet as CSV")
        if not head.startswith((ZIP_SIGNATURE, CFB_SIGNATURE)) and _not_text(head, self.path) is None:
            return (f"{self.path}: this is text (a CSV file?), not a {suffix} workbook: give it the"
                    " .csv suffix")
        return (f"{self.path}: cannot read this file as a {self.path.suffix} workbook"
                f" ({_first_line(exc)}); save it again from the spreadsheet program, or export it"
                " as CSV")

    def _check_merged(self, sheet) -> None:
        """A merged cell keeps its value in its first cell only: the others read empty,
        which would mean "leave alone" for rows the user sees a value in."""
        try:
            merged = list(sheet.merged_cell_ranges or ())
        except Exception:  # not every format (or calamine version) knows them
            return
        if merged:
            shown = ", ".join(f"{_cell_name(*start)}:{_cell_name(*end)}" for start, end in merged[:3])
            more = f" and {len(merged) - 3} more" if len(merged) > 3 else ""
            raise InputError(f"{self.path}: sheet '{self.sheet_name}': merged cells ({shown}{more}):"
                             " a merged cell holds its value in its first cell only; unmerge them,"
                             " fill in every cell and save")

    def _check_formulas(self) -> None:
        """calamine reads a formula's saved value; a file written by a program, never saved
        by a spreadsheet, has none, and an error (#DIV/0!) reads empty: refuse both."""
        if self.path.suffix.lower() not in (".xlsx", ".xlsm"):
            return
        ignored = {i for i, header in enumerate(self.headers) if header.startswith("_")}
        problem = _formula_problem(self.path, self.sheet_name, ignored)
        if problem:
            raise InputError(f"{self.path}: sheet '{self.sheet_name}': {problem}")

    def _choose_sheet(self, sheet: str | None) -> str:
        names = self._workbook().sheet_names
        if not names:
            raise InputError(f"{self.path}: the workbook has no sheets")
        if sheet is None or str(sheet).strip() == "":
            return names[0]
        wanted = str(sheet).strip()
        if wanted in names:
            return wanted
        folded = {name.strip().lower(): name for name in names}
        if wanted.lower() in folded:
            return folded[wanted.lower()]
        if wanted.isdigit() and 1 <= int(wanted) <= len(names):
            return names[int(wanted) - 1]
        listed = ", ".join(f"{i}: '{name}'" for i, name in enumerate(names, 1))
        raise InputError(f"{self.path}: no sheet '{wanted}' (the sheets are {listed});"
                         " pass --sheet with a name or a position from 1")

    def _sheet(self):
        try:
            return self._workbook().get_sheet_by_name(self.sheet_name)
        except Exception as exc:
            raise InputError(f"{self.path}: sheet '{self.sheet_name}': cannot read it"
                             f" ({_first_line(exc)}); save it again from the spreadsheet program,"
                             " or export it as CSV") from None

    def _rows(self, sheet) -> Iterator[list[str]]:
        """Every row of the sheet from row 1, as text cells padded to the sheet's width."""
        start, end = sheet.start, sheet.end
        if start is None or end is None:
            return
        if start[0] != 0:
            # calamine starts its range at the first used row: the header must be row 1.
            yield [""]
            return
        width = end[1] + 1
        for cells in sheet.iter_rows():
            row = [cell if cell.__class__ is str else excel_text(cell) for cell in cells]
            if len(row) < width:  # calamine leaves out empty columns left of the used range
                row = [""] * (width - len(row)) + row
            yield row

    def chunks(self) -> Iterator[Chunk]:
        import pandas as pd

        sheet = self._loaded if self._loaded is not None else self._sheet()
        self._loaded = None
        rows = self._rows(sheet)
        next(rows, None)  # the header
        width = len(self.headers)
        first_row = 2
        while True:
            block = list(islice(rows, self.chunk_rows))
            if not block:
                return
            frame = pd.DataFrame(block, columns=range(width), dtype=object)
            yield Chunk(first_row, restored_cells(frame))
            first_row += len(block)


def _cell_name(row: int, column: int) -> str:
    """(0, 0) -> A1."""
    letters = ""
    column += 1
    while column:
        column, rest = divmod(column - 1, 26)
        letters = chr(65 + rest) + letters
    return f"{letters}{row + 1}"


def _column_index(letters: str) -> int:
    """A -> 0, AA -> 26."""
    index = 0
    for letter in letters:
        index = index * 26 + ord(letter) - 64
    return index - 1


_FORMULA = re.compile(rb"<f[\s/>]")
_CELL = re.compile(rb"<c\b([^>]*?)(?:/>|>(.*?)</c>)", re.S)
_REF = re.compile(rb'\br="([A-Z]+)(\d+)"')
_VALUE = re.compile(rb"<v>([^<]*)</v>")
_FORMULA_TEXT = re.compile(rb"<f[^>]*>([^<]*)</f>")


def _formula_problem(path: Path, sheet_name: str, ignored: set[int]) -> str | None:
    """The first formula without a saved value, or error value, in a sheet of an .xlsx
    (its XML streamed, and only looked at closely where it holds a formula or an error)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            part = _sheet_part(archive, sheet_name)
            if part is None:
                return None
            with archive.open(part) as stream:
                return _first_bad_cell(stream, ignored)
    except Exception:  # an unusual layout: calamine, which read the sheet, has the last word
        return None


def _sheet_part(archive, sheet_name: str) -> str | None:
    import posixpath
    import xml.etree.ElementTree as ET

    main = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
    rel = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
    book = ET.fromstring(archive.read("xl/workbook.xml"))
    wanted = next((s.get(rel) for s in book.iter(f"{main}sheet") if s.get("name") == sheet_name), None)
    rels = ET.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
    for relation in rels:
        if relation.get("Id") == wanted:
            target = relation.get("Target", "")
            return target.lstrip("/") if target.startswith("/") else posixpath.normpath("xl/" + target)
    return None


def _first_bad_cell(stream, ignored: set[int]) -> str | None:
    import html

    tail = b""
    found: list[str] = []
    count = 0
    for block in iter(lambda: stream.read(1 << 22), b""):
        data = tail + block
        cut = data.rfind(b"</c>") + 4
        if cut < 4:
            tail = data
            continue
        part, tail = data[:cut], data[cut:]
        if not (_FORMULA.search(part) or b't="e"' in part):
            continue
        for match in _CELL.finditer(part):
            attributes, inner = match.group(1), match.group(2) or b""
            is_error = b't="e"' in attributes
            if not is_error and not _FORMULA.search(inner):
                continue
            value = _VALUE.search(inner)
            if not is_error and value and value.group(1):
                continue  # a formula with its saved value: calamine reads the value
            ref = _REF.search(attributes)
            if ref and (int(ref.group(2)) == 1 or _column_index(ref.group(1).decode()) in ignored):
                continue
            count += 1
            if found:
                continue
            where = f"cell {ref.group(1).decode()}{ref.group(2).decode()}" if ref else "a cell"
            if is_error:
                error = html.unescape(value.group(1).decode("utf-8", "replace")) if value else "#ERROR"
                found.append(f"{where} holds the spreadsheet error {error}")
            else:
                formula = _FORMULA_TEXT.search(inner)
                text = html.unescape(formula.group(1).decode("utf-8", "replace"))[:60] if formula else ""
                found.append(f"{where} holds a formula{f' (={text})' if text else ''} without a saved value")
    if not found:
        return None
    more = f" ({count - 1} more {'cell' if count == 2 else 'cells'} like it)" if count > 1 else ""
    return (f"{found[0]}{more}: open the workbook in the spreadsheet program, fix any errors and"
            " save it (saving stores each formula's value), or replace the formulas by their values")


def excel_text(cell) -> str:
    """A spreadsheet cell as the text a user typed: identifiers keep every digit."""
    if cell.__class__ is str:
        return cell
    if isinstance(cell, bool):
        return "true" if cell else "false"
    if isinstance(cell, int):
        return str(cell)
    if isinstance(cell, float):
        if cell.is_integer():
            return str(int(cell))
        if cell != cell or cell in (float("inf"), float("-inf")):
            return ""
        return format(Decimal(repr(cell)), "f")
    if isinstance(cell, datetime):
        cell = _round_to_second(cell)
        if cell.time() == time(0):
            return cell.date().isoformat()
        return cell.isoformat(timespec="seconds")
    if isinstance(cell, date):
        return cell.isoformat()
    if isinstance(cell, time):
        return cell.isoformat(timespec="seconds")
    if isinstance(cell, timedelta):
        return str(cell)
    return "" if cell is None else str(cell)


def _round_to_second(moment: datetime) -> datetime:
    """Excel stores times as fractions of a day: 23:59:59 can come back as 23:59:58.999."""
    if moment.microsecond >= 500_000:
        moment += timedelta(seconds=1)
    return moment.replace(microsecond=0)


