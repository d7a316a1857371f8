"""auditlog/logs.py: JSON lines written in batches by the writer thread, none lost."""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
import queue
import threading
import time

from auditlog.logs import JsonFormatter, _BatchingListener, _LineBatchHandler


class _CountingStream(io.StringIO):
    """Counts write calls, so a test can tell one write per batch from one per line."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _logger(name: str, records: queue.SimpleQueue[logging.LogRecord]) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.handlers = [logging.handlers.QueueHandler(records)]
    return logger


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_is_written_as_soon_as_the_queue_is_empty() -> None:
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    stream = _CountingStream()
    handler = _LineBatchHandler(stream)
    handler.setFormatter(JsonFormatter())
    listener = _BatchingListener(records, handler)
    listener.start()
    try:
        _logger("test.logs.prompt", records).info("one.line", extra={"status": 202})
        deadline = time.monotonic() + 5
        while not stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _lines(stream) == [
            {
                "ts": _lines(stream)[0]["ts"],
                "level": "info",
                "logger": "test.logs.prompt",
                "event": "one.line",
                "status": 202,
            }
        ]
    finally:
        listener.stop()


def test_a_burst_is_written_in_few_writes_and_stop_flushes_everything() -> None:
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    stream = _CountingStream()
    handler = _LineBatchHandler(stream, max_lines=100)
    handler.setFormatter(JsonFormatter())
    listener = _BatchingListener(records, handler)
    logger = _logger("test.logs.burst", records)
    for i in range(1000):  # queued before the writer starts: one long burst
        logger.info("burst", extra={"i": i})
    listener.start()
    listener.stop()
    assert [line["i"] for line in _lines(stream)] == list(range(1000))
    # At most one write per 100 lines (max_lines), not one per line.
    assert stream.writes <= 11, stream.writes


def test_flush_from_another_thread_loses_and_repeats_nothing() -> None:
    stream = _CountingStream()
    handler = _LineBatchHandler(stream, max_lines=10_000)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.logs.threads")
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    stop = threading.Event()

    def flush_often() -> None:  # as logging.shutdown() would, from another thread
        while not stop.is_set():
            handler.flush()

    flusher = threading.Thread(target=flush_often)
    flusher.start()
    try:
        for i in range(5000):
            logger.info("n", extra={"i": i})
    finally:
        stop.set()
        flusher.join()
    handler.flush()
    assert [line["i"] for line in _lines(stream)] == list(range(5000))
