"""Newest-first listing searches widening time windows (auditlog.reads.LIST_WINDOWS); the
pages must equal a plain ORDER BY over everything, whether a window fills the page or not."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta
from typing import Any

import psycopg

from auditlog.filters import EventFilters
from auditlog.reads import list_events
from auditlog.settings import Settings
from auditlog.store.pool import connect
from auditlog.tenants import create_tenant
from tests.integration.test_stats import NOW, Tenant, at, day, random_times, store


def walk(
    conn: psycopg.Connection[Any], tenant_id: uuid.UUID, filters: EventFilters, limit: int
) -> list[uuid.UUID]:
    seen: list[uuid.UUID] = []
    after = None
    while True:
        rows = list_events(conn, tenant_id, filters, limit=limit + 1, after=after)
        seen += [r["id"] for r in rows[:limit]]
        if len(rows) <= limit:
            return seen
        after = (rows[limit - 1]["created_at"], rows[limit - 1]["id"])


def test_windowed_pages_equal_the_plain_order(settings: Settings) -> None:
    rng = random.Random(9)
    with connect(settings.database_url, autocommit=True) as conn:
        conn.execute("SELECT audit_ensure_partitions(%s, %s)", (day(45), day(0)))
        tenant = Tenant(uuid.UUID(str(create_tenant(conn, name="windows")["id"])), "w")
        # Dense today, sparse weeks ago: some pages fill in the first window, others need
        # the 7-day, 31-day or unbounded search.
        times = random_times(rng, NOW - timedelta(hours=20), NOW, 60)
        times += random_times(rng, at(40), at(2), 40)
        store(conn, tenant, times, rng)
        everything = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM audit_logs WHERE tenant_id = %s ORDER BY created_at DESC, id DESC",
                (tenant.id,),
            )
        ]
        assert len(everything) == 100
        for limit in (7, 25, 100, 150):
            assert walk(conn, tenant.id, EventFilters(), limit) == everything
        deletes = EventFilters(action_types=["DELETE"])
        want = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM audit_logs WHERE tenant_id = %s AND action_type = 'DELETE'"
                " ORDER BY created_at DESC, id DESC",
                (tenant.id,),
            )
        ]
        assert want
        assert walk(conn, tenant.id, deletes, 3) == want
        since = EventFilters(created_from=at(10))
        want = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM audit_logs WHERE tenant_id = %s AND created_at >= %s"
                " ORDER BY created_at DESC, id DESC",
                (tenant.id, at(10)),
            )
        ]
        assert 60 < len(want) < 100
        assert walk(conn, tenant.id, since, 9) == want
