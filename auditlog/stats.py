"""Tenant statistics, exact and fast at any table size.

A range [start, end) is split into three kinds of source:

* **built days**: whole UTC days whose daily rows (``audit_stats_daily*``, materialised by
  the Dagster asset ``daily_stats``) are current, i.e. built from the day's latest version
  (migration 0006: every change to a day's events bumps its version);
* **whole hours** of the rest, from ``audit_stats_hourly`` (kept by the drain in the
  transaction that stores the events, so always exact);
* **partial hours** at the edges, counted from the rows themselves.

A day that was never built, or whose events changed after it was built (late events, a
retention delete, a redaction), is simply not a built day: it is counted from the hourly
rows and raw rows like today. So the answers never depend on the asset having run; the
asset only makes them cheaper.

Top resources and top users come from the built days' ranked per-day counts plus the raw
rows of everything else. Each day keeps every resource's (user's) count ranked within the
day; a request reads only the top TOP_LISTED of each day, bounds what the unread rest could
add, and sums exactly only the few candidates that could still make the top N (see the
``top_resources`` statement in ``store/stats.sql``). When the bound cannot decide (a very
flat distribution), it falls back to the plain sum over every daily row, which is exact too.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from importlib.resources import files
from typing import Any, Literal, LiteralString

import psycopg
from psycopg import sql

from auditlog.events import ActionType, Severity, format_time
from auditlog.store.queries import parse_named_sql

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
TOP_N = 10
# Rows read per built day for the top-N bound. Larger reads more rows; smaller leaves more
# candidates to sum exactly, and makes the bound fail (the exact fallback runs) on flatter
# distributions. On bench/query's data 32 was the fastest (median ms per top-N, loaded
# machine: 16 -> 79, 32 -> 18, 100 -> 25), and decided every range tried.
TOP_LISTED = 32

Span = tuple[datetime, datetime]


class _StatsQueries:
    def __init__(self) -> None:
        self._loaded: dict[str, LiteralString] | None = None

    def __getitem__(self, name: str) -> LiteralString:
        if self._loaded is None:
            text = files("auditlog.store").joinpath("stats.sql").read_text(encoding="utf-8")
            self._loaded = parse_named_sql(text)
        return self._loaded[name]


STATS_QUERIES = _StatsQueries()


@dataclass(frozen=True)
class BuiltDay:
    day: date
    events: int
    hourly: list[int]


@dataclass
class Coverage:
    """How one range is counted: built days, whole hours, and raw spans."""

    days: list[BuiltDay] = field(default_factory=list)
    rest: list[Span] = field(default_factory=list)  # everything not in a built day

    @property
    def day_list(self) -> list[date]:
        return [d.day for d in self.days]

    def hours_and_raw(self) -> tuple[list[Span], list[Span]]:
        """The rest split into whole-hour spans (hourly rows) and partial-hour spans."""
        hours: list[Span] = []
        raw: list[Span] = []
        for start, end in self.rest:
            first_full, last_full = ceil_hour(start), floor_hour(end)
            if first_full < last_full:
                hours.append((first_full, last_full))
                raw += [s for s in ((start, first_full), (last_full, end)) if s[0] < s[1]]
            else:
                raw.append((start, end))
        return hours, raw


def floor_hour(t: datetime) -> datetime:
    # In UTC: an offset such as +05:30 would put "whole hours" off the hourly rows' grid.
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def ceil_hour(t: datetime) -> datetime:
    floor = floor_hour(t)
    return floor if floor == t else floor + HOUR


def day_start(d: date) -> datetime:
    return datetime.combine(d, time(), UTC)


def ceil_day(t: datetime) -> date:
    t = t.astimezone(UTC)
    return t.date() if t == day_start(t.date()) else t.date() + DAY


def built_days(
    conn: psycopg.Connection[Any], tenant_id: uuid.UUID, start: datetime, end: datetime
) -> dict[date, BuiltDay]:
    """The tenant's current built days among the whole days of [start, end)."""
    first_day, end_day = ceil_day(start), end.astimezone(UTC).date()
    if first_day >= end_day:
        return {}
    params = {"tenant_id": tenant_id, "first_day": first_day, "end_day": end_day}
    rows = conn.execute(STATS_QUERIES["built_days"], params).fetchall()
    return {r[0]: BuiltDay(r[0], int(r[1]), [int(n) for n in r[2]]) for r in rows}


def coverage(start: datetime, end: datetime, built: dict[date, BuiltDay]) -> Coverage:
    """Split [start, end) into the built days it wholly contains and the rest."""
    out = Coverage()
    cursor = start
    for d in sorted(built):
        d_start = day_start(d)
        if d_start < start or d_start + DAY > end:
            continue
        if cursor < d_start:
            out.rest.append((cursor, d_start))
        out.days.append(built[d])
        cursor = d_start + DAY
    if cursor < end:
        out.rest.append((cursor, end))
    return out


def _spans(
    fragment: LiteralString, spans: Sequence[Span], params: dict[str, Any], prefix: str
) -> list[sql.Composable]:
    """One copy of ``fragment`` per span, each with its own bound placeholders."""
    parts: list[sql.Composable] = []
    for i, (start, end) in enumerate(spans):
        params[f"{prefix}{i}_start"], params[f"{prefix}{i}_end"] = start, end
        parts.append(
            sql.SQL(fragment).format(
                start=sql.Placeholder(f"{prefix}{i}_start"),
                end=sql.Placeholder(f"{prefix}{i}_end"),
            )
        )
    return parts


def _union(statement: LiteralString, parts: Sequence[sql.Composable]) -> sql.Composed:
    return sql.SQL(statement).format(parts=sql.SQL(" UNION ALL ").join(parts))


@dataclass
class Breakdown:
    by_action: Counter[str] = field(default_factory=Counter)
    by_severity: Counter[str] = field(default_factory=Counter)
    by_resource_type: Counter[str] = field(default_factory=Counter)
    by_hour: Counter[datetime] = field(default_factory=Counter)  # built days included


def breakdown(conn: psycopg.Connection[Any], tenant_id: uuid.UUID, cov: Coverage) -> Breakdown:
    params: dict[str, Any] = {"tenant_id": tenant_id, "days": cov.day_list}
    hours, raw = cov.hours_and_raw()
    parts: list[sql.Composable] = []
    if cov.days:
        parts.append(sql.SQL(STATS_QUERIES["breakdown_daily_part"]))
    parts += _spans(STATS_QUERIES["breakdown_hourly_part"], hours, params, "h")
    parts += _spans(STATS_QUERIES["breakdown_raw_part"], raw, params, "r")
    out = Breakdown()
    kinds = {1: out.by_action, 2: out.by_severity, 3: out.by_resource_type}
    for kind, name, hour, events in conn.execute(_union(STATS_QUERIES["breakdown"], parts), params):
        if kind in kinds:
            kinds[kind][name] += int(events)
        elif hour is not None:
            out.by_hour[hour] += int(events)
    for d in cov.days:
        for h, events in enumerate(d.hourly):
            if events:
                out.by_hour[day_start(d.day) + h * HOUR] += events
    return out


def total(conn: psycopg.Connection[Any], tenant_id: uuid.UUID, cov: Coverage) -> int:
    params: dict[str, Any] = {"tenant_id": tenant_id}
    hours, raw = cov.hours_and_raw()
    parts = _spans(STATS_QUERIES["total_hourly_part"], hours, params, "h")
    parts += _spans(STATS_QUERIES["total_raw_part"], raw, params, "r")
    counted = sum(d.events for d in cov.days)
    if parts:
        row = conn.execute(_union(STATS_QUERIES["total"], parts), params).fetchone()
        counted += int(row[0]) if row else 0
    return counted


def _top_params(
    tenant_id: uuid.UUID, cov: Coverage, what: str, n: int, listed: int
) -> tuple[dict[str, Any], list[sql.Composable]]:
    params: dict[str, Any] = {
        "tenant_id": tenant_id,
        "days": cov.day_list,
        "n": n,
        "listed": max(listed, n),
    }
    parts = _spans(STATS_QUERIES[f"top_{what}_raw_part"], cov.rest, params, "r")
    return params, parts or [sql.SQL(STATS_QUERIES[f"top_{what}_none_part"])]


def top_bounded(
    conn: psycopg.Connection[Any],
    tenant_id: uuid.UUID,
    cov: Coverage,
    what: Literal["resources", "users"],
    n: int = TOP_N,
    listed: int = TOP_LISTED,
) -> list[tuple[Any, ...]] | None:
    """The top ``n`` from each built day's top ``listed`` rows and the candidates' exact
    sums; None when that cannot decide it (see the ``top_resources`` statement)."""
    params, parts = _top_params(tenant_id, cov, what, n, listed)
    rows = conn.execute(_union(STATS_QUERIES[f"top_{what}"], parts), params).fetchall()
    # Decided when a key listed on no day could not reach the N-th lower bound: such a key
    # counts at most `rest` (0 when every day listed all its keys).
    if rows and 0 < rows[0][-1] >= rows[0][-2]:
        return None
    return [tuple(r[:-2]) for r in rows]


def top(
    conn: psycopg.Connection[Any],
    tenant_id: uuid.UUID,
    cov: Coverage,
    what: Literal["resources", "users"],
    n: int = TOP_N,
    listed: int = TOP_LISTED,
) -> list[tuple[Any, ...]]:
    """The exact top ``n`` resources ((type, id, count) rows) or users ((user_id, count))
    over the coverage, ordered by count descending, then by key."""
    if cov.days:
        decided = top_bounded(conn, tenant_id, cov, what, n, listed)
        if decided is not None:
            return decided
    params, parts = _top_params(tenant_id, cov, what, n, listed)
    exact = _union(STATS_QUERIES[f"top_{what}_exact"], parts)
    return [tuple(r) for r in conn.execute(exact, params).fetchall()]


def tenant_stats(
    conn: psycopg.Connection[Any],
    tenant_id: uuid.UUID,
    start: datetime,
    end: datetime,
    bucket: Literal["hour", "day"],
    now: datetime,
) -> dict[str, Any]:
    week_start = now - timedelta(days=7)
    built = built_days(conn, tenant_id, min(start, week_start), max(end, now))
    cov = coverage(start, end, built)
    counts = breakdown(conn, tenant_id, cov)
    series: Counter[datetime] = Counter()
    for hour, events in counts.by_hour.items():
        hour = hour.astimezone(UTC)
        series[hour if bucket == "hour" else hour.replace(hour=0)] += events
    last_7_days = total(conn, tenant_id, coverage(week_start, now, built))
    top_resources = top(conn, tenant_id, cov, "resources")
    top_users = top(conn, tenant_id, cov, "users")
    return {
        "total_logs": sum(counts.by_action.values()),
        "by_action": {a.value: counts.by_action[a.value] for a in ActionType},
        "by_severity": {s.value: counts.by_severity[s.value] for s in Severity},
        # Retention leaves hourly rows at 0: a type or bucket without events is not listed.
        "by_resource_type": {t: n for t, n in counts.by_resource_type.most_common() if n},
        "last_7_days": last_7_days,
        "from": format_time(start),
        "to": format_time(end),
        "bucket": bucket,
        "series": [{"start": format_time(k), "count": v} for k, v in sorted(series.items()) if v],
        "top_resources": [
            {"resource_type": t, "resource_id": i, "count": c} for t, i, c in top_resources
        ],
        "top_users": [{"user_id": str(u), "count": c} for u, c in top_users],
    }
