"""Injection strings in every filter, in ``q``, in cursors and in path ids: each answer is a
4xx problem naming the parameter or a correct answer (exact matches only, the caller's rows
only), never a 500 and never another tenant's rows. Both tenants store the same hostile
values, so a value treated as SQL or OpenSearch syntax rather than data shows up as A's
rows in B's answer or as a wrong set of B's rows."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import psycopg
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.security.conftest import STORED_VALUES, World, assert_none_of, fields_named, problem

INJECTIONS = [
    *STORED_VALUES,
    "'",
    "''",
    "%",
    "_",
    "%%",
    "a%",
    "\\",
    "\\'",
    "\\\\%",
    "\x00",
    "a\x00b",
    "\u202e",
    "\ufeff",
    "NULL",
    "null",
    "1; SELECT pg_sleep(10)",
    "1) OR (1=1",
    "$ne",
    '{"match_all": {}}',
    "*",
    "?",
    "tenant_id:*",
    "_index:*",
    "_id:*",
    "[* TO *]",
    "(",
    ")",
    "~",
    "/.*/",
    "a OR b",
    "-",
    "+",
    "|",
    "a" * 257,
    "a" * 5000,
    "%27",
    "%00",
    "../../etc/passwd",
    "${jndi:ldap://x}",
    "<script>alert(1)</script>",
    "2024-01-01T00:00:00Z' OR '1'='1",
    "10.0.0.0/0' --",
]
LIST_FILTERS = [
    "user_id",
    "session_id",
    "action_type",
    "resource_type",
    "resource_id",
    "severity",
    "min_severity",
    "ip",
    "from",
    "to",
    "occurred_from",
    "occurred_to",
]
EXACT_FIELDS = ("session_id", "resource_type", "resource_id")


def values(world: World) -> list[str]:
    return [*INJECTIONS, f"tenant_id:{world.a.id}", str(world.a.id), world.a.ids[0]]


def check_answer(response: TestResponse, param: str, world: World, sent: str = "") -> Any:
    """A 4xx problem naming ``param`` (None), or the JSON body of a 200."""
    assert response.status_code != 500, (param, response.get_data(as_text=True)[:300])
    assert_none_of(response, world.a, sent)
    if response.status_code == 200:
        return None if response.mimetype != "application/json" else response.get_json()
    assert response.status_code in (400, 422), (param, response.status_code)
    if response.status_code == 422:
        assert param in fields_named(response), (param, problem(response))
    else:
        problem(response)
    return None


def assert_exact(rows: list[dict[str, Any]], param: str, value: str, world: World) -> None:
    assert {r["tenant_id"] for r in rows} <= {str(world.b.id)}
    if param in EXACT_FIELDS:
        expected = {r["id"] for r in world.b.records if r[param] == value}
        assert {r["id"] for r in rows} == expected, (param, value)


def test_every_list_filter_and_q(client: FlaskClient, world: World) -> None:
    headers = world.b.headers("reader")
    for param in [*LIST_FILTERS, "q", "order", "limit", "cursor"]:
        for value in values(world):
            response = client.get("/api/v1/logs", query_string={param: value}, headers=headers)
            body = check_answer(response, param, world, value)
            if body is not None:
                assert_exact(body["data"], param, value, world)


def test_every_export_filter(client: FlaskClient, world: World) -> None:
    headers = world.b.headers("auditor")
    for param in [*LIST_FILTERS, "format"]:
        for value in values(world):
            query = {"format": "ndjson", param: value}
            response = client.get("/api/v1/logs/export", query_string=query, headers=headers)
            check_answer(response, param, world, value)
            if response.status_code == 200:
                rows = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
                assert_exact(rows, param, value, world)


def test_stats_verify_tenants_and_cleanup_parameters(
    client: FlaskClient, world: World, db: psycopg.Connection[Any]
) -> None:
    before = db.execute(
        "SELECT count(*) FROM audit_logs WHERE tenant_id = %s", (world.a.id,)
    ).fetchone()
    for value in values(world):
        for param in ("from", "to", "bucket"):
            response = client.get(
                "/api/v1/logs/stats", query_string={param: value}, headers=world.b.headers()
            )
            body = check_answer(response, param, world, value)
            if body is not None:
                assert body["total_logs"] <= len(world.b.ids)
        for param in ("from_seq", "to_seq"):
            response = client.get(
                "/api/v1/logs/verify", query_string={param: value}, headers=world.b.headers()
            )
            check_answer(response, param, world, value)
        for param in ("name", "status", "limit", "cursor"):
            # The platform admin sees every tenant: here only correctness and no 500.
            response = client.get(
                "/api/v1/tenants", query_string={param: value}, headers=world.platform_admin
            )
            assert response.status_code in (200, 422), (param, value, response.status_code)
            if response.status_code == 422:
                assert param in fields_named(response)
            elif param == "name":
                names = [t["name"] for t in response.get_json()["data"]]
                assert all(value.lower() in name.lower() for name in names), value
        # The destructive ones as C (no events): nothing of A's may change.
        for param in ("before", "older_than_days", "archive"):
            response = client.delete(
                "/api/v1/logs/cleanup",
                query_string={param: value},
                headers=world.c.headers("admin"),
            )
            check_answer(response, param if param != "archive" else "before", world, value)
        response = client.delete(
            f"/api/v1/logs/cleanup/{world.a.ids[0]}",
            query_string={"fields": value},
            headers=world.c.headers("admin"),
        )
        assert response.status_code in (404, 422), value
        problem(response)
    after = db.execute(
        "SELECT count(*), count(redacted) FROM audit_logs WHERE tenant_id = %s", (world.a.id,)
    ).fetchone()
    assert after == (before[0] if before else None, 0)


def test_hostile_path_ids(client: FlaskClient, world: World) -> None:
    for value in [*INJECTIONS, str(world.a.id), "00000000-0000-0000-0000-000000000000"]:
        quoted = value.replace("%", "%25").replace("/", "%2F").replace("?", "%3F")
        quoted = quoted.replace("#", "%23").replace("\x00", "%00").replace("\\", "%5C")
        response = client.get(f"/api/v1/logs/{quoted}", headers=world.b.headers())
        # 308: a value with a slash turns into a path with a trailing slash (redirected).
        assert response.status_code in (308, 404, 422), (value, response.status_code)
        assert_none_of(response, world.a, value)
        response = client.get(f"/api/v1/tenants/{quoted}", headers=world.platform_admin)
        assert response.status_code in (200, 308, 404), (value, response.status_code)
        if response.status_code == 200:
            assert response.get_json()["id"] == value  # A, or the platform tenant (nil)


def test_crafted_cursors(client: FlaskClient, world: World) -> None:
    """Cursors are client-held: a forged one with hostile fields is a 422 naming it, and
    one that decodes to a valid position still cannot leave the tenant."""

    def encode(payload: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")

    a_first = world.a.ids[0]
    cursors = [
        encode({"c": "2024-01-01T00:00:00+00:00' OR '1'='1", "i": str(uuid.uuid4()), "o": "desc"}),
        encode({"c": "2024-01-01T00:00:00+00:00", "i": "' OR 1=1 --", "o": "desc"}),
        encode({"c": "2024-01-01T00:00:00+00:00", "i": a_first, "o": "desc", "t": str(world.a.id)}),
        encode({"c": "2999-01-01T00:00:00+00:00", "i": a_first, "o": "desc"}),
        encode({"c": None, "i": None, "o": "desc"}),
        encode({"c": ["x"], "i": {"$ne": 1}, "o": "desc"}),
        encode({"c": "2999-01-01T00:00:00+00:00", "i": a_first, "o": "asc"}),
        "e30",  # {}
        "!!!",
    ]
    for cursor in cursors:
        for extra in ("", "&q=needle"):
            response = client.get(
                f"/api/v1/logs?cursor={cursor}{extra}", headers=world.b.headers("reader")
            )
            body = check_answer(response, "cursor", world)
            if body is not None:
                assert {r["tenant_id"] for r in body["data"]} <= {str(world.b.id)}


def test_invalid_utf8_and_raw_bytes_in_the_query(client: FlaskClient, world: World) -> None:
    for raw in ("resource_id=%ff%fe", "q=%ed%a0%80", "session_id=%c0%af", "q=%00", "q=%ff"):
        response = client.get(f"/api/v1/logs?{raw}", headers=world.b.headers())
        body = check_answer(response, raw.split("=")[0], world)
        if body is not None:
            assert {r["tenant_id"] for r in body["data"]} <= {str(world.b.id)}
