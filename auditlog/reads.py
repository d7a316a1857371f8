"""Reading a tenant's events: keyset-paginated listing and streaming row iteration.

Every statement is scoped by ``EventFilters.where(tenant_id)``, whose first condition is the
tenant; rows come back as dicts with the stored column values."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from auditlog.export import CSV_SELECT_LIST
from auditlog.filters import EventFilters
from auditlog.ids import id_time, is_uuid7
from auditlog.store.queries import QUERIES

EVENT_COLUMNS: LiteralString = (
    "id, tenant_id, seq, created_at, occurred_at, user_id, session_id, "
    "host(ip_address) AS ip_address, user_agent, action_type, resource_type, resource_id, "
    "severity, before_state, after_state, metadata, prev_hash, hash, redacted"
)


# Newest-first pages are searched in widening windows back from the newest row the page can
# hold, so that the planner prunes every daily partition older than the window: planning all
# ~100 partitions (and their indexes) costs several times more than running the query. A
# window that yields a full page is the answer, since every row outside it is older; one that
# does not skips the windows its row rate says are still too narrow (a rare filter goes
# straight to the unbounded search).
LIST_WINDOWS = (timedelta(days=1), timedelta(days=7), timedelta(days=31))


def list_events(
    conn: psycopg.Connection[Any],
    tenant_id: uuid.UUID,
    filters: EventFilters,
    *,
    limit: int,
    newest_first: bool = True,
    after: tuple[datetime, uuid.UUID] | None = None,
) -> list[dict[str, Any]]:
    """One page, ordered by (created_at, id); ``after`` is the last row of the previous page."""
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
        ).format(columns=sql.SQL(EVENT_COLUMNS), where=condition, direction=direction)
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
    conn: psycopg.Connection[Any], tenant_id: uuid.UUID, ids: list[uuid.UUID]
) -> list[dict[str, Any]]:
    """The tenant's events among ``ids``; their UUIDv7 timestamps bound the partitions read."""
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
        return cur.execute(QUERIES["events_by_ids"], params).fetchall()


def copy_csv(
    conn: psycopg.Connection[Any], tenant_id: uuid.UUID, filters: EventFilters
) -> Iterator[bytes]:
    """Every matching event as CSV (header first, oldest first), written by PostgreSQL's
    COPY: several times faster than formatting rows in Python, and still streamed."""
    where, params = filters.where(tenant_id)
    query = sql.SQL(
        "COPY (SELECT {columns} FROM audit_logs WHERE {where} ORDER BY created_at, id) "
        "TO STDOUT WITH (FORMAT csv, HEADER true)"
    ).format(columns=sql.SQL(CSV_SELECT_LIST), where=where)
    with conn.cursor() as cur, cur.copy(query, params) as copy:
        for chunk in copy:
            yield bytes(chunk)
