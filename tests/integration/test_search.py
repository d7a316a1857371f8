"""Search against the real OpenSearch node: indexing from watermarks, the q syntax with the
listing's filters and cursor, tenant isolation, redaction reaching the index, and 503 when
OpenSearch is away while every other endpoint keeps working."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from auditlog.drain import Drainer
from auditlog.events import AcceptedEvent, EventIn
from auditlog.ids import uuid7_at
from auditlog.indexer import IndexStats, SearchIndexer
from auditlog.queue import EventQueue, pack_records
from auditlog.search import INDEX_PREFIX, SearchRefused, make_client, search_ids
from auditlog.settings import Settings
from auditlog.store.pool import connect

NOW = datetime.now(UTC).replace(microsecond=0)


def load(
    settings: Settings, queue: EventQueue, tenant: uuid.UUID, bodies: list[dict[str, Any]]
) -> list[str]:
    records = []
    for i, body in enumerate(bodies):
        created = NOW - timedelta(minutes=len(bodies) - i)
        event = EventIn.model_validate(
            {
                "severity": "INFO",
                "action_type": "VIEW",
                "resource_type": "doc",
                "resource_id": str(i),
                **body,
            }
        )
        records.append(AcceptedEvent(uuid7_at(created), tenant, created, event).to_record())
    queue.send_bodies(list(pack_records(records)))
    Drainer(queue, settings.database_url).run(time_budget_s=20, idle_s=1.5)
    return [r["id"] for r in records]


def index_all(settings: Settings) -> IndexStats:
    client = make_client(settings.opensearch_url)
    stats = IndexStats()
    with connect(settings.database_url) as conn:
        SearchIndexer(client, settings.database_url).catch_up(conn, stats)
    client.indices.refresh(index=f"{INDEX_PREFIX}*")
    return stats


def search(client: FlaskClient, headers: dict[str, str], q: str, extra: str = "") -> list[str]:
    response = client.get(f"/api/v1/logs?q={q}{extra}", headers=headers)
    assert response.status_code == 200, response.get_json()
    return [e["id"] for e in response.get_json()["data"]]


def test_search_finds_text_qualifiers_and_pages_with_the_cursor(
    client: FlaskClient,
    settings: Settings,
    queue: EventQueue,
    tenant: uuid.UUID,
    auth: dict[str, str],
) -> None:
    ids = load(
        settings,
        queue,
        tenant,
        [
            {"resource_type": "invoice", "metadata": {"note": "overdue payment reminder"}},
            {
                "resource_type": "invoice",
                "action_type": "DELETE",
                "severity": "ERROR",
                "metadata": {"note": "overdue"},
            },
            {"resource_type": "project", "metadata": {"note": "kickoff"}, "user_agent": "curl/8"},
            {
                "resource_type": "invoice",
                "action_type": "DELETE",
                "severity": "CRITICAL",
                "resource_id": "inv-9",
            },
            {"resource_type": "db", "metadata": {"request": {"path": "/login"}}},
        ],
    )
    stats = index_all(settings)
    assert stats.indexed >= 5
    assert search(client, auth, "overdue") == [ids[1], ids[0]]
    assert search(client, auth, "overdue payment") == [ids[0]]
    assert search(client, auth, "action:DELETE") == [ids[3], ids[1]]
    assert search(client, auth, "severity>=ERROR resource:invoice") == [ids[3], ids[1]]
    assert search(client, auth, "resource:inv-9") == [ids[3]]
    assert search(client, auth, "metadata.request.path:/login") == [ids[4]]
    assert search(client, auth, "curl") == [ids[2]]
    assert search(client, auth, "invoice", "&action_type=VIEW") == [ids[0]]
    assert search(
        client, auth, "created>=" + (NOW - timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ) == [ids[4], ids[3]]
    first = client.get("/api/v1/logs?q=resource_type:invoice&limit=2", headers=auth).get_json()
    rest = client.get(
        f"/api/v1/logs?q=resource_type:invoice&limit=2&cursor={first['next_cursor']}", headers=auth
    )
    assert [e["id"] for e in first["data"]] + [e["id"] for e in rest.get_json()["data"]] == [
        ids[3],
        ids[1],
        ids[0],
    ]
    assert rest.get_json()["next_cursor"] is None
    bad = client.get("/api/v1/logs?q=colour:red", headers=auth)
    assert bad.status_code == 422
    assert "colour" in bad.get_json()["errors"][0]["message"]


def test_values_too_long_for_a_keyword_are_indexed_cut_not_refused(
    client: FlaskClient,
    settings: Settings,
    queue: EventQueue,
    new_tenant: Callable[..., uuid.UUID],
    token_for: Callable[..., str],
) -> None:
    # Lucene refuses a keyword term over 32,766 bytes, and with it the whole document: an
    # accepted event (metadata up to 64 KiB) must still be indexed, or the indexer would
    # stop at it for good.
    tenant = new_tenant()
    long_key = "k" * 2_000
    ids = load(
        settings,
        queue,
        tenant,
        [
            {
                "metadata": {
                    "note": "oversized",
                    "blob": "é" * 20_000 + " tail",  # 40,005 bytes of UTF-8
                    "nested": {long_key: "under a long key"},
                },
            }
        ],
    )
    index_all(settings)
    reader = {"Authorization": f"Bearer {token_for(tenant, 'reader')}"}
    assert search(client, reader, "oversized") == ids
    assert search(client, reader, "metadata.note:oversized") == ids
    # The stored event is whole: the index holds a cut copy of the long values only.
    stored = client.get(f"/api/v1/logs/{ids[0]}", headers=reader).get_json()
    assert stored["metadata"]["blob"] == "é" * 20_000 + " tail"
    assert stored["metadata"]["nested"][long_key] == "under a long key"


def test_search_never_crosses_tenants_even_when_the_other_matches_better(
    client: FlaskClient,
    settings: Settings,
    queue: EventQueue,
    new_tenant: Callable[..., uuid.UUID],
    token_for: Callable[..., str],
) -> None:
    a, b = new_tenant(), new_tenant()
    a_ids = load(settings, queue, a, [{"metadata": {"note": "quarterly report"}}])
    load(
        settings,
        queue,
        b,
        [{"metadata": {"note": "quarterly report quarterly report quarterly"}}] * 5,
    )
    index_all(settings)
    as_a = {"Authorization": f"Bearer {token_for(a, 'reader')}"}
    assert search(client, as_a, "quarterly") == a_ids
    assert search(client, as_a, "quarterly", "&limit=1000") == a_ids


def test_redaction_reaches_the_index(
    client: FlaskClient,
    settings: Settings,
    queue: EventQueue,
    tenant: uuid.UUID,
    token_for: Callable[..., str],
) -> None:
    ids = load(settings, queue, tenant, [{"metadata": {"email": "jane.doe@example.test"}}])
    index_all(settings)
    reader = {"Authorization": f"Bearer {token_for(tenant, 'reader')}"}
    assert search(client, reader, "jane.doe@example.test") == ids
    admin = {"Authorization": f"Bearer {token_for(tenant, 'admin')}"}
    assert client.delete(f"/api/v1/logs/cleanup/{ids[0]}", headers=admin).status_code == 200
    stats = index_all(settings)
    assert stats.reindexed == 1
    assert search(client, reader, "jane.doe@example.test") == []


def test_opensearch_down_is_503_for_search_only(
    settings: Settings, queue: EventQueue, tenant: uuid.UUID, auth: dict[str, str]
) -> None:
    app: Flask = create_app(replace(settings, opensearch_url="http://127.0.0.1:9"))
    try:
        client = app.test_client()
        down = client.get("/api/v1/logs?q=anything", headers=auth)
        assert down.status_code == 503
        assert down.headers["Retry-After"] == "5"
        assert client.get("/api/v1/logs", headers=auth).status_code == 200
        event = {
            "action_type": "VIEW",
            "resource_type": "doc",
            "resource_id": "1",
            "severity": "INFO",
        }
        assert client.post("/api/v1/logs", json=event, headers=auth).status_code == 202
    finally:
        app.extensions["auditlog"].close()


def test_indexing_catches_up_after_opensearch_was_away(
    settings: Settings, queue: EventQueue, tenant: uuid.UUID, db: psycopg.Connection[Any]
) -> None:
    load(settings, queue, tenant, [{}] * 3)
    away = SearchIndexer(make_client("http://127.0.0.1:9"), settings.database_url)
    with connect(settings.database_url) as conn, pytest.raises(Exception, match="Connection"):
        away.catch_up(conn, IndexStats())
    mark = db.execute(
        "SELECT last_seq FROM search_watermarks WHERE tenant_id = %s", (tenant,)
    ).fetchone()
    assert mark is None  # nothing was marked as indexed
    index_all(settings)
    mark = db.execute(
        "SELECT last_seq FROM search_watermarks WHERE tenant_id = %s", (tenant,)
    ).fetchone()
    assert mark == (3,)


def test_an_ipv4_mapped_address_is_searchable(
    client: FlaskClient,
    settings: Settings,
    queue: EventQueue,
    tenant: uuid.UUID,
    auth: dict[str, str],
) -> None:
    """OpenSearch keeps ``::ffff:1.2.3.4`` as 1.2.3.4 and refuses CIDR notation on the
    mapped form: searching for it was a 503 ("search unavailable") with OpenSearch up."""
    ids = load(
        settings,
        queue,
        tenant,
        [
            {"ip_address": "::ffff:1.2.3.4"},
            {"ip_address": "1.2.3.5"},
            {"ip_address": "2001:db8::1"},
        ],
    )
    index_all(settings)
    assert search(client, auth, "ip:::ffff:1.2.3.4") == [ids[0]]
    assert search(client, auth, "ip:::ffff:1.2.3.0/120") == [ids[1], ids[0]]
    assert search(client, auth, "doc", "&ip=::ffff:1.2.3.4") == [ids[0]]


def test_a_search_opensearch_refuses_is_refused_not_unavailable(
    client: FlaskClient,
    settings: Settings,
    queue: EventQueue,
    tenant: uuid.UUID,
    auth: dict[str, str],
) -> None:
    """OpenSearch's 400 means this query will never run: a 503 with Retry-After (as for
    OpenSearch down) would send clients into retries."""
    load(settings, queue, tenant, [{}])
    index_all(settings)
    with pytest.raises(SearchRefused, match="CIDR"):
        search_ids(
            make_client(settings.opensearch_url),
            tenant,
            [{"term": {"ip_address": "::ffff:1.2.3.4/128"}}],  # the mapped form, as CIDR
            None,
            size=10,
            prefix=settings.search_index_prefix,
        )
