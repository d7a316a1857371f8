"""Reading a tenant's events: keyset-paginated listing and streaming row iteration.

Every statement is scoped by ``EventFilters.where(tenant_id)``, whose first condition is the
tenant; rows come back as dicts with the stored column values."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from auditlog.export import COLUMNS, CSV_SELECT_LIST
from auditlog.filters import EventFilters
from auditlog.ids import id_time, is_uuid7
from auditlog.store.queries import QUERIES

EVENT_COLUMNS: LiteralString = (
    "id, tenant_id, seq, created_at, occurred_at, user_id, session_id, "
    "host(ip_address) AS ip_address, user_agent, action_type, resource_type, resource_id, "
    "severity, before_state, after_state, metadata, prev_hash, hash, redacted"
)

# One event as the API's JSON text (api.logs.service.event_json's fields, order and
# spelling), rendered by PostgreSQL: a page of 100 events then costs the API a list of
# strings instead of decoding 19 columns (three of them jsonb) and encoding them again,
# which was most of a listing request's CPU. tests/integration/test_reads.py holds the two
# renderings equal.
EVENT_JSON: LiteralString = (
    "json_build_object("
    "'id', id, 'tenant_id', tenant_id, 'seq', seq, "
    """'created_at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), """
    """'occurred_at', to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), """
    "'user_id', user_id, 'session_id', session_id, 'ip_address', host(ip_address), "
    "'user_agent', user_agent, 'action_type', action_type, 'resource_type', resource_type, "
    "'resource_id', resource_id, 'severity', severity, 'before_state', before_state, "
    "'after_state', after_state, 'metadata', metadata, "
    "'prev_hash', encode(prev_hash, 'hex'), 'hash', encode(hash, 'hex'), "
    # The erased fields' names, sorted by code point as Python's sorted() does.
    """'redacted', (SELECT json_agg(k ORDER BY k COLLATE "C") FROM jsonb_object_keys(redacted) k)"""
    ")::text"
)
# What a page needs besides the text: the (created_at, id) position of its last row.
RENDERED_COLUMNS: LiteralString = "created_at, id, " + EVENT_JSON + " AS json"

# Newest-first pages are searched in widening windows back from the newest row the page can
# hold, so that the planner prunes every daily partition older than the window: planning all
# ~100 partitions (and their indexes) costs several times more than running the query. A
# window that yields a full page is the answer, since every row outside it is older; one that
# does not skips the windows its row rate says are still too narrow (a rare filter goes
# straight to the unbounded search).
LIST_WINDOWS = (timedelta(days=1), timedelta(days=7), timedelta(days=31))

# CSV bytes gathered before they are handed to the WSGI server as one write.
COPY_FLUSH_BYTES = 256 * 1024


def list_events(
    conn: psycopg.Connection[Any],
    tenant_id: uuid.UUID,
    filters: EventFilters,
    *,
    limit: int,
    newest_first: bool = True,
    after: tuple[datetime, uuid.UUID] | None = None,
    rendered: bool = False,
) -> list[dict[str, Any]]:
    """One page, ordered by (created_at, id); ``after`` is the last row of the previous page.
    ``rendered``: rows hold ``created_at``, ``id`` and the event's API JSON text (``json``)
    instead of the stored columns."""
    where, params = filters.where(tenant_id)
    direction = sql.SQL("DESC" if newest_first else "ASC")
    if after is not None:
        # The plain bound beside the row comparison lets the planner prune partitions.
        where = sql.SQL(
            "{} AND created_at {} %(after_created)s AND (created_at, id) {} (%(after_created)s,"
            " %(after_id)s)"
        ).format(
            where, sql.SQL("<=" if newest_first else ">="), sql.SQL("<" if newest_first else ">")
        )
        params.update(after_created=after[0], after_id=after[1])

    def page(condition: sql.Composable, extra: dict[str, Any]) -> list[dict[str, Any]]:
        query = sql.SQL(
            "SELECT {columns} FROM audit_logs WHERE {where} "
            "ORDER BY created_at {direction}, id {direction} LIMIT %(limit)s"
        ).format(
            columns=sql.SQL(RENDERED_COLUMNS if rendered else EVENT_COLUMNS),
            where=condition,
            direction=direction,
        )
        with conn.cursor(row_factory=dict_row) as cur:
            # Unprepared: a prepared statement's generic plan would set up every partition.
            return cur.execute(query, {**params, **extra, "limit": limit}, prepare=False).fetchall()

    if newest_first:
        newest = after[0] if after else (filters.created_to or datetime.now(UTC))
        windowed = sql.SQL("{} AND created_at >= %(window_start)s").format(where)
        wanted = LIST_WINDOWS[0]
        for width in LIST_WINDOWS:
            if width < wanted:
                continue  # the rows found so far say this window is too narrow
            window_start = newest - width
            if filters.created_from is not None and window_start <= filters.created_from:
                break  # the filter's own bound is narrower
            rows = page(windowed, {"window_start": window_start})
            if len(rows) >= limit:
                return rows
            # At the rate found, the width that would hold a page (no margin: a wider window
            # than needed can mean planning every partition, which costs more than a retry).
            wanted = width * limit / max(len(rows), 1)
    return page(where, {})


def iter_events(
    conn: psycopg.Connection[Any], tenant_id: uuid.UUID, filters: EventFilters, *, batch: int = 2000
) -> Iterator[dict[str, Any]]:
    """Every matching event, oldest first, through a server-side cursor: memory stays flat
    however many rows match. Needs a connection that is not in autocommit (a transaction)."""
    where, params = filters.where(tenant_id)
    query = sql.SQL(
        "SELECT {columns} FROM audit_logs WHERE {where} ORDER BY created_at, id"
    ).format(columns=sql.SQL(EVENT_COLUMNS), where=where)
    with conn.cursor(name=f"export_{uuid.uuid4().hex[:8]}", row_factory=dict_row) as cur:
        cur.itersize = batch
        cur.execute(query, params)
        yield from cur


def events_by_ids(
    conn: psycopg.Connection[Any],
    tenant_id: uuid.UUID,
    ids: list[uuid.UUID],
    *,
    rendered: bool = False,
) -> list[dict[str, Any]]:
    """The tenant's events among ``ids``; their UUIDv7 timestamps bound the partitions read.
    ``rendered``: as for ``list_events``."""
    if not ids:
        return []
    times = [id_time(i) for i in ids if is_uuid7(i)]
    if not times:
        return []
    params = {
        "tenant_id": tenant_id,
        "ids": ids,
        "earliest": min(times) - timedelta(minutes=1),
        "latest": max(times) + timedelta(minutes=1),
    }
    with conn.cursor(row_factory=dict_row) as cur:
        if not rendered:
            return cur.execute(QUERIES["events_by_ids"], params).fetchall()
        query = sql.SQL(
            "SELECT {columns} FROM audit_logs WHERE tenant_id = %(tenant_id)s "
            "AND id = ANY(%(ids)s) AND created_at BETWEEN %(earliest)s AND %(latest)s"
        ).format(columns=sql.SQL(RENDERED_COLUMNS))
        return cur.execute(query, params).fetchall()


def _export_days(
    conn: psycopg.Connection[Any], tenant_id: uuid.UUID, filters: EventFilters
) -> list[tuple[datetime, datetime]]:
    """The UTC days an export reads, oldest first, cut to the filter's created range and to
    the tenant's oldest and newest events (so a wide range costs no empty statements)."""
    row = conn.execute(
        "SELECT min(created_at), max(created_at) FROM audit_logs WHERE tenant_id = %s",
        (tenant_id,),
    ).fetchone()
    if row is None or row[0] is None:
        return []
    low = max(row[0], filters.created_from) if filters.created_from else row[0]
    # Just past the newest event: the day loop's bounds are half-open.
    high = row[1] + timedelta(microseconds=1)
    if filters.created_to is not None:
        high = min(high, filters.created_to)
    days: list[tuple[datetime, datetime]] = []
    start = low
    while start < high:
        day_end = datetime.combine(start.astimezone(UTC).date() + timedelta(days=1), time(), UTC)
        days.append((start, min(day_end, high)))
        start = day_end
    return days


def copy_csv(
    conn: psycopg.Connection[Any], tenant_id: uuid.UUID, filters: EventFilters
) -> Iterator[bytes]:
    """Every matching event as CSV (header first, oldest first), written by PostgreSQL's
    COPY: several times faster than formatting rows in Python, and still streamed.

    One COPY per UTC day (one daily partition each), oldest first: each sorts a day's rows
    in memory, so the first bytes leave at once and a whole-tenant export never waits for,
    or spills, one sort of millions of rows (24 s before its first byte on 1.3 M rows).
    Run inside one transaction (the caller's); rows committed meanwhile into a day not yet
    read may appear, as with any streamed read."""
    where, params = filters.where(tenant_id)
    days = _export_days(conn, tenant_id, filters)  # before the first byte: fails as a 4xx/5xx
    yield ",".join(COLUMNS).encode() + b"\n"  # what COPY's HEADER writes
    for day_start, day_end in days:
        query = sql.SQL(
            "COPY (SELECT {columns} FROM audit_logs WHERE {where} AND created_at >= "
            "%(day_start)s AND created_at < %(day_end)s ORDER BY created_at, id) "
            "TO STDOUT WITH (FORMAT csv)"
        ).format(columns=sql.SQL(CSV_SELECT_LIST), where=where)
        with (
            conn.cursor() as cur,
            cur.copy(query, {**params, "day_start": day_start, "day_end": day_end}) as copy,
        ):
            # PostgreSQL sends one CopyData message per row; yielding each would cost a
            # socket write per row in the API (97k rows/s in-process but 38k over HTTP).
            pending = bytearray()
            for chunk in copy:
                pending += chunk
                if len(pending) >= COPY_FLUSH_BYTES:
                    yield bytes(pending)
                    pending.clear()
            if pending:
                yield bytes(pending)
