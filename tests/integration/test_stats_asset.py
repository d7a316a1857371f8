"""The daily_stats asset builds a day for the stats API, and its sensor asks for a rebuild
once the day's events change."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from dagster import RunRequest, build_sensor_context, materialize

from assets.stats import daily_stats, stale_daily_stats_sensor
from auditlog.settings import Settings
from auditlog.stats import built_days, tenant_stats
from auditlog.store.pool import connect
from auditlog.tenants import create_tenant
from pipelines.resources import AuditPlatform
from tests.integration.test_stats import NOW, Tenant, at, day, random_times, store


def test_materialising_a_partition_builds_the_day_and_the_sensor_sees_changes(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    rng = random.Random(5)
    with connect(settings.database_url, autocommit=True) as conn:
        conn.execute("SELECT audit_ensure_partitions(%s, %s)", (day(3), day(0)))
        tenant = Tenant(uuid.UUID(str(create_tenant(conn, name="asset")["id"])), "asset")
        store(conn, tenant, random_times(rng, at(3), NOW, 300), rng)
        before = tenant_stats(conn, tenant.id, NOW - timedelta(days=30), NOW, "day", NOW)

        result = materialize(
            [daily_stats], partition_key=day(2).isoformat(), resources={"platform": AuditPlatform()}
        )
        assert result.success
        meta = result.asset_materializations_for_node("daily_stats")[0].metadata
        tenants = meta["tenants"].value
        assert isinstance(tenants, int)
        assert tenants >= 1  # other tests' tenants may have events that day too
        assert day(2) in built_days(conn, tenant.id, at(3), NOW)
        after = tenant_stats(conn, tenant.id, NOW - timedelta(days=30), NOW, "day", NOW)
        assert after == before

        store(conn, tenant, random_times(rng, at(2, 5), at(2, 6), 7), rng)  # late events
        assert day(2) not in built_days(conn, tenant.id, at(3), NOW)
        requests = _requests(conn)
        assert day(2).isoformat() in [r.partition_key for r in requests]
        assert day(3).isoformat() not in [r.partition_key for r in requests]  # never built


def _requests(conn: psycopg.Connection[Any]) -> list[RunRequest]:
    context = build_sensor_context(resources={"platform": AuditPlatform()})
    result = stale_daily_stats_sensor(context)
    assert isinstance(result, list)
    return result
