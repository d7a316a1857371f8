"""Helpers shared by the Parquet export and archive tests: events stored at past times with
valid chains (through the drain's own store_batch, without the queue), per-test S3 prefixes,
and reading a prefix back as a Hive-partitioned dataset with pyarrow."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlsplit

import pyarrow.dataset as ds
import pytest
from pyarrow import fs

from auditlog.drain import ParsedMessage, PartitionCache, store_batch
from auditlog.events import AcceptedEvent, EventIn
from auditlog.ids import id_time, uuid7_at
from auditlog.parquet_dataset import make_s3_client
from auditlog.queue import ReceivedMessage
from auditlog.settings import Settings
from auditlog.store.pool import connect

# store_batch reads only the records of a parsed message; this one was never on a queue.
NOT_QUEUED = ReceivedMessage("test", "test", "", 1, 0.0)


def utc_day(days_ago: int) -> date:
    return datetime.now(UTC).date() - timedelta(days=days_ago)


def event_record(tenant: uuid.UUID, when: datetime, i: int) -> dict[str, Any]:
    event_id = uuid7_at(when)
    body = EventIn.model_validate(
        {
            "action_type": ("CREATE", "UPDATE", "DELETE", "VIEW")[i % 4],
            "resource_type": "doc",
            "resource_id": f"doc-{i}",
            "severity": "INFO" if i % 3 else "WARNING",
            "user_id": str(uuid.uuid4()),
            "session_id": f"s{i}" if i % 2 else None,
            "ip_address": "192.0.2.7" if i % 2 else "2001:db8::1",
            "user_agent": "pytest",
            "before_state": {"n": i} if i % 2 else None,
            "after_state": {"n": i + 1, "tags": ["a", "é"]},
            "metadata": {"i": i, "nested": {"k": "v"}},
        }
    )
    return AcceptedEvent(event_id, tenant, id_time(event_id), body).to_record()


def day_records(tenant: uuid.UUID, day: date, count: int) -> list[dict[str, Any]]:
    """``count`` events spread over ``day``, the first at 00:00:00.000 and the last at
    23:59:59.999 (the edges of the day's range)."""
    start = datetime.combine(day, time(), tzinfo=UTC)
    span = timedelta(days=1) - timedelta(milliseconds=1)
    return [event_record(tenant, start + span * i / max(count - 1, 1), i) for i in range(count)]


def store(settings: Settings, records: list[dict[str, Any]]) -> None:
    """Store records as the drain does (per-tenant seq and hash chain), in one batch."""
    ordered = sorted(records, key=lambda r: str(r["created_at"]))
    with connect(settings.database_url, autocommit=True) as conn:
        store_batch(conn, [ParsedMessage(NOT_QUEUED, ordered)], PartitionCache())


@pytest.fixture
def dataset_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The session's settings with S3 prefixes of this test's own (removed afterwards); the
    environment says the same, because Dagster's AuditPlatform resource reads it."""
    run = f"test-{uuid.uuid4().hex[:10]}"
    ours = replace(settings, s3_exports_prefix=f"{run}/exports", s3_archive_prefix=f"{run}/archive")
    monkeypatch.setenv("DATABASE_URL", ours.database_url)
    monkeypatch.setenv("S3_EXPORTS_PREFIX", ours.s3_exports_prefix)
    monkeypatch.setenv("S3_ARCHIVE_PREFIX", ours.s3_archive_prefix)
    yield ours
    s3 = make_s3_client(ours)
    for key in s3_keys(ours, f"{run}/"):
        s3.delete_object(Bucket=ours.s3_bucket, Key=key)


def s3_keys(settings: Settings, prefix: str) -> list[str]:
    s3 = make_s3_client(settings)
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=settings.s3_bucket, Prefix=prefix
    ):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return sorted(keys)


def hive_dataset(settings: Settings, prefix: str) -> ds.Dataset:
    """The prefix read as any Parquet reader would: pyarrow's own S3 client, Hive layout."""
    endpoint = urlsplit(settings.aws_endpoint_url_s3)
    filesystem = fs.S3FileSystem(
        endpoint_override=endpoint.netloc,
        scheme=endpoint.scheme,
        region=settings.aws_region,
        access_key=os.environ["AWS_ACCESS_KEY_ID"],
        secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
    )
    return ds.dataset(
        f"{settings.s3_bucket}/{prefix}",
        filesystem=filesystem,
        format="parquet",
        partitioning="hive",
    )
