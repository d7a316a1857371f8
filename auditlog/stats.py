"""Tenant statistics, exact and fast at any table size.

A range [start, end) is split into three kinds of source:

* **built days**: UTC days whose daily rows (``audit_stats_daily*``, materialised by the
  Dagster asset ``daily_stats``) are current, i.e. built from the day's latest version
  (migration 0006: every change to a day's events bumps its version);
* **whole hours** of the rest, from ``audit_stats_hourly`` (kept by the drain in the
  transaction that stores the events, so always exact);
* **partial hours** at the edges, counted from the rows themselves.

A built day the range covers only in part (the first and last day of most ranges) is
counted whole *minus* its part outside the range when that part holds fewer events (by the
day's hourly totals): the subtracted spans are counted from hourly and raw rows like the
rest, with a negative sign (``Coverage.minus``). A range starting at 02:00 then reads two
hours of rows instead of twenty-two.

A day that was never built, or whose events changed after it was built (late events, a
retention delete, a redaction), is simply not a built day: it is counted from the hourly
rows and raw rows like today. So the answers never depend on the asset having run; the
asset only makes them cheaper. All statements of one answer read one snapshot (a
repeatable-read transaction), so a day found current is current in each of them.

Two statements after ``built_days`` make an answer: ``breakdown`` (counts by action,
severity and resource type from the built days' ``audit_stats_daily_counts``, migration
0010, plus the hourly and raw rows; the series; last_7_days) and ``top`` (both top lists).
Top resources and top users come from the built days' ranked per-day counts plus the raw
rows of everything else. Each day keeps every resource's (user's) count ranked within the
day; a request reads only the top TOP_LISTED of each day, bounds what the unread rest could
add, and sums exactly only the few candidates that could still make the top N (see the
``top`` statement in ``store/stats.sql``). When the bound cannot decide (a very flat
distribution), it falls back to the plain sum over every daily row, which is exact too.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from importlib.resources import files
from typing import Any, Literal, LiteralString

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from auditlog.events import ActionType, Severity, format_time
from auditlog.store.queries import parse_named_sql

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
TOP_N = 10
# Rows read per built day for the top-N bound. Larger reads more rows; smaller leaves more
# candidates to sum exactly, and makes the bound fail (the exact fallback runs) on flatter
# distributions. On bench/query's data 32 was the fastest (median ms per top-N, loaded
# machine: 16 -> 79, 32 -> 18, 100 -> 25), and decided every range tried. Since the raw
# keys below `floor` are dropped early (store/stats.sql, top), 16 and 32 cost about the
# same (6.1 / 6.8 ms, both tops, 30 days) and 12 fails on 6 of 20; 32 keeps the margin.
TOP_LISTED = 32

Span = tuple[datetime, datetime]
SignedSpan = tuple[datetime, datetime, int]  # +1: counted, -1: subtracted


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
    # Events per UTC hour; read only for the days a range covers in part.
    hourly: tuple[int, ...] | None = None


@dataclass
class Coverage:
    """How one range is counted: built days, plus spans outside them (counted from hourly
    and raw rows), minus the spans of built days that lie outside the range."""

    days: list[BuiltDay] = field(default_factory=list)
    rest: list[Span] = field(default_factory=list)  # added: the range outside `days`
    minus: list[Span] = field(default_factory=list)  # subtracted: `days` outside the range

    @property
    def day_list(self) -> list[date]:
        return [d.day for d in self.days]

    def hours_and_raw(self) -> tuple[list[SignedSpan], list[SignedSpan]]:
        """The signed spans split into whole-hour spans (hourly rows) and partial-hour
        spans (raw rows)."""
        hours: list[SignedSpan] = []
        raw: list[SignedSpan] = []
        for sign, spans in ((1, self.rest), (-1, self.minus)):
            for start, end in spans:
                first_full, last_full = ceil_hour(start), floor_hour(end)
                if first_full < last_full:
                    hours.append((first_full, last_full, sign))
                    raw += [
                        (a, b, sign) for a, b in ((start, first_full), (last_full, end)) if a < b
                    ]
                else:
                    raw.append((start, end, sign))
        return hours, raw

    def raw(self) -> list[SignedSpan]:
        """Every signed span, for what only the raw rows count (the tops)."""
        return [(a, b, 1) for a, b in self.rest] + [(a, b, -1) for a, b in self.minus]


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
    conn: psycopg.Connection[Any],
    tenant_id: uuid.UUID,
    start: datetime,
    end: datetime,
    edges: Sequence[datetime] = (),
) -> dict[date, BuiltDay]:
    """The tenant's current built days among the days that [start, end) touches, with the
    hourly totals of the days holding one of ``edges`` (the ends of the ranges to count)."""
    first_day, end_day = start.astimezone(UTC).date(), ceil_day(end)
    params = {
        "tenant_id": tenant_id,
        "first_day": first_day,
        "end_day": end_day,
        "edge_days": sorted({t.astimezone(UTC).date() for t in edges}),
    }
    rows = conn.execute(STATS_QUERIES["built_days"], params).fetchall()
    return {r[0]: BuiltDay(r[0], int(r[1]), None if r[2] is None else tuple(r[2])) for r in rows}


def _events_in(day: BuiltDay, spans: Sequence[Span]) -> float:
    """About how many of the day's events lie in ``spans`` (whole hours touched, from the
    hourly totals; from the time covered when they were not read)."""
    if day.hourly is None:
        return sum((b - a).total_seconds() for a, b in spans)
    d_start = day_start(day.day)
    events = 0
    for a, b in spans:
        first = int((floor_hour(a) - d_start) / HOUR)
        last = int((ceil_hour(b) - d_start) / HOUR)
        events += sum(day.hourly[first:last])
    return events


def coverage(start: datetime, end: datetime, built: dict[date, BuiltDay]) -> Coverage:
    """Split [start, end) into built days and the rest. A built day the range only partly
    covers is counted whole minus its part outside the range when that part holds fewer
    events (the tops read every raw row of the spans not in built days)."""
    out = Coverage()
    cursor = start
    for d in sorted(built):
        d_start = day_start(d)
        d_end = d_start + DAY
        inside = (max(start, d_start), min(end, d_end))
        if inside[0] >= inside[1]:
            continue
        outside = [s for s in ((d_start, inside[0]), (inside[1], d_end)) if s[0] < s[1]]
        if outside and _events_in(built[d], outside) >= _events_in(built[d], [inside]):
            continue  # counted with the rest
        if cursor < inside[0]:
            out.rest.append((cursor, inside[0]))
        out.days.append(built[d])
        out.minus += outside
        cursor = inside[1]
    if cursor < end:
        out.rest.append((cursor, end))
    return out


def _spans(
    fragment: LiteralString, spans: Sequence[SignedSpan], params: dict[str, Any], prefix: str
) -> list[sql.Composable]:
    """One copy of ``fragment`` per span, each with its own bound placeholders and its sign."""
    parts: list[sql.Composable] = []
    for i, (start, end, sign) in enumerate(spans):
        params[f"{prefix}{i}_start"], params[f"{prefix}{i}_end"] = start, end
        parts.append(
            sql.SQL(fragment).format(
                start=sql.Placeholder(f"{prefix}{i}_start"),
                end=sql.Placeholder(f"{prefix}{i}_end"),
                sign=sql.SQL("1" if sign > 0 else "-1"),
            )
        )
    return parts


def _union(statement: LiteralString, parts: Sequence[sql.Composable]) -> sql.Composed:
    return sql.SQL(statement).format(parts=sql.SQL(" UNION ALL ").join(parts))


@dataclass
class Breakdown:
    by_action: dict[str, int] = field(default_factory=dict)
    by_severity: dict[str, int] = field(default_factory=dict)
    by_resource_type: dict[str, int] = field(default_factory=dict)
    # (bucket start as the API writes it, events), buckets without events left out.
    series: list[tuple[str, int]] = field(default_factory=list)
    # Events of the `week` coverage (built days included).
    week: int = 0


def breakdown(
    conn: psycopg.Connection[Any],
    tenant_id: uuid.UUID,
    cov: Coverage,
    bucket: Literal["hour", "day"],
    week: Coverage,
) -> Breakdown:
    """By action, severity and resource type, the series, and the total of ``week``: one
    statement (see ``breakdown`` in ``store/stats.sql``)."""
    params: dict[str, Any] = {"tenant_id": tenant_id, "days": cov.day_list, "bucket": bucket}
    hours, raw = cov.hours_and_raw()
    parts = _spans(STATS_QUERIES["breakdown_hourly_part"], hours, params, "h")
    parts += _spans(STATS_QUERIES["breakdown_raw_part"], raw, params, "r")
    week_hours, week_raw = week.hours_and_raw()
    week_parts = _spans(STATS_QUERIES["total_hourly_part"], week_hours, params, "wh")
    week_parts += _spans(STATS_QUERIES["total_raw_part"], week_raw, params, "wr")
    statement = sql.SQL(STATS_QUERIES["breakdown"]).format(
        parts=sql.SQL(" UNION ALL ").join(parts or [sql.SQL(STATS_QUERIES["breakdown_none_part"])]),
        week_total=_union(
            STATS_QUERIES["total"], week_parts or [sql.SQL(STATS_QUERIES["total_none_part"])]
        ),
    )
    out = Breakdown(week=sum(d.events for d in week.days))
    kinds = {1: out.by_action, 2: out.by_severity, 3: out.by_resource_type}
    for kind, name, events in conn.execute(statement, params).fetchall():
        if kind in kinds:
            kinds[kind][name] = events
        elif kind == 4:
            out.series.append((name, events))
        else:
            out.week += events
    out.series.sort()  # the fixed-width UTC times sort as the times do
    return out


def _top_parts(
    tenant_id: uuid.UUID, cov: Coverage, n: int, listed: int
) -> tuple[dict[str, Any], dict[str, list[sql.Composable]]]:
    params: dict[str, Any] = {
        "tenant_id": tenant_id,
        "days": cov.day_list,
        "n": n,
        "listed": max(listed, n),
    }
    parts = {}
    for what in ("resources", "users"):
        spans = _spans(STATS_QUERIES[f"top_{what}_raw_part"], cov.raw(), params, "r")
        parts[what] = spans or [sql.SQL(STATS_QUERIES[f"top_{what}_none_part"])]
    return params, parts


def tops_bounded(
    conn: psycopg.Connection[Any],
    tenant_id: uuid.UUID,
    cov: Coverage,
    n: int = TOP_N,
    listed: int = TOP_LISTED,
) -> dict[str, list[tuple[Any, ...]] | None]:
    """The top ``n`` resources and users from each built day's top ``listed`` rows and the
    candidates' exact sums, in one statement; a kind is None when that cannot decide it
    (see the ``top`` statement)."""
    params, parts = _top_parts(tenant_id, cov, n, listed)
    statement = sql.SQL(STATS_QUERIES["top"]).format(
        resource_parts=sql.SQL(" UNION ALL ").join(parts["resources"]),
        user_parts=sql.SQL(" UNION ALL ").join(parts["users"]),
    )
    found: dict[int, list[tuple[Any, ...]]] = {1: [], 2: []}
    undecided: set[int] = set()
    for kind, resource_type, resource_id, user_id, events, threshold, rest in conn.execute(
        statement, params
    ):
        found[kind].append((resource_type, resource_id, events) if kind == 1 else (user_id, events))
        # Decided when a key listed on no day and without raw rows could not reach the N-th
        # lower bound: such a key counts at most `rest` (0 when every day listed all its keys).
        if 0 < rest >= threshold:
            undecided.add(kind)
    # Ordered by count descending, then by key (the statement's two lists are unordered).
    return {
        what: None if kind in undecided else sorted(found[kind], key=lambda r: (-r[-1], r[:-1]))
        for kind, what in ((1, "resources"), (2, "users"))
    }


def top_bounded(
    conn: psycopg.Connection[Any],
    tenant_id: uuid.UUID,
    cov: Coverage,
    what: Literal["resources", "users"],
    n: int = TOP_N,
    listed: int = TOP_LISTED,
) -> list[tuple[Any, ...]] | None:
    """One kind of ``tops_bounded``."""
    return tops_bounded(conn, tenant_id, cov, n, listed)[what]


def top_exact(
    conn: psycopg.Connection[Any],
    tenant_id: uuid.UUID,
    cov: Coverage,
    what: Literal["resources", "users"],
    n: int = TOP_N,
) -> list[tuple[Any, ...]]:
    """The plain sum over every daily row and the raw rows (when the bound cannot decide)."""
    params, parts = _top_parts(tenant_id, cov, n, n)
    exact = _union(STATS_QUERIES[f"top_{what}_exact"], parts[what])
    return [tuple(r) for r in conn.execute(exact, params).fetchall()]


def tops(
    conn: psycopg.Connection[Any],
    tenant_id: uuid.UUID,
    cov: Coverage,
    n: int = TOP_N,
    listed: int = TOP_LISTED,
) -> dict[str, list[tuple[Any, ...]]]:
    """The exact top ``n`` resources ((type, id, count) rows) and users ((user_id, count)),
    each ordered by count descending, then by key."""
    decided = tops_bounded(conn, tenant_id, cov, n, listed)
    return {
        what: rows if rows is not None else top_exact(conn, tenant_id, cov, what, n)  # type: ignore[arg-type]
        for what, rows in decided.items()
    }


def top(
    conn: psycopg.Connection[Any],
    tenant_id: uuid.UUID,
    cov: Coverage,
    what: Literal["resources", "users"],
    n: int = TOP_N,
    listed: int = TOP_LISTED,
) -> list[tuple[Any, ...]]:
    """One kind of ``tops``."""
    return tops(conn, tenant_id, cov, n, listed)[what]


@contextmanager
def _one_snapshot(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Every statement of one answer reads one snapshot: a built day found current is
    current in each of them. (Counting a day whole minus its part outside the range would
    otherwise, with a late event committed in between, subtract a row the daily counts lack.)
    In a transaction of the caller's, its isolation applies."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        yield
        return
    # psycopg's own BEGIN carries them (no statement more); the connection's settings are
    # restored after, since pooled connections serve other requests too.
    isolation, read_only = conn.isolation_level, conn.read_only
    conn.isolation_level, conn.read_only = psycopg.IsolationLevel.REPEATABLE_READ, True
    try:
        with conn.transaction():
            yield
    finally:
        if not conn.closed:  # a broken connection is the pool's to discard
            conn.isolation_level, conn.read_only = isolation, read_only


def tenant_stats(
    conn: psycopg.Connection[Any],
    tenant_id: uuid.UUID,
    start: datetime,
    end: datetime,
    bucket: Literal["hour", "day"],
    now: datetime,
) -> dict[str, Any]:
    week_start = now - timedelta(days=7)
    edges = (start, end, week_start, now)
    with _one_snapshot(conn):
        built = built_days(conn, tenant_id, min(start, week_start), max(end, now), edges)
        cov = coverage(start, end, built)
        counts = breakdown(conn, tenant_id, cov, bucket, coverage(week_start, now, built))
        top_n = tops(conn, tenant_id, cov)
    by_resource_type = sorted(counts.by_resource_type.items(), key=lambda kv: (-kv[1], kv[0]))
    return {
        "total_logs": sum(counts.by_action.values()),
        "by_action": {a.value: counts.by_action.get(a.value, 0) for a in ActionType},
        "by_severity": {s.value: counts.by_severity.get(s.value, 0) for s in Severity},
        # Retention leaves hourly rows at 0: a type or bucket without events is not listed.
        "by_resource_type": {t: n for t, n in by_resource_type if n},
        "last_7_days": counts.week,
        "from": format_time(start),
        "to": format_time(end),
        "bucket": bucket,
        "series": [{"start": k, "count": v} for k, v in counts.series],
        "top_resources": [
            {"resource_type": t, "resource_id": i, "count": c} for t, i, c in top_n["resources"]
        ],
        "top_users": [{"user_id": str(u), "count": c} for u, c in top_n["users"]],
    }
