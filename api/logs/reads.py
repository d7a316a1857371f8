"""Read endpoints of ``/api/v1/logs``: listing, export, stats, verify. Registered on the
logs blueprint; every query is scoped to the token's tenant."""

from __future__ import annotations

import itertools
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from flask import Response, jsonify, request, stream_with_context
from psycopg_pool import PoolTimeout

from api.auth import READ_ROLES, current_tenant, require_roles
from api.errors import ApiProblem, validation_problem
from api.logs.views import bp
from api.services import Services, services
from auditlog.cursor import BadCursor, decode_cursor, encode_cursor
from auditlog.events import FieldError, parse_time
from auditlog.export import CONTENT_TYPES, WRITERS
from auditlog.filters import EventFilters, parse_filters, whole_number
from auditlog.reads import copy_csv, events_by_ids, iter_events, list_events
from auditlog.search import SearchRefused, SearchUnavailable, filters_to_query, search_ids
from auditlog.search_query import ParsedQuery, QuerySyntaxError, parse_query
from auditlog.stats import tenant_stats
from auditlog.verify import verify_tenant_chain

log = logging.getLogger(__name__)

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
    value = whole_number(raw)
    if value is None or not low <= value <= high:
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
    query = None
    if "q" in request.args:
        try:
            query = parse_query(request.args["q"])
        except QuerySyntaxError as exc:
            errors.append(FieldError("q", str(exc)))
    position = None
    if "cursor" in request.args:
        try:
            position = decode_cursor(request.args["cursor"], {"c", "i", "o"})
            if position["o"] != order:
                raise BadCursor("belongs to the other order")
            parse_time(position["c"])  # with a timezone and within the years events have
            uuid.UUID(position["i"])
        except (BadCursor, ValueError, TypeError, KeyError):
            errors.append(FieldError("cursor", "is not a cursor this API issued for this order"))
    if errors:
        raise validation_problem(errors)
    after = None if position is None else (parse_time(position["c"]), uuid.UUID(position["i"]))
    svc, tenant = services(), current_tenant()
    if query is not None:
        rows = _search(svc, tenant, filters, query, limit + 1, order == "desc", after)
    else:
        with svc.pool.connection() as conn:
            rows = list_events(
                conn,
                tenant,
                filters,
                limit=limit + 1,
                newest_first=order == "desc",
                after=after,
                rendered=True,
            )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = encode_cursor(
            {"c": last["created_at"].isoformat(), "i": str(last["id"]), "o": order}
        )
    # Each row's JSON text was rendered by PostgreSQL (auditlog.reads.EVENT_JSON).
    data = [orjson.Fragment(r["json"]) for r in rows]
    return jsonify({"data": data, "next_cursor": next_cursor})


def _search(
    svc: Services,
    tenant: uuid.UUID,
    filters: EventFilters,
    query: ParsedQuery,
    size: int,
    newest_first: bool,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[dict[str, Any]]:
    """Ids from OpenSearch (tenant-filtered and routed), events from PostgreSQL (tenant-
    scoped again), in the index's order. The cursor is the same (created_at, id) position
    as the listing's, as OpenSearch's ``search_after`` on (created_at, id)."""
    clauses = filters_to_query(tenant, filters) + query.clauses
    # OpenSearch keeps dates in whole milliseconds (integer arithmetic: no float rounding).
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    search_after = (
        None if after is None else [(after[0] - epoch) // timedelta(milliseconds=1), str(after[1])]
    )
    try:
        hits = search_ids(
            svc.search,
            tenant,
            clauses,
            query.text,
            size=size,
            newest_first=newest_first,
            search_after=search_after,
            prefix=svc.settings.search_index_prefix,
        )
    except SearchRefused as refused:
        # Retrying cannot help, so not a 503; logged, in case the query we built is at fault.
        log.warning("search.refused", extra={"reason": str(refused)})
        raise validation_problem(
            [FieldError("q", f"OpenSearch cannot run this search: {refused}")]
        ) from None
    except SearchUnavailable:
        raise ApiProblem(
            503,
            "Search is unavailable right now; listing without q still works.",
            kind="search-unavailable",
            headers={"Retry-After": "5"},
        ) from None
    ids = [uuid.UUID(event_id) for event_id, _ in hits]
    with svc.pool.connection() as conn:
        found = {row["id"]: row for row in events_by_ids(conn, tenant, ids, rendered=True)}
    return [found[i] for i in ids if i in found]


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
        # One connection of the exports' pool for the whole stream; a server-side cursor
        # inside a transaction keeps memory flat however many rows are exported.
        with svc.export_pool.connection() as conn, conn.transaction():
            if fmt == "csv":
                yield from copy_csv(conn, tenant, filters)
            else:
                yield from WRITERS[fmt](iter_events(conn, tenant, filters))

    # The first chunk (the query started, the header written) is produced here, so that a
    # failure to start is an ordinary problem response rather than a broken stream.
    stream = generate()
    try:
        first = next(stream, b"")  # an export with no rows may yield nothing at all
    except PoolTimeout:  # every connection of the exports' pool is streaming an export
        raise ApiProblem(
            503,
            f"{svc.settings.db_export_pool_max} exports are running in this API process; "
            "retry later.",
            kind="exports-busy",
            headers={"Retry-After": "10"},
        ) from None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Response(
        stream_with_context(itertools.chain([first], stream)),
        content_type=CONTENT_TYPES[fmt],  # as written: mimetype= would add a second charset
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
