"""An Airflow operator: run one input file (or one shard of it) as a task.

    from batch_updater.integrations.airflow import BatchUpdaterOperator
    BatchUpdaterOperator(task_id="update", input_path="/data/customers.csv",
                         conn_id="capillary_eu", shard="1/4")

`input_path` and `output_dir` may be object-storage URLs (s3://bucket/exports/customers.csv),
as on the command line.

The Airflow connection supplies host (base URL), login (till code or OAuth key),
password (password or secret) and extras: source, identifier_name, account_id, auth, mode,
and the API key's limits rate_per_minute and create_rate_per_minute: a shard runs with its
share of each (input/shards.shard_limits, the CLI's rule), unless the operator's own
rate_per_minute / create_rate_per_minute give the shard's. The summary goes to XCom once,
as the return value. The job state goes to PostgreSQL (README: "Job state in PostgreSQL")
with `state_conn_id`, an Airflow Postgres connection (host, port, schema = the database,
login, password), or with the connection's extra `state_url`; its password reaches the run
as BATCH_UPDATER_STATE_PASSWORD, never a log. Exit-code policy:
0 succeeds; 1 (some rows in errors.csv) fails the task unless `fail_on_row_errors=False`;
2, 3 and 4 fail it. On kill (SIGTERM) the run stops cleanly; a retry of the task resumes.

This module is imported only when used; the rest of batch-updater never needs Airflow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any
from urllib.parse import quote, urlencode

from ..config import PASSWORD_ENV, STATE_PASSWORD_ENV, load_config


def connection_overrides(host: str | None, login: str | None,
                         extras: Mapping[str, Any] | None) -> dict[str, Any]:
    """Config overrides ("section.key") from an Airflow connection's fields."""
    extras = dict(extras or {})
    overrides: dict[str, Any] = {"api.base_url": host or None, "api.username": login or None}
    for key in ("source", "identifier_name", "account_id", "auth", "use_async", "mode"):
        if key in extras:
            overrides[f"api.{key}"] = extras[key]
    if "rate_per_minute" in extras:
        overrides["limits.rate_per_minute"] = extras["rate_per_minute"]
    if "create_rate_per_minute" in extras:
        overrides["limits.create.rate_per_minute"] = extras["create_rate_per_minute"]
    if extras.get("state_url"):
        overrides["state.url"] = extras["state_url"]
    return overrides


# A Postgres connection's extras that are libpq's connection parameters (TLS, timeouts).
LIBPQ_EXTRAS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout", "options",
                "target_session_attrs")


def state_url(host: str | None, port: int | None, schema: str | None, login: str | None,
              extras: Mapping[str, Any] | None = None) -> str:
    """An Airflow Postgres connection's fields as [state] url (its password goes apart)."""
    user = f"{quote(login, safe='')}@" if login else ""
    address = f"[{host}]" if host and ":" in host else (host or "")
    query = urlencode({k: str(v) for k, v in (extras or {}).items() if k in LIBPQ_EXTRAS and v not in (None, "")})
    return f"postgresql://{user}{address}{f':{port}' if port else ''}/{schema or 'postgres'}" + (
        f"?{query}" if query else "")


def run_task(input_path: str, *, host: str | None, login: str | None, password: str | None,
             extras: Mapping[str, Any] | None = None, config_path: str | None = None,
             shard: str | None = None, output_dir: str | None = None,
             max_runtime_seconds: float | None = None, environ: Mapping[str, str] | None = None,
             rate_per_minute: int | None = None, create_rate_per_minute: int | None = None,
             state: tuple[str, str | None] | None = None) -> dict[str, Any]:
    """What the operator does, without Airflow: build the config, run, return the summary.
    `rate_per_minute` / `create_rate_per_minute`: the shard's own limits (default: its share
    of the key's). `state`: (URL, password) of the job state's PostgreSQL."""
    import os

    from ..input.shards import ADD_LIMIT, UPDATE_LIMIT, Shard, shard_limits
    from ..runner import run

    overrides = connection_overrides(host, login, extras)
    overrides["output.dir"] = output_dir
    own = {UPDATE_LIMIT: rate_per_minute, ADD_LIMIT: create_rate_per_minute}
    overrides.update({key: value for key, value in own.items() if value is not None})
    environment = dict(os.environ if environ is None else environ)
    if password:
        environment[PASSWORD_ENV] = password
    if state:
        overrides["state.url"] = state[0]
        if state[1]:
            environment[STATE_PASSWORD_ENV] = state[1]
    parsed = Shard.parse(shard) if shard else None
    config = shard_limits(load_config(config_path, overrides=overrides, environ=environment), parsed,
                          [key for key, value in own.items() if value is not None])
    summary = run(config, input_path, max_runtime_seconds=max_runtime_seconds, shard=parsed)
    return asdict(summary)


def task_failed(summary: Mapping[str, Any], fail_on_row_errors: bool = True) -> str | None:
    """Why the task fails by the exit-code policy, or None when it succeeds."""
    code = summary["exit_code"]
    if code == 0 or (code == 1 and not fail_on_row_errors):
        return None
    if code == 1:
        return f"{summary['errors']} rows failed; see {summary['reports']['errors']}"
    return f"batch-updater exit {code}: {summary.get('reason') or summary.get('status')}"


def __getattr__(name: str):
    if name == "BatchUpdaterOperator":
        return _operator_class()
    raise AttributeError(name)


def _operator_class():
    try:
        from airflow.exceptions import AirflowException
        try:  # Airflow 3's task SDK
            from airflow.sdk import BaseHook, BaseOperator
        except ImportError:  # Airflow 2
            from airflow.hooks.base import BaseHook
            from airflow.models import BaseOperator
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("BatchUpdaterOperator needs Apache Airflow: pip install apache-airflow") from exc

    class BatchUpdaterOperator(BaseOperator):
        template_fields = ("input_path", "shard", "output_dir", "config_path", "state_conn_id")

        def __init__(self, *, input_path: str, conn_id: str = "capillary_default",
                     config_path: str | None = None, shard: str | None = None,
                     output_dir: str | None = None, max_runtime_seconds: float | None = None,
                     fail_on_row_errors: bool = True, rate_per_minute: int | None = None,
                     create_rate_per_minute: int | None = None, state_conn_id: str | None = None, **kwargs):
            super().__init__(**kwargs)
            self.input_path, self.conn_id, self.config_path = input_path, conn_id, config_path
            self.shard, self.output_dir = shard, output_dir
            self.max_runtime_seconds = max_runtime_seconds
            self.fail_on_row_errors = fail_on_row_errors
            self.rate_per_minute, self.create_rate_per_minute = rate_per_minute, create_rate_per_minute
            self.state_conn_id = state_conn_id

        def execute(self, context):
            connection = BaseHook.get_connection(self.conn_id)
            summary = run_task(self.input_path, host=connection.host, login=connection.login,
                               password=connection.password, extras=connection.extra_dejson,
                               config_path=self.config_path, shard=self.shard,
                               output_dir=self.output_dir,
                               max_runtime_seconds=self.max_runtime_seconds,
                               rate_per_minute=self.rate_per_minute,
                               create_rate_per_minute=self.create_rate_per_minute, state=self._state())
            failure = task_failed(summary, self.fail_on_row_errors)
            if failure:
                raise AirflowException(failure)
            return summary

        def _state(self) -> tuple[str, str | None] | None:
            if not self.state_conn_id:
                return None  # the Capillary connection's extra state_url, if any, applies
            state = BaseHook.get_connection(self.state_conn_id)
            return state_url(state.host, state.port, state.schema, state.login, state.extra_dejson), state.password

    BatchUpdaterOperator.__module__ = __name__
    globals()["BatchUpdaterOperator"] = BatchUpdaterOperator
    return BatchUpdaterOperator
