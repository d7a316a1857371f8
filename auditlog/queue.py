"""The SQS side: packing accepted events into messages, sending, receiving, deleting.

A message body is an *envelope*. Version 1 is plain JSON: ``{"v": 1, "events": [record,
...]}``. Version 2, what the API sends, carries the same JSON array compressed:
``{"v": 2, "deflate": "<base64 of zlib(JSON array of records)>"}``. Audit records are
repetitive JSON and compress four- to eight-fold, so a message carries several times more
events for the same bytes: SQS bills and limits by the byte, and the queue server's work
(ElasticMQ here) grows with bytes, not events. The drain reads both versions.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from auditlog.events import json_bytes, loads_fast
from auditlog.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

ENVELOPE_VERSION = 1
COMPRESSED_VERSION = 2
# zlib level 1: most of the size gain for a fraction of the CPU of the default level.
COMPRESSION_LEVEL = 1
# A decompressed envelope larger than this is refused (a zip bomb, not events).
MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024
# An envelope stays under 256 KiB, the classic SQS message limit, so it fits every SQS.
# One SendMessageBatch call carries at most 10 entries and (SQS and ElasticMQ alike) at
# most 1 MiB of bodies in all; keep headroom below both.
MAX_MESSAGE_BYTES = 250 * 1024
MAX_BATCH_ENTRIES = 10
MAX_BATCH_BYTES = 1000 * 1000


class QueueUnavailable(RuntimeError):
    """SQS could not be reached or refused the request; nothing was (fully) queued."""


class BadEnvelope(ValueError):
    """A message body that is not an envelope this version understands."""


def make_sqs_client(settings: Settings) -> SQSClient:
    # Short timeouts and no hidden retries: the API answers 503 quickly and the client
    # retries with its Idempotency-Key, rather than a request thread hanging on SQS.
    config = Config(
        region_name=settings.aws_region,
        connect_timeout=2,
        read_timeout=25,  # above the 20 s long-poll maximum
        retries={"max_attempts": 2, "mode": "standard"},
        max_pool_connections=32,
    )
    return boto3.client("sqs", endpoint_url=settings.aws_endpoint_url_sqs, config=config)


def encode_record(record: dict[str, Any]) -> str:
    """One record as compact JSON text in ASCII: SQS refuses some code points in a body
    (U+FFFE, U+FFFF, most controls), and escaped they are plain ASCII."""
    fast = json_bytes(record)
    if fast is not None and fast.isascii():
        return fast.decode("ascii")
    return json.dumps(record, separators=(",", ":"))  # ensure_ascii escapes the rest


def encode_envelope(records: Sequence[dict[str, Any]]) -> str:
    """A plain (version 1) envelope."""
    return json.dumps({"v": ENVELOPE_VERSION, "events": list(records)}, separators=(",", ":"))


def compressed_envelope(encoded_records: Sequence[str]) -> str:
    """A version 2 envelope of records already encoded by ``encode_record``."""
    raw = ("[" + ",".join(encoded_records) + "]").encode("ascii")
    payload = base64.b64encode(zlib.compress(raw, COMPRESSION_LEVEL)).decode("ascii")
    return f'{{"v":{COMPRESSED_VERSION},"deflate":"{payload}"}}'


def _inflate(payload: Any) -> Any:
    if not isinstance(payload, str):
        raise BadEnvelope("version 2 envelope without a deflate payload")
    try:
        packed = base64.b64decode(payload, validate=True)
        inflater = zlib.decompressobj()
        raw = inflater.decompress(packed, MAX_DECOMPRESSED_BYTES)
    except (binascii.Error, zlib.error) as exc:
        raise BadEnvelope(f"undecodable payload: {exc}") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise BadEnvelope("payload is truncated or inflates past the size limit")
    parsed, value = loads_fast(raw)
    if parsed:
        return value
    try:
        return json.loads(raw)
    except ValueError as exc:  # not JSON, not UTF-8, or an integer past 4,300 digits
        raise BadEnvelope(f"payload is not JSON: {exc}") from None


def decode_envelope(body: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(body)
    except ValueError as exc:  # not JSON, or an integer past 4,300 digits
        raise BadEnvelope(f"not JSON: {exc}") from None
    version = data.get("v") if isinstance(data, dict) else None
    if version == ENVELOPE_VERSION:
        events = data.get("events")
    elif version == COMPRESSED_VERSION:
        events = _inflate(data.get("deflate"))
    else:
        raise BadEnvelope("not a version 1 or 2 envelope")
    if not isinstance(events, list) or not events or not all(isinstance(e, dict) for e in events):
        raise BadEnvelope("envelope has no list of event objects")
    return events


def pack_records(
    records: Iterable[dict[str, Any]],
    max_bytes: int = MAX_MESSAGE_BYTES,
    *,
    compress: bool = True,
) -> Iterator[str]:
    """Pack records, in order, into as few envelopes of at most ``max_bytes`` as fit
    (compressed ones unless ``compress`` is false)."""
    encoded = (encode_record(record) for record in records)
    if compress:
        yield from _pack_compressed(encoded, max_bytes)
        return
    current: list[str] = []
    size = len(encode_envelope([]))
    for text in encoded:
        needed = len(text) + 1  # ASCII: characters are bytes
        if current and size + needed > max_bytes:
            yield _join(current)
            current, size = [], len(encode_envelope([]))
        current.append(text)
        size += needed
    if current:
        yield _join(current)


def _join(encoded_records: list[str]) -> str:
    return f'{{"v":{ENVELOPE_VERSION},"events":[{",".join(encoded_records)}]}}'


def _pack_compressed(encoded: Iterable[str], max_bytes: int) -> Iterator[str]:
    # The compressed size is known only after compressing: gather raw text up to a budget
    # of ``ratio`` times the limit, learn the real ratio from each envelope made, and halve
    # a group that still came out too large.
    ratio = 3.0
    group: list[str] = []
    raw = 0
    for text in encoded:
        if group and raw + len(text) + 1 > max_bytes * ratio:
            for body, body_ratio in _compress_group(group, max_bytes):
                ratio = max(1.0, 0.9 * body_ratio)
                yield body
            group, raw = [], 0
        group.append(text)
        raw += len(text) + 1
    if group:
        for body, _ in _compress_group(group, max_bytes):
            yield body


def _compress_group(group: list[str], max_bytes: int) -> Iterator[tuple[str, float]]:
    body = compressed_envelope(group)
    if len(body) <= max_bytes or len(group) == 1:
        raw = sum(len(text) + 1 for text in group)
        yield body, raw / len(body)
        return
    middle = len(group) // 2
    yield from _compress_group(group[:middle], max_bytes)
    yield from _compress_group(group[middle:], max_bytes)


def batch_indexes(sizes: Sequence[int]) -> Iterator[list[int]]:
    """Group message indexes, in order, into SendMessageBatch calls that respect both the
    entry count and the total size limit."""
    current: list[int] = []
    total = 0
    for index, size in enumerate(sizes):
        if current and (len(current) == MAX_BATCH_ENTRIES or total + size > MAX_BATCH_BYTES):
            yield current
            current, total = [], 0
        current.append(index)
        total += size
    if current:
        yield current


@dataclass(frozen=True)
class ReceivedMessage:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    sent_at: float  # seconds since the epoch


@dataclass(frozen=True)
class Backlog:
    visible: int
    in_flight: int
    delayed: int


class EventQueue:
    """The events queue (and its dead-letter queue) by name; URLs are looked up once."""

    def __init__(self, client: SQSClient, queue_name: str, dlq_name: str) -> None:
        self._client = client
        self._queue_name = queue_name
        self._dlq_name = dlq_name
        self._urls: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> EventQueue:
        return cls(make_sqs_client(settings), settings.sqs_queue_name, settings.sqs_dlq_name)

    def url(self, name: str | None = None) -> str:
        name = name or self._queue_name
        if name not in self._urls:
            try:
                self._urls[name] = self._client.get_queue_url(QueueName=name)["QueueUrl"]
            except (BotoCoreError, ClientError) as exc:
                raise QueueUnavailable(f"cannot resolve queue {name!r}: {exc}") from exc
        return self._urls[name]

    def send_bodies(self, bodies: Sequence[str]) -> None:
        """Send message bodies; return only when SQS accepted every one of them.

        Raises ``QueueUnavailable`` otherwise (the caller answers 503; a client retry with
        its Idempotency-Key re-sends the same event ids, which the drain stores once).
        """
        failed = self.send_entries(bodies)
        if failed:
            raise QueueUnavailable(f"SQS did not accept {len(failed)} of {len(bodies)} message(s)")

    def send_entries(self, bodies: Sequence[str]) -> set[int]:
        """Send bodies with SendMessageBatch; return the indexes SQS did not accept after a
        few retries. Raises ``QueueUnavailable`` when SQS cannot be reached."""
        failed: set[int] = set()
        for chunk in batch_indexes([len(b.encode()) for b in bodies]):
            pending = {str(i): bodies[i] for i in chunk}
            for attempt in range(3):
                try:
                    answer = self._client.send_message_batch(
                        QueueUrl=self.url(),
                        Entries=[{"Id": k, "MessageBody": v} for k, v in pending.items()],
                    )
                except (BotoCoreError, ClientError) as exc:
                    raise QueueUnavailable(f"SendMessageBatch failed: {exc}") from exc
                for ok in answer.get("Successful", []):
                    pending.pop(ok["Id"], None)
                if not pending:
                    break
                time.sleep(0.05 * (attempt + 1))
            failed.update(int(k) for k in pending)
        return failed

    def receive(self, max_messages: int = 10, wait_seconds: int = 10) -> list[ReceivedMessage]:
        answer = self._client.receive_message(
            QueueUrl=self.url(),
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
        )
        return [
            ReceivedMessage(
                message_id=m["MessageId"],
                receipt_handle=m["ReceiptHandle"],
                body=m["Body"],
                receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
                sent_at=int(m.get("Attributes", {}).get("SentTimestamp", "0")) / 1000,
            )
            for m in answer.get("Messages", [])
        ]

    def delete(self, receipt_handles: Sequence[str]) -> int:
        """Delete received messages; returns how many SQS reports as failed to delete."""
        failed = 0
        for start in range(0, len(receipt_handles), MAX_BATCH_ENTRIES):
            chunk = receipt_handles[start : start + MAX_BATCH_ENTRIES]
            answer = self._client.delete_message_batch(
                QueueUrl=self.url(),
                Entries=[{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)],
            )
            failed += len(answer.get("Failed", []))
        return failed

    def release(self, receipt_handles: Sequence[str]) -> None:
        """Make received messages visible again now (a batch that will not be stored)."""
        for start in range(0, len(receipt_handles), MAX_BATCH_ENTRIES):
            chunk = receipt_handles[start : start + MAX_BATCH_ENTRIES]
            self._client.change_message_visibility_batch(
                QueueUrl=self.url(),
                Entries=[
                    {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                    for i, h in enumerate(chunk)
                ],
            )

    def backlog(self, name: str | None = None) -> Backlog:
        attrs = self._client.get_queue_attributes(
            QueueUrl=self.url(name),
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return Backlog(
            visible=int(attrs.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
            delayed=int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
        )

    def redrive_dead_letters(self, limit: int | None = None) -> int:
        """Move messages from the dead-letter queue back to the events queue (after a fix).

        Each message is sent to the events queue before it is deleted from the DLQ, so a
        crash in between leaves a copy in both, never in neither; the drain's id check makes
        the copy harmless.
        """
        moved = 0
        dlq_url = self.url(self._dlq_name)
        while limit is None or moved < limit:
            answer = self._client.receive_message(
                QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            messages = answer.get("Messages", [])
            if not messages:
                break
            self.send_bodies([m["Body"] for m in messages])
            self._client.delete_message_batch(
                QueueUrl=dlq_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )
            moved += len(messages)
        return moved

    def dead_letter_backlog(self) -> Backlog:
        return self.backlog(self._dlq_name)

    def ping(self) -> None:
        """Raise ``QueueUnavailable`` unless SQS answers for the events queue."""
        try:
            self.backlog()
        except (BotoCoreError, ClientError) as exc:
            raise QueueUnavailable(str(exc)) from exc


def ensure_queues(
    client: SQSClient,
    queue_name: str,
    dlq_name: str,
    max_receive_count: int,
    visibility_timeout: int = 60,
) -> str:
    """Create the dead-letter queue and the events queue with its redrive policy (idempotent)."""
    dlq_url = client.create_queue(QueueName=dlq_name)["QueueUrl"]
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    redrive = json.dumps(
        {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
    )
    queue_url = client.create_queue(
        QueueName=queue_name,
        Attributes={"RedrivePolicy": redrive, "VisibilityTimeout": str(visibility_timeout)},
    )["QueueUrl"]
    return queue_url
