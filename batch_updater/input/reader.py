"""Stream an input file as chunks of text cells, each chunk knowing its first row number.

Every cell is read as text (phone numbers keep their digits and leading zeros);
typing happens in validation. Row numbers are what a spreadsheet user sees: the
header is row 1, so the first data row is row 2. `open_input` picks the reader:
csv_file.CsvInput (any delimiter, sniffed; any encoding; .gz) or excel_file.ExcelInput
(.xlsx, .xlsm, .xlsb, .xls, .ods). Broken files get one clear line (InputError) before
anything is sent, never a traceback. Standard input is first copied into a file named by its
content (stdin.spooled_stdin).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    import pandas

    from ..config import InputSettings
    from .csv_file import CsvInput
    from .excel_file import ExcelInput

from ..errors import InputError
from ..output.csvsafe import restore_column

EXCEL_SUFFIXES = (".xlsx", ".xlsm", ".xlsb", ".xls", ".ods")


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


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or _first_line(exc)


def restored_cells(frame: pandas.DataFrame) -> pandas.DataFrame:
    """Take off the apostrophe the reports put before = + - @ (see csvsafe)."""
    for column in frame.columns:
        cells = frame[column].tolist()
        restored = restore_column(cells)
        if restored is not cells:
            frame[column] = restored
    return frame


def is_excel(path: str | Path) -> bool:
    return Path(path).suffix.lower() in EXCEL_SUFFIXES


def open_input(path: str | Path, settings: InputSettings,
               opener: Callable[[], IO[bytes]] | None = None) -> CsvInput | ExcelInput:
    """The reader for `path`: Excel by its suffix, CSV otherwise (the sheet option is Excel's).
    `opener`: a CSV still arriving, read as it grows (input/remote.py)."""
    from .csv_file import CsvInput
    from .excel_file import ExcelInput

    if is_excel(path):
        return ExcelInput(path, sheet=settings.sheet, chunk_rows=settings.chunk_rows)
    return CsvInput(path, encoding=settings.encoding, delimiter=settings.delimiter,
                    chunk_rows=settings.chunk_rows, opener=opener)
