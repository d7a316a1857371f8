"""Concurrent single-event POSTs share SQS messages, and each still waits for its send."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from flask.testing import FlaskClient

from auditlog.queue import EventQueue, decode_envelope
from tests.integration.conftest import drain_messages

EVENT = {"action_type": "VIEW", "resource_type": "doc", "resource_id": "1", "severity": "INFO"}


def test_concurrent_posts_are_packed_together(
    client: FlaskClient, queue: EventQueue, auth: dict[str, str]
) -> None:
    def post(i: int) -> str:
        response = client.post("/api/v1/logs", json={**EVENT, "resource_id": str(i)}, headers=auth)
        assert response.status_code == 202
        return str(response.get_json()["id"])

    with ThreadPoolExecutor(max_workers=16) as pool:
        ids = list(pool.map(post, range(200)))

    messages = drain_messages(queue)
    records = [r for m in messages for r in decode_envelope(m.body)]
    assert sorted(r["id"] for r in records) == sorted(ids)
    assert len(messages) < len(ids) / 2, f"{len(messages)} messages for {len(ids)} events"
