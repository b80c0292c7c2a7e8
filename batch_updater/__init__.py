"""batch-updater: bulk customer updates from CSV and Excel files to Capillary's customer update API.

    from batch_updater import load_config, run
    summary = run(load_config("config/sandbox.toml"), "samples/customers.csv")
    print(summary.exit_code, summary.success, summary.errors)

The public surface is what this module exports; everything else is internal. The package
reads as the flow of a run: input → rows → send → state → output (see runner.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import BatchUpdaterError, ConfigError, InputError, JobLocked, RunAborted, UsageError

if TYPE_CHECKING:
    from .config import Config, load_config
    from .runner import run
    from .summary import RunStatus, RunSummary

__all__ = ["BatchUpdaterError", "Config", "ConfigError", "InputError", "JobLocked", "RunAborted", "RunStatus",
           "RunSummary", "UsageError", "load_config", "run"]


def __getattr__(name: str):
    # Imported on first use so `import batch_updater` (and the CLI's --help) stay fast.
    if name == "run":
        from .runner import run
        return run
    if name in ("RunSummary", "RunStatus"):
        from . import summary
        return getattr(summary, name)
    if name in ("Config", "load_config"):
        from . import config
        return getattr(config, name)
    raise AttributeError(name)
