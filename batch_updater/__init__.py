"""batch-updater: bulk customer updates from CSV files to Capillary's customer update API.

    from batch_updater import load_config, run
    summary = run(load_config("config/sandbox.toml"), "samples/customers.csv")
    print(summary.exit_code, summary.success, summary.errors)
"""

from __future__ import annotations

__all__ = ["run", "load_config", "RunSummary"]


def __getattr__(name: str):
    # Imported on first use so `import batch_updater` (and the CLI's --help) stay fast.
    if name in ("run", "RunSummary"):
        from . import runner
        return getattr(runner, name)
    if name == "load_config":
        from .config import load_config
        return load_config
    raise AttributeError(name)
