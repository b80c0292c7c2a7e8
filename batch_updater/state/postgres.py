"""The job's journal and the --only-changed store in PostgreSQL ([state] url), shared by
every worker that points at the same database.

Same promises as the SQLite journal (state/journal.py), by other means:
- a row is marked in flight in PostgreSQL, committed, before its request goes out: the
  marks are group-committed by a thread of their own, and each request waits for its
  batch's commit (one round trip shared by every request of the batch). The marks go
  through the session that holds the job's advisory lock (state/pg_jobs.py), so a worker
  that lost its lock cannot send;
- an answer is appended to a local ack log (state/crash_logs.py) the moment it is known,
  then committed with the other outcomes every FLUSH_SECONDS. The log lives in a folder
  of this host's own (not the output folder), so a run of the job on this host takes in
  what a killed run left, whatever its output folder. On another host those last answers
  are lost: their rows are in flight in PostgreSQL, so they are sent again, in doubt,
  exactly as the SQLite journal treats a row sent without an answer.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import threading
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np

from ..config import StateSettings, masked_url
from ..errors import RunAborted, StateUnavailable
from ..outcomes import RowOutcome, Stage, Status
from .crash_logs import AckLog, read_ack_log
from .journal import _COLUMNS, IN_FLIGHT, MINUTE_COLUMNS, Journal, _outcome
from .sync_state import SyncState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bu_outcome (
    job TEXT NOT NULL, row_no INTEGER NOT NULL, status TEXT NOT NULL, stage TEXT, code TEXT, message TEXT,
    http_status INTEGER, attempts INTEGER, customer_id TEXT, warnings TEXT, identifier TEXT,
    in_doubt INTEGER, rerun INTEGER, action TEXT, PRIMARY KEY (job, row_no)
);
CREATE TABLE IF NOT EXISTS bu_in_flight (job TEXT NOT NULL, row_no INTEGER NOT NULL, PRIMARY KEY (job, row_no));
CREATE TABLE IF NOT EXISTS bu_meta (job TEXT NOT NULL, key TEXT NOT NULL, value TEXT, PRIMARY KEY (job, key));
CREATE TABLE IF NOT EXISTS bu_skipped_run (
    job TEXT NOT NULL, first_row INTEGER NOT NULL, last_row INTEGER NOT NULL, message TEXT NOT NULL,
    PRIMARY KEY (job, first_row)
);
CREATE TABLE IF NOT EXISTS bu_minute (
    job TEXT NOT NULL, run TEXT NOT NULL, minute BIGINT NOT NULL, requests INTEGER, adds INTEGER,
    retries INTEGER, throttled INTEGER, server_errors INTEGER, network INTEGER, statuses TEXT,
    p50_ms DOUBLE PRECISION, p95_ms DOUBLE PRECISION, max_ms DOUBLE PRECISION, PRIMARY KEY (job, run, minute)
);
CREATE TABLE IF NOT EXISTS bu_synced (key BIGINT PRIMARY KEY, digest BIGINT NOT NULL, updated TEXT);
"""
_SCHEMA_LOCK = 0x62755F736368656D  # concurrent CREATE TABLE IF NOT EXISTS can collide: one at a time
_PG_COLUMNS = ("row_no", *_COLUMNS[1:])
_ARRAY_TYPES = ("int", "text", "text", "text", "text", "int", "int", "text", "text", "text", "int", "int", "text")
_UNNEST = f"SELECT %s, * FROM unnest({', '.join(f'%s::{t}[]' for t in _ARRAY_TYPES)})"
_UPDATE_ALL = ", ".join(f"{c} = excluded.{c}" for c in _PG_COLUMNS[1:])
_UPSERT = (f"INSERT INTO bu_outcome (job, {', '.join(_PG_COLUMNS)}) {_UNNEST}"
           f" ON CONFLICT (job, row_no) DO UPDATE SET {_UPDATE_ALL}")
# An answer from a crashed run's log: it stands unless a later run settled the row since.
_ABSORB = _UPSERT + " WHERE bu_outcome.status = 'in_flight' OR bu_outcome.rerun = 1"
_UNANSWERED = ("INSERT INTO bu_outcome (job, row_no, status, in_doubt, rerun)"
               " SELECT %s, unnest(%s::int[]), 'in_flight', 1, 1 ON CONFLICT (job, row_no) DO UPDATE"
               " SET status = 'in_flight', in_doubt = 1, rerun = 1"
               " WHERE bu_outcome.status = 'in_flight' OR bu_outcome.rerun = 1")
_STATE = (f"CASE WHEN status = '{IN_FLIGHT}' OR (rerun = 1 AND in_doubt = 1) THEN '{IN_FLIGHT}'"
          " WHEN rerun = 1 THEN 'resend' ELSE status END")
_ADD_MINUTE = (f"INSERT INTO bu_minute (job, run, {', '.join(MINUTE_COLUMNS)})"
               f" VALUES ({', '.join(['%s'] * 13)}) ON CONFLICT (job, run, minute) DO UPDATE SET"
               " requests = bu_minute.requests + excluded.requests, adds = bu_minute.adds + excluded.adds,"
               " retries = bu_minute.retries + excluded.retries,"
               " throttled = bu_minute.throttled + excluded.throttled,"
               " server_errors = bu_minute.server_errors + excluded.server_errors,"
               " network = bu_minute.network + excluded.network, statuses = excluded.statuses,"
               " p50_ms = excluded.p50_ms, p95_ms = excluded.p95_ms,"
               " max_ms = greatest(bu_minute.max_ms, excluded.max_ms)")
T = TypeVar("T")
JOB_TABLES = ("bu_outcome", "bu_in_flight", "bu_meta", "bu_skipped_run", "bu_minute")


def where(settings: StateSettings) -> str:
    """The database as messages name it: host and database, never the password."""
    parts = urlsplit(settings.url or "")
    host = parts.hostname or dict(p.partition("=")[::2] for p in parts.query.split("&")).get("host", "local socket")
    return f"{host}/{parts.path.strip('/')}"


def connect(settings: StateSettings, purpose: str) -> Any:
    """A connection (autocommit) with TCP keepalives, so that a worker that vanished loses
    its session, and its locks, within a minute or so; a failure is one line, exit 3."""
    db = _connected(settings, purpose)
    _create_schema(db, settings)
    return db


def probe(settings: StateSettings) -> str:
    """What `check` says of the database, changing nothing: the server and whether the tables
    are there yet; StateUnavailable when it cannot be reached or refuses the login."""
    with _connected(settings, "check") as db:
        version = db.execute("SHOW server_version").fetchone()[0]
        made = _tables_made(db)
        user, schema, may_create = db.execute(
            "SELECT current_user, current_schema(),"
            " coalesce(has_schema_privilege(current_schema(), 'CREATE'), false)").fetchone()
    if made:
        return f"PostgreSQL {version} at {where(settings)}: its tables are there"
    if not may_create:
        raise StateUnavailable(f"PostgreSQL at {where(settings)}: the job state's tables are not there yet and"
                               f" {user} may not create them in schema {schema or '(none on the search_path)'}:"
                               f" GRANT CREATE ON SCHEMA {schema or 'public'} TO {user}, or let a user who may"
                               " run once")
    return f"PostgreSQL {version} at {where(settings)}: the first run makes its tables"


def _connected(settings: StateSettings, purpose: str) -> Any:
    import psycopg

    password = settings.password.reveal()
    options: dict[str, Any] = {"password": password} if password else {}
    try:
        db = psycopg.connect(settings.url or "", autocommit=True, connect_timeout=10,
                             application_name=f"batch-updater {purpose}", keepalives=1, keepalives_idle=30,
                             keepalives_interval=10, keepalives_count=3, **options)
        # The client's keepalives find a dead server; the server's (these) find a dead worker,
        # whose session, and its job's lock, would otherwise stay for the OS's two hours.
        db.execute("SELECT set_config('tcp_keepalives_idle', '30', false),"
                   " set_config('tcp_keepalives_interval', '10', false),"
                   " set_config('tcp_keepalives_count', '3', false)")
        return db
    except psycopg.Error as exc:
        raise StateUnavailable(f"cannot connect to the job state in PostgreSQL at {where(settings)}"
                               f" ({_one_line(exc, password)}); check [state] url and {_PASSWORD_HINT}") from None


_PASSWORD_HINT = "BATCH_UPDATER_STATE_PASSWORD"


def _one_line(exc: BaseException, password: str) -> str:
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return text.replace(password, "***") if password else text


def failed(settings: StateSettings, exc: BaseException) -> StateUnavailable:
    """A query that failed mid-run (the server went away): one line, exit 3."""
    return StateUnavailable(f"the job state in PostgreSQL at {where(settings)} failed"
                            f" ({_one_line(exc, settings.password.reveal())}); run again to resume")


def _reported(method: Callable[..., T]) -> Callable[..., T]:
    """A PgJournal or PgSyncState method whose database error (the server went away) becomes
    one line, exit 3."""
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        import psycopg

        try:
            return method(self, *args, **kwargs)
        except psycopg.Error as exc:
            raise failed(self._settings, exc) from None
    return guarded


def _tables_made(db: Any) -> bool:
    return db.execute("SELECT bool_and(to_regclass(t) IS NOT NULL) FROM unnest(%s::text[]) AS t",
                      ([*JOB_TABLES, "bu_synced"],)).fetchone()[0]


def _create_schema(db: Any, settings: StateSettings) -> None:
    """The tables, when one is missing: CREATE is checked even for a table that exists, so a
    user without it (the tables made by another) must not ask."""
    import psycopg

    try:
        if _tables_made(db):
            return
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            db.execute(_SCHEMA)
    except psycopg.Error as exc:
        raise StateUnavailable(f"cannot make the job state's tables in PostgreSQL at {where(settings)}"
                               f" ({_one_line(exc, settings.password.reveal())}): the first run needs"
                               " CREATE on the schema (GRANT CREATE ON SCHEMA ... TO the user), or a user who"
                               " has it runs once") from None


def ack_log_path(settings: StateSettings, job_key: str) -> Path:
    """This host's ack log of a job: outside the output folder, so that any run here finds it."""
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "batch-updater" / "pg"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    database = hashlib.sha256((masked_url(settings.url) or "").encode()).hexdigest()[:12]
    return base / f"{database}-{job_key}.acks"


class PgJournal(Journal):
    """Journal's interface on PostgreSQL, for one job (`key`); see the module's docstring."""

    def __init__(self, settings: StateSettings, key: str, lock_db: Any):
        self.path = Path(where(settings))
        self._settings, self._key, self._lock_db = settings, key, lock_db
        self._pg = connect(settings, "journal")
        self._pending: list[tuple] = []
        self._pending_runs: list[tuple[int, int, str]] = []
        self._unmarked: list[int] = []
        self._lock = threading.Lock()
        self._acks_path = ack_log_path(settings, key)
        self._absorb_logs()
        self._acks = AckLog(self._acks_path)
        self._unanswered: set[int] = set()
        self._marks: list[int] = []
        self._batch: asyncio.Future | None = None
        self._marker: threading.Thread | None = None
        self._marks_ready = threading.Condition()
        self._marker_stop = False

    # -- in flight: committed before the request goes out --------------------------------------

    def mark_in_flight(self, row: int) -> Awaitable[None] | None:
        """The row's mark joins the next batch; the request waits for that batch's commit."""
        self._unanswered.add(row)
        with self._marks_ready:
            if self._marker is None:
                self._start_marker()
            assert self._batch is not None
            self._marks.append(row)
            self._marks_ready.notify()
            return self._batch

    def _start_marker(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._batch = self._loop.create_future()
        self._marker = threading.Thread(target=self._commit_marks_forever, name="in-flight", daemon=True)
        self._marker.start()

    def _commit_marks_forever(self) -> None:
        """A thread of its own: takes the marks waiting, commits them, wakes their requests."""
        while True:
            with self._marks_ready:
                while not self._marks and not self._marker_stop:
                    self._marks_ready.wait()
                if self._marker_stop:
                    return
                rows, self._marks = self._marks, []
                batch, self._batch = self._batch, self._loop.create_future()
            assert batch is not None
            try:
                self._commit_marks(rows)
                outcome: BaseException | None = None
            except Exception as exc:
                outcome = RunAborted(str(failed(self._settings, exc)))
            try:
                self._loop.call_soon_threadsafe(_settle, batch, outcome)
            except RuntimeError:  # the run's loop is closed: nobody waits any more
                return

    def _commit_marks(self, rows: list[int]) -> None:
        self._lock_db.execute("INSERT INTO bu_in_flight (job, row_no) SELECT %s, unnest(%s::int[])"
                              " ON CONFLICT DO NOTHING", (self._key, rows))

    def unmark_in_flight(self, row: int) -> None:
        self._unanswered.discard(row)
        self._unmarked.append(row)

    # -- outcomes: the local ack log first, then PostgreSQL in group commits ---------------------

    @_reported
    def _absorb_logs(self) -> None:
        """What a run of this job left: answers in this host's log, then rows in flight
        without one (in doubt, sent again); the log is emptied once they are committed."""
        with self._lock, self._pg.transaction():
            for batch in read_ack_log(self._acks_path, len(_COLUMNS)):
                self._pg.execute(_ABSORB, (self._key, *_columns(_last_per_row(batch))))
                self._pg.execute("DELETE FROM bu_in_flight WHERE job = %s AND row_no = ANY(%s::int[])",
                                 (self._key, [values[0] for values in batch]))
            rows = [row for (row,) in self._pg.execute("DELETE FROM bu_in_flight WHERE job = %s RETURNING row_no",
                                                       (self._key,))]
            if rows:
                self._pg.execute(_UNANSWERED, (self._key, rows))
        if self._acks_path.exists():
            os.truncate(self._acks_path, 0)

    @_reported
    def flush(self) -> None:
        with self._lock:
            rows, self._pending = self._pending, []
            runs, self._pending_runs = self._pending_runs, []
            unmarked, self._unmarked = self._unmarked, []
            if not rows and not runs and not unmarked:
                return
            try:
                self._commit(rows, runs, unmarked)
            except BaseException:
                self._pending[:0] = rows
                self._pending_runs[:0] = runs
                self._unmarked[:0] = unmarked
                raise

    def _commit(self, rows: list[tuple], runs: list[tuple[int, int, str]],  # type: ignore[override]
                unmarked: list[int]) -> None:
        with self._pg.transaction():
            if rows:
                self._pg.execute(_UPSERT, (self._key, *_columns(_last_per_row(rows))))
            done = [values[0] for values in rows] + unmarked
            if done:
                self._pg.execute("DELETE FROM bu_in_flight WHERE job = %s AND row_no = ANY(%s::int[])",
                                 (self._key, done))
            if runs:
                firsts, lasts, messages = (list(c) for c in zip(*runs))
                self._pg.execute(
                    "INSERT INTO bu_skipped_run (job, first_row, last_row, message)"
                    " SELECT %s, * FROM unnest(%s::int[], %s::int[], %s::text[]) ON CONFLICT (job, first_row)"
                    " DO UPDATE SET last_row = excluded.last_row, message = excluded.message",
                    (self._key, firsts, lasts, messages))
                for first, last in zip(firsts, lasts):
                    self._pg.execute("DELETE FROM bu_outcome WHERE job = %s AND row_no BETWEEN %s AND %s"
                                     " AND (status = %s OR rerun = 1)", (self._key, first, last, IN_FLIGHT))

    @_reported
    def give_up_unanswered(self) -> None:
        if self._unanswered:
            rows = sorted(self._unanswered)
            with self._lock, self._pg.transaction():
                self._pg.execute(_UNANSWERED, (self._key, rows))
                self._pg.execute("DELETE FROM bu_in_flight WHERE job = %s AND row_no = ANY(%s::int[])",
                                 (self._key, rows))
            self._unanswered.clear()

    @_reported
    def reopen_failed(self) -> int:
        with self._lock:
            return self._pg.execute(
                "UPDATE bu_outcome SET rerun = 1 WHERE job = %s AND status = %s AND stage IN (%s, %s, %s)"
                " AND coalesce(rerun, 0) = 0", (self._key, Status.ERROR.value, Stage.API.value,
                                               Stage.CREATE.value, Stage.NETWORK.value)).rowcount

    # -- reading back ----------------------------------------------------------------------------

    @_reported
    def _query(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._pg.execute(sql, parameters).fetchall()

    def states(self, first_row: int, last_row: int) -> dict[int, str]:
        found = dict(self._query(f"SELECT row_no, {_STATE} FROM bu_outcome WHERE job = %s"
                                 " AND row_no BETWEEN %s AND %s", (self._key, first_row, last_row)))
        for first, last, _ in self.skipped_runs(first_row, last_row):
            found.update(dict.fromkeys(range(max(first, first_row), min(last, last_row) + 1),
                                       Status.SKIPPED.value))
        return found

    def skipped_runs(self, first_row: int, last_row: int) -> list[tuple[int, int, str]]:
        return self._query(
            "SELECT first_row, last_row, message FROM bu_skipped_run WHERE job = %s"
            " AND first_row <= %s AND last_row >= %s ORDER BY first_row", (self._key, last_row, first_row))

    def outcomes(self, first_row: int, last_row: int, *, successes: bool = True) -> dict[int, RowOutcome]:
        excluded = [] if successes else [Status.SUCCESS.value]
        found = self._query(f"SELECT {', '.join(_PG_COLUMNS)} FROM bu_outcome WHERE job = %s"
                            " AND row_no BETWEEN %s AND %s AND NOT (status = ANY(%s::text[]))",
                            (self._key, first_row, last_row, excluded))
        return {values[0]: _outcome(values) for values in found}

    def successes(self, first_row: int, last_row: int) -> list[tuple]:
        return self._query(
            "SELECT row_no, coalesce(action, ''), coalesce(identifier, ''), coalesce(customer_id, ''), http_status,"
            " coalesce(attempts, 0), coalesce(warnings, ''), coalesce(in_doubt, 0) FROM bu_outcome"
            " WHERE job = %s AND row_no BETWEEN %s AND %s AND status = %s ORDER BY row_no",
            (self._key, first_row, last_row, Status.SUCCESS.value))

    @_reported
    def record_minutes(self, run: str, minutes: list[tuple]) -> None:
        if minutes:
            with self._lock, self._pg.transaction(), self._pg.cursor() as cursor:
                cursor.executemany(_ADD_MINUTE, [(self._key, run, *values) for values in minutes])

    def minutes(self) -> list[dict]:
        names = ("run", *MINUTE_COLUMNS)
        return [dict(zip(names, values)) for values in self._query(
            f"SELECT {', '.join(names)} FROM bu_minute WHERE job = %s ORDER BY minute, run", (self._key,))]

    @_reported
    def set_meta(self, **values: str) -> None:
        set_meta(self._pg, self._key, values, self._lock)

    def meta(self) -> dict[str, str]:
        return dict(self._query("SELECT key, value FROM bu_meta WHERE job = %s", (self._key,)))

    def _release(self, committed: bool) -> None:
        """close()'s marking thread, ack log and connection (the lock's session is Job.close's)."""
        if self._marker is not None:
            with self._marks_ready:
                self._marker_stop = True
                self._marks_ready.notify()
            self._marker.join()
        self._acks.close()
        if committed:
            self._acks_path.unlink(missing_ok=True)
        self._pg.close()


def set_meta(db: Any, key: str, values: dict[str, str], lock: threading.Lock | None = None) -> None:
    with lock or threading.Lock(), db.transaction(), db.cursor() as cursor:
        cursor.executemany("INSERT INTO bu_meta (job, key, value) VALUES (%s, %s, %s)"
                           " ON CONFLICT (job, key) DO UPDATE SET value = excluded.value",
                           [(key, name, value) for name, value in values.items()])


def read_meta(db: Any, key: str) -> dict[str, str]:
    return dict(db.execute("SELECT key, value FROM bu_meta WHERE job = %s", (key,)).fetchall())


def _settle(batch: asyncio.Future, failure: BaseException | None) -> None:
    """A batch of marks committed (or not): its requests go (or abort)."""
    if batch.done():
        return
    if failure is None:
        batch.set_result(None)
    else:
        batch.set_exception(failure)
        batch.exception()  # retrieved: requests that never await it stay quiet


def _last_per_row(batch: list[tuple]) -> list[tuple]:
    """One outcome per row, the last recorded (an upsert may not touch a row twice)."""
    return list({values[0]: values for values in batch}.values())


def _columns(batch: Iterable[tuple]) -> list[list]:
    """Outcome tuples as one array per column (one statement for a whole batch)."""
    return [list(column) for column in zip(*batch)]


class PgSyncState(SyncState):
    """SyncState's store in PostgreSQL: its batching of writes as is, lookups and commits here."""

    def __init__(self, settings: StateSettings):
        self.path = Path(where(settings))
        self._settings = settings
        self._pg = connect(settings, "state")
        self._pg_reader = connect(settings, "state lookups")
        self._init_writes()

    @_reported
    def stored(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not len(keys):
            return np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64)
        digests, unknown = self._pg_reader.execute(
            "SELECT array_agg(coalesce(s.digest, 0) ORDER BY w.i), array_agg(w.i - 1) FILTER (WHERE s.key IS NULL)"
            " FROM unnest(%s::bigint[]) WITH ORDINALITY AS w(key, i) LEFT JOIN bu_synced s ON s.key = w.key",
            (np.asarray(keys, dtype=np.int64).tolist(),)).fetchone()
        known = np.ones(len(keys), dtype=bool)
        known[np.asarray(unknown or [], dtype=np.int64)] = False
        return known, np.array(digests, dtype=np.int64)

    @_reported
    def _commit(self, forgotten: list[int], remembered: dict[int, int | None]) -> None:
        with self._pg.transaction():
            if forgotten:
                self._pg.execute("DELETE FROM bu_synced WHERE key = ANY(%s::bigint[])", (forgotten,))
            kept = sorted((key, digest) for key, digest in remembered.items() if digest is not None)
            if kept:
                now = datetime.now(UTC).isoformat(timespec="seconds")
                self._pg.execute(
                    "INSERT INTO bu_synced (key, digest, updated) SELECT k, d, %s FROM unnest(%s::bigint[],"
                    " %s::bigint[]) AS c(k, d) ON CONFLICT (key) DO UPDATE SET digest = excluded.digest,"
                    " updated = excluded.updated", (now, *(list(c) for c in zip(*kept))))

    @_reported
    def forget_all(self) -> int:
        self.flush_all()
        return self._pg.execute("DELETE FROM bu_synced").rowcount

    @_reported
    def close(self) -> None:
        try:
            self.flush_all()
        finally:
            self._pg_reader.close()
            self._pg.close()

    @_reported
    def forget_keys(self, keys) -> int:
        self.flush_all()
        return self._pg.execute("DELETE FROM bu_synced WHERE key = ANY(%s::bigint[])", (list(keys),)).rowcount

    @_reported
    def stats(self) -> dict[str, object]:
        count, oldest, newest = self._pg.execute(
            "SELECT COUNT(*), MIN(updated), MAX(updated) FROM bu_synced").fetchone()
        return {"path": f"PostgreSQL {self.path}", "customers": count, "oldest": oldest, "newest": newest}
