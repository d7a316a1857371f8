"""Structured JSON logs: one object per line, with a stable event name as the message and
``request_id``/``tenant_id`` from the current context when there is one."""

from __future__ import annotations

import atexit
import contextvars
import json
import logging
import logging.handlers
import queue
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
tenant_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "tenant_id", default=None
)

# Attributes every LogRecord has; anything else was passed with extra= and is logged.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        try:
            # The C encoder: every request writes an access line, so this is on the hot path.
            return orjson.dumps(entry, default=str).decode()
        except TypeError:  # an integer beyond 64 bits, a lone surrogate: the stdlib spells them
            return json.dumps(entry, default=str)


class _ContextFilter(logging.Filter):
    """Copies the request's context onto the record in the logging thread itself (the
    record is formatted later, on the writer thread, where the context is not set)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (request_id := request_id_var.get()) is not None:
            record.request_id = request_id
        if (tenant_id := tenant_id_var.get()) is not None:
            record.tenant_id = tenant_id
        return True


class _DeferredQueueHandler(logging.handlers.QueueHandler):
    """Hands the record to the writer thread as it is: formatting and I/O happen there,
    so a request thread never waits on the stream (or on other threads' writes)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


_listener: logging.handlers.QueueListener | None = None


def configure_logging(level: str = "INFO") -> None:
    """Route the root logger to stderr as JSON, written by one background thread
    (idempotent)."""
    global _listener
    root = logging.getLogger()
    if _listener is None:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(JsonFormatter())
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        handler = _DeferredQueueHandler(records)
        handler.addFilter(_ContextFilter())
        root.addHandler(handler)
        _listener = logging.handlers.QueueListener(records, stream, respect_handler_level=False)
        _listener.start()
        atexit.register(_listener.stop)
    root.setLevel(level.upper())
    # boto's INFO lines ("Found credentials ...") are noise on every start.
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
