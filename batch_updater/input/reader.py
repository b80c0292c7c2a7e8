"""Stream an input file as chunks of text cells, each chunk knowing its first row number.

Every cell is read as text (phone numbers keep their digits and leading zeros);
typing happens in validation. Row numbers are what a spreadsheet user sees: the
header is row 1, so the first data row is row 2.

CSV (any delimiter, sniffed; UTF-8 with or without BOM or another encoding; .gz) is
read by pandas' C parser in chunks. Excel workbooks (.xlsx, .xlsm, .xlsb, .xls, .ods)
are read by python-calamine, which holds the whole sheet in memory while its rows are
converted to text and cut into chunks: numbers that are whole become digits without
`.0` or an exponent (a phone number stored as a number reads 919845012345), dates
become ISO text (2027-12-31, or 2027-12-31T10:30:00 when the cell has a time).

Broken files get one clear line (InputError) before anything is sent, never a
traceback: binary data, a workbook or PDF named .csv, text in another encoding, an
unclosed quote, an encrypted or corrupt workbook, merged cells, formulas without a
saved value. A CSV is measured once when opened (see CsvInput._scan: a few tenths of
a second per million rows): the rows are counted exactly (for the ETA) and the widest
row found; a row with more cells than the header keeps them in extra unnamed columns,
so it becomes a per-row error naming the cell instead of losing it. A leading
apostrophe that the reports put before = + - @ (csvsafe) is taken off again, so a
report fed back as input carries the original values.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    import pandas

    from ..config import InputSettings

from ..errors import InputError
from ..output.csvsafe import restore, restore_column

SNIFF_BYTES = 64 * 1024
DELIMITERS = ",;\t|"
EXCEL_SUFFIXES = (".xlsx", ".xlsm", ".xlsb", ".xls", ".ods")
HEADER_LIMIT = 1000  # characters in one header cell: a longer one is a quoting mistake
CFB_SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # OLE container: .xls, or an encrypted workbook
ZIP_SIGNATURE = b"PK\x03\x04"
_GUARDED = re.compile(rb"'[=+\-@\t\r]")  # a csvsafe apostrophe (the last of several, too)
# Bytes that text never holds (not tab, line feed, form feed or carriage return).
_CONTROL = bytes(b for b in range(32) if b not in (9, 10, 12, 13))


@dataclass(frozen=True)
class Chunk:
    first_row: int
    frame: pandas.DataFrame  # columns are positions 0..n-1, all text (object dtype)
    row_numbers: Sequence[int] | None = None  # when rows were left out (a shard): each row's number

    @property
    def rows(self) -> Sequence[int]:
        if self.row_numbers is not None:
            return self.row_numbers
        return range(self.first_row, self.first_row + len(self.frame))


class CsvInput:
    """A CSV file (optionally .gz), its header, and its data in chunks."""

    def __init__(self, path: str | Path, *, encoding: str | None = None,
                 delimiter: str | None = None, chunk_rows: int = 10_000):
        self.path = Path(path)
        self.chunk_rows = chunk_rows
        _check_readable(self.path)
        self.encoding = encoding or "utf-8-sig"
        self._check_encoding()
        self._check_text()
        sample = self._sample()
        self.delimiter = _delimiter(delimiter) if delimiter else _sniff_delimiter(sample)
        header, width, self.row_count = self._scan()
        # Rows wider than the header keep their extra cells in unnamed columns (see _scan).
        self.headers = header + [""] * (width - len(header))

    def _check_encoding(self) -> None:
        try:
            info = codecs.lookup(self.encoding)
        except LookupError:
            raise InputError(f"unknown encoding '{self.encoding}' (try utf-8, latin-1, cp1252)") from None
        if not getattr(info, "_is_text_encoding", True):
            raise InputError(f"'{self.encoding}' is not a text encoding (try utf-8, latin-1, cp1252)")

    def _check_text(self) -> None:
        """Refuse, by its first bytes, a file that is not text: a workbook, a PDF, binary data."""
        try:
            with self._open_raw() as handle:
                head = handle.read(SNIFF_BYTES)
        except (OSError, EOFError) as exc:
            raise InputError(f"{self.path}: cannot read ({_reason(exc)}); if it is not gzip-compressed,"
                             " rename it without .gz") from None
        if self._wide:
            return  # UTF-16/32 text is full of NUL bytes
        problem = _not_text(head, self.path)
        if problem:
            raise InputError(f"{self.path}: {problem}")

    @property
    def _wide(self) -> bool:
        """UTF-16 or UTF-32: ASCII characters are not single bytes."""
        return any(mark in self.encoding.lower().replace("-", "").replace("_", "") for mark in ("16", "32"))

    def _open_text(self) -> IO[str]:
        return io.TextIOWrapper(self._open_raw(), encoding=self.encoding, newline="")

    def _sample(self) -> str:
        try:
            with self._open_raw() as handle:
                raw = handle.read(SNIFF_BYTES)
            return codecs.getincrementaldecoder(self.encoding)().decode(raw, final=len(raw) < SNIFF_BYTES)
        except UnicodeDecodeError:
            raise self._bad_text() from None
        except (OSError, EOFError) as exc:
            raise InputError(f"{self.path}: cannot read ({_reason(exc)})") from None

    def _bad_text(self) -> InputError:
        """Where the file stops being text in its encoding (read again: an error path only)."""
        decoder = codecs.getincrementaldecoder(self.encoding)()
        line = 1
        with self._open_raw() as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:
                    line += bytes(exc.object[:exc.start]).count(b"\n")
                    bad = f" (byte 0x{bytes(exc.object[exc.start:exc.start + 1]).hex()})"
                    break
                line += block.count(b"\n")
            else:
                line, bad = line - 1, ""
        return InputError(f"{self.path}: line {line}: not valid {self._encoding_name} text{bad};"
                          " pass --encoding, e.g. --encoding latin-1 or --encoding cp1252")

    @property
    def _encoding_name(self) -> str:
        return "UTF-8" if self.encoding == "utf-8-sig" else self.encoding

    def _open_raw(self) -> gzip.GzipFile | io.BufferedReader:
        return gzip.open(self.path, "rb") if self.path.suffix.lower() == ".gz" else open(self.path, "rb")

    def _scan(self) -> tuple[list[str], int, int]:
        """The header, the widest row and the number of data rows, before anything is sent.

        A file without quotes (most exports) is measured from its bytes: each line is a
        row, its delimiters plus one its cells (numpy, a few tenths of a second per
        million rows, the encoding checked on the way). Any other is read once by Python's
        csv module (about 0.7 s per million rows), which also finds a quote never closed.
        Either way a broken file is refused here, not halfway through a run.
        """
        header = self._header()
        shape = self._shape_by_bytes()
        if shape is None:
            width, rows = self._scan_records(len(header))
            self._guarded = self._has_guards()
        else:
            width, rows, self._guarded = shape
        return header, max(width, len(header)), rows

    def _header(self) -> list[str]:
        """Row 1, checked, by Python's csv module."""
        with _large_fields(), self._open_text() as handle:
            records = csv.reader(handle, delimiter=self.delimiter)
            with self._reading(records):
                header = next(records, None)
                self._check_header(header, records.line_num)
        assert header is not None  # _check_header refuses a file without row 1
        return [restore(cell.strip()) for cell in header]

    @contextmanager
    def _reading(self, records):
        """One line for whatever goes wrong while Python's csv module reads the file."""
        try:
            yield
        except UnicodeDecodeError:
            raise self._bad_text() from None
        except csv.Error as exc:
            raise InputError(f"{self.path}: line {records.line_num}: cannot read this CSV line"
                             f" ({exc}); check its quoting, or pass --delimiter") from None
        except (OSError, EOFError) as exc:
            raise InputError(f"{self.path}: cannot read ({_reason(exc)})") from None

    def _shape_by_bytes(self) -> tuple[int, int, bool] | None:
        """(widest row, data rows, whether a csvsafe apostrophe may occur) from the bytes of a
        file without quotes or lone CR line ends; None when the csv module must read it."""
        import numpy as np

        name = codecs.lookup(self.encoding).name
        if not (name in ("utf-8", "utf-8-sig", "ascii", "cp1252") or name.startswith("iso8859-")):
            return None  # only there is every ASCII byte a character of its own
        if len(self.delimiter) != 1 or ord(self.delimiter) > 127:
            return None
        delimiter = ord(self.delimiter)
        decoder = codecs.getincrementaldecoder(self.encoding)()
        widest = lines = pending = 0
        guarded, last = False, b""
        try:
            with self._open_raw() as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    if block.endswith(b"\r"):
                        block += handle.read(1)  # keep a CR LF line end in one block
                    if b'"' in block or block.count(b"\r") != block.count(b"\r\n"):
                        return None
                    decoder.decode(block)  # raises where the file is not text in its encoding
                    guarded = guarded or _GUARDED.search(last + block) is not None
                    cells = np.frombuffer(block, dtype=np.uint8)
                    ends = np.flatnonzero(cells == 10)
                    if ends.size:
                        starts = np.concatenate(([0], ends[:-1] + 1))
                        counts = np.add.reduceat(cells[:ends[-1] + 1] == delimiter, starts, dtype=np.int64)
                        counts[0] += pending
                        widest = max(widest, int(counts.max()) + 1)
                        lines += int(ends.size)
                        pending = int(np.count_nonzero(cells[ends[-1] + 1:] == delimiter))
                    else:
                        pending += int(np.count_nonzero(cells == delimiter))
                    last = block[-1:]
                decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise self._bad_text() from None
        except (OSError, EOFError) as exc:
            raise InputError(f"{self.path}: cannot read ({_reason(exc)})") from None
        if last and last != b"\n":  # a last line without a line end
            lines += 1
            widest = max(widest, pending + 1)
        return widest, max(lines - 1, 0), guarded

    def _scan_records(self, width: int) -> tuple[int, int]:
        """The widest row and the number of data rows, by Python's csv module."""
        with _large_fields(), self._open_text() as handle:
            records = csv.reader(handle, delimiter=self.delimiter)
            with self._reading(records):
                next(records, None)
                rows, record, start, end = 0, None, 1, records.line_num
                for record in records:
                    rows += 1
                    if len(record) > width:
                        width = len(record)
                    start, end = end + 1, records.line_num
        # Only a quoted cell holds a line break, and one never closed ends the file with one.
        if record and record[-1].endswith(("\n", "\r")) and self._runs_to_the_end(start):
            raise InputError(f"{self.path}: row {rows + 1} (line {start}): a quote (\") opens a cell"
                             " that is never closed, so the rest of the file reads as one cell: close"
                             " the quote, or write a quote inside a cell as two (\"\")")
        return width, rows

    def _runs_to_the_end(self, start: int) -> bool:
        """Does the record starting at line `start` reach the end of the file inside quotes?
        (Read again, strictly: taken only when the last cell ends with a line break.)"""
        with _large_fields(), self._open_text() as handle:
            tail = "".join(islice(handle, start - 1, None))
        try:
            for _ in csv.reader(io.StringIO(tail, newline=""), delimiter=self.delimiter, strict=True):
                pass
        except csv.Error as exc:
            return "unexpected end of data" in str(exc)
        return False

    def _has_guards(self) -> bool:
        """Might a cell start with the apostrophe csvsafe puts before = + - @? One byte scan
        (tens of milliseconds per 100 MB) spares chunks() looking at every cell of most files."""
        if self._wide:
            return True
        tail = b""
        with self._open_raw() as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                if _GUARDED.search(tail + block):
                    return True
                tail = block[-1:]
        return False

    def _check_header(self, header: list[str] | None, lines: int) -> None:
        if not header or all(not cell.strip() for cell in header):
            raise InputError(f"{self.path}: the file is empty: expected a header row such as"
                             " identifierValue,firstName")
        if "\x00" in "".join(header):
            raise InputError(f"{self.path}: row 1 holds NUL bytes: this is not a text CSV file")
        for position, cell in enumerate(header, 1):
            if len(cell) > HEADER_LIMIT:
                raise InputError(f"{self.path}: row 1, column {position}: a header of {len(cell):,}"
                                 " characters is not a column name: check the quoting of row 1")
        if lines > 1:
            raise InputError(f"{self.path}: row 1 runs over lines 1-{lines} (a quoted header with a"
                             " line break, or an unclosed quote): put the header on the first line")

    def chunks(self) -> Iterator[Chunk]:
        import pandas as pd

        width = len(self.headers)
        try:
            reader = pd.read_csv(
                self.path, sep=self.delimiter, header=None, skiprows=1, names=list(range(width)),
                dtype=object, keep_default_na=False, na_filter=False, skip_blank_lines=False,
                encoding=self.encoding, chunksize=self.chunk_rows, engine="c",
                compression="infer", index_col=False,
            )
            first_row = 2
            for frame in reader:
                yield Chunk(first_row, _restored(frame) if self._guarded else frame)
                first_row += len(frame)
        except pd.errors.ParserError as exc:
            raise InputError(f"{self.path}: {_parser_message(exc)}") from None
        except UnicodeDecodeError:
            raise self._bad_text() from None
        except (OSError, EOFError) as exc:
            raise InputError(f"{self.path}: cannot read ({_reason(exc)})") from None


def _restored(frame: pandas.DataFrame) -> pandas.DataFrame:
    """Take off the apostrophe the reports put before = + - @ (see csvsafe)."""
    for column in frame.columns:
        cells = frame[column].tolist()
        restored = restore_column(cells)
        if restored is not cells:
            frame[column] = restored
    return frame


@contextmanager
def _large_fields() -> Iterator[None]:
    """Python's csv module refuses cells over 128 KiB; pandas reads any: so must the scan."""
    previous = csv.field_size_limit()
    csv.field_size_limit(sys.maxsize if sys.maxsize < 2 ** 63 else 2 ** 63 - 1)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _delimiter(text: str) -> str:
    """--delimiter: one character; `\\t`, `tab` and a real tab all mean tab."""
    named = {"\\t": "\t", "tab": "\t", "\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
    value = named.get(text.strip().lower(), text) if text.strip() else text
    if len(value) != 1 or value in ('"', "\n", "\r"):
        raise InputError(f"--delimiter {text!r}: expected one character, e.g. ',' ';' '|' or '\\t' (tab)")
    return value


def _not_text(head: bytes, path: Path) -> str | None:
    """Why the first bytes of a file are not CSV text, or None when they may be."""
    suffix = path.suffix.lower()
    if head.startswith(ZIP_SIGNATURE):
        return ("this is a zip archive (an .xlsx workbook?), not CSV text: give a workbook its"
                " .xlsx suffix, or export the sheet as CSV")
    if head.startswith(CFB_SIGNATURE):
        return ("this is an Office document (an .xls workbook, or a password-protected one), not CSV"
                " text: save it as .xlsx without a password, or export the sheet as CSV")
    if head.startswith(b"\x1f\x8b") and suffix != ".gz":
        return "this file is gzip-compressed: give it a .gz suffix (e.g. customers.csv.gz)"
    if head.startswith(b"%PDF"):
        return "this is a PDF document, not CSV text: export the data as CSV"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:15].lower().startswith((b"<!doctype html", b"<html")):
        return ("this is a web page (HTML), not CSV text: a sign-in or error page saved instead of"
                " the export? Download the file again")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "this is UTF-16 text: pass --encoding utf-16"
    if len(head) >= 4 and head[1::2].count(0) > len(head) // 4:
        return "this looks like UTF-16 text without a byte-order mark: pass --encoding utf-16-le"
    control = len(head) - len(head.translate(None, _CONTROL))
    if control > max(8, len(head) // 100):
        return ("this is binary data, not CSV text (control bytes such as NUL in its first"
                f" {len(head):,} bytes): check that it is the exported CSV file")
    return None


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or _first_line(exc)


def _sniff_delimiter(sample: str) -> str:
    """The header decides (column names hold no delimiters); csv.Sniffer only breaks a tie,
    so a tab or a comma inside a data cell cannot change the choice."""
    lines = sample.splitlines()
    header = lines[0] if lines else ""
    counts = {d: header.count(d) for d in DELIMITERS}
    present = [d for d in DELIMITERS if counts[d]]
    if len(present) <= 1:
        return present[0] if present else ","
    try:
        sniffed = csv.Sniffer().sniff("\n".join(lines[:20]), delimiters="".join(present)).delimiter
    except csv.Error:
        sniffed = ""
    return sniffed if sniffed in present else max(present, key=counts.__getitem__)


def _parser_message(exc: Exception) -> str:
    text = (str(exc).strip().splitlines() or [exc.__class__.__name__])[-1]
    # pandas says "Expected 3 fields in line 7, saw 4": line counts from 1 like our rows.
    fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if fields:
        expected, line, saw = fields.groups()
        return (f"line {line}: {saw} cells where {expected} were expected: check the delimiter and"
                " the quoting on that line, or pass --delimiter")
    if "EOF inside string" in text:
        return ("a quote (\") opens a cell that is never closed, so the rest of the file reads as one"
                " cell: close the quote, or write a quote inside a cell as two (\"\")")
    return f"{text.removeprefix('Error tokenizing data. ')} (check the delimiter and quoting, or pass --delimiter)"


class ExcelInput:
    """One sheet of a workbook: its header (row 1) and its rows as text, in chunks."""

    def __init__(self, path: str | Path, *, sheet: str | None = None, chunk_rows: int = 10_000):
        self.path = Path(path)
        self.chunk_rows = chunk_rows
        _check_readable(self.path)
        self.sheet_name = self._choose_sheet(sheet)
        sheet = self._sheet()
        header = next(self._rows(sheet), None)
        self._loaded = sheet  # kept for the first pass: loading a sheet costs ~1 s per 100k rows
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
            yield Chunk(first_row, _restored(frame))
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


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a file")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise InputError(f"{path}: cannot open ({exc.strerror or exc.__class__.__name__}): check the"
                         " file's permissions (ls -l), or run as a user who can read it") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


def is_excel(path: str | Path) -> bool:
    return Path(path).suffix.lower() in EXCEL_SUFFIXES


InputFile = CsvInput | ExcelInput


def open_input(path: str | Path, settings: InputSettings) -> InputFile:
    """The reader for `path`: Excel by its suffix, CSV otherwise (the sheet option is Excel's)."""
    if is_excel(path):
        return ExcelInput(path, sheet=settings.sheet, chunk_rows=settings.chunk_rows)
    return CsvInput(path, encoding=settings.encoding, delimiter=settings.delimiter,
                    chunk_rows=settings.chunk_rows)
