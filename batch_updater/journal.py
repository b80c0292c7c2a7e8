"""The job's journal: each row's final outcome in SQLite (WAL), written in small batches.

Outcomes are buffered and committed together at least every FLUSH_SECONDS, so the
journal costs little on the hot path and a crash loses at most that much work
(which resume sends again: the update is idempotent). Reports are built from here.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterator

from .outcomes import RowOutcome, Stage, Status

FLUSH_SECONDS = 0.2
FLUSH_ROWS = 1000

_COLUMNS = ("row", "status", "stage", "code", "message", "http_status", "attempts",
            "customer_id", "warnings", "identifier", "in_doubt")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outcome (
    row INTEGER PRIMARY KEY, status TEXT NOT NULL, stage TEXT, code TEXT, message TEXT,
    http_status INTEGER, attempts INTEGER, customer_id TEXT, warnings TEXT, identifier TEXT,
    in_doubt INTEGER
);
"""


class Journal:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.touch(mode=0o600)  # it holds identifiers: owner only, like the reports
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._pending: list[tuple] = []

    def record(self, outcome: RowOutcome) -> None:
        self._pending.append((
            outcome.row, outcome.status.value, outcome.stage.value if outcome.stage else None,
            outcome.code, outcome.message, outcome.http_status, outcome.attempts,
            outcome.customer_id, outcome.warnings, outcome.identifier, int(outcome.in_doubt)))
        if len(self._pending) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                f"INSERT OR REPLACE INTO outcome ({', '.join(_COLUMNS)})"
                f" VALUES ({', '.join('?' * len(_COLUMNS))})", rows)

    def outcomes(self, first_row: int, last_row: int) -> dict[int, RowOutcome]:
        cursor = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM outcome WHERE row BETWEEN ? AND ?",
            (first_row, last_row))
        return {values[0]: _outcome(values) for values in cursor}

    def counts(self) -> dict[str, int]:
        cursor = self._db.execute("SELECT status, COUNT(*) FROM outcome GROUP BY status")
        return dict(cursor.fetchall())

    def close(self) -> None:
        self.flush()
        self._db.close()


def _outcome(values: tuple) -> RowOutcome:
    (row, status, stage, code, message, http_status, attempts,
     customer_id, warnings, identifier, in_doubt) = values
    return RowOutcome(row, Status(status), Stage(stage) if stage else None, code or "",
                      message or "", http_status, attempts or 0, customer_id or "",
                      warnings or "", identifier or "", bool(in_doubt))


def iter_outcomes(journal: Journal, rows: range) -> Iterator[tuple[int, RowOutcome | None]]:
    found = journal.outcomes(rows.start, rows.stop - 1) if len(rows) else {}
    for row in rows:
        yield row, found.get(row)
