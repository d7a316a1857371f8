"""Tenant statistics: exact counts from the hourly aggregates the drain keeps, plus the raw
rows of the partial hours at the edges of the range; top resources and users from rows."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import psycopg

from auditlog.events import ActionType, Severity, format_time
from auditlog.store.queries import QUERIES

HOUR = timedelta(hours=1)
TOP_N = 10


@dataclass(frozen=True)
class HourCount:
    hour: datetime
    action_type: str
    severity: str
    resource_type: str
    events: int


def _ceil_hour(t: datetime) -> datetime:
    floor = t.replace(minute=0, second=0, microsecond=0)
    return floor if floor == t else floor + HOUR


def hour_counts(
    conn: psycopg.Connection[Any], tenant_id: uuid.UUID, start: datetime, end: datetime
) -> list[HourCount]:
    """Exact per-hour counts for [start, end)."""
    first_full, last_full = _ceil_hour(start), end.replace(minute=0, second=0, microsecond=0)
    rows: list[tuple[Any, ...]] = []
    if first_full < last_full:
        params = {"tenant_id": tenant_id, "start": first_full, "end": last_full}
        rows += conn.execute(QUERIES["stats_hours_aggregated"], params).fetchall()
        edges = [(start, first_full), (last_full, end)]
    else:
        edges = [(start, end)]
    for edge_start, edge_end in edges:
        if edge_start < edge_end:
            params = {"tenant_id": tenant_id, "start": edge_start, "end": edge_end}
            rows += conn.execute(QUERIES["stats_hours_raw"], params).fetchall()
    return [HourCount(r[0], r[1], r[2], r[3], int(r[4])) for r in rows]


def tenant_stats(
    conn: psycopg.Connection[Any],
    tenant_id: uuid.UUID,
    start: datetime,
    end: datetime,
    bucket: Literal["hour", "day"],
    now: datetime,
) -> dict[str, Any]:
    counts = hour_counts(conn, tenant_id, start, end)
    by_action = Counter({a.value: 0 for a in ActionType})
    by_severity = Counter({s.value: 0 for s in Severity})
    by_resource: Counter[str] = Counter()
    series: Counter[datetime] = Counter()
    for c in counts:
        by_action[c.action_type] += c.events
        by_severity[c.severity] += c.events
        by_resource[c.resource_type] += c.events
        key = c.hour if bucket == "hour" else c.hour.replace(hour=0)
        series[key] += c.events
    last_7_days = sum(c.events for c in hour_counts(conn, tenant_id, now - timedelta(days=7), now))
    params = {"tenant_id": tenant_id, "start": start, "end": end, "limit": TOP_N}
    top_resources = conn.execute(QUERIES["stats_top_resources"], params).fetchall()
    top_users = conn.execute(QUERIES["stats_top_users"], params).fetchall()
    return {
        "total_logs": sum(by_action.values()),
        "by_action": dict(by_action),
        "by_severity": dict(by_severity),
        "by_resource_type": dict(by_resource.most_common()),
        "last_7_days": last_7_days,
        "from": format_time(start),
        "to": format_time(end),
        "bucket": bucket,
        "series": [{"start": format_time(k), "count": v} for k, v in sorted(series.items())],
        "top_resources": [
            {"resource_type": t, "resource_id": i, "count": n} for t, i, n in top_resources
        ],
        "top_users": [{"user_id": str(u), "count": n} for u, n in top_users],
    }
