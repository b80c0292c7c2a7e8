"""Jobs: one input file's content plus the settings that change what is sent.

A job lives in `<output dir>/<file stem>-<job id>/`: its journal, a lock file while a
run is in progress, and one `run-<UTC time>/` folder per run. Running the same file
with the same settings again resumes the job (or, when it finished, replays its
summary); a changed file while an earlier job of that path is unfinished is refused
unless the user asks to restart.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Protocol

import orjson

from ..config import Config
from ..errors import InputError, JobLocked
from ..input.shards import Shard
from ..storage import Origin
from .journal import Journal, applied_anything, read_meta, set_status

JOURNAL_NAME = "journal.sqlite"
LOCK_NAME = "lock"


class JobStatus(StrEnum):
    NEW = "new"
    RUNNING = "running"          # or its process died: the next run resumes it
    STOPPED = "stopped"          # a signal or --max-runtime (exit 4)
    ABORTED = "aborted"          # exit 3
    INCOMPLETE = "incomplete"    # finished, but some rows failed for the run's reason: the next run sends them
    FINISHED = "finished"        # nothing left to send: a rerun replays the summary
    ABANDONED = "abandoned"      # set aside for a job of the same file with other content or settings

    @classmethod
    def after(cls, exit_code: int, to_send_again: int) -> JobStatus:
        """The job's status once a run ended with `exit_code`."""
        if exit_code in (3, 4):
            return cls.ABORTED if exit_code == 3 else cls.STOPPED
        return cls.INCOMPLETE if to_send_again else cls.FINISHED


# A changed file is refused while an earlier job of it is one of these.
UNFINISHED = (JobStatus.RUNNING, JobStatus.STOPPED, JobStatus.ABORTED)


class _Lock(Protocol):
    def close(self) -> None: ...


@dataclass
class Job:
    id: str
    folder: Path
    journal: Journal
    status: JobStatus     # as found
    lock: _Lock | None    # a lock file (flock), or the PostgreSQL session holding the job's lock

    @property
    def finished(self) -> bool:
        return self.status is JobStatus.FINISHED

    @property
    def resuming(self) -> bool:
        return self.status in UNFINISHED or self.status is JobStatus.INCOMPLETE

    def close(self) -> None:
        try:
            self.journal.close()
        finally:
            if self.lock is not None:
                self.lock.close()  # closing the file (or the session) releases the lock


def job_identity(path: Path, config: Config, shard: Shard | None = None, origin: Origin | None = None) -> str:
    """A hash of the input's content (or of an object's URL, version and size) and of every
    setting that changes what is sent."""
    return _job_facts(path, config, shard, origin)[0]


def _job_facts(path: Path, config: Config, shard: Shard | None = None,
               origin: Origin | None = None) -> tuple[str, str, dict[str, object]]:
    """The job id, the input's own digest and the settings, by name (kept in the journal,
    so that a refusal can say what changed). An object on storage is known by its URL,
    version (ETag) and size, before its download ends: its bytes are not hashed."""
    content = hashlib.sha256()
    if origin is not None:
        content.update(f"{origin.url}\n{origin.version}\n{origin.size}".encode())
    else:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                content.update(block)
    digest = content.copy()  # the file's bytes, then the settings
    api = config.api
    settings: dict[str, object] = {
        "[api] base_url": api.base_url, "[api] source": api.source, "[api] account_id": api.account_id,
        "[api] identifier_name": api.identifier_name, "[api] use_async": api.use_async,
        "[columns]": sorted(config.columns.items()), "[input]": repr(config.input),
        "--shard": str(shard or ""), "--only-changed": config.state.only_changed}
    if api.mode != "update":  # named only when not the default: the ids of update jobs stay as they were
        settings["[api] mode"] = api.mode
        settings["[api] add_requires"] = list(api.add_requires or ())
    digest.update(orjson.dumps(list(settings.values()), default=str))
    return digest.hexdigest()[:12], content.hexdigest(), settings


def job_folder(config: Config, input_path: Path, job_id: str, shard: Shard | None = None,
               origin: Origin | None = None) -> Path:
    stem = (origin.name if origin else input_path.name).split(".")[0] or "input"
    if shard:
        stem += f"-shard{shard.index}of{shard.count}"
    return Path(config.output.dir) / f"{stem}-{job_id}"


def shard_of(folder_name: str) -> str | None:
    """'K/N' for a job folder job_folder named for shard K of N, else None."""
    found = re.search(r"-shard(\d+)of(\d+)-[0-9a-f]+$", folder_name)
    return f"{found[1]}/{found[2]}" if found else None


@dataclass(frozen=True)
class JobPlace:
    """Who a job is (its id, the input's digest, the settings) and where its folder is."""

    id: str
    content: str
    settings: dict[str, object]
    folder: Path
    input: str  # as the journal names it: the object's URL, or the file's full path


def place_job(config: Config, input_path: Path, shard: Shard | None = None,
              origin: Origin | None = None) -> JobPlace:
    """The job of `input_path` (`origin`: the object on storage it is a copy of), its folder made."""
    job_id, content, settings = _job_facts(input_path, config, shard, origin)
    place = JobPlace(job_id, content, settings, job_folder(config, input_path, job_id, shard, origin),
                     origin.url if origin else str(input_path.resolve()))
    _make_private_dirs(place.folder)
    return place


def open_job(config: Config, input_path: Path, *, restart: bool = False, shard: Shard | None = None,
             origin: Origin | None = None) -> Job:
    """`origin`: the object on storage that `input_path` is a copy of (its identity)."""
    place = place_job(config, input_path, shard, origin)
    lock = _take_lock(place.folder / LOCK_NAME, place.id)
    try:
        _refuse_changed_input(config, place.input, place.id, restart, place.folder, place.content, place.settings)
        journal_path = place.folder / JOURNAL_NAME
        if restart and journal_path.exists():
            Journal(journal_path).close()  # takes in the logs a crashed run left, then removes them
            _set_aside(journal_path)
        journal = Journal(journal_path)
        status = JobStatus(journal.meta().get("status", JobStatus.NEW))
        journal.set_meta(job_id=place.id, input=place.input, content_sha256=place.content,
                         settings=orjson.dumps(place.settings, default=str).decode())
        return Job(place.id, place.folder, journal, status, lock)
    except BaseException:
        lock.close()
        raise


def _make_private_dirs(folder: Path) -> None:
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.mkdir(mode=0o700, exist_ok=True)
        if folder.stat().st_mode & 0o077:
            folder.chmod(0o700)  # made by an older version, or by hand: it holds personal data
    except OSError as exc:
        raise InputError(f"cannot create the output folder {folder} ({exc.strerror});"
                         " choose another with --output-dir") from None


def _take_lock(path: Path, job_id: str) -> IO[str]:
    """An flock held for the whole run; the kernel releases it when the process dies,
    so a lock left by a killed run is simply taken over."""
    # held open for the whole run, so no `with`
    handle = open(os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600), "a+", encoding="utf-8")  # noqa: SIM115
    os.fchmod(handle.fileno(), 0o600)  # one made by an older version may be 0644: it names host and process
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise JobLocked(f"job {job_id} is already running ({holder}); wait for it to finish"
                        " or stop it, then run again to resume") from None
    handle.seek(0)
    handle.truncate()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    handle.write(f"process {os.getpid()} on {socket.gethostname()}, started {started}")
    handle.flush()
    return handle


def _refuse_changed_input(config: Config, resolved: str, job_id: str, restart: bool, folder: Path,
                          content: str, settings: dict[str, object]) -> None:
    """An unfinished job of the same input (resolved path or URL; and shard) with other content
    or settings blocks us, unless `restart`, or unless it changed only the base URL and nothing
    was (or may have been) applied through the old one: a wrong or dead URL, now corrected."""
    stem = folder.name.rsplit("-", 1)[0]
    for journal_path in sorted(Path(config.output.dir).glob(f"{stem}-*/{JOURNAL_NAME}")):
        meta = read_meta(journal_path)
        if meta.get("job_id") == job_id or meta.get("input") != resolved:
            continue
        if meta.get("status") not in UNFINISHED:
            continue
        changes = _what_changed(meta, content, settings)
        if restart or (list(changes) == ["[api] base_url"] and not _applied_anything(journal_path)):
            _abandon(journal_path, meta.get("job_id", "?"))
            continue
        changed = ", ".join(f"{name} (was {before})" if name.startswith("[api]") else name
                            for name, before in changes.items()) or "the file or the settings"
        raise InputError(
            f"{resolved}: {changed} changed since job {meta.get('job_id')} stopped unfinished"
            f" ({journal_path.parent}); undo the change to resume that job, or run with --restart to"
            " start over with the file and settings as they are now")


def _abandon(journal_path: Path, job_id: str) -> None:
    """Mark another job abandoned, unless its process still runs (its lock says so)."""
    lock = _take_lock(journal_path.parent / LOCK_NAME, job_id)
    try:
        set_status(journal_path, JobStatus.ABANDONED)
    finally:
        lock.close()


def _what_changed(meta: dict[str, str], content: str, settings: dict[str, object]) -> dict[str, object]:
    """What differs from another job's file and settings: each name with its earlier value."""
    if "settings" not in meta:  # a journal of an earlier version: it cannot say
        return {}
    before = orjson.loads(meta["settings"])
    now = orjson.loads(orjson.dumps(settings, default=str))
    changes = {name: before.get(name) for name in now if before.get(name) != now[name]}
    return ({"the file's content": None} if meta.get("content_sha256") != content else {}) | changes


def _applied_anything(journal_path: Path) -> bool:
    """Did any row succeed, or go out without an answer, in that job? Its logs are left
    alone (its process may still run): a log not yet taken in counts as a yes."""
    for suffix in (".acks", ".inflight"):
        log = Path(str(journal_path) + suffix)
        if log.exists() and log.stat().st_size:
            return True
    return applied_anything(journal_path)


def _set_aside(journal_path: Path) -> None:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for suffix in ("", "-wal", "-shm"):  # its logs were taken in and removed before (open_job)
        old = Path(str(journal_path) + suffix)
        if old.exists():
            old.rename(journal_path.with_name(f"journal-before-restart-{stamp}.sqlite{suffix}"))


LATEST_LINK = "latest"
RUN_NAME = re.compile(r"run-\d{8}T\d{6}Z(-\d+)?")  # as runner._run_folder names them


def link_latest(run_folder: Path) -> None:
    """Point `<job folder>/latest` at this run (a real run, not a dry run), and `<output
    dir>/latest` too: a script finds the newest reports without parsing any output.
    Relative links, replaced atomically, so a reader never sees a missing link; where
    links cannot be made (some network file systems), the run goes on without them."""
    job = run_folder.parent
    for folder, target in ((job, run_folder.name), (job.parent, f"{job.name}/{run_folder.name}")):
        temporary = folder / f".{LATEST_LINK}-{os.getpid()}"
        try:
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(target)
            temporary.replace(folder / LATEST_LINK)
        except OSError:
            pass


@dataclass(frozen=True)
class JobRecord:
    """One job as `batch-updater jobs` lists it."""

    job_id: str
    input: str
    status: str
    folder: str
    last_run: str          # the newest run folder's name ("" before any)
    rows: int | None = None
    success: int | None = None
    errors: int | None = None
    skipped: int | None = None
    not_sent: int | None = None
    exit_code: int | None = None
    finished: str | None = None


def list_jobs(output_dir: Path) -> list[JobRecord]:
    """Every job under `output_dir`, the newest run first."""
    folders = [path.parent for path in Path(output_dir).glob(f"*/{JOURNAL_NAME}")
               if path.is_file() and not path.parent.is_symlink()]  # the output folder's `latest` is no job
    records = [record for record in map(_record, folders) if record is not None]
    return sorted(records, key=_newest_first, reverse=True)


def _newest_first(record: JobRecord) -> tuple[str, float]:
    """The last run's start (its folder's name, to the second), then its folder's last change."""
    if not record.last_run:
        return "", 0.0
    folder = Path(record.folder) / record.last_run
    return record.last_run.split("-", 1)[1], folder.stat().st_mtime if folder.exists() else 0.0


def _record(folder: Path) -> JobRecord | None:
    meta = read_meta(folder / JOURNAL_NAME)
    if "job_id" not in meta:
        return None  # not a job's journal (or not one at all)
    summary = orjson.loads(meta["summary"]) if meta.get("summary") else {}
    runs = sorted((p.name for p in folder.glob("run-*") if p.is_dir() and RUN_NAME.fullmatch(p.name)),
                  key=lambda name: name.split("-", 1)[1])
    status = meta.get("status", JobStatus.NEW)
    if status == JobStatus.RUNNING and not _held(folder / LOCK_NAME):
        status = "interrupted"  # its process died: the next run resumes it
    return JobRecord(meta["job_id"], meta.get("input", "?"), status,
                     str(folder), runs[-1] if runs else "", summary.get("rows"), summary.get("success"),
                     summary.get("errors"), summary.get("skipped"), summary.get("not_sent"),
                     summary.get("exit_code"), summary.get("finished"))


def _held(lock_path: Path) -> bool:
    """Does a live process hold the job's lock?"""
    try:
        with open(lock_path, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
    except BlockingIOError:
        return True
    except OSError:
        return False
