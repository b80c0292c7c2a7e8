"""Stream an input file as chunks of text cells, each chunk knowing its first row number.

Every cell is read as text (phone numbers keep their digits and leading zeros);
typing happens in validation. Row numbers are what a spreadsheet user sees: the
header is row 1, so the first data row is row 2.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import pandas

    from .config import InputSettings

from .errors import InputError

SNIFF_BYTES = 64 * 1024
DELIMITERS = ",;\t|"


@dataclass(frozen=True)
class Chunk:
    first_row: int
    frame: "pandas.DataFrame"  # columns are positions 0..n-1, all text

    @property
    def rows(self) -> range:
        return range(self.first_row, self.first_row + len(self.frame))


class CsvInput:
    """A CSV file (optionally .gz), its header, and its data in chunks."""

    def __init__(self, path: str | Path, *, encoding: str | None = None,
                 delimiter: str | None = None, chunk_rows: int = 10_000):
        self.path = Path(path)
        self.chunk_rows = chunk_rows
        self._check_readable()
        self.encoding = encoding or "utf-8-sig"
        self._check_encoding()
        sample = self._sample()
        self.delimiter = delimiter or _sniff_delimiter(sample)
        self.headers = self._read_header()

    def _check_readable(self) -> None:
        if not self.path.exists():
            raise InputError(f"{self.path}: file not found")
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a directory, not a file")
        try:
            with open(self.path, "rb"):
                pass
        except OSError as exc:
            raise InputError(f"{self.path}: cannot open ({exc.strerror})") from None

    def _check_encoding(self) -> None:
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise InputError(f"unknown encoding '{self.encoding}' (try utf-8, latin-1, cp1252)") from None

    def _open_text(self) -> IO[str]:
        raw = gzip.open(self.path, "rb") if self.path.suffix.lower() == ".gz" else open(self.path, "rb")
        return io.TextIOWrapper(raw, encoding=self.encoding, newline="")

    def _sample(self) -> str:
        try:
            with self._open_text() as handle:
                return handle.read(SNIFF_BYTES)
        except UnicodeDecodeError as exc:
            raise InputError(f"{self.path}: not valid {self.encoding} text near byte {exc.start}"
                             " (pass --encoding, e.g. --encoding latin-1)") from None
        except (OSError, EOFError) as exc:
            raise InputError(f"{self.path}: cannot read ({exc})") from None

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
                dtype=str, keep_default_na=False, na_filter=False, skip_blank_lines=False,
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
            raise InputError(f"{self.path}: not valid {self.encoding} text"
                             " (pass --encoding, e.g. --encoding latin-1)") from None


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


def open_input(path: str | Path, settings: "InputSettings") -> CsvInput:
    return CsvInput(path, encoding=settings.encoding, delimiter=settings.delimiter,
                    chunk_rows=settings.chunk_rows)
