"""Read endpoints of ``/api/v1/logs``: listing, export, stats, verify. Registered on the
logs blueprint; every query is scoped to the token's tenant."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Response, jsonify, request, stream_with_context

from api.auth import READ_ROLES, current_tenant, require_roles
from api.errors import validation_problem
from api.logs.service import event_json
from api.logs.views import bp
from api.services import services
from auditlog.cursor import BadCursor, decode_cursor, encode_cursor
from auditlog.events import FieldError
from auditlog.export import CONTENT_TYPES, WRITERS
from auditlog.filters import EventFilters, parse_filters
from auditlog.reads import iter_events, list_events
from auditlog.stats import tenant_stats
from auditlog.verify import verify_tenant_chain

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
DEFAULT_STATS_DAYS = 30


def _args() -> dict[str, list[str]]:
    return {key: request.args.getlist(key) for key in request.args}


def _int_arg(
    name: str, default: int | None, low: int, high: int, errors: list[FieldError]
) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        errors.append(FieldError(name, f"must be a whole number from {low} to {high}"))
        return default
    return value


def _filters(errors: list[FieldError], allowed_extra: set[str]) -> EventFilters:
    known = {
        "user_id", "session_id", "action_type", "resource_type", "resource_id", "severity",
        "min_severity", "ip", "from", "to", "occurred_from", "occurred_to",
    } | allowed_extra  # fmt: skip
    for name in request.args:
        if name not in known:
            errors.append(FieldError(name, "is not a known parameter"))
    if "q" in request.args:
        errors.append(FieldError("q", "full-text search is not enabled on this server yet"))
    return parse_filters(_args(), errors)


@bp.get("")
@bp.get("/")
@require_roles(READ_ROLES)
def list_logs() -> Response:
    errors: list[FieldError] = []
    filters = _filters(errors, {"limit", "cursor", "order", "q"})
    limit = _int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT, errors) or DEFAULT_LIMIT
    order = request.args.get("order", "desc")
    if order not in ("asc", "desc"):
        errors.append(FieldError("order", "must be asc or desc"))
    after = None
    if "cursor" in request.args:
        try:
            position = decode_cursor(request.args["cursor"], {"c", "i", "o"})
            if position["o"] != order:
                raise BadCursor("belongs to the other order")
            after = (datetime.fromisoformat(position["c"]), uuid.UUID(position["i"]))
        except (BadCursor, ValueError, TypeError, KeyError):
            errors.append(FieldError("cursor", "is not a cursor this API issued for this order"))
    if errors:
        raise validation_problem(errors)
    with services().pool.connection() as conn:
        rows = list_events(
            conn,
            current_tenant(),
            filters,
            limit=limit + 1,
            newest_first=order == "desc",
            after=after,
        )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = encode_cursor(
            {"c": last["created_at"].isoformat(), "i": str(last["id"]), "o": order}
        )
    return jsonify({"data": [event_json(r) for r in rows], "next_cursor": next_cursor})


@bp.get("/export")
@require_roles(READ_ROLES)
def export_logs() -> Response:
    errors: list[FieldError] = []
    filters = _filters(errors, {"format"})
    fmt = request.args.get("format", "csv")
    if fmt not in WRITERS:
        errors.append(FieldError("format", "must be csv, ndjson or parquet"))
    if errors:
        raise validation_problem(errors)
    svc, tenant = services(), current_tenant()

    def generate() -> Any:
        # One pooled connection for the whole stream; a server-side cursor inside a
        # transaction keeps memory flat however many rows are exported.
        with svc.pool.connection() as conn, conn.transaction():
            yield from WRITERS[fmt](iter_events(conn, tenant, filters))

    # The first chunk (the query started, the header written) is produced here, so that a
    # failure to start is an ordinary problem response rather than a broken stream.
    stream = generate()
    first = next(stream, b"")  # an export with no rows may yield nothing at all
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Response(
        stream_with_context(itertools.chain([first], stream)),
        mimetype=CONTENT_TYPES[fmt],
        headers={
            "Content-Disposition": f'attachment; filename="audit-logs-{stamp}.{fmt}"',
            "X-Content-Type-Options": "nosniff",
        },
    )


@bp.get("/stats")
@require_roles(READ_ROLES)
def stats() -> Response:
    errors: list[FieldError] = []
    for name in request.args:
        if name not in ("from", "to", "bucket"):
            errors.append(FieldError(name, "is not a known parameter"))
    filters = parse_filters({k: v for k, v in _args().items() if k in ("from", "to")}, errors)
    bucket = request.args.get("bucket", "day")
    if bucket not in ("hour", "day"):
        errors.append(FieldError("bucket", "must be hour or day"))
    now = datetime.now(UTC)
    end = filters.created_to or now
    start = filters.created_from or end - timedelta(days=DEFAULT_STATS_DAYS)
    if end - start > timedelta(days=366 * 2):
        errors.append(FieldError("from", "the range may span at most two years"))
    if start >= end:
        errors.append(FieldError("from", "must be earlier than to"))
    if errors:
        raise validation_problem(errors)
    with services().pool.connection() as conn:
        body = tenant_stats(
            conn, current_tenant(), start, end, "hour" if bucket == "hour" else "day", now
        )
    return jsonify(body)


@bp.get("/verify")
@require_roles(READ_ROLES)
def verify() -> Response:
    errors: list[FieldError] = []
    for name in request.args:
        if name not in ("from_seq", "to_seq"):
            errors.append(FieldError(name, "is not a known parameter"))
    from_seq = _int_arg("from_seq", 1, 1, 2**62, errors) or 1
    to_seq = _int_arg("to_seq", None, 1, 2**62, errors)
    if to_seq is not None and to_seq < from_seq:
        errors.append(FieldError("to_seq", "must not be below from_seq"))
    if errors:
        raise validation_problem(errors)
    with services().pool.connection() as conn:
        result = verify_tenant_chain(conn, current_tenant(), from_seq, to_seq)
    return jsonify(result)
