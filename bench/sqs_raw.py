"""The SQS server's raw SendMessageBatch rate from one Python process with boto3.

A few threads share one client (boto3 clients are thread-safe) and send batches of 10
messages of about 1 KB each to a queue of their own, for a fixed time. This is the
ceiling the API's producer works under: the same client library, server and loopback.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from auditlog.queue import make_sqs_client
from auditlog.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

ENTRIES_PER_CALL = 10
MESSAGE_BYTES = 1024


@dataclass
class _Tally:
    calls: int = 0
    failed_entries: int = 0
    errors: int = 0

    def __post_init__(self) -> None:
        self.latencies: list[float] = []
        self.lock = threading.Lock()


@dataclass(frozen=True)
class RawResult:
    calls_per_s: float
    messages_per_s: float
    failed_entries: int
    errors: int
    latency_ms: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls_per_s": round(self.calls_per_s, 1),
            "messages_per_s": round(self.messages_per_s, 1),
            "failed_entries": self.failed_entries,
            "errors": self.errors,
            "latency_ms": self.latency_ms,
        }


@contextmanager
def raw_queue(settings: Settings) -> Iterator[tuple[SQSClient, str]]:
    sqs = make_sqs_client(settings)
    url = sqs.create_queue(QueueName=f"bench-raw-{uuid.uuid4().hex[:10]}")["QueueUrl"]
    try:
        yield sqs, url
    finally:
        with suppress(BotoCoreError, ClientError):
            sqs.delete_queue(QueueUrl=url)


def _entries() -> list[dict[str, str]]:
    body = "x" * MESSAGE_BYTES
    return [{"Id": str(i), "MessageBody": body} for i in range(ENTRIES_PER_CALL)]


def _sender(sqs: SQSClient, url: str, deadline: float, tally: _Tally) -> None:
    entries = _entries()
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            answer = sqs.send_message_batch(QueueUrl=url, Entries=entries)  # type: ignore[arg-type]
        except (BotoCoreError, ClientError):
            with tally.lock:
                tally.errors += 1
            time.sleep(0.05)
            continue
        elapsed = time.perf_counter() - started
        with tally.lock:
            tally.calls += 1
            tally.failed_entries += len(answer.get("Failed", []))
            tally.latencies.append(elapsed)


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure_raw_rate(sqs: SQSClient, url: str, threads: int, duration_s: float) -> RawResult:
    tally = _Tally()
    started = time.monotonic()
    deadline = started + duration_s
    workers = [
        threading.Thread(target=_sender, args=(sqs, url, deadline, tally), daemon=True)
        for _ in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(duration_s + 30)
    elapsed = time.monotonic() - started
    sqs.purge_queue(QueueUrl=url)
    latencies = tally.latencies
    return RawResult(
        calls_per_s=tally.calls / elapsed,
        messages_per_s=(tally.calls * ENTRIES_PER_CALL - tally.failed_entries) / elapsed,
        failed_entries=tally.failed_entries,
        errors=tally.errors,
        latency_ms={
            "mean": round(statistics.fmean(latencies) * 1000, 2) if latencies else 0.0,
            "p50": round(_percentile(latencies, 0.50) * 1000, 2),
            "p99": round(_percentile(latencies, 0.99) * 1000, 2),
        },
    )
