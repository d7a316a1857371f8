"""Reading a tenant's events: keyset-paginated listing and streaming row iteration.

Every statement is scoped by ``EventFilters.where(tenant_id)``, whose first condition is the
tenant; rows come back as dicts with the stored column values."""

from __future__ import annotations

import ipaddress
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import Any, LiteralString

import psycopg
from psycopg import errors, generators, pq, sql
from psycopg.abc import PQGen
from psycopg.rows import dict_row
from psycopg.waiting import Ready, Wait

from auditlog.export import COLUMNS, CSV_SELECT_LIST
from auditlog.filters import EventFilters
from auditlog.ids import time_hint
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
# A search over the whole history (no lower bound on created_at) runs on the generic plan of
# a prepared statement when an index serves it as well with parameters as with values
# (_generic_plan_fits): planned once per connection, so it costs its execution only (a
# median user's page: 3.5 ms of PostgreSQL CPU instead of 12.5, bench/list_plans.py). Such
# a search skips the windows wider than this one, which would be planned on every request.
GENERIC_SEARCH_AFTER = timedelta(days=7)

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

    def page(
        condition: sql.Composable, extra: dict[str, Any], *, generic: bool = False
    ) -> list[dict[str, Any]]:
        query = sql.SQL(
            "SELECT {columns} FROM audit_logs WHERE {where} "
            "ORDER BY created_at {direction}, id {direction} LIMIT %(limit)s"
        ).format(
            columns=sql.SQL(RENDERED_COLUMNS if rendered else EVENT_COLUMNS),
            where=condition,
            direction=direction,
        )
        values = {**params, **extra, "limit": limit}
        with conn.cursor(row_factory=dict_row) as cur:
            if not generic:
                # Planned for its values (unprepared): the plan prunes the partitions to
                # the window or range, and a rare value gets a plan of its own.
                return cur.execute(query, values, prepare=False).fetchall()
            with _generic_plan(conn):
                cur.execute(query, values, prepare=True)
            return cur.fetchall()

    whole_history = filters.created_from is None and (newest_first or after is None)
    generic = whole_history and _generic_plan_fits(filters)
    if newest_first:
        newest = after[0] if after else (filters.created_to or datetime.now(UTC))
        windowed = sql.SQL("{} AND created_at >= %(window_start)s").format(where)
        wanted = LIST_WINDOWS[0]
        for width in LIST_WINDOWS:
            if width < wanted:
                continue  # the rows found so far say this window is too narrow
            if generic and width > GENERIC_SEARCH_AFTER:
                break  # the generic whole-history search costs less than planning this window
            window_start = newest - width
            if filters.created_from is not None and window_start <= filters.created_from:
                break  # the filter's own bound is narrower
            rows = page(windowed, {"window_start": window_start})
            if len(rows) >= limit:
                return rows
            # At the rate found, the width that would hold a page (no margin: a wider window
            # than needed can mean planning every partition, which costs more than a retry).
            wanted = width * limit / max(len(rows), 1)
    if generic:
        return page(where, {}, generic=True)
    # An IP network: planning every partition costs several times more than probing each
    # one's IP index, and a network without events (an address under investigation) is a
    # common answer, which the probe settles. Otherwise the statement is planned for its
    # values, as its `<<=` reaches the IP index only through a value.
    if (
        whole_history
        and filters.ip_network is not None
        and not _any_in_network(conn, where, params, filters.ip_network)
    ):
        return []
    return page(where, {})


def _generic_plan_fits(filters: EventFilters) -> bool:
    """Whether a generic plan serves a whole-history search as well as a plan for its values:
    the tenant alone (its (tenant_id, created_at, id) index walks the rows newest first), or a
    user or a resource, whose (tenant_id, ..., created_at) indexes find their rows whatever
    else narrows them. Not an IP network (`<<=` uses the index only with a value), nor other
    filters alone: on unindexed columns, a plan for a rare value may read the tenant's rows
    in another way than the generic plan's walk of the time index."""
    if filters.ip_network is not None:
        return False
    if filters.user_id is not None or (
        filters.resource_type is not None and filters.resource_id is not None
    ):
        return True
    return not (
        filters.session_id is not None
        or filters.action_types
        or filters.severities
        or filters.resource_type is not None
        or filters.resource_id is not None
        or filters.occurred_from is not None
        or filters.occurred_to is not None
    )


@contextmanager
def _generic_plan(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Prepared statements executed inside run on their generic plan (planned once per
    connection; PostgreSQL prunes partitions when the plan starts), one that reads rows in
    index order: without enable_sort the planner walks the partitions newest first and stops
    at the page, where its guess for a parameter (a resource has a row or two a day) would
    sort every matching row (280 ms for a resource with 22k events; 1.9 ms walked). The SETs,
    the statement and the RESETs go in one pipeline, one round trip: if the statement fails,
    the transaction it aborts (the pipeline's own in autocommit) takes the SETs back."""
    settings = psycopg.Cursor(conn)  # not the connection's cursor_factory: no rows to shape
    with conn.pipeline():
        settings.execute("SET plan_cache_mode = force_generic_plan")
        settings.execute("SET enable_sort = off")
        try:
            yield
        finally:
            settings.execute("RESET enable_sort")
            settings.execute("RESET plan_cache_mode")


def network_bounds(network: str) -> tuple[str, str]:
    """The lowest and highest inet values in ``network`` (what PostgreSQL's `<<=` derives
    for a btree index from a value, as parameters: `ip_address >= low AND ip_address <=
    high`)."""
    net = ipaddress.ip_network(network, strict=False)
    return str(net), str(net.broadcast_address)


def _any_in_network(
    conn: psycopg.Connection[Any], where: sql.Composable, params: dict[str, Any], network: str
) -> bool:
    """Whether any row matches ``where`` (which holds the IP filter), on a generic plan that
    reads each partition's (tenant_id, ip_address) index through explicit bounds."""
    low, high = network_bounds(network)
    query = sql.SQL(
        "SELECT EXISTS (SELECT FROM audit_logs WHERE {} AND ip_address >= %(ip_low)s::inet"
        " AND ip_address <= %(ip_high)s::inet)"
    ).format(where)
    with conn.cursor() as cur:
        with _generic_plan(conn):
            cur.execute(query, {**params, "ip_low": low, "ip_high": high}, prepare=True)
        row = cur.fetchone()
    return bool(row and row[0])


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
    times = [t for t in map(time_hint, ids) if t is not None]
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

    One COPY per UTC day (one daily partition each), oldest first: each reads a day's rows
    in index order (or sorts them in memory, with filters besides the time range), so the
    first bytes leave at once and a whole-tenant export never waits for, or spills, one sort
    of millions of rows (24 s before its first byte on 1.3 M rows). Run inside one
    transaction (the caller's); rows committed meanwhile into a day not yet read may appear,
    as with any streamed read. A server error during a COPY raises (the stream breaks)
    rather than ending the file early as if it were complete."""
    where, params = filters.where(tenant_id)
    # Before the first byte, this and the settings below: their failure is a 4xx/5xx.
    days = _export_days(conn, tenant_id, filters)
    # Sorted by the stored columns, qualified: a bare ``created_at`` here would name the
    # output column, the to_char() text, and sort (and spill) strings instead (same order).
    query = sql.SQL(
        "COPY (SELECT {columns} FROM audit_logs WHERE {where} AND created_at >= "
        "%(day_start)s AND created_at < %(day_end)s "
        "ORDER BY audit_logs.created_at, audit_logs.id) TO STDOUT WITH (FORMAT csv)"
    ).format(columns=sql.SQL(CSV_SELECT_LIST), where=where)
    sort_setting: tuple[Any, ...] | None = None
    if replace(filters, created_from=None, created_to=None) == EventFilters():
        # Only a time range: read each day in the order of the tenant's time index, which
        # streams from the first row. The planner prefers a (parallel) bitmap scan and a
        # sort, which sends nothing until the day is sorted, so PostgreSQL's reading and the
        # API's writing take turns instead of overlapping, and costs ~25% more CPU. Other
        # filters keep the planner's choice (a more selective index, say). Local to the
        # transaction, and undone below for whatever else the caller runs in it.
        sort_setting = conn.execute("SELECT current_setting('enable_sort')").fetchone()
        conn.execute("SELECT set_config('enable_sort', 'off', true)")
    yield ",".join(COLUMNS).encode() + b"\n"  # what COPY's HEADER writes
    for day_start, day_end in days:
        with (
            conn.cursor() as cur,
            cur.copy(query, {**params, "day_start": day_start, "day_end": day_end}),
        ):
            # Read by _copy_chunks rather than by iterating the Copy object, which costs a
            # pass through psycopg's wait machinery per row (one CopyData message each):
            # under the API's gevent worker that pure-Python path was the export's limit.
            yield from _copy_chunks(conn, COPY_FLUSH_BYTES)
    if sort_setting is not None:
        conn.execute("SELECT set_config('enable_sort', %s, true)", (sort_setting[0],))


def _copy_chunks(conn: psycopg.Connection[Any], size: int) -> Iterator[bytes]:
    """The data of the COPY TO in progress on ``conn``, in chunks of about ``size`` bytes
    (the WSGI server writes each chunk at once: one write per row was 38k rows/s), until
    its end. Raises the server's error if the COPY failed part way."""
    encoding = conn.info.encoding
    under_gevent = _gevent_patched()
    while True:
        reading = _read_copy_chunk(conn.pgconn, size, encoding)
        # Under the API's gevent worker, on gevent's hub; else the connection's own wait.
        chunk = _wait_gevent(reading, conn.pgconn.socket) if under_gevent else conn.wait(reading)
        if chunk:
            yield chunk
        if len(chunk) < size:
            return  # only the last chunk is short


def _gevent_patched() -> bool:
    """Whether gevent has patched the standard library (the API's worker), as psycopg
    itself tells when it picks its wait function; gevent is not imported otherwise."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("select"))


def _wait_gevent(gen: PQGen[bytes], fileno: int) -> bytes:
    """Run a psycopg wait generator, waiting for the socket on gevent's hub (other greenlets
    run meanwhile). The COPY waits once per network packet or so, about 8 kB (PostgreSQL
    sends as it reads rows): psycopg's wait under gevent, a patched poll() in Python, cost
    twice as much CPU per wait as this, a third of the API's CPU for an export."""
    from gevent.socket import wait_read, wait_readwrite, wait_write  # type: ignore[import-untyped]

    try:
        state = next(gen)
        while True:
            if state == Wait.R:
                wait_read(fileno)
            elif state == Wait.W:
                wait_write(fileno)
            else:
                wait_readwrite(fileno)
            state = gen.send(Ready(int(state)))  # the state waited for is ready
    except StopIteration as done:
        result: bytes = done.value
        return result


def _read_copy_chunk(pgconn: pq.abc.PGconn, size: int, encoding: str) -> PQGen[bytes]:
    """A psycopg wait generator: the COPY's next ``size`` bytes or more (whole rows), or
    what is left of it, short, once it ended. Like psycopg.generators.copy_from, but one
    pass gathers every row that libpq holds rather than one row."""
    data = bytearray()
    while True:
        nbytes, row = pgconn.get_copy_data(1)  # async: 0 when it would have to wait
        if nbytes > 0:
            data += row
            if len(data) >= size:
                return bytes(data)
        elif nbytes == 0:
            while not (yield Wait.R):
                continue
            pgconn.consume_input()
        else:
            # -1: the COPY ended, well or not (the server's error ends it too); -2 raised
            # already. Its outcome is the result that follows: collect it (and anything
            # after it, which leaves the connection idle for the next statement).
            break
    results = yield from generators.fetch_many(pgconn)
    for result in results:
        if result.status != pq.ExecStatus.COMMAND_OK:
            raise errors.error_from_result(result, encoding=encoding)
    return bytes(data)
