"""Idempotency-Key: the first answer again, and never a second event."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from flask.testing import FlaskClient

from auditlog.drain import Drainer
from auditlog.queue import EventQueue, decode_envelope
from auditlog.settings import Settings
from tests.integration.conftest import drain_messages

EVENT = {"action_type": "UPDATE", "resource_type": "doc", "resource_id": "1", "severity": "INFO"}


def test_same_key_same_request_returns_the_first_answer(
    client: FlaskClient, queue: EventQueue, auth: dict[str, str]
) -> None:
    headers = {**auth, "Idempotency-Key": "order-42"}
    first = client.post("/api/v1/logs", json=EVENT, headers=headers)
    second = client.post("/api/v1/logs", json=EVENT, headers=headers)
    assert first.status_code == second.status_code == 202
    assert second.get_json() == first.get_json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    records = [r for m in drain_messages(queue) for r in decode_envelope(m.body)]
    assert [r["id"] for r in records] == [first.get_json()["id"]]


def test_same_key_different_request_is_rejected(
    client: FlaskClient, queue: EventQueue, auth: dict[str, str]
) -> None:
    headers = {**auth, "Idempotency-Key": "k-1"}
    assert client.post("/api/v1/logs", json=EVENT, headers=headers).status_code == 202
    other = client.post("/api/v1/logs", json={**EVENT, "resource_id": "2"}, headers=headers)
    assert other.status_code == 422
    assert other.get_json()["errors"][0]["field"] == "Idempotency-Key"
    assert len(drain_messages(queue)) == 1


def test_keys_are_per_tenant_and_bounded(
    client: FlaskClient, queue: EventQueue, auth: dict[str, str], new_tenant: Any, token_for: Any
) -> None:
    other = {"Authorization": f"Bearer {token_for(new_tenant())}", "Idempotency-Key": "shared"}
    a = client.post("/api/v1/logs", json=EVENT, headers={**auth, "Idempotency-Key": "shared"})
    b = client.post("/api/v1/logs", json=EVENT, headers=other)
    assert a.get_json()["id"] != b.get_json()["id"]
    too_long = client.post(
        "/api/v1/logs", json=EVENT, headers={**auth, "Idempotency-Key": "x" * 256}
    )
    assert too_long.status_code == 422
    assert too_long.get_json()["errors"][0]["field"] == "Idempotency-Key"
    assert len(drain_messages(queue)) == 2


def test_an_unfinished_first_attempt_is_completed_with_the_same_ids(
    client: FlaskClient,
    queue: EventQueue,
    settings: Settings,
    tenant: uuid.UUID,
    auth: dict[str, str],
    db: psycopg.Connection[Any],
) -> None:
    """A worker that died after queueing but before answering: the retry re-sends the same
    ids and the drain stores each event once."""
    headers = {**auth, "Idempotency-Key": "bulk-7"}
    body = [EVENT, {**EVENT, "resource_id": "2"}]
    first = client.post("/api/v1/logs/bulk", json=body, headers=headers).get_json()
    # Forget the stored answer, as if the process died before it could record it.
    db.execute(
        "UPDATE idempotency_keys SET status_code = NULL, response = NULL WHERE key = 'bulk-7'"
    )
    retry = client.post("/api/v1/logs/bulk", json=body, headers=headers)
    assert retry.status_code == 202
    assert retry.get_json() == first
    Drainer(queue, settings.database_url).run(time_budget_s=10, idle_s=1.5)
    stored = db.execute(
        "SELECT id::text FROM audit_logs WHERE tenant_id = %s ORDER BY seq", (tenant,)
    ).fetchall()
    assert [r[0] for r in stored] == [r["id"] for r in first["results"]]
