"""Accepting events (checks, stamping, queueing, idempotency) and reading them back."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.rows import dict_row

from api import metrics
from api.errors import ApiProblem
from api.services import Services
from auditlog.events import AcceptedEvent, EventIn, FieldError, format_time
from auditlog.idempotency import KeyReusedError, Reservation
from auditlog.ids import id_time, new_event_id, time_hint
from auditlog.queue import QueueUnavailable, pack_records
from auditlog.ratelimit import retry_after_header
from auditlog.store.queries import QUERIES

RETRY_AFTER_SECONDS = "2"


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    replayed: bool = False


@dataclass(frozen=True)
class IdempotencyContext:
    key: str
    fingerprint: bytes


def check_tenant_may_ingest(svc: Services, tenant_id: uuid.UUID) -> None:
    status = svc.tenants.status(tenant_id)
    if status is None:
        raise ApiProblem(403, "The token's tenant does not exist.", kind="unknown-tenant")
    if status != "active":
        raise ApiProblem(
            403, f"The tenant is {status} and cannot send events.", kind="tenant-not-active"
        )


def check_rate(svc: Services, tenant_id: uuid.UUID, events: int) -> None:
    wait = svc.rate_limiter.acquire(tenant_id, events)
    if wait > 0:
        metrics.RATE_LIMITED.labels(str(tenant_id)).inc()
        raise ApiProblem(
            429,
            f"The tenant's event rate limit ({svc.rate_limiter.rate:g}/s per API process) "
            "is exceeded.",
            kind="rate-limited",
            headers={"Retry-After": retry_after_header(wait)},
        )


def queue_unavailable() -> ApiProblem:
    return ApiProblem(
        503,
        "The event queue is unavailable; the request was not accepted. Retry later "
        "(with the same Idempotency-Key, a retry cannot create a second event).",
        kind="queue-unavailable",
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )


def _reserve(
    svc: Services,
    tenant_id: uuid.UUID,
    idem: IdempotencyContext | None,
    proposed: list[uuid.UUID | None],
) -> Reservation:
    if idem is None:
        return Reservation(proposed, None)
    try:
        return svc.idempotency.reserve(tenant_id, idem.key, idem.fingerprint, proposed)
    except KeyReusedError:
        raise ApiProblem(
            422,
            "This Idempotency-Key was used in the last 24 hours for a different request.",
            errors=[FieldError("Idempotency-Key", "was already used for a different request")],
            kind="idempotency-key-reused",
        ) from None


def location(answer: Answer) -> str:
    """Where an accepted single event will be readable (once the drain has stored it)."""
    return f"/api/v1/logs/{answer.body['id']}"


def _accepted_json(record: dict[str, Any]) -> dict[str, str]:
    return {"id": record["id"], "created_at": record["created_at"], "status": "queued"}


def _stamp(event_id: uuid.UUID, tenant_id: uuid.UUID, event: EventIn) -> dict[str, Any]:
    return AcceptedEvent(
        id=event_id, tenant_id=tenant_id, created_at=id_time(event_id), body=event
    ).to_record()


def _send(action: Callable[[], None]) -> None:
    try:
        action()
    except QueueUnavailable:
        metrics.SQS_ERRORS.inc()
        raise queue_unavailable() from None


def accept_one(
    svc: Services, tenant_id: uuid.UUID, event: EventIn, idem: IdempotencyContext | None
) -> Answer:
    """Queue one event; answer only once SQS has accepted it."""
    check_tenant_may_ingest(svc, tenant_id)
    reservation = _reserve(svc, tenant_id, idem, [new_event_id()[0]])
    if reservation.completed is not None:
        return Answer(*reservation.completed, replayed=True)
    check_rate(svc, tenant_id, 1)
    event_id = reservation.event_ids[0]
    assert event_id is not None  # a single event always has its id
    record = _stamp(event_id, tenant_id, event)
    _send(lambda: svc.producer.send(record))
    metrics.events_accepted(str(tenant_id)).inc()
    body = _accepted_json(record)
    if idem is not None:
        svc.idempotency.complete(tenant_id, idem.key, 202, body)
    return Answer(202, body)


def accept_bulk(
    svc: Services,
    tenant_id: uuid.UUID,
    parsed: Sequence[tuple[EventIn | None, list[FieldError]]],
    idem: IdempotencyContext | None,
) -> Answer:
    """Queue every valid event of a bulk request, packed into as few messages as fit."""
    check_tenant_may_ingest(svc, tenant_id)
    proposed = [new_event_id()[0] if event is not None else None for event, _ in parsed]
    reservation = _reserve(svc, tenant_id, idem, proposed)
    if reservation.completed is not None:
        return Answer(*reservation.completed, replayed=True)
    valid = [(i, event) for i, (event, _) in enumerate(parsed) if event is not None]
    check_rate(svc, tenant_id, len(valid))
    records: dict[int, dict[str, Any]] = {}
    for index, event in valid:
        event_id = reservation.event_ids[index]
        assert event_id is not None  # reserved for every valid item
        records[index] = _stamp(event_id, tenant_id, event)
    bodies = list(pack_records(records.values()))
    _send(lambda: svc.queue.send_bodies(bodies))
    metrics.events_accepted(str(tenant_id)).inc(len(records))
    rejected = len(parsed) - len(valid)
    if rejected:
        metrics.EVENTS_REJECTED.labels(str(tenant_id)).inc(rejected)
    results: list[dict[str, Any]] = []
    for index, (_, errors) in enumerate(parsed):
        record = records.get(index)
        if record is not None:
            results.append({"index": index, **_accepted_json(record)})
        else:
            results.append(
                {
                    "index": index,
                    "errors": [{"field": e.field, "message": e.message} for e in errors],
                }
            )
    body = {"accepted": len(valid), "rejected": rejected, "results": results}
    if idem is not None:
        svc.idempotency.complete(tenant_id, idem.key, 202, body)
    return Answer(202, body)


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
        "redacted": sorted(row["redacted"]) if row.get("redacted") else None,
    }


def get_event(svc: Services, tenant_id: uuid.UUID, event_id: uuid.UUID) -> dict[str, Any] | None:
    with svc.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        when = time_hint(event_id)
        cur.execute(QUERIES["get_event"], {"tenant_id": tenant_id, "id": event_id, "id_time": when})
        row = cur.fetchone()
    return None if row is None else event_json(row)
