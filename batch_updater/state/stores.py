"""Where a job's state lives: SQLite files in the output folder (the default), or
PostgreSQL when [state] url is set. The one place that chooses; the runner and the CLI
ask here."""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..errors import ConfigError
from ..input.shards import Shard
from ..storage import Origin
from .jobs import Job, JobRecord, list_jobs, open_job
from .sync_state import SyncState


def on_postgres(config: Config) -> bool:
    return bool(config.state.url)


def open_job_state(config: Config, input_path: Path, *, restart: bool = False, shard: Shard | None = None,
                   origin: Origin | None = None) -> Job:
    """`origin`: the object on storage that `input_path` is a copy of (its identity)."""
    if not on_postgres(config):
        return open_job(config, input_path, restart=restart, shard=shard, origin=origin)
    need_driver()
    from .pg_jobs import open_pg_job

    return open_pg_job(config, input_path, restart=restart, shard=shard, origin=origin)


def open_sync_state(config: Config) -> SyncState:
    if not on_postgres(config):
        return SyncState(config.state_path)
    need_driver()
    from .postgres import PgSyncState

    return PgSyncState(config.state)


def job_records(config: Config) -> tuple[str, list[JobRecord]]:
    """Where the jobs are (as messages name it), and each job."""
    if not on_postgres(config):
        return str(config.output.dir), list_jobs(config.output.dir)
    need_driver()
    from .pg_jobs import list_pg_jobs
    from .postgres import where

    return f"PostgreSQL {where(config.state)}", list_pg_jobs(config)


def need_driver() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise ConfigError("[state] url needs the PostgreSQL driver: pip install 'batch-updater[postgres]'") from None
