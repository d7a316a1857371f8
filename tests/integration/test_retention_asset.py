"""The ``retention`` asset against real PostgreSQL and SQS, materialised in-process: it
deletes archived days past a tenant's retention (whole partitions where it can), keeps what
is not archived, leaves each chain verifying, and records what it did as audit events."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from dagster import AssetKey, materialize

from assets.retention import retention
from auditlog.drain import Drainer
from auditlog.events import AcceptedEvent, EventIn
from auditlog.ids import new_event_id, uuid7_at
from auditlog.platform_events import PLATFORM_TENANT_ID
from auditlog.queue import EventQueue, encode_envelope
from auditlog.settings import Settings
from auditlog.tenants import create_tenant
from auditlog.verify import verify_tenant_chain
from pipelines.definitions import defs
from pipelines.resources import AuditPlatform

# A ledger row as the archive asset writes it: the day's count and seq range at archive time.
ARCHIVED_DAY = """
INSERT INTO audit_archives (tenant_id, day, event_count, first_seq, last_seq, s3_key)
SELECT %(tenant_id)s, %(day)s, count(*), min(seq), max(seq), %(key)s
FROM audit_logs
WHERE tenant_id = %(tenant_id)s AND (created_at AT TIME ZONE 'UTC')::date = %(day)s
"""


def record(tenant: uuid.UUID, created: datetime | None, n: int) -> dict[str, Any]:
    event_id, now = new_event_id()
    if created is not None:
        event_id, now = uuid7_at(created), created
    body = EventIn.model_validate(
        {"action_type": "CREATE", "resource_type": "doc", "resource_id": str(n), "severity": "INFO"}
    )
    return AcceptedEvent(event_id, tenant, now, body).to_record()


def at_noon(day: date, second: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, 12, 0, second, tzinfo=UTC)


def drain(settings: Settings, queue: EventQueue) -> int:
    stats = Drainer(queue, settings.database_url, batch_size=500).run(time_budget_s=20, idle_s=1.5)
    return stats.stored


def count(db: psycopg.Connection[Any], tenant: uuid.UUID, day: date | None = None) -> int:
    query = "SELECT count(*) FROM audit_logs WHERE tenant_id = %s"
    params: list[Any] = [tenant]
    if day is not None:
        query += " AND (created_at AT TIME ZONE 'UTC')::date = %s"
        params.append(day)
    row = db.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def test_the_lineage_is_audit_events_archive_retention() -> None:
    graph = defs.resolve_asset_graph()
    assert graph.get(AssetKey("retention")).parent_keys == {AssetKey("archive")}
    assert AssetKey("audit_events") in graph.get(AssetKey("archive")).parent_keys
    for key in (AssetKey("retention"), AssetKey("audit_events")):
        assert set(graph.get(key).pools or ()) == {"audit_logs_writes"}


def test_retention_deletes_archived_days_past_retention_and_records_it(
    settings: Settings,
    queue: EventQueue,
    db: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("SQS_QUEUE_NAME", settings.sqs_queue_name)
    monkeypatch.setenv("SQS_DLQ_NAME", settings.sqs_dlq_name)
    kept_tenant = uuid.UUID(str(create_tenant(db, name="ret-b", retention_days=30)["id"]))
    tenant = uuid.UUID(str(create_tenant(db, name="ret-a", retention_days=30)["id"]))
    # Days of their own, long past, so no other test's rows share these partitions.
    first = datetime.now(UTC).date() - timedelta(days=random.randint(800, 3000))
    second, third = first + timedelta(days=1), first + timedelta(days=2)
    records = [record(tenant, at_noon(first, i), i) for i in range(3)]
    records += [record(tenant, at_noon(second, i), 10 + i) for i in range(2)]
    records += [record(tenant, at_noon(third, 0), 20)]
    queue.send_bodies([encode_envelope(records)])
    queue.send_bodies([encode_envelope([record(kept_tenant, at_noon(first, 5), 1)])])
    assert drain(settings, queue) == 7
    # Drained apart: one batch with old and new days would make every partition between.
    queue.send_bodies([encode_envelope([record(tenant, None, 30 + i) for i in range(2)])])
    assert drain(settings, queue) == 2
    # The archive's ledger lists the first two days of `tenant` (not the third), and no day
    # of `kept_tenant`.
    for day in (first, second):
        db.execute(ARCHIVED_DAY, {"tenant_id": tenant, "day": day, "key": "archive/test"})

    result = materialize(
        [retention],
        resources={"platform": AuditPlatform()},
        run_config={"ops": {"retention": {"config": {"tenants": [str(tenant), str(kept_tenant)]}}}},
    )
    assert result.success
    meta = result.asset_materializations_for_node("retention")[0].metadata

    assert (count(db, tenant, first), count(db, tenant, second)) == (0, 0)
    assert count(db, tenant, third) == 1  # past retention, but not archived
    assert count(db, tenant) == 3
    assert count(db, kept_tenant) == 1
    chain = verify_tenant_chain(db, tenant)
    assert (chain["ok"], chain["from_seq"], chain["events_checked"]) == (True, 6, 3)

    second_partition = f"audit_logs_p{second:%Y%m%d}"
    gone = db.execute("SELECT to_regclass(%s)", (second_partition,)).fetchone()
    assert gone == (None,)  # every row in it could go: dropped whole
    still = db.execute("SELECT to_regclass(%s)::text", (f"audit_logs_p{first:%Y%m%d}",)).fetchone()
    assert still == (f"audit_logs_p{first:%Y%m%d}",)  # kept_tenant's row is not archived
    assert meta["rows_deleted"].value == 5
    assert meta["partitions_dropped"].value == [second_partition]
    [planned] = meta["per_tenant"].value
    assert planned["tenant_id"] == str(tenant)
    assert planned["through_seq"] == 5
    assert planned["rows"] == 5
    assert planned["archived_days"] == [first.isoformat(), second.isoformat()]
    assert planned["cutoff"].startswith((datetime.now(UTC) - timedelta(days=30)).date().isoformat())
    hourly = db.execute(
        "SELECT coalesce(sum(events), 0) FROM audit_stats_hourly "
        "WHERE tenant_id = %s AND hour < %s",
        (tenant, at_noon(third) - timedelta(hours=12)),
    ).fetchone()
    assert hourly == (0,)

    # The retention run is itself audited: in the tenant's log and in the platform's.
    assert drain(settings, queue) == 2
    row = db.execute(
        "SELECT action_type, resource_id, metadata FROM audit_logs "
        "WHERE tenant_id = %s AND resource_id = 'retention'",
        (tenant,),
    ).fetchone()
    assert row is not None
    assert row[0:2] == ("DELETE", "retention")
    assert row[2]["actor"] == "dagster:retention"
    assert row[2]["retention"]["through_seq"] == 5
    assert row[2]["retention"]["archived_days"] == [first.isoformat(), second.isoformat()]
    summary = db.execute(
        "SELECT metadata FROM audit_logs WHERE tenant_id = %s AND resource_id = 'retention' "
        "ORDER BY seq DESC LIMIT 1",
        (PLATFORM_TENANT_ID,),
    ).fetchone()
    assert summary is not None
    assert summary[0]["retention"]["partitions_dropped"] == [second_partition]


def test_dry_run_deletes_nothing(
    settings: Settings,
    queue: EventQueue,
    db: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("SQS_QUEUE_NAME", settings.sqs_queue_name)
    tenant = uuid.UUID(str(create_tenant(db, name="ret-dry", retention_days=7)["id"]))
    day = datetime.now(UTC).date() - timedelta(days=random.randint(800, 3000))
    queue.send_bodies([encode_envelope([record(tenant, at_noon(day, i), i) for i in range(2)])])
    assert drain(settings, queue) == 2
    db.execute(ARCHIVED_DAY, {"tenant_id": tenant, "day": day, "key": "x"})
    result = materialize(
        [retention],
        resources={"platform": AuditPlatform()},
        run_config={"ops": {"retention": {"config": {"tenants": [str(tenant)], "dry_run": True}}}},
    )
    meta = result.asset_materializations_for_node("retention")[0].metadata
    assert meta["per_tenant"].value[0]["through_seq"] == 2
    assert count(db, tenant) == 2
    assert queue.backlog().visible == 0
