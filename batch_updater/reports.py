"""Report files: success.csv, errors.csv, skipped.csv, built from the input and the journal.

The input file is read again chunk by chunk and joined with the journal by row
number, so the reports are in file order, cover every row exactly once by
construction (a row without an outcome is `not_sent`), and memory stays flat.

Every cell is neutralised against formula injection (csvsafe), headers too; the reader
undoes it, so errors.csv fed back carries the original values. Report files are
created 0600. With `[output] mask_identifiers`, success.csv and skipped.csv mask the
identifier cells (`_identifier`, identifierValue, identifiers.*, commChannels.*.value)
and identifiers inside `_reason`/`_warnings`; errors.csv is left whole, because it is
the file a user fixes and feeds back in. A write that fails (a full disk) removes the
partial report files: the journal holds every outcome, so a rerun writes them.
"""

from __future__ import annotations

import csv
import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Iterable, Mapping, Sequence, TextIO

import numpy as np

from .columns import REPORT_COLUMN_PREFIX, canonical_name
from .csvsafe import neutralise, neutralise_column, neutralise_rows, restore
from .masking import mask_identifier, mask_text
from .journal import Journal
from .outcomes import RowOutcome, Stage, Status
from .reader import Chunk

SUCCESS_COLUMNS = ["_row", "_identifier", "_customer_id", "_http_status", "_attempts", "_warnings"]
ERROR_COLUMNS = ["_row", "_stage", "_code", "_message", "_http_status", "_attempts"]
SKIPPED_COLUMNS = ["_row", "_reason"]


@dataclass
class ReportCounts:
    success: int = 0
    error: int = 0
    skipped: int = 0
    not_sent: int = 0
    validation: int = 0
    api: int = 0
    network: int = 0
    in_doubt: int = 0
    rows: int = 0


@dataclass(frozen=True)
class ReportPaths:
    success: Path
    errors: Path
    skipped: Path
    summary: Path

    @classmethod
    def in_folder(cls, folder: Path) -> "ReportPaths":
        return cls(folder / "success.csv", folder / "errors.csv", folder / "skipped.csv",
                   folder / "summary.json")


def open_private(path: Path, mode: str = "w"):
    """Reports hold personal data: readable by the owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    if "b" in mode:
        return open(fd, mode)
    return open(fd, mode, newline="", encoding="utf-8")


def write_private(path: Path, data: bytes) -> None:
    with open_private(path, "wb") as handle:
        handle.write(data)


def write_reports(paths: ReportPaths, headers: list[str], chunks: Iterable[Chunk],
                  journal: Journal, not_sent_message: str, *, mask: Collection[int] = ()) -> ReportCounts:
    """Write the three CSV reports; `mask`: input column positions whose cells are masked
    in success.csv and skipped.csv (see identifier_columns)."""
    keep = [i for i, h in enumerate(headers) if not h.startswith(REPORT_COLUMN_PREFIX)]
    input_headers = [neutralise(headers[i]) for i in keep]
    wanted = set(mask)
    masked = [n for n, i in enumerate(keep) if i in wanted]
    counts = ReportCounts()
    try:
        with open_private(paths.success) as s, open_private(paths.errors) as e, \
                open_private(paths.skipped) as k:
            writer = _Writer(s, e, k, masked, counts, not_sent_message)
            writer.success.writerow(SUCCESS_COLUMNS + input_headers)
            writer.errors.writerow(input_headers + ERROR_COLUMNS)
            writer.skipped.writerow(SKIPPED_COLUMNS + input_headers)
            for chunk in chunks:
                if len(chunk.rows):
                    writer.chunk(chunk.rows, neutralise_rows(chunk.frame.to_numpy(dtype=object)[:, keep]), journal)
    except OSError:
        for path in (paths.success, paths.errors, paths.skipped):
            try:
                path.unlink(missing_ok=True)  # half a report is worse than none; frees space too
            except OSError:
                pass
        raise
    return counts


def identifier_columns(headers: list[str], renames: Mapping[str, str]) -> list[int]:
    """Positions of the columns that hold identifiers: identifierValue, identifiers.*,
    commChannels.*.value (by their canonical names, after the config's [columns] renames)."""
    positions = []
    for position, header in enumerate(headers):
        key = str(header).strip()
        if not key or key.startswith(REPORT_COLUMN_PREFIX):
            continue
        name = canonical_name(renames.get(key.lower(), key)) or ""
        if name == "identifierValue" or name.startswith("identifiers.") or (
                name.startswith("commChannels.") and name.endswith(".value")):
            positions.append(position)
    return positions


def write_failure_message(folder: Path, exc: OSError) -> str:
    """One line for a report that could not be written, saying what to do next."""
    rerun = ("run the same command again: the job's journal keeps every row's outcome, so"
             " nothing is sent twice and the reports are written then")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"cannot write the reports in {folder}: no space left on device; free some space, then {rerun}"
    reason = exc.strerror or exc.__class__.__name__
    return f"cannot write the reports in {folder} ({reason}); fix that, then {rerun}"


class _Writer:
    """Each row of a chunk into the report its outcome names, and counted."""

    def __init__(self, success: TextIO, errors: TextIO, skipped: TextIO, masked: list[int],
                 counts: ReportCounts, not_sent_message: str):
        self.success, self.errors, self.skipped = csv.writer(success), csv.writer(errors), csv.writer(skipped)
        self.success_file, self.skipped_file = success, skipped
        self.masked = masked
        self.counts = counts
        self.not_sent_message = not_sent_message

    def chunk(self, rows: Sequence[int], values: list[list], journal: Journal) -> None:
        """`values`: the rows' input cells, already neutralised (neutralise_rows)."""
        numbers = np.asarray(rows)
        in_bulk = not self.masked  # masking goes row by row
        written = self.successes(numbers, values, journal.successes(rows[0], rows[-1])) if in_bulk else set()
        found = journal.outcomes(rows[0], rows[-1], successes=not in_bulk)
        done = 0
        for first, last, reason in journal.skipped_runs(rows[0], rows[-1]):
            start, end = np.searchsorted(numbers, [first, last + 1]).tolist()
            self.rows(rows[done:start], values[done:start], found, written)
            self.skipped_run(rows[start:end], values[start:end], reason)
            done = end
        self.rows(rows[done:], values[done:], found, written)

    def successes(self, numbers: np.ndarray, values: list[list], records: list[tuple]) -> set[int]:
        """success.csv's rows of a chunk, in one write; returns their row numbers."""
        if not records:
            return set()
        rows, identifiers, customer_ids, statuses, attempts, warnings, in_doubt = zip(*records)
        cells = [values[position] for position in np.searchsorted(numbers, rows).tolist()]
        texts = [neutralise_column(list(column)) for column in (identifiers, customer_ids, warnings)]
        lines = zip(rows, *texts[:2], statuses, attempts, texts[2], cells)
        if None not in statuses and _plain(*texts, *cells):
            self.success_file.write("".join([f"{r},{i},{c},{s},{a},{w},{','.join(x)}\r\n"
                                             for r, i, c, s, a, w, x in lines]))
        else:
            self.success.writerows([r, i, c, s, a, w, *x] for r, i, c, s, a, w, x in lines)
        self.counts.rows += len(rows)
        self.counts.success += len(rows)
        self.counts.in_doubt += sum(in_doubt)
        return set(rows)

    def rows(self, rows: Sequence[int], values: list[list], found: dict[int, RowOutcome],
             written: set[int]) -> None:
        for row, cells in zip(rows, values):
            if row in written:
                continue
            outcome = found.get(row) or RowOutcome(row, Status.ERROR, Stage.NOT_SENT, "", self.not_sent_message)
            self.row(outcome, cells)
            _count(self.counts, outcome)

    def skipped_run(self, rows: Sequence[int], values: list[list], reason: str) -> None:
        """Rows skipped alike (a run in the journal): one write call, no object per row."""
        if self.masked:
            for cells in values:
                self.mask(cells)
            reason = mask_text(reason)
        reason = neutralise(reason)
        if _plain([reason], *values):
            self.skipped_file.write("".join([f"{row},{reason},{','.join(cells)}\r\n"
                                             for row, cells in zip(rows, values)]))
        else:
            self.skipped.writerows([row, reason, *cells] for row, cells in zip(rows, values))
        self.counts.rows += len(rows)
        self.counts.skipped += len(rows)

    def row(self, o: RowOutcome, cells: list) -> None:
        if o.status is Status.ERROR:
            self.errors.writerow(cells + [o.row, o.stage.value if o.stage else "", neutralise(o.code),
                                          neutralise(o.message), o.http_status or "", o.attempts])
            return
        identifier, message, warnings = o.identifier, o.message, o.warnings
        if self.masked:
            self.mask(cells)
            identifier, message, warnings = mask_identifier(identifier), mask_text(message), mask_text(warnings)
        if o.status is Status.SUCCESS:
            self.success.writerow([o.row, neutralise(identifier), neutralise(o.customer_id), o.http_status,
                                   o.attempts, neutralise(warnings)] + cells)
        else:
            self.skipped.writerow([o.row, neutralise(message)] + cells)

    def mask(self, cells: list) -> None:
        for n in self.masked:
            if isinstance(cells[n], str):
                cells[n] = neutralise(mask_identifier(restore(cells[n])))


_QUOTED = (",", '"', "\r", "\n")


def _plain(*rows: list) -> bool:
    """Every cell is text the csv module writes as it is (no delimiter, quote or line
    break in it): a run of such rows is written as joined lines, five times faster."""
    try:
        text = "".join(map("".join, rows))
    except TypeError:  # a cell that is not text (NaN from a short line)
        return False
    return not any(character in text for character in _QUOTED)


def _count(counts: ReportCounts, o: RowOutcome) -> None:
    counts.rows += 1
    counts.in_doubt += o.in_doubt
    if o.status is Status.SUCCESS:
        counts.success += 1
    elif o.status is Status.SKIPPED:
        counts.skipped += 1
    else:
        counts.error += 1
        stage = o.stage.value if o.stage else "api"
        setattr(counts, stage, getattr(counts, stage) + 1)
