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
from collections.abc import Callable, Iterator
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
GZIP_SIGNATURE = b"\x1f\x8b"
# Bytes that text never holds (not tab, line feed, form feed or carriage return).
_CONTROL = bytes(b for b in range(32) if b not in (9, 10, 12, 13))
# Characters that text decoded from UTF-16/32 never holds: controls, private use, U+FFFD
# (where bytes did not decode) and non-characters. Random bytes decode to >10% of them.
_NOT_TEXT_CHARS = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ue000-\uf8ff\ufffd-\uffff]")
_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# Binary formats, by their first bytes, for a message saying what the file is.
_MAGIC = {b"%PDF": "a PDF document", b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image",
          b"GIF8": "a GIF image", b"7z\xbc\xaf": "a 7-Zip archive", b"Rar!": "a RAR archive",
          b"\xfd7zXZ": "an xz archive", b"SQLite format 3\x00": "an SQLite database"}


class CsvInput:
    """A CSV file (optionally .gz), its header, and its data in chunks."""

    def __init__(self, path: str | Path, *, encoding: str | None = None,
                 delimiter: str | None = None, chunk_rows: int = 10_000,
                 opener: Callable[[], IO[bytes]] | None = None):
        self.path = Path(path)
        self.chunk_rows = chunk_rows
        self._opener = opener  # a file still arriving (input/remote.py): read as it grows
        _check_readable(self.path)
        self.encoding = encoding or "utf-8-sig"
        self._check_encoding()
        self._check_text()
        sample = self._sample()
        self.delimiter = _delimiter(delimiter) if delimiter else _sniff_delimiter(sample)
        header, width, rows = self._scan() if opener is None else self._header_only()
        self.row_count: int | None = rows
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
        # UTF-16/32 text is full of NUL bytes: given such an encoding, judge the text it decodes to.
        problem = _not_text(head, self.path, self.encoding if self._wide else None)
        if problem:
            raise InputError(f"{self.path}: {problem}")

    @property
    def _wide(self) -> bool:
        """UTF-16 or UTF-32: ASCII characters are not single bytes."""
        return codecs.lookup(self.encoding).name.startswith(("utf-16", "utf-32"))

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

    def _open_raw(self) -> gzip.GzipFile | IO[bytes]:
        gzipped = self.path.suffix.lower() == ".gz"
        if self._opener is None:
            return gzip.open(self.path, "rb") if gzipped else open(self.path, "rb")
        return gzip.GzipFile(fileobj=self._opener(), mode="rb") if gzipped else self._opener()

    def _header_only(self) -> tuple[list[str], int, None]:
        """A file still arriving is not measured (that would wait for all of it): the rows are
        not counted, and every chunk is checked for csvsafe apostrophes."""
        self._guarded = True
        header = self._header()
        return header, len(header), None

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
        handle = self._open_raw() if self._opener else None  # pandas reads a path itself
        try:
            reader = pd.read_csv(
                handle or self.path, sep=self.delimiter, header=None, skiprows=1,
                names=list(range(width)),
                dtype=object, keep_default_na=False, na_filter=False, skip_blank_lines=False,
                encoding=self.encoding, chunksize=self.chunk_rows, engine="c",
                compression=None if self._opener else "infer", index_col=False,
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
        finally:
            if handle is not None:
                handle.close()


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


def workbook_suffix(head: bytes) -> str | None:
    """The suffix of the workbook that starts with these bytes (.xlsx, .ods or .xls), or None.
    A zip's first entry names are in its first bytes: an xlsx has [Content_Types].xml and xl/."""
    if head.startswith(ZIP_SIGNATURE):
        if b"[Content_Types].xml" in head or b"xl/" in head:
            return ".xlsx"
        return ".ods" if b"application/vnd.oasis.opendocument.spreadsheet" in head else None
    if head.startswith(CFB_SIGNATURE):  # Office saves an encrypted .xlsx in this container too
        return ".xlsx" if "EncryptedPackage".encode("utf-16-le") in head else ".xls"
    return None


def _not_text(head: bytes, path: Path, encoding: str | None = None) -> str | None:
    """Why the first bytes of a file are not CSV text, or None when they may be. `encoding`:
    the UTF-16/32 encoding given, whose text is judged by its characters, not its bytes."""
    workbook = workbook_suffix(head)
    if head.startswith(ZIP_SIGNATURE):
        if workbook == ".xlsx":
            return ("this is a zip archive (an .xlsx workbook?), not CSV text: give a workbook its"
                    " .xlsx suffix, or export the sheet as CSV")
        if workbook == ".ods":
            return "this looks like an OpenDocument spreadsheet, not CSV text: give it its .ods suffix"
        return "this is a zip archive, not CSV text: unzip it, or export the data as CSV"
    if head.startswith(CFB_SIGNATURE):
        if workbook == ".xls":
            return "this looks like an old Excel .xls workbook, not CSV text: give it its .xls suffix"
        return ("this is a password-protected (encrypted) workbook, not CSV text: remove the password"
                " in the spreadsheet program and save it as .xlsx, or export the sheet as CSV")
    if head.startswith(GZIP_SIGNATURE) and path.suffix.lower() != ".gz":
        return "this file is gzip-compressed: give it a .gz suffix (e.g. customers.csv.gz)"
    if head.startswith(b"%PDF"):
        return "this is a PDF document, not CSV text: export the data as CSV"
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return f"this is {kind}, not CSV text: check that it is the exported CSV file"
    binary = (f"this is binary data, not CSV text (control bytes such as NUL in its first {len(head):,}"
              " bytes): check that it is the exported CSV file")
    if encoding is not None:
        wide = _wide_encoding(head, loose=True)  # what the bytes are, if UTF-16/32 text at all
        if not head or wide == codecs.lookup(encoding).name:
            return None
        return _wide_hint(wide) if wide else _not_text(head, path) or (
            f"this is not {encoding.upper()} text: leave out --encoding {encoding}, or pass the file's own"
            " encoding (e.g. latin-1)")
    if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:15].lower().startswith((b"<!doctype html", b"<html")):
        return ("this is a web page (HTML), not CSV text: a sign-in or error page saved instead of"
                " the export? Download the file again")
    wide = _wide_encoding(head)
    if wide:
        return _wide_hint(wide)
    control = len(head) - len(head.translate(None, _CONTROL))
    if control > max(8, len(head) // 100):
        return binary
    return None


def _wide_hint(encoding: str) -> str:
    if encoding in ("utf-16", "utf-32"):
        return f"this is {encoding.upper()} text: pass --encoding {encoding}"
    return f"this looks like {encoding[:6].upper()} text without a byte-order mark: pass --encoding {encoding}"


def _wide_encoding(head: bytes, loose: bool = False) -> str | None:
    """The UTF-16/32 encoding these bytes are text in, when a byte-order mark or the place of
    their NUL bytes says which and the characters they decode to are text."""
    if head.startswith(_BOMS[:2]):  # before UTF-16's, which starts UTF-32-LE's: FF FE 00 00
        candidates = ["utf-32"]
    elif head.startswith(_BOMS[2:]):
        candidates = ["utf-16"]
    else:
        candidates = [name for name in ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")
                      if _in_byte_order(head, name, loose)]
    return next((name for name in candidates if _reads_as_text(head, name)), None)


def _in_byte_order(head: bytes, name: str, loose: bool) -> bool:
    """Are the NUL bytes where `name` puts an ASCII character's zero bytes (a CSV's delimiters,
    line ends and digits): for most characters, or with `loose`, more than elsewhere (a file said
    to be in `name`, whose text may be mostly CJK)?"""
    newline = "\n".encode(name)
    width, low = len(newline), newline.index(b"\n")
    zeros = [head[k::width].count(0) for k in range(width)]
    high = min(count for k, count in enumerate(zeros) if k != low)
    return high > zeros[low] if loose else high > len(head) // width // 2


def _reads_as_text(head: bytes, encoding: str) -> bool:
    """Do these bytes decode to text (a character cut at the end of the block is no error)?"""
    text = codecs.getincrementaldecoder(encoding)(errors="replace").decode(head)
    return len(_NOT_TEXT_CHARS.findall(text)) <= max(8, len(text) // 100)


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


