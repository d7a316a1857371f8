"""auditlog.reads.copy_csv, the CSV export, which reads each day's COPY straight from libpq:
its bytes equal the previous reading through psycopg's Copy object, the cells are escaped
and guarded as the format says, an export spans days and may be empty, and a COPY that the
server ends with an error raises instead of leaving a file that looks complete, with the
connection fit for its next statement afterwards."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from auditlog import reads
from auditlog.export import COLUMNS, CSV_SELECT_LIST
from auditlog.filters import EventFilters
from auditlog.reads import copy_csv
from auditlog.settings import Settings
from auditlog.store.pool import connect
from auditlog.tenants import create_tenant
from tests.integration.datasets_support import day_records, event_record, store, utc_day

HEADER = (",".join(COLUMNS) + "\n").encode()


def copy_csv_before(
    conn: psycopg.Connection[Any], tenant_id: uuid.UUID, filters: EventFilters
) -> Iterator[bytes]:
    """copy_csv as it was before it read libpq directly: the same COPY per day (sorted by
    the output columns), iterated row by row through psycopg's Copy object."""
    where, params = filters.where(tenant_id)
    days = reads._export_days(conn, tenant_id, filters)
    yield HEADER
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
            for chunk in copy:
                yield bytes(chunk)


def export(settings: Settings, tenant_id: uuid.UUID, filters: EventFilters, fn: Any) -> bytes:
    with connect(settings.database_url) as conn, conn.transaction():
        return b"".join(fn(conn, tenant_id, filters))


def new_tenant(settings: Settings) -> uuid.UUID:
    with connect(settings.database_url, autocommit=True) as conn:
        return uuid.UUID(str(create_tenant(conn, name=f"csv-{uuid.uuid4().hex[:6]}")["id"]))


def receive_buffer(conn: psycopg.Connection[Any], size: int) -> None:
    with socket.socket(fileno=conn.pgconn.socket) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        sock.detach()  # the socket stays libpq's


@pytest.fixture(scope="module")
def awkward(settings: Settings) -> tuple[uuid.UUID, list[dict[str, Any]]]:
    """Three days of events whose cells need CSV quoting, JSON text and the formula guard."""
    tenant = new_tenant(settings)
    records = []
    for days_ago in (3, 2, 1):
        records += day_records(tenant, utc_day(days_ago), 40)
    tricky = {
        "user_agent": "=cmd|' /C calc'!A0",
        "session_id": "+1",
        "resource_type": "@SUM(A1)",
        "resource_id": 'a,"quoted"\nline',
        "metadata": {"quote": 'say "hi"', "comma": "a,b", "nl": "x\ny", "é": "ü", "f": "=1"},
        "before_state": {"list": [1, 2.5, None, True], "nested": {"k": "-v"}},
    }
    records[5].update(tricky)
    records[50].update(user_agent="\tTab", resource_id="-5", session_id=None)
    records[90].update(user_agent="\rCR", resource_id="plain")
    store(settings, records)
    return tenant, records


def test_bytes_equal_the_copy_object_reading(
    settings: Settings, awkward: tuple[uuid.UUID, list[dict[str, Any]]]
) -> None:
    tenant, records = awkward
    middle = utc_day(2)
    for filters in (
        EventFilters(),
        EventFilters(created_from=datetime(middle.year, middle.month, middle.day, 12, tzinfo=UTC)),
        EventFilters(action_types=["DELETE"]),
    ):
        new = export(settings, tenant, filters, copy_csv)
        assert new == export(settings, tenant, filters, copy_csv_before)
    everything = export(settings, tenant, EventFilters(), copy_csv)
    assert everything.startswith(HEADER)
    rows = list(csv.DictReader(io.StringIO(everything.decode())))
    assert [r["id"] for r in rows] == [
        r["id"] for r in sorted(records, key=lambda r: (r["created_at"], r["id"]))
    ]
    by_id = {r["id"]: r for r in rows}
    tricky = by_id[records[5]["id"]]
    assert tricky["user_agent"] == "'=cmd|' /C calc'!A0"  # no formula in a spreadsheet
    assert tricky["session_id"] == "'+1"
    assert tricky["resource_type"] == "'@SUM(A1)"
    assert tricky["resource_id"] == 'a,"quoted"\nline'  # quoted by CSV, not guarded
    assert json.loads(tricky["metadata"]) == records[5]["metadata"]  # JSON text, not a repr
    assert json.loads(tricky["metadata"])["f"] == "=1"  # inside JSON it stays data
    assert json.loads(tricky["before_state"]) == records[5]["before_state"]
    assert '""comma"": ""a,b""' in everything.decode()  # quotes doubled inside the cell
    tab = by_id[records[50]["id"]]
    assert (tab["user_agent"], tab["resource_id"], tab["session_id"]) == ("'\tTab", "'-5", "")
    assert by_id[records[90]["id"]]["user_agent"] == "'\rCR"
    assert tricky["created_at"] == records[5]["created_at"]  # ISO 8601 in UTC with a Z


def test_a_multi_day_export_in_small_chunks(
    settings: Settings,
    awkward: tuple[uuid.UUID, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant, records = awkward
    whole = export(settings, tenant, EventFilters(), copy_csv)
    monkeypatch.setattr(reads, "COPY_FLUSH_BYTES", 1000)  # several chunks a day
    with connect(settings.database_url) as conn, conn.transaction():
        chunks = list(copy_csv(conn, tenant, EventFilters()))
        # The planner setting the export changes is back for the rest of the transaction.
        assert conn.execute("SHOW enable_sort").fetchone() == ("on",)
    assert b"".join(chunks) == whole
    assert len(chunks) > 3 * 5
    assert all(chunk.endswith(b"\n") for chunk in chunks)  # whole rows only
    short = [chunk for chunk in chunks[1:] if len(chunk) < 1000]
    assert len(short) <= 3  # each day's last chunk, at most
    assert whole.count(b"\n") == len(records) + 2  # + the header, + the embedded newline


def test_an_empty_export_is_the_header_alone(
    settings: Settings, awkward: tuple[uuid.UUID, list[dict[str, Any]]]
) -> None:
    tenant, _ = awkward
    nobody = new_tenant(settings)
    assert export(settings, nobody, EventFilters(), copy_csv) == HEADER
    no_match = EventFilters(resource_id="nothing-like-this")
    assert export(settings, tenant, no_match, copy_csv) == HEADER
    future = EventFilters(created_from=datetime.now(UTC) + timedelta(days=1))
    assert export(settings, tenant, future, copy_csv) == HEADER


BULKY_ROWS = 240


@pytest.fixture(scope="module")
def bulky(settings: Settings) -> uuid.UUID:
    """A tenant with one day of about 12 MB of CSV: more than the socket buffers between
    PostgreSQL and the client hold (the server's send buffer grows to 4 MB), so the client
    waits for data many times, and a COPY stopped early is still running."""
    tenant = new_tenant(settings)
    when = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    records = [
        event_record(tenant, when - timedelta(hours=12, seconds=i), i) for i in range(BULKY_ROWS)
    ]
    for i, record in enumerate(records):
        record["metadata"] = {"i": i, "blob": "x" * 50_000}
    store(settings, records)
    return tenant


# Run in a subprocess: gevent's monkey-patching, as in the API's worker, cannot be undone
# in the test session. A greenlet ticks while the export runs.
UNDER_GEVENT = """
import hashlib, socket, sys, time, uuid
from gevent import monkey
monkey.patch_all()
import gevent, psycopg
from auditlog.filters import EventFilters
from auditlog.reads import copy_csv
ticks = []
def tick():
    while True:
        ticks.append(time.monotonic())
        gevent.sleep(0.001)
ticker = gevent.spawn(tick)
gevent.sleep(0.01)
digest, size = hashlib.sha256(), 0
with psycopg.connect(sys.argv[1]) as conn, conn.transaction():
    stream = copy_csv(conn, uuid.UUID(sys.argv[2]), EventFilters())
    digest.update(next(stream))  # the header
    first = next(stream)  # the first rows: the COPY started (psycopg waited for that)
    digest.update(first)
    size += len(first)
    started = time.monotonic()
    for chunk in stream:
        digest.update(chunk)
        size += len(chunk)
    ended = time.monotonic()
ticker.kill()
# Cancelled part way (see the test below), the export raises, and the connection works.
with psycopg.connect(sys.argv[1]) as conn:
    with socket.socket(fileno=conn.pgconn.socket) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 128 * 1024)
        sock.detach()
    try:
        with conn.transaction():
            stream = copy_csv(conn, uuid.UUID(sys.argv[2]), EventFilters())
            next(stream), next(stream)
            conn.cancel_safe()
            for _ in stream:
                pass
        outcome = "complete"
    except psycopg.errors.QueryCanceled:
        outcome = "cancelled"
    outcome += f"-then-{conn.execute('SELECT 1').fetchone()[0]}"
print(digest.hexdigest(), size, sum(started < t < ended for t in ticks), ended - started, outcome)
"""


def test_under_gevent_the_export_lets_other_greenlets_run_and_raises_when_cancelled(
    settings: Settings, bulky: uuid.UUID
) -> None:
    expected = export(settings, bulky, EventFilters(), copy_csv)
    out = subprocess.run(
        [sys.executable, "-c", UNDER_GEVENT, settings.database_url, str(bulky)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split()
    assert out[0] == hashlib.sha256(expected).hexdigest()  # the same bytes
    assert int(out[1]) == len(expected) - len(HEADER)
    # Waiting for the COPY's data did not block the process: the ticker ran meanwhile.
    assert int(out[2]) > 0, f"no tick in {float(out[3]):.3f} s of export"
    assert out[4] == "cancelled-then-1"


def test_a_copy_cancelled_part_way_raises_and_the_connection_stays_usable(
    settings: Settings,
    bulky: uuid.UUID,
    db: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant = bulky
    monkeypatch.setattr(reads, "COPY_FLUSH_BYTES", 64 * 1024)
    with connect(settings.database_url) as conn:
        # A fixed receive buffer: no autotuning lets megabytes pile up client-side.
        receive_buffer(conn, 128 * 1024)
        received: list[bytes] = []

        def export_cancelled_after_the_first_rows() -> None:
            with conn.transaction():
                stream = copy_csv(conn, tenant, EventFilters())
                received.append(next(stream))  # the header
                received.append(next(stream))  # the first rows
                cancelled = db.execute("SELECT pg_cancel_backend(%s)", (conn.info.backend_pid,))
                assert cancelled.fetchone() == (True,)
                receive_buffer(conn, 4 << 20)  # the rest, faster
                received.extend(stream)

        with pytest.raises(psycopg.errors.QueryCanceled):
            export_cancelled_after_the_first_rows()
        got = b"".join(received)
        assert 0 < got.count(b"\n") - 1 < BULKY_ROWS  # some rows came, not all
        # The transaction rolled back; the connection runs the next statement and export.
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.execute("SELECT 1").fetchone() == (1,)
        with conn.transaction():
            again = b"".join(copy_csv(conn, tenant, EventFilters()))
        assert again.count(b"\n") == BULKY_ROWS + 1
        assert again.startswith(got[: len(got) // 2])
