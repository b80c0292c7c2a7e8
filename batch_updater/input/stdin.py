"""Standard input (`-` as the input path) as a file that the readers can open.

The readers need a real file: a CSV is read twice (measured, then parsed) and a workbook
is a zip read from its end. So the piped bytes are copied, block by block (constant memory
for any size), into a private temporary folder, and named by their first bytes: stdin.xlsx
(or .ods, .xls) for a workbook, stdin.csv.gz for gzip, stdin.csv otherwise. The job id is a
hash of the content, so the same bytes piped again continue the same job; the name's stem,
"stdin", names the job folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ..errors import InputError
from .csv_file import GZIP_SIGNATURE, SNIFF_BYTES, workbook_suffix
from .reader import _reason

BLOCK = 1 << 20
STDIN = "-"  # the input path that means standard input


def sweep(folder: Path, prefix: str = ".stdin") -> None:
    """Remove the copies that killed processes left (personal data): a folder's name says
    whose it is, and a process that is gone cannot use it any more."""
    for stale in folder.glob(f"{prefix}-*-*"):
        pid = stale.name.split("-")[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


@contextmanager
def spooled_stdin(stream: BinaryIO, folder: Path) -> Iterator[Path]:
    """Copy `stream` into a 0600 file in a new 0700 folder under `folder` and yield its path;
    the folder is removed on exit, whatever happens."""
    if stream.isatty():  # nothing piped: reading would wait for typing
        raise InputError("standard input is a terminal: pipe a file into it (... | batch-updater run - ...)"
                         " or give the file's path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        sweep(folder)
        private = Path(tempfile.mkdtemp(prefix=f".stdin-{os.getpid()}-", dir=folder))  # mkdtemp makes it 0700
    except OSError as exc:
        raise InputError(f"cannot create a folder for standard input in {folder} ({_reason(exc)})") from None
    try:
        spool = private / "stdin"
        try:
            with open(os.open(spool, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                shutil.copyfileobj(stream, out, BLOCK)
        except OSError as exc:
            raise InputError(f"cannot copy standard input into {private} ({_reason(exc)}): free some space"
                             " there, or give the file's path") from None
        with open(spool, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
        if not head:
            raise InputError("standard input is empty: pipe a CSV or Excel file into batch-updater,"
                             " or give the file's path")
        suffix = workbook_suffix(head) or (".csv.gz" if head.startswith(GZIP_SIGNATURE) else ".csv")
        yield spool.rename(spool.with_name("stdin" + suffix))
    finally:
        shutil.rmtree(private, ignore_errors=True)
