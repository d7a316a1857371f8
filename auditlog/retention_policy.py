"""Scheduled retention: per tenant, delete the events older than the tenant's
``retention_days`` whose UTC day is in the ``audit_archives`` ledger (a verified copy is on
S3), and nothing else.

What may go is decided per tenant exactly as the cleanup endpoint decides it
(``cleanup_boundary`` in ``auditlog.retention``): a *seq prefix* of the tenant's chain, every
event of which is past the cut-off and lies on an archived day. Deleting a prefix keeps the
retained chain contiguous, so it still verifies from its first retained event.

How it goes:

* A daily partition every row of which lies within its tenant's prefix (so the partition is
  past the retention of every tenant with rows in it, and archived for each of them) is
  detached and dropped whole: no per-row delete, no table bloat. An empty partition goes
  only once it is past every tenant's retention. The hourly statistics are adjusted by the
  rows the partition held, as ``delete_seq_prefix`` does, and the search index is told which
  events went (``search_deletions``), as ``delete_seq_prefix`` tells it for its rows.
* What remains of each prefix is deleted in batches of seq (``delete_seq_prefix``), one
  short transaction each, so no long lock is held.
* Before a tenant's events are deleted, an audit event saying what will go and why is queued
  to the tenant's own log (as the cleanup endpoint does); if it cannot be queued, nothing of
  that tenant is deleted. A summary goes to the platform tenant's log.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from importlib.resources import files
from typing import Any, LiteralString

import psycopg
from psycopg import sql

from auditlog.events import ActionType, Severity, format_time
from auditlog.platform_events import PLATFORM_TENANT_ID, platform_event
from auditlog.queue import EventQueue, encode_envelope
from auditlog.store.queries import QUERIES, parse_named_sql

ACTOR = "dagster:retention"
_PARTITION = re.compile(r"^audit_logs_p(\d{8})$")
_QUERIES: dict[str, LiteralString] = {}


def _sql(name: str) -> LiteralString:
    if not _QUERIES:
        text = files("auditlog.store").joinpath("retention.sql").read_text(encoding="utf-8")
        _QUERIES.update(parse_named_sql(text))
    return _QUERIES[name]


def _on_partition(name: str, partition: str) -> sql.Composed:
    return sql.SQL(_sql(name)).format(partition=sql.Identifier(partition))


@dataclass
class TenantRetention:
    tenant_id: str
    retention_days: int
    cutoff: str
    through_seq: int = 0
    rows_due: int = 0
    rows_deleted: int = 0
    rows_in_dropped_partitions: int = 0
    archived_days: list[str] = field(default_factory=list)
    oldest_deleted: str | None = None
    newest_deleted: str | None = None


@dataclass
class RetentionReport:
    now: str
    dry_run: bool
    tenants: list[TenantRetention] = field(default_factory=list)
    partitions_dropped: list[str] = field(default_factory=list)
    partitions_kept_locked: list[str] = field(default_factory=list)
    batches: int = 0

    @property
    def rows_deleted(self) -> int:
        return sum(t.rows_deleted + t.rows_in_dropped_partitions for t in self.tenants)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows_deleted": self.rows_deleted}


def _boundary(
    conn: psycopg.Connection[Any], tenant_id: uuid.UUID, cutoff: datetime
) -> tuple[int, int]:
    """(last seq that may go, first seq still stored) for the tenant at ``cutoff``."""
    params = {"tenant_id": tenant_id, "before": cutoff, "require_archive": True}
    row = conn.execute(QUERIES["cleanup_boundary"], params).fetchone()
    first = conn.execute(_sql("first_seq_of_tenant"), {"tenant_id": tenant_id}).fetchone()
    boundary = int(row[0]) if row and row[0] is not None else 0
    return boundary, int(first[0]) if first and first[0] is not None else 0


def plan(
    conn: psycopg.Connection[Any], now: datetime, only: Collection[uuid.UUID] = ()
) -> dict[uuid.UUID, TenantRetention]:
    """Per tenant with something to delete: its cut-off, prefix and the archived days."""
    planned: dict[uuid.UUID, TenantRetention] = {}
    for tenant_id, days in conn.execute(_sql("retention_tenants")).fetchall():
        if only and tenant_id not in only:
            continue
        cutoff = now - timedelta(days=int(days))
        boundary, first = _boundary(conn, tenant_id, cutoff)
        if boundary < max(first, 1):
            continue
        span = conn.execute(
            _sql("deletable_span"), {"tenant_id": tenant_id, "last_seq": boundary}
        ).fetchone()
        if span is None or not span[0]:
            continue
        count, oldest, newest = int(span[0]), span[1], span[2]
        assert isinstance(oldest, datetime)
        assert isinstance(newest, datetime)
        archived = conn.execute(
            _sql("archived_days_between"),
            {
                "tenant_id": tenant_id,
                "first_day": oldest.astimezone(UTC).date(),
                "last_day": newest.astimezone(UTC).date(),
            },
        ).fetchall()
        planned[tenant_id] = TenantRetention(
            tenant_id=str(tenant_id),
            retention_days=int(days),
            cutoff=format_time(cutoff),
            through_seq=boundary,
            rows_due=count,
            archived_days=[d.isoformat() for (d,) in archived],
            oldest_deleted=format_time(oldest),
            newest_deleted=format_time(newest),
        )
    return planned


def _record(queue: EventQueue, tenant_id: uuid.UUID, what: dict[str, Any]) -> None:
    record = platform_event(
        actor=ACTOR,
        tenant_id=tenant_id,
        action=ActionType.DELETE,
        resource_type="audit_log",
        resource_id="retention",
        before=None,
        after=None,
        severity=Severity.WARNING,
        extra={"retention": what},
    )
    queue.send_bodies([encode_envelope([record])])


def _partition_day(name: str) -> date | None:
    match = _PARTITION.match(name)
    return datetime.strptime(match.group(1), "%Y%m%d").date() if match else None


def _drop_partitions(
    conn: psycopg.Connection[Any],
    planned: dict[uuid.UUID, TenantRetention],
    oldest_cutoff: datetime | None,
    report: RetentionReport,
) -> None:
    if conn.execute(_sql("audit_logs_is_partitioned")).fetchone() != (True,):
        return  # TimescaleDB: its chunks are not dropped here; the batched deletes do the work
    cutoffs = [datetime.fromisoformat(t.cutoff) for t in planned.values()]
    if oldest_cutoff is not None:
        cutoffs.append(oldest_cutoff)
    if not cutoffs:
        return
    latest_cutoff = max(cutoffs)
    for (name,) in conn.execute(_sql("daily_partitions")).fetchall():
        day = _partition_day(name)
        if day is None:
            continue
        end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        if end > latest_cutoff:
            continue  # holds events newer than any tenant's cut-off: nothing to drop
        holders = conn.execute(_on_partition("partition_tenants", name)).fetchall()
        if holders:
            droppable = all(
                t in planned and int(max_seq) <= planned[t].through_seq for t, _, max_seq in holders
            )
        else:
            droppable = oldest_cutoff is not None and end <= oldest_cutoff
        if not droppable:
            continue
        if report.dry_run:
            report.partitions_dropped.append(name)
            continue
        try:
            with conn.transaction():
                # Detaching locks audit_logs; wait briefly, never stall ingest behind it.
                conn.execute("SET LOCAL lock_timeout = '5s'")
                conn.execute(_on_partition("subtract_partition_stats", name))
                conn.execute(_on_partition("detach_partition", name))
                conn.execute(
                    _on_partition("record_partition_search_deletions", name),
                    {"day_start": end - timedelta(days=1), "day_end": end},
                )
                conn.execute(_on_partition("drop_partition", name))
        except psycopg.errors.LockNotAvailable:
            report.partitions_kept_locked.append(name)  # the batched deletes take its rows
            continue
        report.partitions_dropped.append(name)
        for tenant_id, rows, _ in holders:
            planned[tenant_id].rows_in_dropped_partitions += int(rows)


def _delete_in_batches(
    conn: psycopg.Connection[Any],
    tenant_id: uuid.UUID,
    through_seq: int,
    batch_rows: int,
    report: RetentionReport,
) -> int:
    deleted = 0
    while True:
        row = conn.execute(_sql("first_seq_of_tenant"), {"tenant_id": tenant_id}).fetchone()
        first = row[0] if row else None
        if first is None or first > through_seq:
            return deleted
        upto = min(through_seq, int(first) + batch_rows - 1)
        with conn.transaction():
            gone = conn.execute(
                QUERIES["delete_seq_prefix"], {"tenant_id": tenant_id, "last_seq": upto}
            ).fetchone()
        report.batches += 1
        deleted += int(gone[0]) if gone else 0


def apply_retention(
    conn: psycopg.Connection[Any],
    queue: EventQueue,
    now: datetime,
    *,
    batch_rows: int = 5000,
    dry_run: bool = False,
    only: Collection[uuid.UUID] = (),
) -> RetentionReport:
    """Run retention once (``conn`` in autocommit; each step is its own transaction).
    ``only`` limits it to these tenants (and then no empty partition is dropped)."""
    report = RetentionReport(now=format_time(now), dry_run=dry_run)
    planned = plan(conn, now, only)
    report.tenants = list(planned.values())
    tenant_days = [int(d) for _, d in conn.execute(_sql("retention_tenants")).fetchall()]
    oldest_cutoff = None
    if tenant_days and not only:
        oldest_cutoff = now - timedelta(days=max(tenant_days))
    if dry_run:
        _drop_partitions(conn, planned, oldest_cutoff, report)
        return report
    for tenant_id, due in list(planned.items()):
        # The record goes first: if the queue refuses it, this tenant's events stay.
        _record(queue, tenant_id, {**asdict(due), "reason": _reason(due)})
    _drop_partitions(conn, planned, oldest_cutoff, report)
    for tenant_id, due in planned.items():
        due.rows_deleted = _delete_in_batches(conn, tenant_id, due.through_seq, batch_rows, report)
    if planned or report.partitions_dropped:
        _record(
            queue,
            PLATFORM_TENANT_ID,
            {
                "tenants": len(planned),
                "rows_deleted": report.rows_deleted,
                "partitions_dropped": report.partitions_dropped,
            },
        )
    return report


def _reason(due: TenantRetention) -> str:
    return (
        f"older than retention_days={due.retention_days} (cut-off {due.cutoff}) and archived "
        f"({len(due.archived_days)} day(s) in audit_archives)"
    )
