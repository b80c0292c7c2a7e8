"""The job's journal: each row's outcome in SQLite (WAL), plus the job's own facts.

A row is marked in flight, committed, before its first request goes out; its final
outcome replaces the mark. Outcomes are committed in groups (at least every
FLUSH_SECONDS, and with every in-flight mark), so the journal costs little on the hot
path and a crash loses at most the last moments of outcomes, whose rows resume sends
again (the update is idempotent). Reports are built from here.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterator

from .outcomes import RowOutcome, Stage, Status

FLUSH_SECONDS = 0.2
FLUSH_ROWS = 1000
IN_FLIGHT = "in_flight"
FINAL = frozenset(status.value for status in Status)

_COLUMNS = ("row", "status", "stage", "code", "message", "http_status", "attempts",
            "customer_id", "warnings", "identifier", "in_doubt")
_INSERT = (f"INSERT OR REPLACE INTO outcome ({', '.join(_COLUMNS)})"
           f" VALUES ({', '.join('?' * len(_COLUMNS))})")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outcome (
    row INTEGER PRIMARY KEY, status TEXT NOT NULL, stage TEXT, code TEXT, message TEXT,
    http_status INTEGER, attempts INTEGER, customer_id TEXT, warnings TEXT, identifier TEXT,
    in_doubt INTEGER
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
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

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def record(self, outcome: RowOutcome) -> None:
        self._pending.append((
            outcome.row, outcome.status.value, outcome.stage.value if outcome.stage else None,
            outcome.code, outcome.message, outcome.http_status, outcome.attempts,
            outcome.customer_id, outcome.warnings, outcome.identifier, int(outcome.in_doubt)))
        if len(self._pending) >= FLUSH_ROWS:
            self.flush()

    def dispatch(self, row: int, identifier: str = "") -> None:
        """Mark a row in flight, durably, before its request is sent."""
        self._pending.append((row, IN_FLIGHT, None, "", "", None, 0, "", "", identifier, 0))
        self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        self._db.execute("BEGIN")
        try:
            self._db.executemany(_INSERT, rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def states(self, first_row: int, last_row: int) -> dict[int, str]:
        """Each journaled row's status (a final one, or in flight) in a row range."""
        cursor = self._db.execute("SELECT row, status FROM outcome WHERE row BETWEEN ? AND ?",
                                  (first_row, last_row))
        return dict(cursor.fetchall())

    def outcomes(self, first_row: int, last_row: int) -> dict[int, RowOutcome]:
        cursor = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM outcome WHERE row BETWEEN ? AND ? AND status != ?",
            (first_row, last_row, IN_FLIGHT))
        return {values[0]: _outcome(values) for values in cursor}

    def counts(self) -> dict[str, int]:
        cursor = self._db.execute("SELECT status, COUNT(*) FROM outcome GROUP BY status")
        return dict(cursor.fetchall())

    def set_meta(self, **values: str) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                 list(values.items()))

    def meta(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def close(self) -> None:
        self.flush()
        self._db.close()


def read_meta(path: Path) -> dict[str, str]:
    """Another job's facts (read-write open: a read-only one cannot replay a crashed WAL)."""
    if not path.exists():
        return {}
    try:
        db = sqlite3.connect(path, timeout=1.0)
        try:
            return dict(db.execute("SELECT key, value FROM meta").fetchall())
        finally:
            db.close()
    except sqlite3.Error:
        return {}


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
