"""``/api/v1/logs``: ingest and reads, always inside the token's tenant."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, Response, jsonify, request

from api import metrics
from api.auth import READ_ROLES, WRITE_ROLES, current_tenant, require_roles
from api.errors import ApiProblem, validation_problem
from api.logs import service
from api.requests import json_body
from api.services import services
from auditlog.events import EventIn, FieldError, parse_event
from auditlog.idempotency import request_fingerprint, valid_key

bp = Blueprint("logs", __name__, url_prefix="/api/v1/logs")

IDEMPOTENCY_HEADER = "Idempotency-Key"


def _idempotency() -> service.IdempotencyContext | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not valid_key(key):
        raise validation_problem(
            [FieldError(IDEMPOTENCY_HEADER, "must be 1 to 255 printable ASCII characters")]
        )
    fingerprint = request_fingerprint(
        request.method,
        request.path.rstrip("/"),
        request.query_string.decode("latin-1"),
        request.get_data(),
    )
    return service.IdempotencyContext(key, fingerprint)


def _respond(answer: service.Answer, location: str | None = None) -> Response:
    response = jsonify(answer.body)
    response.status_code = answer.status
    if location:
        response.headers["Location"] = location
    if answer.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@bp.post("")
@bp.post("/")
@require_roles(WRITE_ROLES)
def create_log() -> Response:
    tenant = current_tenant()
    event, errors = parse_event(json_body(), tenant)
    if event is None:
        metrics.EVENTS_REJECTED.labels(str(tenant)).inc()
        raise validation_problem(errors)
    answer = service.accept_one(services(), tenant, event, _idempotency())
    return _respond(answer, service.location(answer))


def _bulk_items(body: Any, limit: int) -> list[Any]:
    items = body.get("events") if isinstance(body, dict) and set(body) == {"events"} else body
    if not isinstance(items, list):
        raise validation_problem(
            [FieldError("events", 'send a JSON array of events, or an object {"events": [...]}')]
        )
    if not items:
        raise validation_problem([FieldError("events", "must hold at least one event")])
    if len(items) > limit:
        raise validation_problem(
            [FieldError("events", f"holds {len(items)} events; at most {limit} per request")]
        )
    return items


def _parse_atomic() -> bool:
    unknown = sorted(set(request.args) - {"atomic"})
    if unknown:
        raise validation_problem([FieldError(n, "is not a known parameter") for n in unknown])
    raw = request.args.get("atomic", "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise validation_problem([FieldError("atomic", "must be true or false")])
    return raw in ("true", "1")


@bp.post("/bulk")
@require_roles(WRITE_ROLES)
def create_logs_bulk() -> Response:
    svc = services()
    limit = svc.settings.api_max_bulk_bytes
    # Content-Length first (cheap), then the bytes actually read (chunked uploads).
    if (request.content_length or 0) > limit or len(request.get_data()) > limit:
        raise ApiProblem(413, f"A bulk request body may be at most {limit} bytes.")
    atomic = _parse_atomic()
    tenant = current_tenant()
    items = _bulk_items(json_body(), svc.settings.api_max_bulk_events)
    parsed: list[tuple[EventIn | None, list[FieldError]]] = [
        parse_event(item, tenant, prefix=f"events.{i}") for i, item in enumerate(items)
    ]
    errors = [e for _, item_errors in parsed for e in item_errors]
    if errors and (atomic or all(event is None for event, _ in parsed)):
        metrics.EVENTS_REJECTED.labels(str(tenant)).inc(
            sum(1 for event, _ in parsed if event is None)
        )
        detail = "No event was queued" + (
            " (atomic=true)." if atomic else ": every event is invalid."
        )
        raise validation_problem(errors, detail)
    return _respond(service.accept_bulk(svc, tenant, parsed, _idempotency()))


@bp.get("/<event_id>")
@require_roles(READ_ROLES)
def get_log(event_id: str) -> Response:
    try:
        parsed = uuid.UUID(event_id)
    except ValueError:
        raise validation_problem([FieldError("id", "must be a UUID")]) from None
    found = service.get_event(services(), current_tenant(), parsed)
    if found is None:
        # Another tenant's id answers exactly like a missing one.
        raise ApiProblem(404, "No such event.")
    return jsonify(found)
