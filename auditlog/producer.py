"""A batching producer: concurrent single-event requests share SQS calls.

Each API request hands its record to ``send`` and blocks until SQS has accepted it (202
still means durably queued). A collector thread gathers whatever arrived in the last few
milliseconds, packs the records into as few envelopes as fit, and sends them with
SendMessageBatch on a small pool of sender threads, so several flushes are in flight at
once. Envelopes are compressed (queue.py, version 2). A request fails
(``QueueUnavailable``) only if the message carrying its record failed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from auditlog.queue import (
    MAX_MESSAGE_BYTES,
    EventQueue,
    QueueUnavailable,
    batch_indexes,
    compressed_envelope,
    encode_record,
)

log = logging.getLogger(__name__)

_ENVELOPE_OVERHEAD = len('{"v":1,"events":[]}')


class _Delivery:
    """One record's outcome, settled once by a sender and awaited by its request: a lock
    held from creation until the outcome is known. A ``Future`` would do the same with a
    condition variable and several times the lock operations, on every request."""

    __slots__ = ("_pending", "error")

    def __init__(self) -> None:
        self._pending = threading.Lock()
        self._pending.acquire()
        self.error: Exception | None = None

    def settle(self, error: Exception | None = None) -> None:
        self.error = error
        self._pending.release()

    def wait(self, timeout: float) -> bool:
        """True once settled; False if ``timeout`` seconds passed first."""
        return self._pending.acquire(timeout=timeout)


@dataclass
class _Envelope:
    records: list[str] = field(default_factory=list)
    deliveries: list[_Delivery] = field(default_factory=list)
    size: int = _ENVELOPE_OVERHEAD

    def body(self) -> str:
        return compressed_envelope(self.records)


class BatchingProducer:
    def __init__(
        self,
        queue: EventQueue,
        *,
        linger_s: float = 0.003,
        senders: int = 4,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self._queue = queue
        self._linger_s = linger_s
        # Raw bytes per envelope such that even incompressible records fit once compressed
        # and base64-encoded (4/3 larger, plus zlib's few bytes per block and the envelope).
        self._max_raw_bytes = max_message_bytes * 3 // 4 - 1024
        self._on_error = on_error
        self._pending: list[tuple[str, _Delivery]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=senders, thread_name_prefix="sqs-sender")
        # A flush is taken only when a sender is free: under load, records pile up while
        # every sender is busy and the next flush carries all of them (batches grow with
        # load instead of queueing as many small sends).
        self._free_senders = threading.Semaphore(senders)
        self._collector = threading.Thread(target=self._collect, name="sqs-collector", daemon=True)
        self._collector.start()

    def send(self, record: dict[str, Any], timeout: float = 10.0) -> None:
        """Queue one record; return once SQS accepted it, else raise ``QueueUnavailable``."""
        delivery = _Delivery()
        encoded = encode_record(record)
        with self._cond:
            if self._closed:
                raise QueueUnavailable("the producer is shut down")
            self._pending.append((encoded, delivery))
            self._cond.notify()
        if not delivery.wait(timeout):
            raise QueueUnavailable("SQS did not confirm the message in time")
        if delivery.error is not None:
            raise delivery.error

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._collector.join(timeout=5)
        self._pool.shutdown(wait=True)

    def _collect(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed and not self._pending:
                    return
            # Let concurrent requests join this flush for a moment.
            time.sleep(self._linger_s)
            self._free_senders.acquire()
            with self._cond:
                taken, self._pending = self._pending, []
            self._pool.submit(self._send_flush, self._pack(taken))

    def _pack(self, taken: Sequence[tuple[str, _Delivery]]) -> list[_Envelope]:
        envelopes = [_Envelope()]
        for encoded, delivery in taken:
            needed = len(encoded) + 1  # ASCII: characters are bytes
            if envelopes[-1].records and envelopes[-1].size + needed > self._max_raw_bytes:
                envelopes.append(_Envelope())
            envelope = envelopes[-1]
            envelope.records.append(encoded)
            envelope.deliveries.append(delivery)
            envelope.size += needed
        return envelopes

    def _send_flush(self, envelopes: list[_Envelope]) -> None:
        try:
            # Compressed here, on the sender, so the collector is free for the next flush.
            bodies = [envelope.body() for envelope in envelopes]
            for indexes in batch_indexes([len(body) for body in bodies]):
                self._send_chunk([envelopes[i] for i in indexes], [bodies[i] for i in indexes])
        finally:
            self._free_senders.release()

    def _send_chunk(self, chunk: list[_Envelope], bodies: list[str]) -> None:
        try:
            failed = self._queue.send_entries(bodies)
        except Exception as exc:  # noqa: BLE001 (every failure must reach the waiting requests)
            self._fail(chunk, exc)
            return
        for index, envelope in enumerate(chunk):
            if index in failed:
                self._fail([envelope], QueueUnavailable("SQS did not accept the message"))
            else:
                for delivery in envelope.deliveries:
                    delivery.settle()

    def _fail(self, envelopes: list[_Envelope], exc: Exception) -> None:
        if self._on_error is not None:
            self._on_error(exc)
        error = exc if isinstance(exc, QueueUnavailable) else QueueUnavailable(str(exc))
        for envelope in envelopes:
            for delivery in envelope.deliveries:
                delivery.settle(error)
