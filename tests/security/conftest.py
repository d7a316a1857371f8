"""A small world for the security tests: tenants A and B with look-alike events (the same
resource ids, sessions and words, many of them injection strings), stored by the real drain
and indexed into the real OpenSearch, and tenant C with no events (the target of the
destructive probes). Every test asks as B, or as C, and must never see A."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from api import create_app
from auditlog.drain import Drainer
from auditlog.events import AcceptedEvent, EventIn
from auditlog.ids import uuid7_at
from auditlog.indexer import IndexStats, SearchIndexer
from auditlog.queue import EventQueue, pack_records
from auditlog.search import INDEX_PREFIX, make_client
from auditlog.settings import Settings
from auditlog.store.pool import connect
from auditlog.tenants import create_tenant
from auditlog.tokens import ROLES, mint_token

# Values both A and B store, so a filter or query that escapes the tenant scope (or treats
# the value as syntax) would bring A's rows into B's answer.
STORED_VALUES = [
    "it's",
    "100%",
    "a_b",
    "back\\slash",
    "' OR '1'='1",
    "'; DROP TABLE audit_logs; --",
    "*:*",
    '" OR 1=1 --',
    "ünïcødé ☃ \U0001d54f",  # a snowman and a non-BMP letter
]
SEARCH_WORD = "needle"


@dataclass
class Tenant:
    id: uuid.UUID
    tokens: dict[str, str]  # role -> bearer header value
    ids: list[str] = field(default_factory=list)  # stored event ids
    records: list[dict[str, Any]] = field(default_factory=list)

    def headers(self, role: str = "user") -> dict[str, str]:
        return {"Authorization": self.tokens[role]}


@dataclass
class World:
    a: Tenant
    b: Tenant
    c: Tenant  # no events
    platform_admin: dict[str, str]  # role admin, no tenant: the tenants endpoints


def _records(tenant: uuid.UUID, tag: str) -> list[dict[str, Any]]:
    now = datetime.now(UTC).replace(microsecond=0)
    out = []
    for i, value in enumerate(STORED_VALUES):
        created = now - timedelta(minutes=len(STORED_VALUES) - i)
        body = EventIn.model_validate(
            {
                "action_type": "UPDATE",
                "severity": "WARNING",
                "resource_type": value,
                "resource_id": value,
                "session_id": value,
                "user_agent": value,
                "ip_address": "10.1.2.3",
                "user_id": str(uuid.UUID(int=i + 1)),
                "metadata": {"note": f"{SEARCH_WORD} {tag}", "value": value},
            }
        )
        out.append(AcceptedEvent(uuid7_at(created), tenant, created, body).to_record())
    return out


@pytest.fixture(scope="session")
def world(settings: Settings) -> World:
    with connect(settings.database_url) as conn:
        ids = [
            uuid.UUID(str(create_tenant(conn, name=f"security-{n}")["id"])) for n in ("a", "b", "c")
        ]
        conn.commit()
    tenants = [
        Tenant(
            t,
            {
                role: f"Bearer {mint_token(settings, tenant_id=t, role=role, subject='sec')}"
                for role in ROLES
            },
        )
        for t in ids
    ]
    a, b, c = tenants
    a.records, b.records = _records(a.id, "alpha"), _records(b.id, "bravo")
    a.ids, b.ids = [r["id"] for r in a.records], [r["id"] for r in b.records]
    queue = EventQueue.from_settings(settings)
    queue.send_bodies(list(pack_records(a.records + b.records)))
    Drainer(queue, settings.database_url).run(time_budget_s=30, idle_s=1.5)
    with connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM audit_logs WHERE tenant_id = ANY(%s)", ([a.id, b.id],)
        ).fetchone()
        assert row == (len(a.ids) + len(b.ids),), "the drain did not store the world"
        search = make_client(settings.opensearch_url)
        SearchIndexer(search, settings.database_url).catch_up(conn, IndexStats())
    search.indices.refresh(index=f"{INDEX_PREFIX}*")
    platform = mint_token(settings, tenant_id=None, role="admin", subject="sec-platform")
    return World(a, b, c, {"Authorization": f"Bearer {platform}"})


@pytest.fixture(scope="session")
def app(settings: Settings) -> Iterator[Flask]:
    application = create_app(settings)
    yield application
    application.extensions["auditlog"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def problem(response: TestResponse) -> dict[str, Any]:
    """The response's problem document (and that it is one)."""
    assert response.content_type == "application/problem+json", (
        response.status_code,
        response.content_type,
        response.get_data(as_text=True)[:300],
    )
    body = json.loads(response.get_data())
    assert body["status"] == response.status_code
    return dict(body)


def fields_named(response: TestResponse) -> set[str]:
    return {e["field"] for e in problem(response).get("errors", [])}


def assert_none_of(response: TestResponse, foreign: Tenant, sent: str = "") -> None:
    """No id of ``foreign`` (its events, nor the tenant itself) anywhere in the body, other
    than one the request itself ``sent`` (a 422 may quote the value it refuses)."""
    text = response.get_data().decode("utf-8", "replace")
    leaked = [i for i in [*foreign.ids, str(foreign.id)] if i in text and i not in sent]
    assert not leaked, f"{len(leaked)} of tenant {foreign.id}'s ids leaked: {leaked[:3]}"
