"""Jobs whose journal is in PostgreSQL ([state] url): open, lock, refuse, list.

A job is named by its folder's name (`<file stem>[-shardKofN]-<job id>`), the same on every
host, so a run anywhere resumes it; its reports still go to this run's output folder.
While a run goes on, its session holds a PostgreSQL advisory lock on the job: session
locks end with the session, so a killed worker's lock is freed once its connection goes
(at once when the process dies; within TCP keepalive's minute or so when its host does).
"""

from __future__ import annotations

import hashlib
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ..config import Config
from ..errors import InputError, JobLocked
from ..input.shards import Shard
from ..storage import Origin, is_url
from .jobs import UNFINISHED, Job, JobRecord, JobStatus, _what_changed, place_job
from .postgres import JOB_TABLES, PgJournal, ack_log_path, connect, read_meta, set_meta


def lock_key(job_key: str) -> int:
    """The advisory lock's 64-bit key of a job."""
    return int.from_bytes(hashlib.sha256(f"batch-updater job {job_key}".encode()).digest()[:8], "big", signed=True)


def open_pg_job(config: Config, input_path: Path, *, restart: bool = False, shard: Shard | None = None,
                origin: Origin | None = None) -> Job:
    """`origin`: the object on storage that `input_path` is a copy of (its identity)."""
    place = place_job(config, input_path, shard, origin)
    key = place.folder.name
    db = connect(config.state, "lock")
    try:
        _take_lock(db, key, place.id)
        _refuse_changed_input(config, db, place.input, key, place.id, restart, place.content, place.settings)
        if restart and "job_id" in read_meta(db, key):
            PgJournal(config.state, key, db).close()  # takes in this host's log of a killed run
            _set_aside(db, key)
        _say_who_holds(db, key)
        journal = PgJournal(config.state, key, db)
        status = JobStatus(journal.meta().get("status", JobStatus.NEW))
        journal.set_meta(job_id=place.id, input=place.input, content_sha256=place.content,
                         settings=orjson.dumps(place.settings, default=str).decode(), folder=str(place.folder))
        return Job(place.id, place.folder, journal, status, db)
    except BaseException:
        db.close()
        raise


def _take_lock(db: Any, key: str, job_id: str) -> None:
    if not db.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(key),)).fetchone()[0]:
        holder = read_meta(db, key).get("holder") or "another worker"
        raise JobLocked(f"job {job_id} is already running ({holder}); wait for it to finish"
                        " or stop it, then run again to resume")


def _say_who_holds(db: Any, key: str) -> None:
    """For the message of a worker refused while this one runs the job."""
    started = datetime.now(UTC).isoformat(timespec="seconds")
    set_meta(db, key, {"holder": f"process {os.getpid()} on {socket.gethostname()}, started {started}"})


def _refuse_changed_input(config: Config, db: Any, named: str, key: str, job_id: str, restart: bool,
                          content: str, settings: dict[str, object]) -> None:
    """jobs._refuse_changed_input's rule, for the jobs of the same file name (and shard)
    in the database: the workers' paths to the file may differ."""
    stem = key.rsplit("-", 1)[0]
    others = [job for (job,) in db.execute(
        "SELECT job FROM bu_meta WHERE key = 'job_id' AND left(job, %s) = %s AND job <> %s"
        " AND strpos(job, '~') = 0 ORDER BY job", (len(stem) + 1, f"{stem}-", key))]
    for other in others:
        meta = read_meta(db, other)
        if other.rsplit("-", 1)[0] != stem or meta.get("status") not in UNFINISHED:
            continue
        if meta.get("input") != named and (is_url(named) or is_url(meta.get("input", ""))):
            continue  # an object is its URL; only local files go by name, their paths differ by worker
        changes = _what_changed(meta, content, settings)
        if restart or (list(changes) == ["[api] base_url"] and not _applied_anything(config, db, other)):
            _abandon(db, other, meta.get("job_id", "?"))
            continue
        changed = ", ".join(f"{name} (was {before})" if name.startswith("[api]") else name
                            for name, before in changes.items()) or "the file or the settings"
        raise InputError(
            f"{named}: {changed} changed since job {meta.get('job_id')} stopped unfinished"
            " (its state is in PostgreSQL); undo the change to resume that job, or run with --restart to"
            " start over with the file and settings as they are now")


def _applied_anything(config: Config, db: Any, key: str) -> bool:
    log = ack_log_path(config.state, key)
    if log.exists() and log.stat().st_size:
        return True
    return db.execute(
        "SELECT EXISTS (SELECT 1 FROM bu_outcome WHERE job = %s AND (status IN ('success', 'in_flight')"
        " OR in_doubt = 1)) OR EXISTS (SELECT 1 FROM bu_in_flight WHERE job = %s)", (key, key)).fetchone()[0]


def _abandon(db: Any, key: str, job_id: str) -> None:
    """Mark another job abandoned, unless a worker runs it now (its lock says so)."""
    _take_lock(db, key, job_id)
    try:
        set_meta(db, key, {"status": JobStatus.ABANDONED})
    finally:
        db.execute("SELECT pg_advisory_unlock(%s)", (lock_key(key),))


def _set_aside(db: Any, key: str) -> None:
    """--restart: the job's rows move under another name (kept, as the SQLite journal is)."""
    aside = f"{key}~before-restart-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}"
    with db.transaction():
        for table in JOB_TABLES:
            db.execute(f"UPDATE {table} SET job = %s WHERE job = %s", (aside, key))


def list_pg_jobs(config: Config) -> list[JobRecord]:
    """Every job in the database, the newest run first."""
    db = connect(config.state, "jobs")
    try:
        rows = db.execute("SELECT job, key, value FROM bu_meta WHERE strpos(job, '~') = 0"
                          " AND job IN (SELECT job FROM bu_meta WHERE key = 'job_id')").fetchall()
        metas: dict[str, dict[str, str]] = {}
        for job, name, value in rows:
            metas.setdefault(job, {})[name] = value
        records = [_record(db, key, meta) for key, meta in metas.items()]
    finally:
        db.close()
    return sorted(records, key=lambda r: r.last_run.split("-", 1)[-1], reverse=True)


def _record(db: Any, key: str, meta: dict[str, str]) -> JobRecord:
    summary = orjson.loads(meta["summary"]) if meta.get("summary") else {}
    status = meta.get("status", JobStatus.NEW)
    if status == JobStatus.RUNNING and not _held(db, key):
        status = "interrupted"  # its worker died: the next run resumes it
    return JobRecord(meta["job_id"], meta.get("input", "?"), status, meta.get("folder", ""),
                     meta.get("last_run", ""), summary.get("rows"), summary.get("success"),
                     summary.get("errors"), summary.get("skipped"), summary.get("not_sent"),
                     summary.get("exit_code"), summary.get("finished"))


def _held(db: Any, key: str) -> bool:
    if db.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(key),)).fetchone()[0]:
        db.execute("SELECT pg_advisory_unlock(%s)", (lock_key(key),))
        return False
    return True
