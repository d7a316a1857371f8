"""Events deleted from PostgreSQL leave the search index too, against the real OpenSearch and
PostgreSQL: cleanup through the API, retention dropping a daily partition (and deleting in
batches), an event stored after a cleanup with an older created_at surviving, OpenSearch
away when the deletion is due, and the per-tenant count check around retention.

The module has a database and an index prefix of its own: the count check looks at every
tenant of a database, and the other search tests index into the default prefix."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from dagster import AssetSelection, Definitions, define_asset_job, materialize
from flask import Flask
from flask.testing import FlaskClient
from psycopg.rows import dict_row

from api import create_app
from assets.retention import retention
from assets.search import search_counts_match, search_index
from auditlog.drain import Drainer
from auditlog.events import AcceptedEvent, EventIn
from auditlog.ids import uuid7_at
from auditlog.indexer import IndexStats, SearchIndexer
from auditlog.queue import EventQueue, encode_envelope
from auditlog.retention_policy import RetentionReport, _drop_partitions, apply_retention, plan
from auditlog.search import SearchUnavailable, index_events, make_client, search_ids
from auditlog.search_deletions import apply_deletions
from auditlog.settings import Settings
from auditlog.store.pool import connect
from auditlog.store.queries import QUERIES
from auditlog.tenants import create_tenant
from auditlog.tokens import mint_token
from pipelines.resources import AuditPlatform
from tests.integration.search_support import own_search_settings

NOW = datetime.now(UTC).replace(microsecond=0)
DOWN = "http://127.0.0.1:9"  # nothing listens there


@pytest.fixture(scope="module")
def own(settings: Settings) -> Iterator[Settings]:
    with own_search_settings(settings, "del") as isolated:
        yield isolated


@pytest.fixture(scope="module")
def api(own: Settings) -> Iterator[FlaskClient]:
    app: Flask = create_app(own)
    yield app.test_client()
    app.extensions["auditlog"].close()


@pytest.fixture
def own_db(own: Settings) -> Iterator[psycopg.Connection[Any]]:
    with connect(own.database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def platform_env(own: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment the Dagster assets read their settings from."""
    for key, value in {
        "DATABASE_URL": own.database_url,
        "SQS_QUEUE_NAME": own.sqs_queue_name,
        "SQS_DLQ_NAME": own.sqs_dlq_name,
        "OPENSEARCH_URL": own.opensearch_url,
        "SEARCH_INDEX_PREFIX": own.search_index_prefix,
        "DRAIN_TIME_BUDGET_SECONDS": "20",
        "DRAIN_IDLE_SECONDS": "1",
    }.items():
        monkeypatch.setenv(key, value)


def new_tenant(db: psycopg.Connection[Any], retention_days: int = 365) -> uuid.UUID:
    row = create_tenant(db, name=f"del-{uuid.uuid4().hex[:6]}", retention_days=retention_days)
    return uuid.UUID(str(row["id"]))


def event(tenant: uuid.UUID, created: datetime, note: str) -> dict[str, Any]:
    body = EventIn.model_validate(
        {
            "action_type": "UPDATE",
            "resource_type": "doc",
            "resource_id": uuid.uuid4().hex[:8],
            "severity": "INFO",
            "metadata": {"note": note},
        }
    )
    return AcceptedEvent(uuid7_at(created), tenant, created, body).to_record()


def store(own: Settings, queue: EventQueue, records: list[dict[str, Any]]) -> list[str]:
    """Drain ``records`` into the module's database (in this order); their ids."""
    queue.send_bodies([encode_envelope(records)])
    stats = Drainer(queue, own.database_url).run(time_budget_s=20, idle_s=1.5)
    assert stats.stored >= len(records)
    return [str(r["id"]) for r in records]


def index(own: Settings, url: str | None = None) -> IndexStats:
    client = make_client(url or own.opensearch_url)
    stats = IndexStats()
    with connect(own.database_url) as conn:
        SearchIndexer(client, own.database_url, own.search_index_prefix).catch_up(conn, stats)
    client.indices.refresh(index=f"{own.search_index_prefix}-*")
    return stats


def in_index(own: Settings, tenant: uuid.UUID, word: str) -> set[str]:
    """What OpenSearch itself matches (the API would hide ids PostgreSQL no longer has)."""
    client = make_client(own.opensearch_url)
    client.indices.refresh(index=f"{own.search_index_prefix}-*")
    filters = [{"term": {"tenant_id": str(tenant)}}]
    found = search_ids(client, tenant, filters, word, size=100, prefix=own.search_index_prefix)
    return {doc_id for doc_id, _ in found}


def api_search(api: FlaskClient, own: Settings, tenant: uuid.UUID, word: str) -> list[str]:
    token = mint_token(own, tenant_id=tenant, role="reader")
    answer = api.get(f"/api/v1/logs?q={word}", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.get_json()
    return [e["id"] for e in answer.get_json()["data"]]


def pending(db: psycopg.Connection[Any], tenant: uuid.UUID) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT through_seq, created_from, created_before, rows_deleted FROM search_deletions "
        "WHERE tenant_id = %s ORDER BY id",
        (tenant,),
    ).fetchall()


def test_cleanup_removes_the_deleted_events_from_the_index_and_keeps_a_late_older_one(
    own: Settings, api: FlaskClient, queue: EventQueue, own_db: psycopg.Connection[Any]
) -> None:
    word = f"walrus{uuid.uuid4().hex[:8]}"
    a, b = new_tenant(own_db), new_tenant(own_db)
    old_a = store(own, queue, [event(a, NOW - timedelta(days=d), word) for d in (10, 9)])
    [kept_a] = store(own, queue, [event(a, NOW - timedelta(days=1), word)])
    [old_b] = store(own, queue, [event(b, NOW - timedelta(days=10), word)])
    index(own)
    assert in_index(own, a, word) == {*old_a, kept_a}

    admin = {"Authorization": f"Bearer {mint_token(own, tenant_id=a, role='admin')}"}
    answer = api.delete("/api/v1/logs/cleanup?older_than_days=7&archive=false", headers=admin)
    assert answer.status_code == 200, answer.get_json()
    assert (answer.get_json()["deleted"], answer.get_json()["deleted_through_seq"]) == (2, 2)
    # Recorded with the delete: a seq bound and the deleted rows' span in whole seconds.
    [(through, since, before, rows)] = pending(own_db, a)
    assert (through, rows) == (2, 2)
    assert since == NOW - timedelta(days=10)
    assert before == NOW - timedelta(days=9) + timedelta(seconds=1)

    # Stored after the cleanup, created before its cut-off and even between the two deleted
    # events (a redriven dead letter), so it has a higher seq. It reaches the index before
    # the deletion is applied (an indexer pass that started before the cleanup committed
    # would index it so) and must survive it.
    [late_a] = store(own, queue, [event(a, NOW - timedelta(days=9, hours=12), word)])
    with own_db.cursor(row_factory=dict_row) as cur:
        after = cur.execute(
            QUERIES["events_after_seq"], {"tenant_id": a, "after_seq": 2, "limit": 10}
        ).fetchall()
    assert late_a in {str(r["id"]) for r in after}  # with the cleanup's own audit record
    index_events(make_client(own.opensearch_url), after, own.search_index_prefix)
    # Still matched by OpenSearch, though the API shows only what PostgreSQL has.
    assert in_index(own, a, word) == {*old_a, kept_a, late_a}
    assert api_search(api, own, a, word) == [kept_a, late_a]

    stats = index(own)
    assert (stats.deletions_applied, stats.documents_deleted) == (1, 2)
    assert pending(own_db, a) == []
    assert in_index(own, a, word) == {kept_a, late_a}
    assert api_search(api, own, a, word) == [kept_a, late_a]
    assert in_index(own, b, word) == {old_b}  # the other tenant's old event is untouched
    assert api_search(api, own, b, word) == [old_b]


def test_opensearch_away_when_a_deletion_is_due_applies_it_on_the_next_run(
    own: Settings, api: FlaskClient, queue: EventQueue, own_db: psycopg.Connection[Any]
) -> None:
    word = f"narwhal{uuid.uuid4().hex[:8]}"
    tenant = new_tenant(own_db)
    old = store(own, queue, [event(tenant, NOW - timedelta(days=d), word) for d in (20, 19, 18)])
    [kept] = store(own, queue, [event(tenant, NOW - timedelta(hours=1), word)])
    index(own)
    admin = {"Authorization": f"Bearer {mint_token(own, tenant_id=tenant, role='admin')}"}
    answer = api.delete("/api/v1/logs/cleanup?older_than_days=7&archive=false", headers=admin)
    assert answer.get_json()["deleted"] == 3

    down = make_client(DOWN)
    with connect(own.database_url) as conn, pytest.raises(SearchUnavailable):
        apply_deletions(down, conn, own.search_index_prefix)
    away = SearchIndexer(down, own.database_url, own.search_index_prefix)
    stats = away.run(time_budget_s=1, idle_s=1)
    assert stats.failures >= 1
    assert stats.deletions_applied == 0
    assert [(t, n) for t, _, _, n in pending(own_db, tenant)] == [(3, 3)]  # still due
    assert in_index(own, tenant, word) == {*old, kept}

    stats = index(own)
    assert (stats.deletions_applied, stats.documents_deleted) == (1, 3)
    assert pending(own_db, tenant) == []
    assert in_index(own, tenant, word) == {kept}
    assert api_search(api, own, tenant, word) == [kept]


def test_events_deleted_before_they_were_indexed_move_the_watermark_on(
    own: Settings, api: FlaskClient, queue: EventQueue, own_db: psycopg.Connection[Any]
) -> None:
    tenant = new_tenant(own_db)
    store(own, queue, [event(tenant, NOW - timedelta(days=d), "x") for d in (30, 29)])
    admin = {"Authorization": f"Bearer {mint_token(own, tenant_id=tenant, role='admin')}"}
    answer = api.delete("/api/v1/logs/cleanup?older_than_days=7&archive=false", headers=admin)
    assert answer.get_json()["deleted"] == 2
    stats = index(own)
    assert stats.documents_deleted == 0  # they never reached the index
    mark = own_db.execute(
        "SELECT last_seq FROM search_watermarks WHERE tenant_id = %s", (tenant,)
    ).fetchone()
    assert mark == (2,)
    lagging = own_db.execute(QUERIES["search_lagging_tenants"]).fetchall()
    assert tenant not in {row[0] for row in lagging}


ARCHIVED_DAY = """
INSERT INTO audit_archives (tenant_id, day, event_count, first_seq, last_seq, s3_key)
SELECT %(tenant_id)s, %(day)s, count(*), min(seq), max(seq), 'archive/test'
FROM audit_logs
WHERE tenant_id = %(tenant_id)s AND (created_at AT TIME ZONE 'UTC')::date = %(day)s
"""


def at(day: date, hour: int, second: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, 0, second, tzinfo=UTC)


def check() -> Any:
    """The count check alone, as the UI runs it."""
    job = define_asset_job(
        "check_search_counts", selection=AssetSelection.checks(search_counts_match)
    )
    defs = Definitions(
        assets=[search_index],
        asset_checks=[search_counts_match],
        jobs=[job],
        resources={"platform": AuditPlatform()},
    )
    [evaluation] = defs.resolve_job_def(job.name).execute_in_process().get_asset_check_evaluations()
    return evaluation


def test_retention_dropping_a_partition_leaves_the_index_and_the_count_check_holds(
    own: Settings,
    api: FlaskClient,
    queue: EventQueue,
    own_db: psycopg.Connection[Any],
    platform_env: None,
) -> None:
    word = f"okapi{uuid.uuid4().hex[:8]}"
    expiring, other = new_tenant(own_db, retention_days=30), new_tenant(own_db, retention_days=30)
    first = datetime.now(UTC).date() - timedelta(days=random.randint(400, 3000))
    second = first + timedelta(days=1)
    # `first` also holds the other tenant's unarchived event, so its partition stays and the
    # expiring tenant's rows there go by batched delete; `second` is dropped whole.
    gone = store(
        own,
        queue,
        [event(expiring, at(first, h), word) for h in (9, 10)]
        + [event(expiring, at(second, h), word) for h in (9, 10, 11)],
    )
    [other_old] = store(own, queue, [event(other, at(first, 12), word)])
    [kept] = store(own, queue, [event(expiring, NOW - timedelta(hours=2), word)])
    for day in (first, second):
        own_db.execute(ARCHIVED_DAY, {"tenant_id": expiring, "day": day})
    index(own)
    assert in_index(own, expiring, word) == {*gone, kept}
    assert check().passed

    result = materialize(
        [retention],
        resources={"platform": AuditPlatform()},
        run_config={"ops": {"retention": {"config": {"tenants": [str(expiring), str(other)]}}}},
    )
    meta = result.asset_materializations_for_node("retention")[0].metadata
    assert meta["partitions_dropped"].value == [f"audit_logs_p{second:%Y%m%d}"]
    assert meta["rows_deleted"].value == 5
    # The dropped day (its exact bounds), then the batch of the prefix that remained.
    assert pending(own_db, expiring) == [
        (5, at(second, 0), at(second + timedelta(days=1), 0), 3),
        (2, at(first, 9), at(first, 10) + timedelta(seconds=1), 2),
    ]
    assert pending(own_db, other) == []

    # Before the indexer runs: the index still holds the five, and the check does not count
    # them (deleted, not yet applied), as it does not count the lag past the watermark.
    assert in_index(own, expiring, word) == {*gone, kept}
    evaluation = check()
    assert evaluation.passed, evaluation.metadata["details"].value
    assert evaluation.metadata["tenants_with_pending_deletions"].value == 1

    indexed = materialize([search_index], resources={"platform": AuditPlatform()})
    assert indexed.success
    index_meta = indexed.asset_materializations_for_node("search_index")[0].metadata
    assert index_meta["deletions_applied"].value == 2
    assert index_meta["documents_deleted"].value == 5
    assert pending(own_db, expiring) == []
    assert in_index(own, expiring, word) == {kept}
    assert api_search(api, own, expiring, word) == [kept]
    assert in_index(own, other, word) == {other_old}

    evaluation = check()
    assert evaluation.passed, evaluation.metadata["details"].value
    assert evaluation.metadata["tenants_with_pending_deletions"].value == 0
    assert evaluation.metadata["tenants_checked"].value >= 2

    # A document the index kept although PostgreSQL deleted it is a mismatch.
    with own_db.cursor(row_factory=dict_row) as cur:
        [row] = cur.execute(
            QUERIES["events_after_seq"], {"tenant_id": expiring, "after_seq": 5, "limit": 1}
        ).fetchall()
    stale = {**row, "id": uuid.uuid4(), "seq": 1}
    index_events(make_client(own.opensearch_url), [stale], own.search_index_prefix)
    evaluation = check()
    assert not evaluation.passed
    assert (
        f"'{expiring}': {{'postgres': 1, 'opensearch': 2}}" in evaluation.metadata["details"].value
    )


def test_a_dropped_day_takes_only_that_days_documents_while_a_lower_seq_lives_on(
    own: Settings, queue: EventQueue, own_db: psycopg.Connection[Any]
) -> None:
    """Between retention's partition drops and its batched deletes, a lower seq of the tenant
    may still be stored on another day: the dropped day's record must not take it."""
    word = f"tapir{uuid.uuid4().hex[:8]}"
    tenant, other = new_tenant(own_db, retention_days=30), new_tenant(own_db, retention_days=30)
    first = datetime.now(UTC).date() - timedelta(days=random.randint(400, 3000))
    second = first + timedelta(days=1)
    # seq 1 on the later day (which the other tenant's unarchived event keeps), then seq 2
    # stored late on the earlier day (which only this tenant has, so it is dropped whole).
    [on_second] = store(own, queue, [event(tenant, at(second, 9), word)])
    [on_first] = store(own, queue, [event(tenant, at(first, 9), word)])
    store(own, queue, [event(other, at(second, 10), word)])
    for day in (first, second):
        own_db.execute(ARCHIVED_DAY, {"tenant_id": tenant, "day": day})
    index(own)
    assert in_index(own, tenant, word) == {on_second, on_first}

    now = datetime.now(UTC)
    planned = plan(own_db, now, {tenant, other})
    assert [(t, p.through_seq) for t, p in planned.items()] == [(tenant, 2)]
    report = RetentionReport(now=now.isoformat(), dry_run=False)
    _drop_partitions(own_db, planned, None, report)  # retention's first step, alone
    assert report.partitions_dropped == [f"audit_logs_p{first:%Y%m%d}"]
    assert pending(own_db, tenant) == [(2, at(first, 0), at(second, 0), 1)]
    stats = index(own)
    assert (stats.deletions_applied, stats.documents_deleted) == (1, 1)
    assert in_index(own, tenant, word) == {on_second}  # seq 1 is still in PostgreSQL

    apply_retention(own_db, queue, now, only={tenant, other})  # the batches take seq 1
    assert pending(own_db, tenant) == [(1, at(second, 9), at(second, 9, 1), 1)]
    index(own)
    assert in_index(own, tenant, word) == set()
