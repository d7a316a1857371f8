"""The archive: days past a tenant's hot window copied to S3 as Parquet, read back and
verified, then recorded in the ``audit_archives`` ledger. Retention deletes only days the
ledger lists (``auditlog.retention``), so nothing leaves PostgreSQL without a verified copy.

A tenant's day is *past its hot window* once the whole day is older than the tenant's
``retention_days``. Its archive object is ``<S3_ARCHIVE_PREFIX>/tenant=<id>/date=<day>/
events.parquet`` (``auditlog.parquet_dataset``); verification reads that object back from S3
and checks the schema, the tenant of every row, the row count, the seq range, the chain
links between consecutive seqs and the head hash (the hash of the day's last seq) against
what PostgreSQL held in the same snapshot the object was written from.

Re-running a day is safe: a day whose ledger entry still matches PostgreSQL and whose object
still verifies is left alone; a day with more events than the ledger (late arrivals) is
written again; a day with fewer (retention already removed some) is never overwritten,
because the archive is then the only full copy.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from auditlog.parquet_dataset import (
    DayTotal,
    day_bounds,
    day_totals,
    object_key,
    open_parquet,
    schema_matches,
    write_tenant_day,
)
from auditlog.settings import Settings
from auditlog.store.queries import QUERIES

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

VERIFY_COLUMNS = ["tenant_id", "seq", "prev_hash", "hash"]


@dataclass(frozen=True)
class DaySummary:
    """What an archive of one tenant's day must hold."""

    events: int
    first_seq: int | None
    last_seq: int | None
    head_hash: bytes | None


class ArchiveError(RuntimeError):
    """An archive object did not verify, or could not be written; nothing was recorded."""


def summarize(conn: psycopg.Connection[Any], tenant_id: uuid.UUID, day: date) -> DaySummary:
    start, end = day_bounds(day)
    row = conn.execute(
        QUERIES["tenant_day_summary"], {"tenant_id": tenant_id, "start": start, "end": end}
    ).fetchone()
    assert row is not None  # an aggregate always returns a row
    count, first, last, head = row
    return DaySummary(int(count), first, last, bytes(head) if head is not None else None)


def verify_object(
    s3: S3Client, bucket: str, key: str, tenant_id: uuid.UUID, expected: DaySummary
) -> str | None:
    """Read the object back from S3 and compare it with ``expected``; None when it matches,
    otherwise the first difference found. Reads only the columns it checks, a row group at
    a time."""
    try:
        return _compare(open_parquet(s3, bucket, key), tenant_id, expected)
    except (s3.exceptions.ClientError, pa.ArrowException) as exc:
        return f"cannot read s3://{bucket}/{key}: {exc}"


def _compare(parquet: pq.ParquetFile, tenant_id: uuid.UUID, expected: DaySummary) -> str | None:
    if not schema_matches(parquet):
        return "schema differs from auditlog.export.PARQUET_SCHEMA"
    if parquet.metadata.num_rows != expected.events:
        return f"{parquet.metadata.num_rows} rows, expected {expected.events}"
    tenant = str(tenant_id)
    first: int | None = None
    last: int | None = None
    last_hash: str | None = None
    for batch in parquet.iter_batches(columns=VERIFY_COLUMNS):
        columns = batch.to_pydict()
        for owner, seq, prev_hash, digest in zip(
            columns["tenant_id"], columns["seq"], columns["prev_hash"], columns["hash"], strict=True
        ):
            if owner != tenant:
                return f"row of tenant {owner} at seq {seq}"
            if last is not None and seq <= last:
                return f"seq {seq} after {last}: not in chain order"
            if last is not None and seq == last + 1 and prev_hash != last_hash:
                return f"seq {seq} does not link to seq {last}"
            first = seq if first is None else first
            last, last_hash = seq, digest
    if (first, last) != (expected.first_seq, expected.last_seq):
        return f"seq range {first}..{last}, expected {expected.first_seq}..{expected.last_seq}"
    expected_head = expected.head_hash.hex() if expected.head_hash is not None else None
    if last_hash != expected_head:
        return f"head hash {last_hash}, expected {expected_head}"
    return None


@dataclass
class ArchiveReport:
    """What one day's archive run did, tenant by tenant."""

    day: date
    archived: dict[uuid.UUID, tuple[str, int, int]] = field(
        default_factory=dict
    )  # key, rows, bytes
    already_archived: list[uuid.UUID] = field(default_factory=list)
    not_due: list[uuid.UUID] = field(default_factory=list)
    refused: dict[uuid.UUID, str] = field(default_factory=dict)
    failed: dict[uuid.UUID, str] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(rows for _, rows, _ in self.archived.values())

    @property
    def bytes(self) -> int:
        return sum(size for _, _, size in self.archived.values())


def _ledger(
    conn: psycopg.Connection[Any], tenant_id: uuid.UUID, day: date
) -> tuple[DaySummary, str] | None:
    row = conn.execute(
        QUERIES["archive_ledger_entry"], {"tenant_id": tenant_id, "day": day}
    ).fetchone()
    if row is None:
        return None
    count, first, last, head, key = row
    return DaySummary(int(count), first, last, bytes(head) if head is not None else None), key


def archive_tenant_day(
    conn: psycopg.Connection[Any],
    s3: S3Client,
    settings: Settings,
    tenant_id: uuid.UUID,
    day: date,
    report: ArchiveReport,
) -> None:
    """Archive, verify and record one tenant's day (see the module's docstring for re-runs).
    ``conn`` is a ``snapshot_connection``: the summary and the object come from one
    snapshot, and the ledger row is written only after the object verified."""
    key = object_key(settings.s3_archive_prefix, tenant_id, day)
    with conn.transaction():
        summary = summarize(conn, tenant_id, day)
        recorded = _ledger(conn, tenant_id, day)
        if recorded is not None:
            entry, recorded_key = recorded
            if entry == summary and recorded_key == key:
                problem = verify_object(s3, settings.s3_bucket, key, tenant_id, summary)
                if problem is None:
                    report.already_archived.append(tenant_id)
                    return
            elif summary.events < entry.events or summary.first_seq != entry.first_seq:
                report.refused[tenant_id] = (
                    f"PostgreSQL holds {summary.events} events from seq {summary.first_seq}, "
                    f"the ledger {entry.events} from seq {entry.first_seq}: part of the day is "
                    "already removed, so its archive is kept as it is"
                )
                return
        written = write_tenant_day(
            conn, s3, settings.s3_bucket, settings.s3_archive_prefix, tenant_id, day
        )
    problem = None
    if written.rows != summary.events:
        problem = f"wrote {written.rows} rows, the snapshot held {summary.events}"
    problem = problem or verify_object(s3, settings.s3_bucket, key, tenant_id, summary)
    if problem is not None:
        report.failed[tenant_id] = problem
        return
    conn.execute(
        QUERIES["record_archive"],
        {
            "tenant_id": tenant_id,
            "day": day,
            "event_count": summary.events,
            "first_seq": summary.first_seq,
            "last_seq": summary.last_seq,
            "head_hash": summary.head_hash,
            "s3_key": key,
        },
    )
    report.archived[tenant_id] = (key, written.rows, written.bytes)


def archive_day(
    conn: psycopg.Connection[Any], s3: S3Client, settings: Settings, day: date, now: datetime
) -> ArchiveReport:
    """Archive every tenant's ``day`` that is past the tenant's hot window at ``now``."""
    report = ArchiveReport(day)
    totals: list[DayTotal] = day_totals(conn, day, now)
    for total in totals:
        if not total.past_hot_window:
            report.not_due.append(total.tenant_id)
            continue
        try:
            archive_tenant_day(conn, s3, settings, total.tenant_id, day, report)
        except (psycopg.Error, s3.exceptions.ClientError) as exc:
            report.failed[total.tenant_id] = f"{type(exc).__name__}: {exc}"
    return report


def due_days(conn: psycopg.Connection[Any], now: datetime, limit: int = 31) -> list[date]:
    """Days holding events past their tenant's hot window that the ledger lacks, oldest first."""
    rows = conn.execute(QUERIES["archive_due_days"], {"now": now, "limit": limit}).fetchall()
    return [row[0] for row in rows]
