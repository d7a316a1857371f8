"""POST /api/v1/logs/bulk: per-item validation, packing, atomic mode, limits."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable

from flask.testing import FlaskClient

from auditlog.queue import EventQueue, decode_envelope
from tests.integration.conftest import drain_messages

EVENT = {"action_type": "CREATE", "resource_type": "doc", "resource_id": "1", "severity": "INFO"}


def queued(queue: EventQueue) -> tuple[int, list[dict[str, object]]]:
    messages = drain_messages(queue)
    return len(messages), [r for m in messages for r in decode_envelope(m.body)]


def test_valid_items_are_queued_packed_and_invalid_ones_reported(
    client: FlaskClient, queue: EventQueue, tenant: uuid.UUID, auth: dict[str, str]
) -> None:
    # ~600 KB of JSON, half of it random hex: too much for one compressed 250 KB message.
    events = [
        {
            **EVENT,
            "resource_id": str(i),
            "metadata": {"pad": "x" * 1000, "noise": os.urandom(500).hex()},
        }
        for i in range(300)
    ]
    events[7] = {**EVENT, "severity": "LOUD"}
    events[8] = {
        **EVENT,
        "tenant_id": str(uuid.uuid4()),
    }  # another tenant: rejected, not written there
    response = client.post("/api/v1/logs/bulk", json={"events": events}, headers=auth)
    assert response.status_code == 202
    body = response.get_json()
    assert (body["accepted"], body["rejected"]) == (298, 2)
    assert body["results"][7] == {
        "index": 7,
        "errors": [
            {"field": "events.7.severity", "message": body["results"][7]["errors"][0]["message"]}
        ],
    }
    assert body["results"][8]["errors"][0]["field"] == "events.8.tenant_id"
    accepted_ids = [r["id"] for r in body["results"] if "id" in r]

    messages, records = queued(queue)
    assert 2 <= messages < 6  # packed and compressed into a few messages, not 298
    # A standard SQS queue does not keep order between messages; the ids (minted in item
    # order, UUIDv7) and the stored seq restore it.
    assert sorted(r["id"] for r in records) == sorted(accepted_ids)
    assert {r["tenant_id"] for r in records} == {str(tenant)}
    by_id = {r["id"]: r["resource_id"] for r in records}
    assert [by_id[i] for i in accepted_ids][:8] == ["0", "1", "2", "3", "4", "5", "6", "9"]


def test_a_plain_array_is_accepted_too(
    client: FlaskClient, queue: EventQueue, auth: dict[str, str]
) -> None:
    response = client.post("/api/v1/logs/bulk", json=[EVENT, EVENT], headers=auth)
    assert response.status_code == 202
    assert response.get_json()["accepted"] == 2
    assert len(queued(queue)[1]) == 2


def test_atomic_rejects_everything_when_one_item_is_bad(
    client: FlaskClient, queue: EventQueue, auth: dict[str, str]
) -> None:
    response = client.post(
        "/api/v1/logs/bulk?atomic=true", json=[EVENT, {**EVENT, "action_type": "X"}], headers=auth
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.get_json()["errors"]] == ["events.1.action_type"]
    assert queued(queue) == (0, [])
    all_bad = client.post("/api/v1/logs/bulk", json=[{}, {"x": 1}], headers=auth)
    assert all_bad.status_code == 422
    assert queued(queue) == (0, [])
    bad_flag = client.post("/api/v1/logs/bulk?atomic=maybe", json=[EVENT], headers=auth)
    assert bad_flag.status_code == 422
    assert [e["field"] for e in bad_flag.get_json()["errors"]] == ["atomic"]
    unknown = client.post("/api/v1/logs/bulk?atomic=true&atomc=1", json=[EVENT], headers=auth)
    assert unknown.status_code == 422
    assert unknown.get_json()["errors"] == [
        {"field": "atomc", "message": "is not a known parameter"}
    ]


def test_limits(client: FlaskClient, queue: EventQueue, auth: dict[str, str]) -> None:
    too_many = client.post("/api/v1/logs/bulk", json=[EVENT] * 1001, headers=auth)
    assert too_many.status_code == 422
    assert too_many.get_json()["errors"][0]["field"] == "events"
    empty = client.post("/api/v1/logs/bulk", json=[], headers=auth)
    assert empty.status_code == 422
    big = json.dumps([{**EVENT, "metadata": {"x": "y" * 60_000}}] * 90)  # ~5.4 MB
    too_big = client.post(
        "/api/v1/logs/bulk", data=big, content_type="application/json", headers=auth
    )
    assert too_big.status_code == 413
    assert too_big.content_type == "application/problem+json"
    wrong_shape = client.post("/api/v1/logs/bulk", json={"items": [EVENT]}, headers=auth)
    assert wrong_shape.status_code == 422
    assert queued(queue) == (0, [])


def test_readers_cannot_bulk(
    client: FlaskClient, queue: EventQueue, tenant: uuid.UUID, token_for: Callable[..., str]
) -> None:
    response = client.post(
        "/api/v1/logs/bulk",
        json=[EVENT],
        headers={"Authorization": f"Bearer {token_for(tenant, 'auditor')}"},
    )
    assert response.status_code == 403
    assert queued(queue) == (0, [])


def test_a_full_size_bulk_request_is_queued_in_size_bounded_batches(
    client: FlaskClient, queue: EventQueue, auth: dict[str, str]
) -> None:
    """1,000 events of ~4.8 KB (about 4.8 MB) of random hex (compressing to about half) need
    over a dozen envelopes; SQS takes at most 1 MiB per SendMessageBatch call, so they go in
    several calls, and every event arrives."""
    events = [
        {**EVENT, "resource_id": str(i), "metadata": {"pad": os.urandom(2350).hex()}}
        for i in range(1000)
    ]
    response = client.post("/api/v1/logs/bulk", json=events, headers=auth)
    assert response.status_code == 202, response.get_json()
    ids = [r["id"] for r in response.get_json()["results"]]
    messages, records = queued(queue)
    assert messages >= 12
    assert sorted(r["id"] for r in records) == sorted(ids)
