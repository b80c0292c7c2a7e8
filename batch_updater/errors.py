"""The exceptions that stop a whole run, and the exit code each maps to.

Per-row problems are values (RowOutcome), never exceptions. Only what ends the run
raises, and the CLI maps these to exit codes in one place::

    BatchUpdaterError            exit 2 unless a subclass says otherwise
    ├── UsageError               a malformed command-line value
    ├── ConfigError              bad config file, option or environment variable
    ├── InputError               unreadable input file, bad header, too many invalid rows
    ├── JobLocked                another process runs the same job
    └── RunAborted               exit 3: auth failure, API down, reports not writable
        └── StateUnavailable     the job state's PostgreSQL refused or dropped the connection

A run stopped by a signal or --max-runtime is no exception: its summary says exit 4.
"""

from __future__ import annotations


class BatchUpdaterError(Exception):
    exit_code = 2


class UsageError(BatchUpdaterError):
    pass


class ConfigError(BatchUpdaterError):
    """Every problem found in the configuration, one per line."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class InputError(BatchUpdaterError):
    pass


class JobLocked(BatchUpdaterError):
    pass


class RunAborted(BatchUpdaterError):
    exit_code = 3


class StateUnavailable(RunAborted):
    pass
