"""Report files: success.csv, errors.csv, skipped.csv, built from the input and the journal.

The input file is read again chunk by chunk and joined with the journal by row
number, so the reports are in file order, cover every row exactly once by
construction, and memory stays flat. A row with no outcome (the run stopped before
sending it) or one sent without an answer is `not_sent`: in skipped.csv, never in
errors.csv. Every report has `_in_doubt` (an attempt for the row went unanswered) and
`_source_row`: the row's number in the file it first came from (the input's own
`_source_row` or `_row` column when it is a report fed back, else `_row`).
errors.csv and skipped.csv say in `_next` what to do about each row.

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
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from ..input.columns import REPORT_COLUMN_PREFIX, canonical_name
from ..input.reader import Chunk
from ..outcomes import CREATED, UPDATED, RowOutcome, Stage, Status
from ..send.answers import WARNED_PREFIX
from ..state.journal import Journal
from .csvsafe import neutralise, neutralise_column, neutralise_rows, restore
from .masking import mask_identifier, mask_text
from .tallies import ErrorGroups, WarningTally

SUCCESS_COLUMNS = ["_row", "_source_row", "_action", "_identifier", "_customer_id", "_http_status", "_attempts",
                   "_warnings", "_in_doubt"]
ERROR_COLUMNS = ["_row", "_source_row", "_stage", "_code", "_message", "_http_status", "_attempts",
                 "_in_doubt", "_next"]
SKIPPED_COLUMNS = ["_row", "_source_row", "_reason", "_in_doubt", "_next"]
SOURCE_ROW_COLUMNS = ("_source_row", "_row")  # in a report fed back, the first found wins
NOT_SENT = Stage.NOT_SENT.value
_BOOL = ("false", "true")
NEXT_RUN = "run the same command again: it is sent then"
NEXT_FIX = "fix the row, then feed errors.csv back in"
NEXT_WARNED = ("the API applied the update but warned: fix the cause (e.g. configure the field for the"
               " org, or drop the column), then feed errors.csv back in")
NEXT_REFUSED = ("fix the row or the customer, then feed errors.csv back in (or run again with"
                " --retry-failed)")


@dataclass
class ReportCounts:
    success: int = 0
    created: int = 0         # successes that added the customer (upsert); the others are updates
    error: int = 0
    skipped: int = 0
    not_sent: int = 0        # neither an error nor a skip: the run stopped first
    validation: int = 0
    api: int = 0
    create: int = 0          # errors of the add (upsert)
    network: int = 0
    in_doubt: int = 0
    to_send_again: int = 0   # not sent, or failed for the run's reason: the next run sends them
    rows: int = 0
    error_groups: ErrorGroups = field(default_factory=ErrorGroups)
    warnings: WarningTally = field(default_factory=WarningTally)      # every row's, success or error
    updated_with_warnings: int = 0


@dataclass(frozen=True)
class ReportPaths:
    success: Path
    errors: Path
    skipped: Path
    summary: Path

    @classmethod
    def in_folder(cls, folder: Path) -> ReportPaths:
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
                  journal: Journal, *, mask: Collection[int] = ()) -> ReportCounts:
    """Write the three CSV reports; `mask`: input column positions whose cells are masked
    in success.csv and skipped.csv (see identifier_columns)."""
    keep = [i for i, h in enumerate(headers) if not h.startswith(REPORT_COLUMN_PREFIX)]
    input_headers = [neutralise(headers[i]) for i in keep]
    source_row = _source_row_position(headers)
    wanted = set(mask)
    masked = [n for n, i in enumerate(keep) if i in wanted]
    counts = ReportCounts()
    try:
        with open_private(paths.success) as s, open_private(paths.errors) as e, \
                open_private(paths.skipped) as k:
            writer = _Writer(s, e, k, masked, counts)
            writer.success.writerow(SUCCESS_COLUMNS + input_headers)
            writer.errors.writerow(input_headers + ERROR_COLUMNS)
            writer.skipped.writerow(SKIPPED_COLUMNS + input_headers)
            for chunk in chunks:
                if len(chunk.rows):
                    cells = chunk.frame.to_numpy(dtype=object)
                    writer.chunk(chunk.rows, neutralise_rows(cells[:, keep]),
                                 _source_rows(chunk.rows, cells, source_row), journal)
    except OSError:
        for path in (paths.success, paths.errors, paths.skipped):
            try:
                path.unlink(missing_ok=True)  # half a report is worse than none; frees space too
            except OSError:
                pass
        raise
    return counts


def _source_row_position(headers: list[str]) -> int | None:
    names = [str(h).strip().lower() for h in headers]
    for name in SOURCE_ROW_COLUMNS:
        if name in names:
            return names.index(name)
    return None


def _source_rows(rows: Sequence[int], cells: np.ndarray, position: int | None) -> list[str]:
    """Each row's number in the file it first came from (see the module's docstring)."""
    if position is None:
        return [str(row) for row in rows]
    return neutralise_column([value if isinstance(value, str) else "" for value in cells[:, position]])


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
                 counts: ReportCounts):
        self.success, self.errors, self.skipped = csv.writer(success), csv.writer(errors), csv.writer(skipped)
        self.success_file, self.skipped_file = success, skipped
        self.masked = masked
        self.counts = counts

    def chunk(self, rows: Sequence[int], values: list[list], sources: list[str], journal: Journal) -> None:
        """`values`: the rows' input cells, already neutralised (neutralise_rows);
        `sources`: their `_source_row` cells."""
        numbers = np.asarray(rows)
        in_bulk = not self.masked  # masking goes row by row
        written = (self.successes(numbers, values, sources, journal.successes(rows[0], rows[-1]))
                   if in_bulk else set())
        found = journal.outcomes(rows[0], rows[-1], successes=not in_bulk)
        done = 0
        for first, last, reason in journal.skipped_runs(rows[0], rows[-1]):
            start, end = np.searchsorted(numbers, [first, last + 1]).tolist()
            self.rows(rows[done:start], values[done:start], sources[done:start], found, written)
            self.skipped_run(rows[start:end], values[start:end], sources[start:end], reason)
            done = end
        self.rows(rows[done:], values[done:], sources[done:], found, written)

    def successes(self, numbers: np.ndarray, values: list[list], sources: list[str],
                  records: list[tuple]) -> set[int]:
        """success.csv's rows of a chunk, in one write; returns their row numbers."""
        if not records:
            return set()
        rows, actions, identifiers, customer_ids, statuses, attempts, warnings, in_doubt = zip(*records)
        positions = np.searchsorted(numbers, rows).tolist()
        cells = [values[position] for position in positions]
        origins = [sources[position] for position in positions]
        texts = [neutralise_column(list(column)) for column in (identifiers, customer_ids, warnings)]
        doubts = [_BOOL[flag] for flag in in_doubt]
        done = [action or UPDATED for action in actions]  # an earlier version's successes were updates
        lines = zip(rows, origins, done, *texts[:2], statuses, attempts, texts[2], doubts, cells)
        if None not in statuses and _plain(origins, *texts, *cells):
            self.success_file.write("".join([f"{r},{o},{n},{i},{c},{s},{a},{w},{d},{','.join(x)}\r\n"
                                             for r, o, n, i, c, s, a, w, d, x in lines]))
        else:
            self.success.writerows([r, o, n, i, c, s, a, w, d, *x] for r, o, n, i, c, s, a, w, d, x in lines)
        self.counts.rows += len(rows)
        self.counts.success += len(rows)
        self.counts.created += done.count(CREATED)
        self.counts.in_doubt += sum(in_doubt)
        for text in warnings:
            if text:
                self.counts.warnings.add(text)
                self.counts.updated_with_warnings += 1
        return set(rows)

    def rows(self, rows: Sequence[int], values: list[list], sources: list[str],
             found: dict[int, RowOutcome], written: set[int]) -> None:
        for row, cells, source in zip(rows, values, sources):
            if row in written:
                continue
            outcome = found.get(row) or RowOutcome(row, Status.SKIPPED, Stage.NOT_SENT, rerun=True)
            self.row(outcome, cells, source)
            _count(self.counts, outcome)

    def skipped_run(self, rows: Sequence[int], values: list[list], sources: list[str], reason: str) -> None:
        """Rows skipped alike (a run in the journal): one write call, no object per row."""
        if self.masked:
            for cells in values:
                self.mask(cells)
            reason = mask_text(reason)
        reason = neutralise(reason)
        if _plain([reason], sources, *values):
            self.skipped_file.write("".join([f"{row},{source},{reason},false,,{','.join(cells)}\r\n"
                                             for row, source, cells in zip(rows, sources, values)]))
        else:
            self.skipped.writerows([row, source, reason, "false", "", *cells]
                                   for row, source, cells in zip(rows, sources, values))
        self.counts.rows += len(rows)
        self.counts.skipped += len(rows)

    def row(self, o: RowOutcome, cells: list, source: str) -> None:
        doubt = _BOOL[o.in_doubt]
        if o.status is Status.ERROR:
            self.errors.writerow(cells + [o.row, source, o.stage.value if o.stage else "", neutralise(o.code),
                                          neutralise(o.message), o.http_status or "", o.attempts, doubt,
                                          _next_step(o)])
            return
        identifier, message, warnings = o.identifier, o.message, o.warnings
        if self.masked:
            self.mask(cells)
            identifier, message, warnings = mask_identifier(identifier), mask_text(message), mask_text(warnings)
        if o.status is Status.SUCCESS:
            self.success.writerow([o.row, source, o.action or UPDATED, neutralise(identifier),
                                   neutralise(o.customer_id), o.http_status, o.attempts, neutralise(warnings),
                                   doubt] + cells)
        elif o.stage is Stage.NOT_SENT:
            self.skipped.writerow([o.row, source, NOT_SENT, doubt, NEXT_RUN] + cells)
        else:
            self.skipped.writerow([o.row, source, neutralise(message), doubt, ""] + cells)

    def mask(self, cells: list) -> None:
        for n in self.masked:
            if isinstance(cells[n], str):
                cells[n] = neutralise(mask_identifier(restore(cells[n])))


def _next_step(o: RowOutcome) -> str:
    if o.rerun:
        return NEXT_RUN
    if o.message.startswith(WARNED_PREFIX):
        return NEXT_WARNED
    return NEXT_FIX if o.stage is Stage.VALIDATION else NEXT_REFUSED


_QUOTED = (",", '"', "\r", "\n")


def _plain(*rows: list) -> bool:
    """Every cell is text the csv module writes as it is (no delimiter, quote or line
    break in it): a run of such rows is written as joined lines, much faster than the csv
    module, which a property test holds them to."""
    try:
        text = "".join(map("".join, rows))
    except TypeError:  # a cell that is not text (NaN from a short line)
        return False
    return not any(character in text for character in _QUOTED)


def _count(counts: ReportCounts, o: RowOutcome) -> None:
    counts.rows += 1
    counts.in_doubt += o.in_doubt
    counts.to_send_again += o.rerun
    if o.warnings:
        counts.warnings.add(o.warnings)
        counts.updated_with_warnings += o.status is Status.SUCCESS
    if o.status is Status.SUCCESS:
        counts.success += 1
        counts.created += o.action == CREATED
    elif o.stage is Stage.NOT_SENT:
        counts.not_sent += 1
    elif o.status is Status.SKIPPED:
        counts.skipped += 1
    else:
        counts.error += 1
        counts.error_groups.add(o)
        stage = o.stage.value if o.stage else "api"
        setattr(counts, stage, getattr(counts, stage) + 1)
