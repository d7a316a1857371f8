"""The tenant-isolation matrix over every route of the app: tenant B's tokens (or C's, for
the destructive endpoints) against tenant A's data. Each answer is a 404, a 403, or B's own
data, and no id of A appears anywhere in any body.

The routes are read from the app's url_map, so a new endpoint fails this module until it
gets a probe here or a line in ``TENANT_FREE`` / ``COVERED_ELSEWHERE`` saying why not.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pyarrow.parquet as pq
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.security.conftest import SEARCH_WORD, STORED_VALUES, World, assert_none_of, problem

EVENT = {"action_type": "VIEW", "resource_type": "doc", "resource_id": "1", "severity": "INFO"}

# (endpoint, method) pairs that hold no tenant data, with the reason.
TENANT_FREE = {
    ("static", "GET"): "Flask's static folder (the app has none: every name is a 404)",
    ("health.healthz", "GET"): "liveness: a fixed body",
    ("health.readyz", "GET"): "readiness: which servers answer, no tenant data",
    ("metrics.metrics", "GET"): (
        "Prometheus text for the operator (counters labelled by tenant id, never event data); "
        "meant to be scraped inside the network, see the README"
    ),
    ("docs.openapi_json", "GET"): "the published OpenAPI document",
    ("docs.docs_page", "GET"): "the Swagger UI page",
    ("docs.docs_static", "GET"): "the Swagger UI's scripts and styles",
}
COVERED_ELSEWHERE = {
    ("stream._stream", "GET"): (
        "the WebSocket itself needs a live server: tests/integration/test_stream.py::"
        "test_events_reach_every_socket_of_the_tenant_once_in_order_across_processes "
        "(B's socket never receives A's events); its plain-HTTP twin is probed here"
    ),
}

Probe = Callable[[FlaskClient, World, psycopg.Connection[Any]], None]


def _ok_json(response: TestResponse, status: int = 200) -> Any:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    return response.get_json()


def _own_ids(rows: list[dict[str, Any]], world: World) -> set[str]:
    ids = {r["id"] for r in rows}
    assert not ids & set(world.a.ids)
    assert {r["tenant_id"] for r in rows} <= {str(world.b.id)}
    return ids


def probe_create(client: FlaskClient, world: World, db: psycopg.Connection[Any]) -> None:
    """A body naming A is refused; an Idempotency-Key A used yields B its own new event,
    never A's answer."""
    named_a = client.post(
        "/api/v1/logs", json={**EVENT, "tenant_id": str(world.a.id)}, headers=world.b.headers()
    )
    assert named_a.status_code == 422
    assert {e["field"] for e in problem(named_a)["errors"]} == {"tenant_id"}
    key = f"shared-{uuid.uuid4().hex[:8]}"
    a_answer = _ok_json(
        client.post(
            "/api/v1/logs", json=EVENT, headers={**world.a.headers(), "Idempotency-Key": key}
        ),
        202,
    )
    response = client.post(
        "/api/v1/logs/", json=EVENT, headers={**world.b.headers(), "Idempotency-Key": key}
    )
    b_answer = _ok_json(response, 202)
    assert b_answer["id"] != a_answer["id"]
    assert "Idempotent-Replayed" not in response.headers
    assert a_answer["id"] not in response.get_data(as_text=True)
    assert_none_of(response, world.a)


def probe_bulk(client: FlaskClient, world: World, db: psycopg.Connection[Any]) -> None:
    key = f"bulk-shared-{uuid.uuid4().hex[:8]}"
    body = [EVENT, {**EVENT, "tenant_id": str(world.a.id)}]
    a_answer = _ok_json(
        client.post(
            "/api/v1/logs/bulk",
            json=[EVENT, EVENT],
            headers={**world.a.headers(), "Idempotency-Key": key},
        ),
        202,
    )
    response = client.post(
        "/api/v1/logs/bulk", json=body, headers={**world.b.headers(), "Idempotency-Key": key}
    )
    answer = _ok_json(response, 202)
    assert (answer["accepted"], answer["rejected"]) == (1, 1)
    assert answer["results"][1]["errors"][0]["field"] == "events.1.tenant_id"
    a_new = {r["id"] for r in a_answer["results"]}
    assert not a_new & {r.get("id") for r in answer["results"]}
    assert_none_of(response, world.a)


def probe_get(client: FlaskClient, world: World, db: psycopg.Connection[Any]) -> None:
    for event_id in world.a.ids:
        for role in ("user", "reader", "auditor", "admin"):
            response = client.get(f"/api/v1/logs/{event_id}", headers=world.b.headers(role))
            assert response.status_code == 404
            assert problem(response)["detail"] == "No such event."
            assert_none_of(response, world.a)
    own = _ok_json(client.get(f"/api/v1/logs/{world.b.ids[0]}", headers=world.b.headers()))
    assert own["id"] == world.b.ids[0]


def probe_list(client: FlaskClient, world: World, db: psycopg.Connection[Any]) -> None:
    """Filters that A's rows match as well as B's, and the search, yield B's rows only."""
    queries = ["", "?limit=1000", "?order=asc", f"?q={SEARCH_WORD}", f"?q={SEARCH_WORD}+alpha"]
    queries += [f"?resource_id={value}" for value in ("it's", "100%", "a_b")]
    queries += [f"?session_id=it's&q={SEARCH_WORD}", "?ip=10.0.0.0/8", "?severity=WARNING"]
    for query in queries:
        response = client.get(f"/api/v1/logs{query}", headers=world.b.headers("reader"))
        rows = _ok_json(response)["data"]
        assert_none_of(response, world.a)
        _own_ids(rows, world)
        if query not in ("", "?limit=1000", "?order=asc") and "alpha" not in query:
            assert rows, query  # B's own look-alikes are found: the filter did apply
    alpha = _ok_json(client.get("/api/v1/logs?q=alpha", headers=world.b.headers()))
    assert alpha["data"] == []  # A's word, B's scope: nothing


def probe_export(client: FlaskClient, world: World, db: psycopg.Connection[Any]) -> None:
    for fmt in ("csv", "ndjson"):
        response = client.get(
            f"/api/v1/logs/export?format={fmt}&resource_id=it's", headers=world.b.headers()
        )
        assert response.status_code == 200
        assert_none_of(response, world.a)
        assert world.b.ids[0] in response.get_data(as_text=True)
    response = client.get("/api/v1/logs/export?format=parquet", headers=world.b.headers())
    table = pq.read_table(io.BytesIO(response.get_data()))
    ids = set(table.column("id").to_pylist())
    assert set(world.b.ids) <= ids
    assert not ids & set(world.a.ids)
    assert set(table.column("tenant_id").to_pylist()) == {str(world.b.id)}


def probe_stats(client: FlaskClient, world: World, db: psycopg.Connection[Any]) -> None:
    response = client.get("/api/v1/logs/stats?bucket=hour", headers=world.b.headers("auditor"))
    stats = _ok_json(response)
    assert_none_of(response, world.a)
    # B's own look-alikes plus whatever the other probes ingested for B (nothing is drained
    # after the world was built, so only the world's events count).
    assert stats["total_logs"] == len(world.b.ids)
    empty = _ok_json(client.get("/api/v1/logs/stats", headers=world.c.headers()))
    assert empty["total_logs"] == 0


def probe_verify(client: FlaskClient, world: World, db: psycopg.Connection[Any]) -> None:
    response = client.get("/api/v1/logs/verify", headers=world.b.headers())
    result = _ok_json(response)
    assert (result["ok"], result["events_checked"]) == (True, len(world.b.ids))
    assert_none_of(response, world.a)
    empty = _ok_json(client.get("/api/v1/logs/verify", headers=world.c.headers()))
    assert empty["events_checked"] == 0


def _a_count(db: psycopg.Connection[Any], world: World) -> tuple[int, int]:
    row = db.execute(
        "SELECT count(*), count(redacted) FROM audit_logs WHERE tenant_id = %s", (world.a.id,)
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def probe_cleanup(client: FlaskClient, world: World, db: psycopg.Connection[Any]) -> None:
    """C's admin deletes everything of its own before tomorrow: A keeps every event."""
    before = _a_count(db, world)
    response = client.delete(
        "/api/v1/logs/cleanup?older_than_days=1&archive=false", headers=world.c.headers("admin")
    )
    assert _ok_json(response)["deleted"] == 0
    assert_none_of(response, world.a)
    assert _a_count(db, world) == before == (len(world.a.ids), 0)


def probe_redact(client: FlaskClient, world: World, db: psycopg.Connection[Any]) -> None:
    for event_id in world.a.ids[:3]:
        response = client.delete(
            f"/api/v1/logs/cleanup/{event_id}", headers=world.c.headers("admin")
        )
        assert response.status_code == 404
        assert_none_of(response, world.a)
    assert _a_count(db, world) == (len(world.a.ids), 0)


def probe_stream_over_http(client: FlaskClient, world: World, db: psycopg.Connection[Any]) -> None:
    response = client.get("/api/v1/logs/stream", headers=world.b.headers("reader"))
    assert response.status_code == 426
    assert_none_of(response, world.a)


def probe_tenants_list(client: FlaskClient, world: World, db: psycopg.Connection[Any]) -> None:
    """Only a platform admin (role admin, no tenant_id) manages tenants: every role of B,
    B's own admin included, is refused."""
    for role in ("user", "writer", "reader", "auditor", "admin"):
        response = client.get("/api/v1/tenants?name=security-a", headers=world.b.headers(role))
        assert response.status_code == 403
        assert_none_of(response, world.a)


def probe_tenants_create(client: FlaskClient, world: World, db: psycopg.Connection[Any]) -> None:
    for role in ("user", "writer", "reader", "auditor", "admin"):
        response = client.post(
            "/api/v1/tenants", json={"name": f"by-{role}"}, headers=world.b.headers(role)
        )
        assert response.status_code == 403
    row = db.execute("SELECT count(*) FROM tenants WHERE name LIKE 'by-%%'").fetchone()
    assert row == (0,)


def probe_tenant_get(client: FlaskClient, world: World, db: psycopg.Connection[Any]) -> None:
    for role in ("user", "writer", "reader", "auditor", "admin"):
        response = client.get(f"/api/v1/tenants/{world.a.id}", headers=world.b.headers(role))
        assert response.status_code == 403
        assert_none_of(response, world.a)


def probe_tenant_patch(client: FlaskClient, world: World, db: psycopg.Connection[Any]) -> None:
    for role in ("user", "writer", "reader", "auditor", "admin"):
        response = client.patch(
            f"/api/v1/tenants/{world.a.id}",
            json={"status": "suspended"},
            headers=world.b.headers(role),
        )
        assert response.status_code == 403
        assert_none_of(response, world.a)
    row = db.execute("SELECT status FROM tenants WHERE id = %s", (world.a.id,)).fetchone()
    assert row == ("active",)


PROBES: dict[tuple[str, str], Probe] = {
    ("logs.create_log", "POST"): probe_create,
    ("logs.create_logs_bulk", "POST"): probe_bulk,
    ("logs.get_log", "GET"): probe_get,
    ("logs.list_logs", "GET"): probe_list,
    ("logs.export_logs", "GET"): probe_export,
    ("logs.stats", "GET"): probe_stats,
    ("logs.verify", "GET"): probe_verify,
    ("logs.cleanup", "DELETE"): probe_cleanup,
    ("logs.redact", "DELETE"): probe_redact,
    ("stream.stream_over_http", "GET"): probe_stream_over_http,
    ("tenants.list_tenants", "GET"): probe_tenants_list,
    ("tenants.create_tenant", "POST"): probe_tenants_create,
    ("tenants.get_tenant", "GET"): probe_tenant_get,
    ("tenants.update_tenant", "PATCH"): probe_tenant_patch,
}


def routes(app: Flask) -> set[tuple[str, str]]:
    return {
        (rule.endpoint, method)
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }


def test_every_route_is_probed_or_declared_tenant_free(app: Flask) -> None:
    found = routes(app)
    declared = set(PROBES) | set(TENANT_FREE) | set(COVERED_ELSEWHERE)
    assert not found - declared, f"routes without an isolation probe: {sorted(found - declared)}"
    assert not declared - found, f"probes for routes that no longer exist: {declared - found}"
    assert not set(PROBES) & (set(TENANT_FREE) | set(COVERED_ELSEWHERE))


def test_tenant_b_never_sees_tenant_a(
    app: Flask, client: FlaskClient, world: World, db: psycopg.Connection[Any]
) -> None:
    assert len(world.a.ids) == len(STORED_VALUES)
    failures = []
    for (endpoint, method), probe in PROBES.items():
        try:
            probe(client, world, db)
        except AssertionError as exc:
            failures.append(f"{method} {endpoint}: {exc}")
    assert not failures, "\n".join(failures)


def test_tenant_free_routes_hold_no_event_data(client: FlaskClient, world: World) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/api/v1/openapi.json", "/api/v1/docs"):
        response = client.get(path, headers=world.b.headers())
        assert response.status_code in (200, 503), path
        text = response.get_data(as_text=True)
        assert not [i for i in world.a.ids + world.b.ids if i in text], path
