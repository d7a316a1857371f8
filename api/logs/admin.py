"""Tenant-admin actions on stored events: cleanup of old events and redaction of personal
data. Both are recorded as events in the tenant's own log, queued before the change commits
(if the record cannot be queued, nothing changes and the answer is 503)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Response, g, jsonify, request

from api.auth import ADMIN_ROLES, current_principal, current_tenant, require_roles
from api.errors import ApiProblem, validation_problem
from api.logs.service import queue_unavailable
from api.logs.views import bp
from api.services import services
from auditlog.events import ActionType, FieldError, Severity, format_time, parse_time
from auditlog.filters import whole_number
from auditlog.platform_events import platform_event
from auditlog.queue import QueueUnavailable
from auditlog.retention import REDACTABLE_FIELDS, cleanup_before, redact_event


def _record(
    action: ActionType, resource_type: str, resource_id: str, extra: dict[str, Any]
) -> None:
    record = platform_event(
        tenant_id=current_tenant(),
        actor=current_principal().subject,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        before=None,
        after=None,
        request_id=g.get("request_id"),
        ip_address=request.remote_addr,
        severity=Severity.WARNING,
        extra=extra,
    )
    try:
        services().producer.send(record)
    except QueueUnavailable:
        raise queue_unavailable() from None


def _cutoff(errors: list[FieldError]) -> datetime | None:
    before, days = request.args.get("before"), request.args.get("older_than_days")
    if (before is None) == (days is None):
        errors.append(FieldError("before", "give exactly one of before or older_than_days"))
        return None
    if days is not None:
        count = whole_number(days)
        if count is None or not 1 <= count <= 36500:
            errors.append(FieldError("older_than_days", "must be a whole number from 1 to 36500"))
            return None
        return datetime.now(UTC) - timedelta(days=count)
    assert before is not None
    try:
        return parse_time(before.replace(" ", "+"))
    except ValueError as exc:
        errors.append(FieldError("before", str(exc)))
        return None


@bp.delete("/cleanup")
@require_roles(ADMIN_ROLES)
def cleanup() -> Response:
    errors: list[FieldError] = []
    for name in request.args:
        if name not in ("before", "older_than_days", "archive"):
            errors.append(FieldError(name, "is not a known parameter"))
    cutoff = _cutoff(errors)
    archive = request.args.get("archive", "true").lower()
    if archive not in ("true", "false"):
        errors.append(FieldError("archive", "must be true or false"))
    if errors or cutoff is None:
        raise validation_problem(errors)
    tenant = current_tenant()
    with services().pool.connection() as conn:
        result = cleanup_before(conn, tenant, cutoff, require_archive=archive == "true")
        body = {
            "before": format_time(cutoff),
            "archive_required": archive == "true",
            "deleted": result["deleted"],
            "kept_older_events": result["kept"],
            "deleted_through_seq": result["through_seq"],
            "oldest_deleted": format_time(result["oldest_deleted"])
            if result["oldest_deleted"]
            else None,
            "newest_deleted": format_time(result["newest_deleted"])
            if result["newest_deleted"]
            else None,
        }
        _record(ActionType.DELETE, "audit_log", "cleanup", {"cleanup": body})
    return jsonify(body)


@bp.delete("/cleanup/<event_id>")
@require_roles(ADMIN_ROLES)
def redact(event_id: str) -> Response:
    """The seed's per-event cleanup: erases the event's personal-data fields (all of them, or
    those named in ``fields``); the event, its seq and its chain link stay."""
    try:
        parsed = uuid.UUID(event_id)
    except ValueError:
        raise ApiProblem(404, "No such event.") from None
    fields = [f for raw in request.args.getlist("fields") for f in raw.split(",") if f] or list(
        REDACTABLE_FIELDS
    )
    unknown = [f for f in fields if f not in REDACTABLE_FIELDS]
    if unknown or set(request.args) - {"fields"}:
        errors = (
            [FieldError("fields", f"may name only {', '.join(REDACTABLE_FIELDS)}")]
            if unknown
            else []
        )
        errors += [
            FieldError(n, "is not a known parameter") for n in set(request.args) - {"fields"}
        ]
        raise validation_problem(errors)
    with services().pool.connection() as conn:
        erased = redact_event(conn, current_tenant(), parsed, fields)
        if erased is None:
            raise ApiProblem(404, "No such event.")
        _record(ActionType.UPDATE, "audit_event", str(parsed), {"redacted_fields": erased})
    return jsonify({"id": str(parsed), "redacted": erased, "status": "redacted"})
