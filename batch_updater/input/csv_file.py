"""CSV input: read by pandas' C parser in chunks of text cells.

A CSV is measured once when opened (see CsvInput._scan): the rows are counted exactly (for
the ETA) and the widest row found; a row with more cells than the header keeps them in
extra unnamed columns, so it becomes a per-row error naming the cell instead of losing it.
Binary data, a workbook or PDF named .csv, text in another encoding and an unclosed quote
each get one line. A leading apostrophe that the reports put before = + - @ (csvsafe) is
taken off again, so a report fed back as input carries the original values.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import IO

from ..errors import InputError
from ..output.csvsafe import restore
from .reader import Chunk, _check_readable, _reason, restored_cells

SNIFF_BYTES = 64 * 1024
DELIMITERS = ",;\t|"
HEADER_LIMIT = 1000  # characters in one header cell: a longer one is a quoting mistake
CFB_SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # OLE container: .xls, or an encrypted workbook
ZIP_SIGNATURE = b"PK\x03\x04"
_GUARDED = re.compile(rb"'[=+\-@\t\r]")  # a csvsafe apostrophe (the last of several, too)
# Bytes that text never holds (not tab, line feed, form feed or carriage return).
_CONTROL = bytes(b for b in range(32) if b not in (9, 10, 12, 13))


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
        row, its delimiters plus one its cells (numpy, the encoding checked on the way).
        Any other is read once by Python's csv module, which also finds a quote never closed.
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
        spares chunks() looking at every cell of most files."""
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
                yield Chunk(first_row, restored_cells(frame) if self._guarded else frame)
                first_row += len(frame)
        except pd.errors.ParserError as exc:
            raise InputError(f"{self.path}: {_parser_message(exc)}") from None
        except UnicodeDecodeError:
            raise self._bad_text() from None
        except (OSError, EOFError) as exc:
            raise InputError(f"{self.path}: cannot read ({_reason(exc)})") from None


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


