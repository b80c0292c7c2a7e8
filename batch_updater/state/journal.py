"""The job's journal: each row's outcome in SQLite (WAL), plus the job's own facts.

Two small logs (state/crash_logs.py) make it crash-durable between SQLite's group commits:
- right before each request goes out, the row's number is appended to the in-flight log;
- the moment a row's answer is known, its outcome is appended to the ack log, before
  anything else happens to it.
Outcomes go to SQLite in group commits at least every FLUSH_SECONDS. On opening, the
logs a crashed run left are absorbed: acknowledged outcomes are kept, and a row sent
without an answer becomes `in_flight` (in doubt): the next run sends it again (the
update is idempotent). A clean close commits everything, then removes the logs.

A row stays settled only when its outcome is about the row itself; an error with
`rerun` set (the run's fault: credentials, network, 5xx...) and a row in flight are
sent again by the next run of the job (see `states`). Reports are built from here.

Rows skipped in bulk (unchanged since the last sync: most rows of a nightly export) are
kept as runs, a record per run of consecutive rows rather than per row, so they cost the
journal next to nothing. A run covers every row of the job's input from its first row
to its last (a shard's input skips the rows of other shards, which its journal never
holds). A row is in the outcome table or in a run, never both.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Awaitable, Iterable
from pathlib import Path

from ..outcomes import RowOutcome, Stage, Status
from .crash_logs import AckLog, InFlightLog, read_ack_log, read_in_flight_log

FLUSH_SECONDS = 0.2
FLUSH_ROWS = 20_000  # a bound on what waits in memory (a dry run has no timer to flush it)
IN_FLIGHT = "in_flight"  # sent, no answer: the next run sends it again, in doubt
RESEND = "resend"        # failed for the run's reason: the next run sends it again
FINAL = frozenset(status.value for status in Status)

_COLUMNS = ("row", "status", "stage", "code", "message", "http_status", "attempts",
            "customer_id", "warnings", "identifier", "in_doubt", "rerun", "action")
_INSERT = (f"INSERT OR REPLACE INTO outcome ({', '.join(_COLUMNS)})"
           f" VALUES ({', '.join('?' * len(_COLUMNS))})")
# A row sent without an answer; a settled outcome (recorded by a run that did not send it) stays.
_UNANSWERED = ("INSERT INTO outcome (row, status, in_doubt, rerun) VALUES (?, 'in_flight', 1, 1)"
               " ON CONFLICT(row) DO UPDATE SET status = 'in_flight', in_doubt = 1, rerun = 1"
               " WHERE status = 'in_flight' OR rerun = 1")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outcome (
    row INTEGER PRIMARY KEY, status TEXT NOT NULL, stage TEXT, code TEXT, message TEXT,
    http_status INTEGER, attempts INTEGER, customer_id TEXT, warnings TEXT, identifier TEXT,
    in_doubt INTEGER, rerun INTEGER, action TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS skipped_run (
    first_row INTEGER PRIMARY KEY, last_row INTEGER NOT NULL, message TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS minute (
    run TEXT NOT NULL, minute INTEGER NOT NULL, requests INTEGER, adds INTEGER, retries INTEGER,
    throttled INTEGER, server_errors INTEGER, network INTEGER, statuses TEXT,
    p50_ms REAL, p95_ms REAL, max_ms REAL, PRIMARY KEY (run, minute)
);
"""
# A minute of a run's requests (send/timeline.py): its start (epoch seconds), then the figures.
MINUTE_COLUMNS = ("minute", "requests", "adds", "retries", "throttled", "server_errors", "network",
                  "statuses", "p50_ms", "p95_ms", "max_ms")
_ADD_MINUTE = (f"INSERT INTO minute (run, {', '.join(MINUTE_COLUMNS)}) VALUES ({', '.join('?' * 12)})"
               " ON CONFLICT (run, minute) DO UPDATE SET requests = requests + excluded.requests,"
               " adds = adds + excluded.adds, retries = retries + excluded.retries,"
               " throttled = throttled + excluded.throttled, server_errors = server_errors + excluded.server_errors,"
               " network = network + excluded.network, statuses = excluded.statuses,"
               " p50_ms = excluded.p50_ms, p95_ms = excluded.p95_ms, max_ms = max(max_ms, excluded.max_ms)")
_SKIPPED = Status.SKIPPED.value
# Each row's state for the next run: its final status, or IN_FLIGHT / RESEND.
_STATE = (f"CASE WHEN status = '{IN_FLIGHT}' OR (rerun AND in_doubt) THEN '{IN_FLIGHT}'"
          f" WHEN rerun THEN '{RESEND}' ELSE status END")


class Journal:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.touch(mode=0o600)  # it holds identifiers: owner only, like the reports
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        _add_missing_columns(self._db)
        self._pending: list[tuple] = []
        self._pending_runs: list[tuple[int, int, str]] = []
        self._lock = threading.Lock()  # group commits may come from a writer thread (see runner)
        self._log_path = self.path.with_name(self.path.name + ".inflight")
        self._acks_path = self.path.with_name(self.path.name + ".acks")
        self._absorb_logs()
        self._log = InFlightLog(self._log_path)
        self._acks = AckLog(self._acks_path)
        self._unanswered: set[int] = set()  # marked in flight, no outcome acknowledged yet

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def record(self, outcome: RowOutcome) -> None:
        self._pend(_values(outcome))

    def acknowledge(self, outcome: RowOutcome) -> None:
        """Record an answer the API gave, durably at once: a crash right after this call
        does not make the next run send the row again."""
        values = _values(outcome)
        self._acks.append(values)  # a store into a shared map: whole once its length is there
        self._unanswered.discard(outcome.row)
        self._pend(values)

    def _pend(self, values: tuple) -> None:
        self._pending.append(values)
        if len(self._pending) >= FLUSH_ROWS:
            self.flush()

    def record_skipped(self, runs: Iterable[tuple[int, int]], message: str) -> None:
        """Runs (first_row, last_row) of rows skipped for one reason, none of them with a
        final outcome yet (a row an earlier run left in flight may be among them)."""
        self._pending_runs.extend([(first, last, message) for first, last in runs])  # one atomic step
        if len(self._pending_runs) >= FLUSH_ROWS:
            self.flush()

    def mark_in_flight(self, row: int) -> Awaitable[None] | None:
        """Note, durably, that a request for a row is about to go out (at once here: None;
        PostgreSQL's journal returns its commit to wait for)."""
        self._log.append(row)
        self._unanswered.add(row)
        return None

    def unmark_in_flight(self, row: int) -> None:
        """The request noted by mark_in_flight did not go out after all (a TLS certificate
        refused at the handshake): not in doubt. (After a crash the log still names it:
        the safe side.)"""
        self._unanswered.discard(row)

    def reopen_failed(self) -> int:
        """Make the rows the API refused (or that failed on the network) due to be sent
        again by the next run; validation errors stay. Returns how many."""
        with self._lock:
            return self._db.execute(
                "UPDATE outcome SET rerun = 1 WHERE status = ? AND stage IN (?, ?, ?) AND NOT ifnull(rerun, 0)",
                (Status.ERROR.value, Stage.API.value, Stage.CREATE.value, Stage.NETWORK.value)).rowcount

    def _absorb_logs(self) -> None:
        """Turn the logs a crashed run left into outcomes and in_flight rows, then empty them."""
        marked = read_in_flight_log(self._log_path)
        answered: set[int] = set()
        with self._lock:
            self._db.execute("BEGIN")
            for batch in read_ack_log(self._acks_path, len(_COLUMNS)):  # in the order answered: the last one stands
                self._db.executemany(_INSERT, batch)
                answered.update(values[0] for values in batch)
            self._db.executemany(_UNANSWERED, [(row,) for row in marked - answered])
            self._db.execute("COMMIT")
        for path in (self._log_path, self._acks_path):
            if path.exists():
                os.truncate(path, 0)

    def flush(self) -> None:
        """Commit what was recorded since the last flush; any thread may call it (record()
        appends from the event loop meanwhile: a list append is atomic, and a row appended
        before the swap is in the list taken). A commit that fails puts its rows back,
        ahead of those recorded since, for the next flush."""
        with self._lock:
            rows, self._pending = self._pending, []
            runs, self._pending_runs = self._pending_runs, []
            if not rows and not runs:
                return
            try:
                self._commit(rows, runs)
            except BaseException:
                self._pending[:0] = rows
                self._pending_runs[:0] = runs
                raise

    def give_up_unanswered(self) -> None:
        """The rows whose requests went out and will get no answer in this run (a second
        Ctrl-C gave up on them) become in_flight: in doubt, sent again by the next run."""
        if self._unanswered:
            with self._lock:
                self._db.executemany(_UNANSWERED, [(row,) for row in self._unanswered])
            self._unanswered.clear()

    def _commit(self, rows: list[tuple], runs: list[tuple[int, int, str]]) -> None:
        self._db.execute("BEGIN")
        try:
            self._db.executemany(_INSERT, rows)
            self._db.executemany("INSERT OR REPLACE INTO skipped_run (first_row, last_row, message)"
                                 " VALUES (?, ?, ?)", runs)
            self._db.executemany("DELETE FROM outcome WHERE row BETWEEN ? AND ? AND (status = ? OR rerun)",
                                 [(first, last, IN_FLIGHT) for first, last, _ in runs])
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _query(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, parameters).fetchall()

    def states(self, first_row: int, last_row: int) -> dict[int, str]:
        """Each journaled row's state in a row range: a final status (settled), or
        IN_FLIGHT / RESEND (the next run sends it again); the rows of runs too (what a
        shard's input does not hold is never asked for)."""
        found = dict(self._query(f"SELECT row, {_STATE} FROM outcome WHERE row BETWEEN ? AND ?",
                                 (first_row, last_row)))
        for first, last, _ in self.skipped_runs(first_row, last_row):
            found.update(dict.fromkeys(range(max(first, first_row), min(last, last_row) + 1), _SKIPPED))
        return found

    def skipped_runs(self, first_row: int, last_row: int) -> list[tuple[int, int, str]]:
        """The runs that share a row with a row range, in order (runs never overlap, so
        the one that starts last before the range is the only one that can reach in)."""
        return self._query(
            "SELECT first_row, last_row, message FROM skipped_run WHERE first_row <= ?2 AND first_row >="
            " COALESCE((SELECT MAX(first_row) FROM skipped_run WHERE first_row <= ?1), ?1)"
            " AND last_row >= ?1 ORDER BY first_row", (first_row, last_row))

    def outcomes(self, first_row: int, last_row: int, *, successes: bool = True) -> dict[int, RowOutcome]:
        """The outcomes in a row range, a row in flight as not sent (without the
        successes, which `successes()` reads faster, when `successes` is false)."""
        excluded = () if successes else (Status.SUCCESS.value,)
        found = self._query(f"SELECT {', '.join(_COLUMNS)} FROM outcome WHERE row BETWEEN ? AND ?"
                            f" AND status NOT IN ({', '.join('?' * len(excluded))})",
                            (first_row, last_row, *excluded))
        return {values[0]: _outcome(values) for values in found}

    def successes(self, first_row: int, last_row: int) -> list[tuple]:
        """The successes in a row range, in order, as (row, action, identifier, customer_id,
        http_status, attempts, warnings, in_doubt): most rows of a report, so no object each."""
        return self._query(
            "SELECT row, ifnull(action, ''), ifnull(identifier, ''), ifnull(customer_id, ''), http_status,"
            " ifnull(attempts, 0), ifnull(warnings, ''), ifnull(in_doubt, 0) FROM outcome"
            " WHERE row BETWEEN ? AND ? AND status = ? ORDER BY row", (first_row, last_row, Status.SUCCESS.value))

    def record_minutes(self, run: str, minutes: list[tuple]) -> None:
        """A run's requests per minute (send/timeline.py): what report.html charts. A
        minute written twice (the run's last, partly taken before) adds up."""
        if not minutes:
            return
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany(_ADD_MINUTE, [(run, *values) for values in minutes])

    def minutes(self) -> list[dict]:
        """Every run's minutes, in time order."""
        names = ("run", *MINUTE_COLUMNS)
        return [dict(zip(names, values))
                for values in self._query(f"SELECT {', '.join(names)} FROM minute ORDER BY minute, run")]

    def set_meta(self, **values: str) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                 list(values.items()))

    def meta(self) -> dict[str, str]:
        return dict(self._query("SELECT key, value FROM meta"))

    def close(self) -> None:
        """Commit what is pending; rows still unanswered become in_flight; the logs, no
        longer needed, go. When a commit fails, the logs stay for the next open to take in."""
        committed = False
        try:
            self.flush()
            self.give_up_unanswered()
            committed = True
        finally:
            self._release(committed)

    def _release(self, committed: bool) -> None:
        """close()'s files and connection; the logs go only once what they hold is committed."""
        self._log.close()
        self._acks.close()
        if committed:
            for path in (self._log_path, self._acks_path):
                path.unlink(missing_ok=True)
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


# send.answers.classify's rules, read back from what an earlier version journaled: errors[] with a
# code are the row's own unless 401/403/429/408/5xx or code 521; without one, 404/405/415
# (a wrong URL) and a 2xx that was not the API's JSON are the run's too.
_RERUN_BEFORE = """UPDATE outcome SET rerun = 1 WHERE status = 'error' AND (
    stage IN ('network', 'not_sent') OR http_status IN (401, 403, 408, 429) OR http_status >= 500
    OR code = '521' OR (ifnull(code, '') = '' AND (http_status IN (404, 405, 415)
                                                   OR http_status BETWEEN 200 AND 299)))"""


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """A journal written by an earlier version may lack `rerun` (its errors get it by the
    rules the pool now applies: the classification of their HTTP status) and `action`
    (its successes were all updates)."""
    have = {name for _, name, *_ in db.execute("PRAGMA table_info(outcome)")}
    if "rerun" not in have:
        with db:
            db.execute("BEGIN")
            db.execute("ALTER TABLE outcome ADD COLUMN rerun INTEGER")
            db.execute(_RERUN_BEFORE)
    if "action" not in have:
        db.execute("ALTER TABLE outcome ADD COLUMN action TEXT")


def _values(o: RowOutcome) -> tuple:
    return (o.row, o.status.value, o.stage.value if o.stage else None, o.code, o.message, o.http_status,
            o.attempts, o.customer_id, o.warnings, o.identifier, int(o.in_doubt), int(o.rerun), o.action)


def set_status(path: Path, status: str) -> None:
    """Set another job's status without opening it as a Journal (which would take in,
    and empty, the logs of a process that may still be writing them)."""
    db = sqlite3.connect(path, timeout=5.0)
    try:
        with db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('status', ?)", (status,))
    finally:
        db.close()


def applied_anything(path: Path) -> bool:
    """Whether another job's journal has a row that succeeded, or was sent without an
    answer (it may have been applied); read without taking in its logs."""
    try:
        db = sqlite3.connect(path, timeout=1.0)
        try:
            return db.execute("SELECT 1 FROM outcome WHERE status IN (?, ?) OR in_doubt LIMIT 1",
                              (Status.SUCCESS.value, IN_FLIGHT)).fetchone() is not None
        finally:
            db.close()
    except sqlite3.Error:
        return True  # unreadable: assume the worst


_STATUSES = {status.value: status for status in Status}
_STAGES = {stage.value: stage for stage in Stage}


def _outcome(values: tuple) -> RowOutcome:
    (row, status, stage, code, message, http_status, attempts,
     customer_id, warnings, identifier, in_doubt, rerun, action) = values
    if status == IN_FLIGHT:  # sent, never answered
        return RowOutcome(row, Status.SKIPPED, Stage.NOT_SENT, in_doubt=True, rerun=True)
    return RowOutcome(row, _STATUSES[status], _STAGES.get(stage), code or "",
                      message or "", http_status, attempts or 0, customer_id or "",
                      warnings or "", identifier or "", bool(in_doubt), bool(rerun), action or "")
