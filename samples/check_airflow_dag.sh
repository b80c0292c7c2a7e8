#!/usr/bin/env bash
# Checks that samples/airflow_dag.py parses in a real Airflow (a separate, throwaway virtual
# environment: Airflow is large and not a dependency of batch-updater). Takes a few minutes.
# scripts/airflow_check.sh goes further: it runs the DAG against the sandbox and checks the results.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${AIRFLOW_CHECK_VENV:-/tmp/batch-updater-airflow-venv}"
python3 -m venv "$venv"
[ -x "$venv/bin/airflow" ] || "$venv/bin/pip" install -q apache-airflow
"$venv/bin/pip" install -q -e .
export AIRFLOW_HOME="$(mktemp -d)"
"$venv/bin/python" - <<'PY'
try:  # Airflow 3
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 2
    from airflow.models import DagBag

bag = DagBag(dag_folder="samples/airflow_dag.py")
assert not bag.import_errors, bag.import_errors
dag = bag.dags["capillary_customer_sync"]
print("parsed:", dag.dag_id, "tasks:", sorted(dag.task_ids))
PY
