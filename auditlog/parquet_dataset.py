"""Hive-partitioned Parquet datasets of audit events on S3: the daily exports and the archive.

Layout (README: "Parquet datasets"): one object per tenant and UTC day,

    s3://<bucket>/<prefix>/tenant=<tenant id>/date=<yyyy-mm-dd>/events.parquet

zstd-compressed, in the one schema of ``auditlog.export.PARQUET_SCHEMA``, rows in chain (seq)
order. The key depends only on (prefix, tenant, day), so writing a day again replaces the
object instead of adding a second copy; any other object left under that day's prefix (from
an older layout) is removed after a successful write. Rows stream from a server-side cursor
through the Parquet writer into an S3 multipart upload, so memory stays flat however big a
day is; a failed upload is aborted and leaves the previous object in place.

Only the tenant's own rows go under its prefix: the query is scoped by tenant, and every row
is checked against the tenant of the key before it is written.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

import boto3
import psycopg
import pyarrow.parquet as pq
from botocore.config import Config
from psycopg.rows import dict_row

from auditlog.export import PARQUET_SCHEMA, write_parquet
from auditlog.settings import Settings
from auditlog.store.pool import connect
from auditlog.store.queries import QUERIES

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

FILE_NAME = "events.parquet"
# S3 multipart parts must be at least 5 MiB (but the last); 8 MiB keeps few parts and
# little memory.
PART_BYTES = 8 * 1024 * 1024
CURSOR_BATCH = 2000
ROW_GROUP_ROWS = 20_000  # rows held in memory at once while writing


def make_s3_client(settings: Settings) -> S3Client:
    config = Config(
        region_name=settings.aws_region,
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 5, "mode": "standard"},
    )
    return boto3.client("s3", endpoint_url=settings.aws_endpoint_url_s3 or None, config=config)


def snapshot_connection(url: str) -> psycopg.Connection[Any]:
    """An autocommit connection whose explicit transactions are REPEATABLE READ: a tenant's
    day is counted and written from one snapshot, even while the drain appends."""
    conn = connect(url, autocommit=True)
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    return conn


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The UTC day as a half-open [start, end) range of created_at."""
    start = datetime.combine(day, time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


def day_prefix(prefix: str, tenant_id: uuid.UUID, day: date) -> str:
    return f"{prefix.strip('/')}/tenant={tenant_id}/date={day.isoformat()}/"


def object_key(prefix: str, tenant_id: uuid.UUID, day: date) -> str:
    return day_prefix(prefix, tenant_id, day) + FILE_NAME


@dataclass(frozen=True)
class DayTotal:
    """One tenant's events on one day, as PostgreSQL counts them."""

    tenant_id: uuid.UUID
    events: int
    first_seq: int
    last_seq: int
    past_hot_window: bool


def day_totals(conn: psycopg.Connection[Any], day: date, now: datetime) -> list[DayTotal]:
    """Every tenant with events on ``day``; ``past_hot_window`` says whether the whole day is
    older than the tenant's ``retention_days`` at ``now``."""
    start, end = day_bounds(day)
    rows = conn.execute(
        QUERIES["day_tenant_totals"], {"start": start, "end": end, "now": now}
    ).fetchall()
    return [
        DayTotal(uuid.UUID(str(t)), int(n), int(lo), int(hi), bool(due))
        for t, n, lo, hi, due in rows
    ]


def iter_day_rows(
    conn: psycopg.Connection[Any], tenant_id: uuid.UUID, day: date
) -> Iterator[dict[str, Any]]:
    """The tenant's events of ``day`` in seq order through a server-side cursor (needs a
    transaction). A row of another tenant would be a bug upstream: stop rather than leak it."""
    start, end = day_bounds(day)
    with conn.cursor(name=f"parquet_{uuid.uuid4().hex[:8]}", row_factory=dict_row) as cur:
        cur.itersize = CURSOR_BATCH
        cur.execute(
            QUERIES["tenant_day_events"], {"tenant_id": tenant_id, "start": start, "end": end}
        )
        for row in cur:
            if row["tenant_id"] != tenant_id:
                raise RuntimeError(f"row of tenant {row['tenant_id']} in {tenant_id}'s day")
            yield row


@dataclass
class WrittenFile:
    key: str
    rows: int
    bytes: int


class _Counted:
    """Counts the rows passing through, so the caller learns how many were written."""

    def __init__(self, rows: Iterable[dict[str, Any]]) -> None:
        self.rows = rows
        self.count = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for row in self.rows:
            self.count += 1
            yield row


def upload_stream(s3: S3Client, bucket: str, key: str, chunks: Iterable[bytes]) -> int:
    """Upload the concatenated ``chunks`` as one object, holding at most about one part in
    memory. Small objects take a single PUT; a failed multipart upload is aborted, so the
    object is either entirely new or untouched. Returns the object's size."""
    buffer = bytearray()
    upload_id: str | None = None
    parts: list[dict[str, Any]] = []
    total = 0

    def send_part() -> None:
        assert upload_id is not None
        number = len(parts) + 1
        response = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=bytes(buffer)
        )
        parts.append({"ETag": response["ETag"], "PartNumber": number})
        buffer.clear()

    try:
        for chunk in chunks:
            buffer += chunk
            total += len(chunk)
            if len(buffer) >= PART_BYTES:
                if upload_id is None:
                    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
                send_part()
        if upload_id is None:
            s3.put_object(Bucket=bucket, Key=key, Body=bytes(buffer))
            return total
        if buffer:
            send_part()
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
        )
        return total
    except BaseException:
        if upload_id is not None:
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise


def remove_other_objects(s3: S3Client, bucket: str, prefix: str, keep: str) -> int:
    """Delete every object under ``prefix`` but ``keep``; returns how many went."""
    removed = 0
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        stale = [{"Key": o["Key"]} for o in page.get("Contents", []) if o["Key"] != keep]
        if stale:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": stale, "Quiet": True})  # type: ignore[typeddict-item]
            removed += len(stale)
    return removed


def write_tenant_day(
    conn: psycopg.Connection[Any],
    s3: S3Client,
    bucket: str,
    prefix: str,
    tenant_id: uuid.UUID,
    day: date,
) -> WrittenFile:
    """Write the tenant's events of ``day`` to their object under ``prefix`` (replacing any
    earlier one), streamed; the caller's transaction fixes the snapshot that is written."""
    key = object_key(prefix, tenant_id, day)
    rows = _Counted(iter_day_rows(conn, tenant_id, day))
    size = upload_stream(s3, bucket, key, write_parquet(rows, row_group_size=ROW_GROUP_ROWS))
    remove_other_objects(s3, bucket, day_prefix(prefix, tenant_id, day), key)
    return WrittenFile(key, rows.count, size)


class S3RangeFile(io.RawIOBase):
    """A read-only, seekable view of one S3 object that fetches only the byte ranges read:
    Parquet readers take the footer and the column chunks they need, not the whole file."""

    def __init__(self, s3: S3Client, bucket: str, key: str) -> None:
        super().__init__()
        self.s3, self.bucket, self.key = s3, bucket, key
        self.size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        end = min(self.position + len(view), self.size)
        if end <= self.position:
            return 0
        body = self.s3.get_object(
            Bucket=self.bucket, Key=self.key, Range=f"bytes={self.position}-{end - 1}"
        )["Body"].read()
        view[: len(body)] = body
        self.position += len(body)
        return len(body)


def open_parquet(s3: S3Client, bucket: str, key: str) -> pq.ParquetFile:
    return pq.ParquetFile(S3RangeFile(s3, bucket, key))


def object_rows(s3: S3Client, bucket: str, key: str) -> int | None:
    """Rows in a Parquet object, from its footer alone; None when there is no such object."""
    try:
        return int(open_parquet(s3, bucket, key).metadata.num_rows)
    except s3.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def schema_matches(parquet: pq.ParquetFile) -> bool:
    return bool(parquet.schema_arrow.equals(PARQUET_SCHEMA))


@dataclass(frozen=True)
class TenantDayFile:
    tenant_id: uuid.UUID
    day: date
    file: WrittenFile


def export_day(
    conn: psycopg.Connection[Any],
    s3: S3Client,
    settings: Settings,
    day: date,
    now: datetime | None = None,
) -> list[TenantDayFile]:
    """Write every tenant's events of ``day`` under the exports prefix, one object each.
    ``conn`` is in autocommit; each tenant's day is read in its own repeatable-read
    transaction, so the object holds one consistent snapshot."""
    written = []
    for total in day_totals(conn, day, now or datetime.now(UTC)):
        with conn.transaction():
            file = write_tenant_day(
                conn, s3, settings.s3_bucket, settings.s3_exports_prefix, total.tenant_id, day
            )
        written.append(TenantDayFile(total.tenant_id, day, file))
    return written


@dataclass(frozen=True)
class CountMismatch:
    tenant_id: uuid.UUID
    day: date
    postgres: int
    s3: int | None  # None: no object


def compare_day_counts(
    conn: psycopg.Connection[Any], s3: S3Client, settings: Settings, day: date
) -> tuple[int, list[CountMismatch]]:
    """Per tenant with events on ``day``: rows in PostgreSQL against rows in the exported
    object (read from its footer). Returns (tenants checked, mismatches)."""
    totals = day_totals(conn, day, datetime.now(UTC))
    mismatches = []
    for total in totals:
        key = object_key(settings.s3_exports_prefix, total.tenant_id, day)
        found = object_rows(s3, settings.s3_bucket, key)
        if found != total.events:
            mismatches.append(CountMismatch(total.tenant_id, day, total.events, found))
    return len(totals), mismatches
