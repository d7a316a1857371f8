"""POST /api/v1/logs against the real SQS server: what is accepted is exactly what is queued,
and what is rejected leaves nothing on the queue."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import jwt
from flask.testing import FlaskClient

from auditlog.queue import EventQueue, decode_envelope
from auditlog.settings import Settings
from tests.integration.conftest import drain_messages

EVENT = {
    "user_id": "0b7d2f5e-8a51-4d8c-9d3e-1f2a3b4c5d6e",
    "session_id": "sess-42",
    "ip_address": "2001:db8::7",
    "user_agent": "pytest",
    "action_type": "UPDATE",
    "resource_type": "invoice",
    "resource_id": "inv-9",
    "severity": "WARNING",
    "before_state": {"amount": 10, "tags": ["a"]},
    "after_state": {"amount": 12.5, "tags": ["a", "b"]},
    "metadata": {"reason": "manual fix", "nested": {"ok": True, "none": None}},
    "occurred_at": "2024-05-01T12:00:00.123456Z",
}


def problem(response: object) -> dict[str, object]:
    assert response.content_type == "application/problem+json"  # type: ignore[attr-defined]
    body: dict[str, object] = response.get_json()  # type: ignore[attr-defined]
    assert body["status"] == response.status_code  # type: ignore[attr-defined]
    return body


def fields_named(response: object) -> set[str]:
    body = problem(response)
    return {e["field"] for e in body["errors"]}  # type: ignore[attr-defined, index, union-attr]


def test_accepted_event_is_on_the_queue_exactly_as_accepted(
    client: FlaskClient, queue: EventQueue, tenant: uuid.UUID, auth: dict[str, str]
) -> None:
    response = client.post("/api/v1/logs", json={**EVENT, "tenant_id": str(tenant)}, headers=auth)
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "queued"
    assert uuid.UUID(body["id"]).version == 7
    assert response.headers["Location"] == f"/api/v1/logs/{body['id']}"

    messages = drain_messages(queue)
    assert len(messages) == 1
    [record] = decode_envelope(messages[0].body)
    assert record == {
        **EVENT,
        "id": body["id"],
        "tenant_id": str(tenant),
        "created_at": body["created_at"],
    }


def test_trailing_slash_works_too(
    client: FlaskClient, queue: EventQueue, auth: dict[str, str]
) -> None:
    minimal = {k: EVENT[k] for k in ("action_type", "resource_type", "resource_id", "severity")}
    response = client.post("/api/v1/logs/", json=minimal, headers=auth)
    assert response.status_code == 202
    [message] = drain_messages(queue)
    [record] = decode_envelope(message.body)
    assert record["user_id"] is None
    assert record["metadata"] is None


def test_invalid_event_is_422_naming_fields_and_nothing_queued(
    client: FlaskClient, queue: EventQueue, auth: dict[str, str]
) -> None:
    response = client.post(
        "/api/v1/logs",
        json={**EVENT, "severity": "LOUD", "ip_address": "nope", "colour": "red"},
        headers=auth,
    )
    assert response.status_code == 422
    assert fields_named(response) == {"severity", "ip_address", "colour"}
    assert drain_messages(queue) == []


def test_other_tenant_in_body_is_rejected(
    client: FlaskClient, queue: EventQueue, auth: dict[str, str]
) -> None:
    response = client.post(
        "/api/v1/logs", json={**EVENT, "tenant_id": str(uuid.uuid4())}, headers=auth
    )
    assert response.status_code == 422
    assert fields_named(response) == {"tenant_id"}
    assert drain_messages(queue) == []


def test_malformed_json_wrong_type_and_bad_utf8_are_4xx(
    client: FlaskClient, queue: EventQueue, auth: dict[str, str]
) -> None:
    bad_json = client.post(
        "/api/v1/logs", data="{not json", content_type="application/json", headers=auth
    )
    assert bad_json.status_code == 400
    assert fields_named(bad_json) == {"body"}

    bad_utf8 = client.post(
        "/api/v1/logs", data=b'{"a": "\xff"}', content_type="application/json", headers=auth
    )
    assert bad_utf8.status_code == 400
    assert "UTF-8" in str(problem(bad_utf8)["detail"])

    form = client.post(
        "/api/v1/logs", data="a=b", content_type="application/x-www-form-urlencoded", headers=auth
    )
    assert form.status_code == 415
    assert fields_named(form) == {"Content-Type"}

    # Python will not read an integer of more than 4,300 digits: a 400, not a 500.
    long_number = '{"action_type": "VIEW", "metadata": {"n": ' + "9" * 5000 + "}}"
    for path in ("/api/v1/logs", "/api/v1/logs/bulk"):
        too_long = client.post(
            path, data=long_number, content_type="application/json", headers=auth
        )
        assert too_long.status_code == 400
        assert problem(too_long)["errors"] == [
            {"field": "body", "message": "holds an integer of more than 4,300 digits"}
        ]

    # NaN, Infinity and numbers past a float's range are not JSON; jsonb would store none.
    for number in ("NaN", "-Infinity", "1e309"):
        non_finite = '{"action_type": "VIEW", "metadata": {"n": ' + number + "}}"
        for path in ("/api/v1/logs", "/api/v1/logs/bulk"):
            refused = client.post(
                path, data=non_finite, content_type="application/json", headers=auth
            )
            assert refused.status_code == 400, (number, path)
            assert fields_named(refused) == {"body"}

    not_object = client.post("/api/v1/logs", json=[EVENT], headers=auth)
    assert not_object.status_code == 422
    assert fields_named(not_object) == {"body"}
    assert drain_messages(queue) == []


def test_oversize_body_is_413(
    client: FlaskClient, queue: EventQueue, auth: dict[str, str], settings: Settings
) -> None:
    huge = json.dumps({**EVENT, "metadata": {"x": "y" * settings.api_max_body_bytes}})
    response = client.post("/api/v1/logs", data=huge, content_type="application/json", headers=auth)
    assert response.status_code == 413
    problem(response)
    assert drain_messages(queue) == []


def test_authentication_failures_are_401(
    client: FlaskClient,
    queue: EventQueue,
    tenant: uuid.UUID,
    settings: Settings,
    token_for: Callable[..., str],
) -> None:
    now = int(time.time())
    claims = {"sub": "x", "tenant_id": str(tenant), "role": "user", "iat": now, "exp": now + 60}
    cases = {
        "missing": {},
        "not bearer": {"Authorization": "Basic abc"},
        "garbage": {"Authorization": "Bearer not.a.jwt"},
        "wrong key": {
            "Authorization": "Bearer "
            + jwt.encode(claims, "another-secret-of-enough-length-0123456789")
        },
        "alg none": {"Authorization": "Bearer " + jwt.encode(claims, None, algorithm="none")},
        "expired": {"Authorization": "Bearer " + token_for(tenant, ttl_seconds=-10)},
        "no tenant": {"Authorization": "Bearer " + token_for(None, role="user")},
        "bad tenant": {
            "Authorization": "Bearer "
            + jwt.encode({**claims, "tenant_id": "x"}, settings.jwt_secret)
        },
        "bad role": {
            "Authorization": "Bearer " + jwt.encode({**claims, "role": "root"}, settings.jwt_secret)
        },
    }
    for name, headers in cases.items():
        response = client.post("/api/v1/logs", json=EVENT, headers=headers)
        assert response.status_code == 401, name
        assert response.headers["WWW-Authenticate"] == "Bearer", name
        problem(response)
    assert drain_messages(queue) == []


def test_role_that_may_not_write_is_403(
    client: FlaskClient, queue: EventQueue, tenant: uuid.UUID, token_for: Callable[..., str]
) -> None:
    response = client.post(
        "/api/v1/logs",
        json=EVENT,
        headers={"Authorization": f"Bearer {token_for(tenant, 'reader')}"},
    )
    assert response.status_code == 403
    assert "reader" in str(problem(response)["detail"])
    assert drain_messages(queue) == []


def test_tenant_that_is_not_active_cannot_ingest(
    client: FlaskClient,
    queue: EventQueue,
    new_tenant: Callable[..., uuid.UUID],
    token_for: Callable[..., str],
) -> None:
    suspended = new_tenant("suspended")
    response = client.post(
        "/api/v1/logs", json=EVENT, headers={"Authorization": f"Bearer {token_for(suspended)}"}
    )
    assert response.status_code == 403
    assert "suspended" in str(problem(response)["detail"])

    unknown = client.post(
        "/api/v1/logs", json=EVENT, headers={"Authorization": f"Bearer {token_for(uuid.uuid4())}"}
    )
    assert unknown.status_code == 403
    assert drain_messages(queue) == []


def test_unknown_route_and_method_are_problems(client: FlaskClient, auth: dict[str, str]) -> None:
    missing = client.get("/api/v1/nothing", headers=auth)
    assert missing.status_code == 404
    problem(missing)
    wrong_method = client.put("/api/v1/logs", json=EVENT, headers=auth)
    assert wrong_method.status_code == 405
    problem(wrong_method)
