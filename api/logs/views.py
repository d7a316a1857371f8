"""``/api/v1/logs``: ingest and reads, always inside the token's tenant."""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, jsonify, url_for

from api.auth import READ_ROLES, WRITE_ROLES, current_tenant, require_roles
from api.errors import ApiProblem, validation_problem
from api.logs import service
from api.requests import json_body
from api.services import services
from auditlog.events import FieldError, format_time, parse_event

bp = Blueprint("logs", __name__, url_prefix="/api/v1/logs")


@bp.post("")
@bp.post("/")
@require_roles(WRITE_ROLES)
def create_log() -> tuple[Response, int, dict[str, str]]:
    tenant = current_tenant()
    event, errors = parse_event(json_body(), tenant)
    if event is None:
        raise validation_problem(errors)
    svc = services()
    service.check_tenant_may_ingest(svc, tenant)
    accepted = service.accept(svc, tenant, event)
    body = {
        "id": str(accepted.id),
        "created_at": format_time(accepted.created_at),
        "status": "queued",
    }
    return jsonify(body), 202, {"Location": url_for("logs.get_log", event_id=str(accepted.id))}


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
