"""The drain against real SQS and PostgreSQL: stored once, chained, poison isolated."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from flask.testing import FlaskClient

from auditlog.drain import Drainer
from auditlog.events import AcceptedEvent, EventIn
from auditlog.ids import new_event_id
from auditlog.queue import EventQueue, encode_envelope, make_sqs_client, pack_records
from auditlog.settings import Settings
from auditlog.verify import verify_tenant_chain

BASE = {"action_type": "CREATE", "resource_type": "doc", "resource_id": "1", "severity": "INFO"}


def make_records(tenant: uuid.UUID, n: int, **fields: Any) -> list[dict[str, Any]]:
    records = []
    for i in range(n):
        event_id, created_at = new_event_id()
        body = EventIn.model_validate({**BASE, "resource_id": str(i), **fields})
        records.append(AcceptedEvent(event_id, tenant, created_at, body).to_record())
    return records


def drain(settings: Settings, queue: EventQueue) -> Any:
    return Drainer(queue, settings.database_url, batch_size=500).run(time_budget_s=20, idle_s=1.5)


def stored_ids(db: psycopg.Connection[Any], tenant: uuid.UUID) -> list[str]:
    rows = db.execute(
        "SELECT id::text FROM audit_logs WHERE tenant_id = %s ORDER BY seq", (tenant,)
    ).fetchall()
    return [r[0] for r in rows]


def test_packed_messages_are_stored_in_order_with_a_verifying_chain(
    settings: Settings, queue: EventQueue, db: psycopg.Connection[Any], tenant: uuid.UUID
) -> None:
    records = make_records(tenant, 300, metadata={"n": 1.5, "s": "é"})
    queue.send_bodies(list(pack_records(records, max_bytes=20_000, compress=False)))
    stats = drain(settings, queue)
    assert stats.stored == 300
    assert stats.duplicates == 0
    # SQS does not order messages, so only within a batch is seq the creation order.
    assert sorted(stored_ids(db, tenant)) == sorted(r["id"] for r in records)
    seqs = [
        r[0]
        for r in db.execute(
            "SELECT seq FROM audit_logs WHERE tenant_id = %s ORDER BY seq", (tenant,)
        )
    ]
    assert seqs == list(range(1, 301))
    result = verify_tenant_chain(db, tenant)
    assert result["ok"], result
    assert result["events_checked"] == 300
    head = db.execute(
        "SELECT last_seq, last_hash FROM tenant_chain_heads WHERE tenant_id = %s", (tenant,)
    ).fetchone()
    assert head is not None
    assert head[0] == 300
    assert bytes(head[1]).hex() == result["head_hash"]


def test_the_same_message_delivered_twice_gives_one_row(
    settings: Settings, queue: EventQueue, db: psycopg.Connection[Any], tenant: uuid.UUID
) -> None:
    records = make_records(tenant, 3)
    body = encode_envelope(records)
    queue.send_bodies([body, body])
    first = drain(settings, queue)
    queue.send_bodies([body])  # a third delivery, after the first ones were stored
    second = drain(settings, queue)
    assert first.stored + second.stored == 3
    assert first.duplicates + second.duplicates == 6
    assert stored_ids(db, tenant) == [r["id"] for r in records]
    assert verify_tenant_chain(db, tenant)["ok"]


def test_poison_message_does_not_stall_the_drain_and_reaches_the_dlq(
    settings: Settings, queue: EventQueue, db: psycopg.Connection[Any], tenant: uuid.UUID
) -> None:
    good = make_records(tenant, 2)
    bad_record = {**make_records(tenant, 1)[0], "severity": "SHOUTING"}
    queue.send_bodies(["not an envelope", encode_envelope([bad_record]), encode_envelope(good)])
    stats = Drainer(queue, settings.database_url).run(time_budget_s=15, idle_s=5)
    assert stored_ids(db, tenant) == [r["id"] for r in good]
    assert stats.rejected_messages >= 2
    # maxReceiveCount is 2 for the test queues: both poison messages end in the DLQ.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        dead = queue.dead_letter_backlog()
        if dead.visible == 2:
            break
        queue.receive(10, 1)  # receiving counts towards maxReceiveCount
        time.sleep(0.5)
    assert queue.dead_letter_backlog().visible == 2
    assert queue.backlog().visible + queue.backlog().in_flight == 0


def test_concurrent_tenants_keep_separate_gapless_chains(
    settings: Settings,
    queue: EventQueue,
    db: psycopg.Connection[Any],
    new_tenant: Callable[..., uuid.UUID],
) -> None:
    tenants = [new_tenant() for _ in range(3)]
    records = [r for t in tenants for r in make_records(t, 20)]
    queue.send_bodies([encode_envelope([r]) for r in records])
    drain(settings, queue)
    for t in tenants:
        seqs = [
            r[0]
            for r in db.execute(
                "SELECT seq FROM audit_logs WHERE tenant_id = %s ORDER BY seq", (t,)
            )
        ]
        assert seqs == list(range(1, 21))
        assert verify_tenant_chain(db, t)["ok"]


def test_a_changed_row_is_named_by_verification(
    settings: Settings, queue: EventQueue, db: psycopg.Connection[Any], tenant: uuid.UUID
) -> None:
    records = make_records(tenant, 5)
    queue.send_bodies([encode_envelope(records)])
    drain(settings, queue)
    db.execute(
        "UPDATE audit_logs SET severity = 'CRITICAL' WHERE tenant_id = %s AND seq = 3", (tenant,)
    )
    result = verify_tenant_chain(db, tenant)
    assert not result["ok"]
    assert result["first_break"]["seq"] == 3
    assert result["first_break"]["id"] == records[2]["id"]
    assert result["events_checked"] == 2


def test_get_returns_the_stored_event_only_to_its_tenant(
    settings: Settings,
    queue: EventQueue,
    client: FlaskClient,
    tenant: uuid.UUID,
    new_tenant: Callable[..., uuid.UUID],
    token_for: Callable[..., str],
) -> None:
    body = {**BASE, "metadata": {"k": [1, 2]}, "ip_address": "192.0.2.1"}
    accepted = client.post(
        "/api/v1/logs", json=body, headers={"Authorization": f"Bearer {token_for(tenant)}"}
    )
    assert accepted.status_code == 202
    event_id = accepted.get_json()["id"]
    drain(settings, queue)

    mine = client.get(
        f"/api/v1/logs/{event_id}",
        headers={"Authorization": f"Bearer {token_for(tenant, 'reader')}"},
    )
    assert mine.status_code == 200
    got = mine.get_json()
    assert got["id"] == event_id
    assert got["seq"] == 1
    assert got["metadata"] == {"k": [1, 2]}
    assert got["ip_address"] == "192.0.2.1"
    assert got["created_at"] == accepted.get_json()["created_at"]

    other = new_tenant()
    theirs = client.get(
        f"/api/v1/logs/{event_id}",
        headers={"Authorization": f"Bearer {token_for(other, 'reader')}"},
    )
    missing = client.get(
        f"/api/v1/logs/{uuid.uuid4()}",
        headers={"Authorization": f"Bearer {token_for(other, 'reader')}"},
    )
    assert theirs.status_code == missing.status_code == 404
    assert theirs.get_json() == missing.get_json()

    malformed = client.get(
        "/api/v1/logs/not-a-uuid", headers={"Authorization": f"Bearer {token_for(tenant)}"}
    )
    assert malformed.status_code == 422
    writer = client.get(
        f"/api/v1/logs/{event_id}",
        headers={"Authorization": f"Bearer {token_for(tenant, 'writer')}"},
    )
    assert writer.status_code == 403


def test_dead_letters_can_be_moved_back_and_drained(
    settings: Settings, queue: EventQueue, db: psycopg.Connection[Any], tenant: uuid.UUID
) -> None:
    records = make_records(tenant, 2)
    sqs = make_sqs_client(settings)
    sqs.send_message(
        QueueUrl=queue.url(settings.sqs_dlq_name), MessageBody=encode_envelope(records)
    )
    assert queue.redrive_dead_letters() == 1
    assert queue.dead_letter_backlog().visible == 0
    drain(settings, queue)
    assert stored_ids(db, tenant) == [r["id"] for r in records]


def test_a_batch_fetched_ahead_is_released_when_the_run_stops(
    settings: Settings, db: psycopg.Connection[Any], tenant: uuid.UUID
) -> None:
    """The fetcher parses the next batch while one is stored. A run that stops with such a
    batch in hand makes it visible again at once, so the next run need not wait out the
    visibility timeout (60 s here)."""
    client = make_sqs_client(settings)
    name = f"test-release-{uuid.uuid4().hex[:10]}"
    url = client.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
    try:
        queue = EventQueue(client, name, settings.sqs_dlq_name)
        records = make_records(tenant, 60)
        queue.send_bodies([encode_envelope([r]) for r in records])
        batches: list[int] = []
        first = Drainer(queue, settings.database_url, batch_size=10)
        first.run(
            time_budget_s=20,
            idle_s=3,
            on_batch=lambda r: batches.append(r.stored),
            should_stop=lambda: len(batches) >= 1,
        )
        assert 0 < sum(batches) < 60
        started = time.monotonic()
        Drainer(queue, settings.database_url, batch_size=100).run(time_budget_s=20, idle_s=2)
        assert time.monotonic() - started < 15  # not 60 s of invisible messages
        assert sorted(stored_ids(db, tenant)) == sorted(r["id"] for r in records)
    finally:
        client.delete_queue(QueueUrl=url)


def test_a_large_receive_is_stored_in_slices_of_whole_messages(
    settings: Settings, queue: EventQueue, db: psycopg.Connection[Any], tenant: uuid.UUID
) -> None:
    """Compressed messages carry thousands of events; the drain stores a receive in
    transactions of about ``batch_events`` (never splitting a message), parsing the next
    slice while one is written."""
    records = make_records(tenant, 450)
    bodies = [
        body for start in range(0, 450, 150) for body in pack_records(records[start : start + 150])
    ]
    assert len(bodies) == 3
    queue.send_bodies(bodies)
    batches: list[int] = []
    stats = Drainer(queue, settings.database_url, batch_size=500, batch_events=100).run(
        time_budget_s=20, idle_s=1.5, on_batch=lambda r: batches.append(r.events_received)
    )
    assert stats.stored == 450
    assert batches == [150, 150, 150]  # one message per slice: each holds more than 100
    assert verify_tenant_chain(db, tenant)["ok"]
