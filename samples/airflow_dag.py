"""Example DAG: one big customer file spread over 4 mapped tasks, one shard each.

Each task runs `batch-updater` on its shard with its share of the rate limit (the
limit is per API key, so the shards share it: the shares add up to the connection's
rate_per_minute); a final task merges the shards' reports into one set. A retried task
resumes its shard where it stopped.

The connection `capillary_eu` holds the API (host, login, password, extras). Three
environment variables of the Airflow workers may move the files (the defaults below
otherwise); the input path may hold Airflow templates such as {{ ds }}:
    CAPILLARY_SYNC_INPUT       the day's export (default /data/exports/customers-{{ ds }}.csv)
    CAPILLARY_SYNC_OUTPUT_DIR  where the shards' reports and the merged set go
                               (default /data/batch-updater)
    CAPILLARY_SYNC_CONFIG      a batch-updater TOML config for what the connection does not
                               hold, e.g. [limits] window_seconds (default: none)
    CAPILLARY_SYNC_STATE_CONN  an Airflow Postgres connection id: the jobs' state goes there,
                               so a retry on any worker resumes its shard (default: the
                               Airflow Variable of that name, else SQLite in OUTPUT_DIR)
"""

from __future__ import annotations

import os

import pendulum

try:  # Airflow 3
    from airflow.sdk import dag, task
except ImportError:  # Airflow 2
    from airflow.decorators import dag, task

from batch_updater.integrations.airflow import BatchUpdaterOperator

SHARDS = 4
INPUT = os.environ.get("CAPILLARY_SYNC_INPUT", "/data/exports/customers-{{ ds }}.csv")
OUTPUT_DIR = os.environ.get("CAPILLARY_SYNC_OUTPUT_DIR", "/data/batch-updater")
CONFIG = os.environ.get("CAPILLARY_SYNC_CONFIG") or None
# A template, read when the task runs (not each time the DAG file is parsed); "" = none
STATE_CONN = os.environ.get("CAPILLARY_SYNC_STATE_CONN",
                            "{{ var.value.get('CAPILLARY_SYNC_STATE_CONN', '') }}")


@dag(schedule="@daily", start_date=pendulum.datetime(2026, 11, 1, tz="UTC"), catchup=False,
     tags=["capillary"])
def capillary_customer_sync():
    updates = BatchUpdaterOperator.partial(
        task_id="update_customers", input_path=INPUT, conn_id="capillary_eu", config_path=CONFIG,
        output_dir=OUTPUT_DIR, state_conn_id=STATE_CONN, fail_on_row_errors=False, retries=3,
    ).expand(shard=[f"{k}/{SHARDS}" for k in range(1, SHARDS + 1)])

    @task
    def merge(summaries: list[dict], ds: str | None = None) -> dict:
        from pathlib import Path

        from batch_updater.output.merge import merge_reports

        # A mapped task's output is a lazy sequence: index it within its length (iterating
        # reads one past the end, which Airflow logs as a missing XCom).
        folders = [Path(summaries[i]["reports"]["summary"]).parent for i in range(len(summaries))]
        # <output dir>/<input>-shardKofN-<job>/run-<time>/: the merged set goes beside the
        # shards' job folders, one per day
        return merge_reports(folders, folders[0].parent.parent / f"merged-{ds}")

    merge(updates.output)


capillary_customer_sync()
