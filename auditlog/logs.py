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
import time
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


class _LineBatchHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Formats each record as it arrives but writes the lines in batches: the writer thread
    flushes whenever its queue runs dry (``_BatchingListener``) and every ``max_lines``
    lines. Under load one write then carries many access lines instead of one write and
    flush per request; when idle, a line is written as soon as it is formatted."""

    def __init__(self, stream: Any, max_lines: int = 256) -> None:
        super().__init__(stream)
        self._max_lines = max_lines
        self._lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held
        try:
            self._lines.append(self.format(record))
        except Exception:  # noqa: BLE001 (logging's contract: report, never raise)
            self.handleError(record)
            return
        if len(self._lines) >= self._max_lines:
            self.flush()

    def flush(self) -> None:
        # Also called by logging.shutdown() from another thread, hence the (reentrant) lock.
        with self.lock:  # type: ignore[union-attr]
            text = "\n".join(self._lines) + "\n" if self._lines else ""
            self._lines = []
            try:
                if text:
                    self.stream.write(text)
                super().flush()
            except (OSError, ValueError):
                # A closed or broken stream (at interpreter exit, say): logging must not
                # raise, and the lines have nowhere to go.
                pass


class _BatchingListener(logging.handlers.QueueListener):
    """Flushes its handlers each time the queue is empty, before it blocks for the next
    record, and once more when stopped. After waking for a record it lets ``gather_s`` pass
    before it goes on, so that under load it wakes a few dozen times a second and writes
    what gathered meanwhile, rather than waking (a greenlet switch under gevent) and writing
    for every request: the access line cost about a ninth of a single-event POST's CPU
    before (bench/results/ingest_ab.md). A line reaches the stream at most ``gather_s``
    late."""

    def __init__(self, records: Any, *handlers: logging.Handler, gather_s: float = 0.02) -> None:
        super().__init__(records, *handlers, respect_handler_level=False)
        self._gather_s = gather_s

    def dequeue(self, block: bool) -> logging.LogRecord:
        try:
            record: logging.LogRecord = self.queue.get_nowait()  # type: ignore[attr-defined]
            return record
        except queue.Empty:
            for handler in self.handlers:
                handler.flush()
            record = super().dequeue(block)
            time.sleep(self._gather_s)
            return record

    def stop(self) -> None:
        super().stop()
        for handler in self.handlers:
            handler.flush()


_listener: logging.handlers.QueueListener | None = None


def configure_logging(level: str = "INFO") -> None:
    """Route the root logger to stderr as JSON, written by one background thread
    (idempotent)."""
    global _listener
    root = logging.getLogger()
    if _listener is None:
        # The JSON lines carry no caller: skip walking the stack for every record (the
        # logging module's documented switch; other formats then show line 0). Thread and
        # process fields stay: gunicorn's own log lines print the pid.
        logging._srcfile = None
        stream = _LineBatchHandler(sys.stderr)
        stream.setFormatter(JsonFormatter())
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        handler = _DeferredQueueHandler(records)
        handler.addFilter(_ContextFilter())
        root.addHandler(handler)
        _listener = _BatchingListener(records, stream)
        _listener.start()
        atexit.register(_listener.stop)
    root.setLevel(level.upper())
    # boto's INFO lines ("Found credentials ...") are noise on every start.
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
