"""``/api/v1/tenants``: platform admins create, list, read and change tenants. Every change
is itself an audit event of the platform tenant."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal, TypeVar

from flask import Blueprint, Response, g, jsonify, request
from psycopg.rows import dict_row
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from api.auth import ADMIN_ROLES, current_principal, require_roles
from api.errors import ApiProblem, validation_problem
from api.logs.service import queue_unavailable
from api.requests import json_body
from api.services import services
from auditlog.cursor import BadCursor, decode_cursor, encode_cursor
from auditlog.events import ActionType, FieldError, format_time, parse_time, text_problem
from auditlog.filters import whole_number
from auditlog.platform_events import platform_event
from auditlog.queue import QueueUnavailable
from auditlog.store.queries import QUERIES

bp = Blueprint("tenants", __name__, url_prefix="/api/v1/tenants")

M = TypeVar("M", bound=BaseModel)

Status = Literal["active", "inactive", "suspended"]
Name = Annotated[StrictStr, Field(min_length=1, max_length=200)]
RetentionDays = Annotated[StrictInt, Field(ge=1, le=36500)]


def _storable(value: str | None) -> str | None:
    if value is not None and (problem := text_problem(value)) is not None:
        raise ValueError(problem)
    return value


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name

    _name_text = field_validator("name")(_storable)
    status: Status = "active"
    retention_days: RetentionDays = 365


class TenantPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name | None = None

    _name_text = field_validator("name")(_storable)
    status: Status | None = None
    retention_days: RetentionDays | None = None


def _validate(model: type[M], raw: Any) -> M:
    if not isinstance(raw, dict):
        raise validation_problem([FieldError("body", "must be a JSON object")])
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise validation_problem(
            [
                FieldError(
                    ".".join(str(p) for p in e["loc"]) or "body",
                    "is not a known field"
                    if e["type"] == "extra_forbidden"
                    else e["msg"].removeprefix("Value error, "),
                )
                for e in exc.errors(include_url=False)
            ]
        ) from None


def tenant_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "status": row["status"],
        "retention_days": row["retention_days"],
        "created_at": format_time(row["created_at"]),
        "updated_at": format_time(row["updated_at"]),
    }


def _tenant_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiProblem(404, "No such tenant.") from None


def _audit(
    action: ActionType, tenant_id: str, before: dict[str, Any] | None, after: dict[str, Any]
) -> None:
    """Queue the platform event for a tenant change; raise 503 if it cannot be queued, so
    the change (not yet committed) is rolled back rather than left unaudited."""
    record = platform_event(
        actor=current_principal().subject,
        action=action,
        resource_type="tenant",
        resource_id=tenant_id,
        before=before,
        after=after,
        request_id=g.get("request_id"),
        ip_address=request.remote_addr,
    )
    try:
        services().producer.send(record)
    except QueueUnavailable:
        raise queue_unavailable() from None


LIST_PARAMETERS = frozenset({"name", "status", "limit", "cursor"})


@bp.get("")
@require_roles(ADMIN_ROLES, tenant=False, platform=True)
def list_tenants() -> Response:
    errors = [
        FieldError(n, "is not a known parameter")
        for n in sorted(set(request.args) - LIST_PARAMETERS)
    ]
    name = request.args.get("name")
    if name is not None:
        problem = text_problem(name) or (
            None if len(name) <= 200 else "must be at most 200 characters"
        )
        if problem is not None:
            errors.append(FieldError("name", problem))
    status = request.args.get("status")
    if status is not None and status not in ("active", "inactive", "suspended"):
        errors.append(FieldError("status", "must be active, inactive or suspended"))
    limit = whole_number(request.args.get("limit", "50"))
    if limit is None or not 1 <= limit <= 200:
        errors.append(FieldError("limit", "must be a whole number from 1 to 200"))
        limit = 50
    after: dict[str, Any] = {"after_created": None, "after_id": None}
    if "cursor" in request.args:
        try:
            position = decode_cursor(request.args["cursor"], {"c", "i"})
            after = {
                "after_created": parse_time(position["c"]),
                "after_id": uuid.UUID(position["i"]),
            }
        except (BadCursor, ValueError, TypeError):
            errors.append(FieldError("cursor", "is not a cursor this API issued"))
    if errors:
        raise validation_problem(errors)
    params = {"name": request.args.get("name"), "status": status, "limit": limit + 1, **after}
    with services().pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(QUERIES["list_tenants"], params).fetchall()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = encode_cursor({"c": last["created_at"].isoformat(), "i": str(last["id"])})
    return jsonify({"data": [tenant_json(r) for r in rows], "next_cursor": next_cursor})


@bp.post("")
@require_roles(ADMIN_ROLES, tenant=False, platform=True)
def create_tenant() -> tuple[Response, int, dict[str, str]]:
    body = _validate(TenantCreate, json_body())
    svc = services()
    with svc.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(QUERIES["insert_tenant"], body.model_dump())
        row = cur.fetchone()
        assert row is not None  # INSERT ... RETURNING
        created = tenant_json(row)
        _audit(ActionType.CREATE, created["id"], None, created)
    return jsonify(created), 201, {"Location": f"/api/v1/tenants/{created['id']}"}


@bp.get("/<tenant_id>")
@require_roles(ADMIN_ROLES, tenant=False, platform=True)
def get_tenant(tenant_id: str) -> Response:
    with services().pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(QUERIES["get_tenant"], {"id": _tenant_id(tenant_id)}).fetchone()
    if row is None:
        raise ApiProblem(404, "No such tenant.")
    return jsonify(tenant_json(row))


@bp.patch("/<tenant_id>")
@require_roles(ADMIN_ROLES, tenant=False, platform=True)
def update_tenant(tenant_id: str) -> Response:
    patch = _validate(TenantPatch, json_body())
    tid = _tenant_id(tenant_id)
    svc = services()
    with svc.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        before = cur.execute(QUERIES["get_tenant_for_update"], {"id": tid}).fetchone()
        if before is None:
            raise ApiProblem(404, "No such tenant.")
        row = cur.execute(QUERIES["update_tenant"], {"id": tid, **patch.model_dump()}).fetchone()
        assert row is not None  # the row is locked above
        updated = tenant_json(row)
        _audit(ActionType.UPDATE, updated["id"], tenant_json(before), updated)
    svc.tenants.forget(tid)
    return jsonify(updated)
