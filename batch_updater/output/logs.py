"""Logging set-up: text or JSON lines, run and job ids on every record, identifiers masked.

Secrets are never passed to a logger; the redaction filter is a second line of defence
that blanks the configured secret should any message ever contain it.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

import orjson

from .masking import mask_text

LOGGER_NAME = "batch_updater"
log = logging.getLogger(LOGGER_NAME)
# The run and job a record belongs to; the runner sets it when a run starts.
run_context: ContextVar[dict[str, str]] = ContextVar("run_context", default={})  # noqa: B039 - never mutated


class ContextFilter(logging.Filter):
    """Adds run/job ids, masks identifiers and redacts the secret in every record."""

    def __init__(self, secret: str = "", mask: bool = True):
        super().__init__()
        self.secret = secret
        self.mask = mask

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.secret and self.secret in message:
            message = message.replace(self.secret, "***")
        record.msg, record.args = (mask_text(message) if self.mask else message), ()
        context = run_context.get()
        record.run_id, record.job_id = context.get("run_id", ""), context.get("job_id", "")
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "message": record.getMessage(),
            "run_id": getattr(record, "run_id", ""), "job_id": getattr(record, "job_id", ""),
        }
        entry.update(getattr(record, "fields", {}))
        return orjson.dumps(entry).decode()


TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def setup_logging(level: str = "info", fmt: str = "text", file: str | None = None,
                  secret: str = "", before_emit=None) -> ContextFilter:
    """Configure the package logger (stderr, or --log-file); return its context filter.

    `before_emit` runs before each record reaches stderr (the progress line clears itself).
    """
    context = ContextFilter(secret)
    handler: logging.Handler = (logging.FileHandler(file, encoding="utf-8") if file
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(context)
    if before_emit and not file:
        handler.addFilter(lambda record: before_emit() or True)
    log.handlers[:] = [handler]
    log.setLevel(level.upper())
    log.propagate = False
    return context
