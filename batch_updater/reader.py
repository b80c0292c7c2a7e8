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
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Sequence, IO, TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import pandas

    from .config import InputSettings

from .errors import InputError

SNIFF_BYTES = 64 * 1024
DELIMITERS = ",;\t|"
EXCEL_SUFFIXES = (".xlsx", ".xlsm", ".xlsb", ".xls", ".ods")


@dataclass(frozen=True)
class Chunk:
    first_row: int
    frame: "pandas.DataFrame"  # columns are positions 0..n-1, all text (object dtype)
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
        sample = self._sample()
        self.delimiter = delimiter or _sniff_delimiter(sample)
        self.headers = self._read_header()

    def _check_encoding(self) -> None:
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise InputError(f"unknown encoding '{self.encoding}' (try utf-8, latin-1, cp1252)") from None

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
            raise InputError(f"{self.path}: cannot read ({exc})") from None

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

    def _open_raw(self) -> IO[bytes]:
        return gzip.open(self.path, "rb") if self.path.suffix.lower() == ".gz" else open(self.path, "rb")

    def _read_header(self) -> list[str]:
        with self._open_text() as handle:
            try:
                header = next(csv.reader(handle, delimiter=self.delimiter), None)
            except (csv.Error, UnicodeDecodeError) as exc:
                raise InputError(f"{self.path}: row 1: cannot read the header ({exc})") from None
        if not header or all(not cell.strip() for cell in header):
            raise InputError(f"{self.path}: the file is empty: expected a header row such as"
                             " identifierValue,firstName")
        if "\x00" in "".join(header):
            raise InputError(f"{self.path}: row 1 holds NUL bytes: this is not a text CSV file")
        return [cell.strip() for cell in header]

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
                yield Chunk(first_row, frame)
                first_row += len(frame)
        except pd.errors.ParserError as exc:
            raise InputError(f"{self.path}: {_parser_message(exc)}") from None
        except UnicodeDecodeError:
            raise self._bad_text() from None


def _sniff_delimiter(sample: str) -> str:
    first_lines = "\n".join(sample.splitlines()[:20])
    try:
        return csv.Sniffer().sniff(first_lines, delimiters=DELIMITERS).delimiter
    except csv.Error:
        header = sample.splitlines()[0] if sample else ""
        counts = {d: header.count(d) for d in DELIMITERS}
        best = max(counts, key=counts.get)
        return best if counts[best] else ","


def _parser_message(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[-1]
    # pandas says "Expected 3 fields in line 7, saw 4": line counts from 1 like our rows.
    return f"{text} (check the delimiter and quoting, or pass --delimiter)"


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
        self.headers = [cell.strip() for cell in header]

    def _workbook(self):
        from python_calamine import CalamineWorkbook

        try:
            return CalamineWorkbook.from_path(str(self.path))
        except Exception as exc:  # calamine raises several unrelated types for bad files
            raise InputError(f"{self.path}: cannot read this file as a {self.path.suffix} workbook"
                             f" ({_first_line(exc)}); save it again from the spreadsheet program,"
                             " or export it as CSV") from None

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
                             f" ({_first_line(exc)})") from None

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
            yield Chunk(first_row, frame)
            first_row += len(block)


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
        raise InputError(f"{path}: cannot open ({exc.strerror})") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


def is_excel(path: str | Path) -> bool:
    return Path(path).suffix.lower() in EXCEL_SUFFIXES


InputFile = CsvInput | ExcelInput


def open_input(path: str | Path, settings: "InputSettings") -> InputFile:
    """The reader for `path`: Excel by its suffix, CSV otherwise (the sheet option is Excel's)."""
    if is_excel(path):
        return ExcelInput(path, sheet=settings.sheet, chunk_rows=settings.chunk_rows)
    return CsvInput(path, encoding=settings.encoding, delimiter=settings.delimiter,
                    chunk_rows=settings.chunk_rows)
