"""Building the daily statistics of one UTC day (the ``daily_stats`` asset's work).

For every tenant with events on the day: counts by action, severity and resource type
(audit_stats_daily, and each on its own in audit_stats_daily_counts), every resource's and
user's count ranked within the day, and the hourly totals; stamped
with the day's version as read before counting. Any later change to the day's events bumps
the version (migration 0006's triggers), so the API then ignores these rows until the next
build: a build is never wrong, at worst out of date and unused. See auditlog/stats.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import psycopg

from auditlog.stats import DAY, STATS_QUERIES, day_start


@dataclass(frozen=True)
class DayBuild:
    day: date
    tenants: int
    events: int


def build_day(conn: psycopg.Connection[Any], day: date, lock_timeout_s: float = 60) -> DayBuild:
    """Build (or rebuild) ``day``'s daily rows for every tenant. Runs its own transactions
    on ``conn`` (which must not be in one)."""
    start = day_start(day)
    span = {"day": day, "start": start, "end": start + DAY}
    # 1. Register the day's tenants: from this commit on, changes bump their versions.
    with conn.transaction():
        conn.execute(STATS_QUERIES["daily_register"], span)
    # 2. Wait out the writers that began before step 1 (they could not bump a missing row).
    with conn.transaction():
        conn.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout_s * 1000)}ms'")
        conn.execute(STATS_QUERIES["daily_barrier"])
    # 3. Read the versions, then count: one statement over the day's partition.
    with conn.transaction():
        conn.execute(STATS_QUERIES["daily_lock"], {"day_number": day.toordinal()})
        versions = conn.execute(STATS_QUERIES["daily_versions"], span).fetchall()
        tenants = [r[0] for r in versions]
        params = {**span, "tenants": tenants, "versions": [r[1] for r in versions]}
        conn.execute(STATS_QUERIES["daily_delete_rows"], params)
        built = conn.execute(STATS_QUERIES["daily_build"], params).fetchall()
    return DayBuild(day, len(built), sum(int(r[1]) for r in built))
