"""The Airflow operator's earlier import path: `batch_updater.integrations.airflow` is where
it lives now (DAG files that import it from here keep working, with a warning)."""

import warnings
from typing import Any

from .integrations import airflow as _airflow

warnings.warn("import the operator from batch_updater.integrations.airflow", DeprecationWarning, stacklevel=2)


def __getattr__(name: str) -> Any:
    return getattr(_airflow, name)  # the operator class is built on first use, as there
