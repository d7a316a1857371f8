"""Tenants endpoints: admin only, validated, paginated, and every change audited."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from flask.testing import FlaskClient

from auditlog.platform_events import PLATFORM_TENANT_ID
from auditlog.queue import EventQueue, decode_envelope
from tests.integration.conftest import drain_messages


def admin(token_for: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(None, 'admin', subject='ops@example.test')}"}


def test_create_get_patch_and_each_change_is_a_platform_event(
    client: FlaskClient, queue: EventQueue, token_for: Callable[..., str]
) -> None:
    headers = admin(token_for)
    created = client.post(
        "/api/v1/tenants", json={"name": "Acme", "retention_days": 90}, headers=headers
    )
    assert created.status_code == 201
    tenant = created.get_json()
    assert tenant["name"] == "Acme"
    assert tenant["status"] == "active"
    assert tenant["retention_days"] == 90
    assert created.headers["Location"] == f"/api/v1/tenants/{tenant['id']}"

    fetched = client.get(f"/api/v1/tenants/{tenant['id']}", headers=headers)
    assert fetched.get_json() == tenant

    patched = client.patch(
        f"/api/v1/tenants/{tenant['id']}", json={"status": "suspended"}, headers=headers
    )
    assert patched.status_code == 200
    assert patched.get_json()["status"] == "suspended"
    assert patched.get_json()["retention_days"] == 90

    records = [r for m in drain_messages(queue) for r in decode_envelope(m.body)]
    assert [(r["action_type"], r["resource_id"]) for r in records] == [
        ("CREATE", tenant["id"]),
        ("UPDATE", tenant["id"]),
    ]
    assert all(
        r["tenant_id"] == str(PLATFORM_TENANT_ID) and r["resource_type"] == "tenant"
        for r in records
    )
    assert records[1]["before_state"]["status"] == "active"
    assert records[1]["after_state"]["status"] == "suspended"
    assert records[1]["metadata"]["actor"] == "ops@example.test"


def test_a_suspended_tenant_is_refused_at_once(
    client: FlaskClient, queue: EventQueue, tenant: uuid.UUID, token_for: Callable[..., str]
) -> None:
    writer = {"Authorization": f"Bearer {token_for(tenant, 'writer')}"}
    event = {"action_type": "VIEW", "resource_type": "r", "resource_id": "1", "severity": "INFO"}
    assert client.post("/api/v1/logs", json=event, headers=writer).status_code == 202
    client.patch(f"/api/v1/tenants/{tenant}", json={"status": "inactive"}, headers=admin(token_for))
    refused = client.post("/api/v1/logs", json=event, headers=writer)
    assert refused.status_code == 403
    assert "inactive" in refused.get_json()["detail"]


def test_list_filters_and_paginates(
    client: FlaskClient, queue: EventQueue, token_for: Callable[..., str]
) -> None:
    headers = admin(token_for)
    marker = uuid.uuid4().hex[:8]
    ids = [
        client.post(
            "/api/v1/tenants", json={"name": f"{marker}-{i}", "status": status}, headers=headers
        ).get_json()["id"]
        for i, status in enumerate(["active", "suspended", "active", "active", "inactive"])
    ]
    page1 = client.get(f"/api/v1/tenants?name={marker.upper()}&limit=2", headers=headers).get_json()
    page2 = client.get(
        f"/api/v1/tenants?name={marker}&limit=2&cursor={page1['next_cursor']}", headers=headers
    ).get_json()
    page3 = client.get(
        f"/api/v1/tenants?name={marker}&limit=2&cursor={page2['next_cursor']}", headers=headers
    ).get_json()
    assert [t["id"] for t in page1["data"] + page2["data"] + page3["data"]] == ids
    assert page3["next_cursor"] is None
    active = client.get(f"/api/v1/tenants?name={marker}&status=active", headers=headers).get_json()
    assert [t["id"] for t in active["data"]] == [ids[0], ids[2], ids[3]]


def test_bad_input_is_named(
    client: FlaskClient, queue: EventQueue, token_for: Callable[..., str]
) -> None:
    headers = admin(token_for)
    cases: list[tuple[str, str, Any, set[str]]] = [
        ("post", "/api/v1/tenants", {"name": ""}, {"name"}),
        ("post", "/api/v1/tenants", {"name": "x", "status": "deleted"}, {"status"}),
        ("post", "/api/v1/tenants", {"name": "x", "retention_days": "30"}, {"retention_days"}),
        ("post", "/api/v1/tenants", {"name": "x", "plan": "gold"}, {"plan"}),
        ("post", "/api/v1/tenants", ["x"], {"body"}),
        ("get", "/api/v1/tenants?limit=0", None, {"limit"}),
        ("get", "/api/v1/tenants?status=gone", None, {"status"}),
        ("get", "/api/v1/tenants?cursor=!!", None, {"cursor"}),
        ("get", "/api/v1/tenants?page=2&limit=5", None, {"page"}),
    ]
    for method, url, body, fields in cases:
        response = getattr(client, method)(url, json=body, headers=headers)
        assert response.status_code == 422, (url, body)
        assert response.content_type == "application/problem+json"
        assert {e["field"] for e in response.get_json()["errors"]} == fields, (url, body)
    assert client.get(f"/api/v1/tenants/{uuid.uuid4()}", headers=headers).status_code == 404
    assert client.get("/api/v1/tenants/not-a-uuid", headers=headers).status_code == 404
    assert (
        client.patch(
            f"/api/v1/tenants/{uuid.uuid4()}", json={"status": "active"}, headers=headers
        ).status_code
        == 404
    )
    assert drain_messages(queue) == []


def test_only_platform_admins_manage_tenants(
    client: FlaskClient,
    queue: EventQueue,
    tenant: uuid.UUID,
    token_for: Callable[..., str],
    db: psycopg.Connection[Any],
) -> None:
    # A tenant's own admin (role admin with a tenant_id) is not a platform admin either.
    for role in ("user", "writer", "reader", "auditor", "admin"):
        headers = {"Authorization": f"Bearer {token_for(tenant, role)}"}
        assert client.get("/api/v1/tenants", headers=headers).status_code == 403
        assert (
            client.post("/api/v1/tenants", json={"name": "x"}, headers=headers).status_code == 403
        )
        assert (
            client.patch(
                f"/api/v1/tenants/{tenant}", json={"status": "suspended"}, headers=headers
            ).status_code
            == 403
        )
    assert client.get("/api/v1/tenants").status_code == 401
    status = db.execute("SELECT status FROM tenants WHERE id = %s", (tenant,)).fetchone()
    assert status == ("active",)
    assert drain_messages(queue) == []


def test_names_postgresql_cannot_store_are_422(
    client: FlaskClient, queue: EventQueue, tenant: uuid.UUID, token_for: Callable[..., str]
) -> None:
    headers = admin(token_for)
    created = client.post("/api/v1/tenants", json={"name": "a\u0000b"}, headers=headers)
    assert created.status_code == 422
    assert created.get_json()["errors"][0]["field"] == "name"
    patched = client.patch(f"/api/v1/tenants/{tenant}", json={"name": "x\u0000"}, headers=headers)
    assert patched.status_code == 422
    listed = client.get("/api/v1/tenants?name=a%00", headers=headers)
    assert listed.status_code == 422
    assert client.get("/api/v1/tenants/", headers=headers).status_code == 200  # trailing slash
    assert drain_messages(queue) == []
