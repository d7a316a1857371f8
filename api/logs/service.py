"""Accepting events (stamping, queueing) and reading them back, for the logs views."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg.rows import dict_row

from api.errors import ApiProblem
from api.services import Services
from auditlog.events import AcceptedEvent, EventIn, format_time
from auditlog.ids import id_time, is_uuid7, new_event_id
from auditlog.queue import QueueUnavailable, encode_envelope
from auditlog.store.queries import QUERIES

RETRY_AFTER_SECONDS = "2"


def check_tenant_may_ingest(svc: Services, tenant_id: uuid.UUID) -> None:
    status = svc.tenants.status(tenant_id)
    if status is None:
        raise ApiProblem(403, "The token's tenant does not exist.", kind="unknown-tenant")
    if status != "active":
        raise ApiProblem(
            403, f"The tenant is {status} and cannot send events.", kind="tenant-not-active"
        )


def accept(svc: Services, tenant_id: uuid.UUID, event: EventIn) -> AcceptedEvent:
    """Stamp the event and queue it; return only once SQS has accepted it."""
    event_id, created_at = new_event_id()
    accepted = AcceptedEvent(id=event_id, tenant_id=tenant_id, created_at=created_at, body=event)
    try:
        svc.queue.send_bodies([encode_envelope([accepted.to_record()])])
    except QueueUnavailable:
        raise ApiProblem(
            503,
            "The event queue is unavailable; nothing was accepted. Retry later.",
            kind="queue-unavailable",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        ) from None
    return accepted


def event_json(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as the API returns it: the accepted record plus seq and chain links."""
    return {
        "id": str(row["id"]),
        "tenant_id": str(row["tenant_id"]),
        "seq": row["seq"],
        "created_at": format_time(row["created_at"]),
        "occurred_at": format_time(row["occurred_at"]) if row["occurred_at"] else None,
        "user_id": str(row["user_id"]) if row["user_id"] else None,
        "session_id": row["session_id"],
        "ip_address": row["ip_address"],
        "user_agent": row["user_agent"],
        "action_type": row["action_type"],
        "resource_type": row["resource_type"],
        "resource_id": row["resource_id"],
        "severity": row["severity"],
        "before_state": row["before_state"],
        "after_state": row["after_state"],
        "metadata": row["metadata"],
        "prev_hash": bytes(row["prev_hash"]).hex(),
        "hash": bytes(row["hash"]).hex(),
    }


def get_event(svc: Services, tenant_id: uuid.UUID, event_id: uuid.UUID) -> dict[str, Any] | None:
    with svc.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        when = id_time(event_id) if is_uuid7(event_id) else None
        cur.execute(QUERIES["get_event"], {"tenant_id": tenant_id, "id": event_id, "id_time": when})
        row = cur.fetchone()
    return None if row is None else event_json(row)
