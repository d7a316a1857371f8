"""A month's search-index rebuild cannot bring back redacted or deleted events, against the
real OpenSearch and PostgreSQL.

The rebuild writes what it read from one snapshot. The tests commit a redaction and a
cleanup between its snapshot and its writes (through ``SearchIndexer.rebuild``'s
``after_snapshot`` hook, so the interleaving is exact) and let the incremental indexer try a
pass right then, as it would in production; afterwards the index must hold neither the erased
text nor the deleted events, and every other event of the month as it is in PostgreSQL.

The module has a database and an index prefix of its own (the advisory lock and the pending
requests are per database; the other search tests index into other prefixes)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dagster import materialize
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from assets.search import search_index_rebuild
from auditlog.drain import Drainer
from auditlog.events import AcceptedEvent, EventIn, format_time
from auditlog.ids import uuid7_at
from auditlog.indexer import IndexStats, SearchIndexer
from auditlog.queue import EventQueue, encode_envelope
from auditlog.search import make_client
from auditlog.settings import Settings
from auditlog.store.pool import connect
from auditlog.tenants import create_tenant
from auditlog.tokens import mint_token
from pipelines.resources import AuditPlatform
from tests.integration.search_support import own_search_settings

NOW = datetime.now(UTC).replace(microsecond=0)
# A whole month well in the past: cleanup can delete in it, and nothing else writes there.
MONTH = (NOW - timedelta(days=60)).replace(day=1, hour=0, minute=0, second=0)
NEXT_MONTH = (MONTH + timedelta(days=32)).replace(day=1)


@pytest.fixture(scope="module")
def own(settings: Settings) -> Iterator[Settings]:
    with own_search_settings(settings, "rebuild") as isolated:
        yield isolated


@pytest.fixture(scope="module")
def api(own: Settings) -> Iterator[FlaskClient]:
    app: Flask = create_app(own)
    yield app.test_client()
    app.extensions["auditlog"].close()


@pytest.fixture
def platform_env(own: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment the Dagster assets read their settings from."""
    for key, value in {
        "DATABASE_URL": own.database_url,
        "SQS_QUEUE_NAME": own.sqs_queue_name,
        "SQS_DLQ_NAME": own.sqs_dlq_name,
        "OPENSEARCH_URL": own.opensearch_url,
        "SEARCH_INDEX_PREFIX": own.search_index_prefix,
    }.items():
        monkeypatch.setenv(key, value)


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
    queue.send_bodies([encode_envelope(records)])
    stats = Drainer(queue, own.database_url).run(time_budget_s=20, idle_s=1.5)
    assert stats.stored >= len(records)
    return [str(r["id"]) for r in records]


def indexer(own: Settings) -> SearchIndexer:
    return SearchIndexer(make_client(own.opensearch_url), own.database_url, own.search_index_prefix)


def incremental_pass(own: Settings) -> IndexStats:
    stats = IndexStats()
    with connect(own.database_url) as conn:
        indexer(own).catch_up(conn, stats)
    return stats


def month_documents(own: Settings) -> dict[str, str]:
    """Every document of the rebuilt month's index (OpenSearch itself): id -> its text."""
    client = make_client(own.opensearch_url)
    index = f"{own.search_index_prefix}-{MONTH:%Y.%m}"
    client.indices.refresh(index=index)
    found = client.search(index=index, body={"query": {"match_all": {}}, "size": 100})
    return {hit["_id"]: str(hit["_source"]) for hit in found["hits"]["hits"]}


def matching(own: Settings, word: str) -> set[str]:
    """Ids of documents of any tenant in any index of the prefix whose text has ``word``."""
    client = make_client(own.opensearch_url)
    pattern = f"{own.search_index_prefix}-*"
    client.indices.refresh(index=pattern)
    query = {"simple_query_string": {"query": word, "fields": ["search_text"]}}
    found = client.search(index=pattern, body={"query": query, "size": 100})
    return {hit["_id"] for hit in found["hits"]["hits"]}


def test_a_redaction_and_a_cleanup_during_a_rebuild_are_not_undone_by_it(
    own: Settings, api: FlaskClient, queue: EventQueue
) -> None:
    secret = f"jane{uuid.uuid4().hex[:8]}"
    word = f"otter{uuid.uuid4().hex[:8]}"
    with connect(own.database_url, autocommit=True) as db:
        a = uuid.UUID(str(create_tenant(db, name="rebuild-a", retention_days=3650)["id"]))
        b = uuid.UUID(str(create_tenant(db, name="rebuild-b", retention_days=3650)["id"]))
    deleted = store(own, queue, [event(a, MONTH + timedelta(days=d), word) for d in (1, 2)])
    [kept_a] = store(own, queue, [event(a, MONTH + timedelta(days=20), word)])
    [private, other_b] = store(
        own,
        queue,
        [
            event(b, MONTH + timedelta(days=5), f"{word} {secret}"),
            event(b, MONTH + timedelta(days=6), word),
        ],
    )
    incremental_pass(own)
    assert matching(own, secret) == {private}
    assert matching(own, word) == {*deleted, kept_a, private, other_b}

    skipped: list[IndexStats] = []

    def redact_and_clean_up_meanwhile() -> None:
        as_b = {"Authorization": f"Bearer {mint_token(own, tenant_id=b, role='admin')}"}
        answer = api.delete(f"/api/v1/logs/cleanup/{private}", headers=as_b)
        assert answer.status_code == 200, answer.get_json()
        as_a = {"Authorization": f"Bearer {mint_token(own, tenant_id=a, role='admin')}"}
        before = format_time(MONTH + timedelta(days=10))
        answer = api.delete(f"/api/v1/logs/cleanup?before={before}&archive=false", headers=as_a)
        assert answer.status_code == 200, answer.get_json()
        assert answer.get_json()["deleted"] == 2
        # The incremental indexer's pass right now would consume both requests before the
        # rebuild writes its stale copies; it must wait for the rebuild instead.
        skipped.append(incremental_pass(own))

    rebuilt = indexer(own).rebuild(MONTH, NEXT_MONTH, after_snapshot=redact_and_clean_up_meanwhile)

    assert matching(own, secret) == set()
    assert matching(own, word) == {kept_a, other_b}  # the redaction erased the metadata
    documents = month_documents(own)
    assert set(documents) == {kept_a, private, other_b}
    assert secret not in documents[private]
    assert word not in documents[private]
    assert word in documents[kept_a]
    assert word in documents[other_b]
    [during] = skipped
    assert (during.skipped_for_rebuild, during.reindexed, during.deletions_applied) == (1, 0, 0)
    # The rebuild wrote the month as its snapshot had it, then applied what changed since.
    assert rebuilt.documents == 5  # the deleted two included
    assert (rebuilt.applied.reindexed, rebuilt.applied.deletions_applied) == (1, 1)
    assert rebuilt.applied.documents_deleted == 2

    # Nothing was left for the incremental indexer to correct, and it does not undo it.
    after = incremental_pass(own)
    assert (after.skipped_for_rebuild, after.reindexed, after.deletions_applied) == (0, 0, 0)
    assert matching(own, secret) == set()
    assert set(month_documents(own)) == {kept_a, private, other_b}


def test_an_incremental_pass_runs_again_once_the_rebuild_is_done(
    own: Settings, queue: EventQueue
) -> None:
    word = f"heron{uuid.uuid4().hex[:8]}"
    with connect(own.database_url, autocommit=True) as db:
        c = uuid.UUID(str(create_tenant(db, name="rebuild-c", retention_days=3650)["id"]))
    [first] = store(own, queue, [event(c, MONTH + timedelta(days=3), word)])
    later: list[str] = []

    def store_one_meanwhile() -> None:
        later.extend(store(own, queue, [event(c, MONTH + timedelta(days=3, hours=1), word)]))

    rebuilt = indexer(own).rebuild(MONTH, NEXT_MONTH, after_snapshot=store_one_meanwhile)
    # Stored after the snapshot: not in the rebuild, and past the tenant's watermark...
    assert first in month_documents(own)
    assert later[0] not in month_documents(own)
    assert rebuilt.applied.reindexed == 0
    # ... so the next pass (no longer locked out) indexes it.
    stats = incremental_pass(own)
    assert stats.skipped_for_rebuild == 0
    assert stats.indexed >= 1
    assert matching(own, word) == {first, later[0]}


def test_the_rebuild_asset_applies_what_is_pending_after_writing_the_month(
    own: Settings, api: FlaskClient, queue: EventQueue, platform_env: None
) -> None:
    secret = f"ibis{uuid.uuid4().hex[:8]}"
    with connect(own.database_url, autocommit=True) as db:
        d = uuid.UUID(str(create_tenant(db, name="rebuild-d", retention_days=3650)["id"]))
    [private] = store(own, queue, [event(d, MONTH + timedelta(days=3, hours=2), secret)])
    incremental_pass(own)
    # Redacted while no indexer runs: the request is pending when the rebuild starts, and its
    # snapshot already has the redacted row; the rebuild consumes the request after writing.
    as_d = {"Authorization": f"Bearer {mint_token(own, tenant_id=d, role='admin')}"}
    assert api.delete(f"/api/v1/logs/cleanup/{private}", headers=as_d).status_code == 200
    assert matching(own, secret) == {private}  # not applied yet

    result = materialize(
        [search_index_rebuild],
        partition_key=f"{MONTH:%Y-%m-%d}",
        resources={"platform": AuditPlatform()},
    )
    assert result.success
    meta = result.asset_materializations_for_node("search_index_rebuild")[0].metadata
    assert meta["index"].value == f"{own.search_index_prefix}-{MONTH:%Y.%m}"
    assert meta["documents_reindexed"].value == 1
    assert matching(own, secret) == set()
    assert private in month_documents(own)
