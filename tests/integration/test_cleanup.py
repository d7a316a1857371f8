"""Cleanup (a verified seq prefix, archived days only by default) and redaction (personal data
erased, chain still verifying), each recorded in the tenant's own log."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from flask.testing import FlaskClient

from auditlog.drain import Drainer
from auditlog.events import AcceptedEvent, EventIn
from auditlog.ids import uuid7_at
from auditlog.queue import EventQueue, decode_envelope, pack_records
from auditlog.settings import Settings
from auditlog.verify import verify_tenant_chain
from tests.integration.conftest import drain_messages

NOW = datetime.now(UTC).replace(microsecond=0)


def load(
    settings: Settings, queue: EventQueue, tenant: uuid.UUID, days_ago: list[int]
) -> list[dict[str, Any]]:
    records = []
    for i, days in enumerate(days_ago):
        created = NOW - timedelta(days=days, minutes=i)
        body = EventIn.model_validate(
            {
                "action_type": "UPDATE",
                "resource_type": "doc",
                "resource_id": str(i),
                "severity": "INFO",
                "user_id": str(uuid.uuid4()),
                "ip_address": "192.0.2.7",
                "user_agent": "ua",
                "session_id": "s",
                "metadata": {"email": f"person{i}@example.test"},
            }
        )
        records.append(AcceptedEvent(uuid7_at(created), tenant, created, body).to_record())
    records.sort(key=lambda r: r["created_at"])
    queue.send_bodies(list(pack_records(records)))
    Drainer(queue, settings.database_url).run(time_budget_s=20, idle_s=1.5)
    return records


def admin_of(tenant: uuid.UUID, token_for: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(tenant, 'admin', subject='dpo@example.test')}"}


def test_cleanup_deletes_only_archived_days_unless_told_otherwise(
    client: FlaskClient,
    settings: Settings,
    queue: EventQueue,
    tenant: uuid.UUID,
    token_for: Callable[..., str],
    db: psycopg.Connection[Any],
) -> None:
    records = load(settings, queue, tenant, [10, 9, 8, 5, 1, 0])
    headers = admin_of(tenant, token_for)

    nothing = client.delete("/api/v1/logs/cleanup?older_than_days=7", headers=headers)
    assert nothing.status_code == 200
    assert (nothing.get_json()["deleted"], nothing.get_json()["kept_older_events"]) == (0, 3)

    for r in records[:2]:  # the 10- and 9-day-old days are archived (as the archive asset does)
        day = datetime.fromisoformat(r["created_at"]).date()
        seq = db.execute("SELECT seq FROM audit_logs WHERE id = %s", (r["id"],)).fetchone()
        db.execute(
            "INSERT INTO audit_archives (tenant_id, day, event_count, first_seq, last_seq, s3_key)"
            " VALUES (%s, %s, 1, %s, %s, 'k') ON CONFLICT DO NOTHING",
            (tenant, day, seq[0], seq[0]),
        )
    archived = client.delete("/api/v1/logs/cleanup?older_than_days=7", headers=headers).get_json()
    assert (
        archived["deleted"],
        archived["kept_older_events"],
        archived["deleted_through_seq"],
    ) == (2, 1, 2)
    assert verify_tenant_chain(db, tenant)["ok"]

    forced = client.delete(
        f"/api/v1/logs/cleanup?before={(NOW - timedelta(days=2)).isoformat()}&archive=false",
        headers=headers,
    ).get_json()
    assert (forced["deleted"], forced["kept_older_events"]) == (2, 0)
    left = [
        r[0]
        for r in db.execute(
            "SELECT id::text FROM audit_logs WHERE tenant_id = %s ORDER BY seq", (tenant,)
        )
    ]
    assert left == [r["id"] for r in records[4:]]
    result = verify_tenant_chain(db, tenant)
    assert result["ok"]
    assert result["from_seq"] == 5
    stats = client.get("/api/v1/logs/stats", headers=headers).get_json()
    assert stats["total_logs"] == 2

    audit = [r for m in drain_messages(queue) for r in decode_envelope(m.body)]
    assert [(r["action_type"], r["resource_type"], r["tenant_id"]) for r in audit] == [
        ("DELETE", "audit_log", str(tenant))
    ] * 3
    assert audit[2]["metadata"]["actor"] == "dpo@example.test"
    assert audit[2]["metadata"]["cleanup"]["deleted"] == 2


def test_cleanup_is_for_the_tenant_admin_and_validates(
    client: FlaskClient, queue: EventQueue, tenant: uuid.UUID, token_for: Callable[..., str]
) -> None:
    for headers in (
        {"Authorization": f"Bearer {token_for(tenant, 'user')}"},
        {"Authorization": f"Bearer {token_for(None, 'admin')}"},
    ):
        assert (
            client.delete("/api/v1/logs/cleanup?older_than_days=1", headers=headers).status_code
            == 403
        )
    headers = admin_of(tenant, token_for)
    for query, field in [
        ("", "before"),
        ("older_than_days=0", "older_than_days"),
        ("before=soon", "before"),
        ("older_than_days=3&archive=no", "archive"),
        ("older_than_days=3&before=2024-01-01T00:00:00Z", "before"),
    ]:
        response = client.delete(f"/api/v1/logs/cleanup?{query}", headers=headers)
        assert response.status_code == 422, query
        assert field in {e["field"] for e in response.get_json()["errors"]}, query
    assert drain_messages(queue) == []


def test_redaction_erases_personal_data_and_the_chain_still_verifies(
    client: FlaskClient,
    settings: Settings,
    queue: EventQueue,
    tenant: uuid.UUID,
    new_tenant: Callable[..., uuid.UUID],
    token_for: Callable[..., str],
    db: psycopg.Connection[Any],
) -> None:
    records = load(settings, queue, tenant, [1, 1, 1])
    target = records[1]["id"]
    headers = admin_of(tenant, token_for)
    other_admin = admin_of(new_tenant(), token_for)
    assert client.delete(f"/api/v1/logs/cleanup/{target}", headers=other_admin).status_code == 404

    partial = client.delete(
        f"/api/v1/logs/cleanup/{target}?fields=ip_address,user_agent", headers=headers
    )
    assert partial.get_json() == {
        "id": target,
        "redacted": ["ip_address", "user_agent"],
        "status": "redacted",
    }
    full = client.delete(f"/api/v1/logs/cleanup/{target}", headers=headers).get_json()
    assert full["redacted"] == ["metadata", "session_id", "user_id"]

    event = client.get(f"/api/v1/logs/{target}", headers=headers).get_json()
    assert [
        event[f] for f in ("user_id", "session_id", "ip_address", "user_agent", "metadata")
    ] == [None] * 5
    assert event["redacted"] == ["ip_address", "metadata", "session_id", "user_agent", "user_id"]
    assert event["resource_id"] == records[1]["resource_id"]
    assert verify_tenant_chain(db, tenant)["ok"]
    assert client.get("/api/v1/logs/verify", headers=headers).get_json()["ok"] is True

    # The kept digests are evidence too: changing one breaks the chain at that event.
    db.execute(
        "UPDATE audit_logs "
        "SET redacted = jsonb_set(redacted, '{user_id}', to_jsonb(repeat('0', 64))) WHERE id = %s",
        (uuid.UUID(target),),
    )
    broken = verify_tenant_chain(db, tenant)
    assert broken["first_break"]["id"] == target

    bad = client.delete(f"/api/v1/logs/cleanup/{target}?fields=resource_id", headers=headers)
    assert bad.status_code == 422
    audit = [r for m in drain_messages(queue) for r in decode_envelope(m.body)]
    assert [(r["resource_type"], r["resource_id"]) for r in audit] == [("audit_event", target)] * 2


def test_an_event_stored_after_its_day_was_archived_is_kept_until_archived_again(
    client: FlaskClient,
    settings: Settings,
    queue: EventQueue,
    tenant: uuid.UUID,
    token_for: Callable[..., str],
    db: psycopg.Connection[Any],
) -> None:
    """A late event (a redriven dead letter) lands on a day that is already archived: its
    seq is above the archive's last_seq, so it is in no archive and cleanup must keep it."""
    records = load(settings, queue, tenant, [10])
    day = datetime.fromisoformat(records[0]["created_at"]).date()
    seq = db.execute("SELECT seq FROM audit_logs WHERE id = %s", (records[0]["id"],)).fetchone()
    db.execute(
        "INSERT INTO audit_archives (tenant_id, day, event_count, first_seq, last_seq, s3_key)"
        " VALUES (%s, %s, 1, %s, %s, 'k')",
        (tenant, day, seq[0], seq[0]),
    )
    load(settings, queue, tenant, [10])  # the late one, same day, next seq
    answer = client.delete(
        "/api/v1/logs/cleanup?older_than_days=7", headers=admin_of(tenant, token_for)
    ).get_json()
    assert (answer["deleted"], answer["kept_older_events"], answer["deleted_through_seq"]) == (
        1,
        1,
        seq[0],
    )
