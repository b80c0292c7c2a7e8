"""Report files: success.csv, errors.csv, skipped.csv, built from the input and the journal.

The input file is read again chunk by chunk and joined with the journal by row
number, so the reports are in file order, cover every row exactly once by
construction (a row without an outcome is `not_sent`), and memory stays flat.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .columns import REPORT_COLUMN_PREFIX
from .csvsafe import neutralise
from .journal import Journal, iter_outcomes
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
                  journal: Journal, not_sent_message: str) -> ReportCounts:
    keep = [i for i, h in enumerate(headers) if not h.startswith(REPORT_COLUMN_PREFIX)]
    input_headers = [headers[i] for i in keep]
    counts = ReportCounts()
    with open_private(paths.success) as s, open_private(paths.errors) as e, \
            open_private(paths.skipped) as k:
        success, errors, skipped = csv.writer(s), csv.writer(e), csv.writer(k)
        success.writerow(SUCCESS_COLUMNS + input_headers)
        errors.writerow(input_headers + ERROR_COLUMNS)
        skipped.writerow(SKIPPED_COLUMNS + input_headers)
        for chunk in chunks:
            values = chunk.frame.to_numpy(dtype=object)
            for (row, outcome), cells in zip(iter_outcomes(journal, chunk.rows), values):
                cells = [cells[i] for i in keep]
                outcome = outcome or RowOutcome(row, Status.ERROR, Stage.NOT_SENT, "", not_sent_message)
                _write_row(outcome, cells, success, errors, skipped)
                _count(counts, outcome)
    return counts


def _write_row(o: RowOutcome, cells: list, success, errors, skipped) -> None:
    cells = [neutralise(cell) for cell in cells]
    if o.status is Status.SUCCESS:
        success.writerow([o.row, neutralise(o.identifier), o.customer_id, o.http_status, o.attempts,
                          neutralise(o.warnings)] + cells)
    elif o.status is Status.SKIPPED:
        skipped.writerow([o.row, o.message] + cells)
    else:
        errors.writerow(cells + [o.row, o.stage.value if o.stage else "", o.code, neutralise(o.message),
                                 o.http_status or "", o.attempts])


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
