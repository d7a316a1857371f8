"""Stats from daily aggregates + hourly aggregates + raw rows equal a brute-force count over
the raw rows: for ranges starting and ending mid-day and mid-hour, with days built, never
built, and changed after they were built (late events, retention, redaction); per tenant."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Literal

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from auditlog.daily_stats import build_day
from auditlog.events import format_time
from auditlog.settings import Settings
from auditlog.stats import (
    Coverage,
    built_days,
    coverage,
    day_start,
    tenant_stats,
    top,
    top_bounded,
    top_exact,
)
from auditlog.store.pool import connect
from auditlog.store.queries import QUERIES
from auditlog.tenants import create_tenant

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
TODAY = NOW.date()
ACTIONS = ["VIEW"] * 6 + ["UPDATE"] * 3 + ["CREATE", "DELETE"]
SEVERITIES = ["INFO"] * 12 + ["WARNING"] * 3 + ["ERROR", "CRITICAL"]
HASH = bytes(32)
IST = timezone(timedelta(hours=5, minutes=30))
BUCKETS: tuple[Literal["hour", "day"], ...] = ("hour", "day")

HOURLY_UPSERT = """
INSERT INTO audit_stats_hourly AS h (tenant_id, hour, action_type, severity, resource_type, events)
SELECT tenant_id, date_trunc('hour', created_at), action_type, severity, resource_type, count(*)
FROM audit_logs WHERE tenant_id = %(tenant_id)s AND seq > %(after_seq)s
GROUP BY 1, 2, 3, 4, 5
ON CONFLICT (tenant_id, hour, action_type, severity, resource_type)
DO UPDATE SET events = h.events + EXCLUDED.events
"""


class Tenant:
    def __init__(self, tenant_id: uuid.UUID, prefix: str) -> None:
        self.id, self.prefix, self.seq = tenant_id, prefix, 0


def store(
    conn: psycopg.Connection[Any],
    tenant: Tenant,
    times: list[datetime],
    rng: random.Random,
    resources: list[int] | None = None,
) -> None:
    """Events stored as the drain stores them: the rows, then the hourly counts, in one
    transaction (hashes are not what this test is about)."""
    users = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(12)]
    after = tenant.seq
    rows = []
    for n, t in enumerate(sorted(times)):
        tenant.seq += 1
        # Skewed popularity, so that the day's tops are clear but not everything.
        resource = resources[n] if resources else min(int(rng.paretovariate(1.2)), 40)
        user = None if rng.random() < 0.1 else users[min(int(rng.paretovariate(1.0)), 12) - 1]
        rows.append(
            (uuid.uuid4(), tenant.id, tenant.seq, t, user, rng.choice(ACTIONS),
             f"{tenant.prefix}-type-{resource % 3}", f"{tenant.prefix}-{resource}",
             rng.choice(SEVERITIES), HASH, HASH)
        )  # fmt: skip
    with conn.transaction():
        with conn.cursor().copy(
            "COPY audit_logs (id, tenant_id, seq, created_at, user_id, action_type,"
            " resource_type, resource_id, severity, prev_hash, hash) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)
        conn.execute(HOURLY_UPSERT, {"tenant_id": tenant.id, "after_seq": after})


def random_times(rng: random.Random, start: datetime, end: datetime, n: int) -> list[datetime]:
    span = (end - start).total_seconds()
    return [start + timedelta(seconds=rng.random() * span) for _ in range(n)]


def brute_force(
    conn: psycopg.Connection[Any], tenant_id: uuid.UUID, start: datetime, end: datetime,
    bucket: str,
) -> dict[str, Any]:  # fmt: skip
    rows = conn.execute(
        "SELECT created_at, action_type, severity, resource_type, resource_id, user_id"
        " FROM audit_logs WHERE tenant_id = %s AND created_at >= %s AND created_at < %s",
        (tenant_id, start, end),
    ).fetchall()
    week = conn.execute(
        "SELECT count(*) FROM audit_logs WHERE tenant_id = %s AND created_at >= %s"
        " AND created_at < %s",
        (tenant_id, NOW - timedelta(days=7), NOW),
    ).fetchone()
    series: Counter[datetime] = Counter()
    for r in rows:
        t = r[0].astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        series[t if bucket == "hour" else t.replace(hour=0)] += 1
    resources = Counter((r[3], r[4]) for r in rows)
    users = Counter(r[5] for r in rows if r[5] is not None)
    return {
        "total_logs": len(rows),
        "by_action": {a: sum(r[1] == a for r in rows) for a in sorted(set(ACTIONS))},
        "by_severity": {s: sum(r[2] == s for r in rows) for s in sorted(set(SEVERITIES))},
        "by_resource_type": dict(Counter(r[3] for r in rows)),
        "last_7_days": week[0] if week else None,
        "series": [{"start": format_time(k), "count": v} for k, v in sorted(series.items())],
        "top_resources": [
            {"resource_type": t, "resource_id": i, "count": n}
            for (t, i), n in sorted(resources.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        ],
        "top_users": [
            {"user_id": str(u), "count": n}
            for u, n in sorted(users.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        ],
    }


def day(days_ago: int) -> date:
    return TODAY - timedelta(days=days_ago)


def at(days_ago: int, hour: int = 0, minute: int = 0, second: float = 0) -> datetime:
    return day_start(day(days_ago)) + timedelta(hours=hour, minutes=minute, seconds=second)


RANGES = [
    ("30 days to now", NOW - timedelta(days=30), NOW),
    ("mid-day to mid-hour", at(7, 7, 23, 11.5), at(2, 13, 41, 7)),
    ("late start, early end", at(7, 17, 5, 2.5), at(2, 9, 30)),
    ("most of one day", at(5, 0, 40), at(5, 23, 10)),
    ("whole days", at(6), at(2)),
    ("within one hour", at(3, 10, 5), at(3, 10, 45)),
    ("mid-hour to the future", at(5, 22, 30), NOW + timedelta(days=1)),
    ("one whole day", at(5), at(4)),
    ("a +05:30 offset", at(6, 7, 20).astimezone(IST), at(2, 9, 10).astimezone(IST)),
]


@pytest.fixture(scope="module")
def conn(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    with connect(settings.database_url, autocommit=True) as c:
        c.execute("SELECT audit_ensure_partitions(%s, %s)", (day(10), day(-1)))
        yield c


@pytest.fixture(scope="module")
def tenants(conn: psycopg.Connection[Any]) -> tuple[Tenant, Tenant]:
    rng = random.Random(7)
    a = Tenant(uuid.UUID(str(create_tenant(conn, name="stats-a")["id"])), "a")
    b = Tenant(uuid.UUID(str(create_tenant(conn, name="stats-b")["id"])), "b")
    store(conn, a, random_times(rng, at(9), NOW, 3000), rng)
    store(conn, b, random_times(rng, at(9), NOW, 800), rng)
    return a, b


def assert_exact(conn: psycopg.Connection[Any], tenant: Tenant) -> None:
    for name, start, end in RANGES:
        for bucket in BUCKETS:
            fast = tenant_stats(conn, tenant.id, start, end, bucket, NOW)
            want = brute_force(conn, tenant.id, start, end, bucket)
            got = {k: fast[k] for k in want}
            assert got == want, f"{name}, bucket={bucket}"
            assert (fast["from"], fast["to"], fast["bucket"]) == (
                format_time(start), format_time(end), bucket
            )  # fmt: skip


def build(conn: psycopg.Connection[Any], *days_ago: int) -> None:
    for n in days_ago:
        build_day(conn, day(n))


def test_stats_are_exact_before_any_day_is_built(
    conn: psycopg.Connection[Any], tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = tenants
    assert built_days(conn, a.id, at(30), NOW) == {}
    assert_exact(conn, a)


def test_built_days_are_used_and_stay_exact(
    conn: psycopg.Connection[Any], tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    build(conn, 9, 8, 7, 6, 5, 3, 2, 1)  # 4 days ago stays unbuilt
    built = built_days(conn, a.id, at(30), NOW)
    assert sorted(built) == [day(n) for n in (9, 8, 7, 6, 5, 3, 2, 1)]
    day_rows = conn.execute(
        "SELECT count(*) FROM audit_logs WHERE tenant_id = %s AND created_at >= %s"
        " AND created_at < %s",
        (a.id, at(5), at(4)),
    ).fetchone()
    assert day_rows is not None
    assert built[day(5)].events == day_rows[0]
    hourly = conn.execute(
        "SELECT hourly FROM audit_stats_days WHERE tenant_id = %s AND day = %s", (a.id, day(5))
    ).fetchone()
    assert hourly is not None
    assert sum(hourly[0]) == day_rows[0]
    assert len(hourly[0]) == 24
    # A built day the range covers for more than half is counted whole, minus the rest of it.
    cov = coverage(at(7, 7, 23, 11.5), at(2, 13, 41, 7), built)
    assert [d.day for d in cov.days] == [day(n) for n in (7, 6, 5, 3, 2)]
    assert cov.rest == [(at(4), at(3))]
    assert cov.minus == [(at(7), at(7, 7, 23, 11.5)), (at(2, 13, 41, 7), at(1))]
    assert cov.hours_and_raw() == (
        [(at(4), at(3), 1), (at(7), at(7, 7), -1), (at(2, 14), at(1), -1)],
        [(at(7, 7), at(7, 7, 23, 11.5), -1), (at(2, 13, 41, 7), at(2, 14), -1)],
    )
    assert cov.raw() == [
        (at(4), at(3), 1), (at(7), at(7, 7, 23, 11.5), -1), (at(2, 13, 41, 7), at(1), -1)
    ]  # fmt: skip
    # One it covers for less than half is counted from its hourly and raw rows.
    cov = coverage(at(7, 17, 5), at(2, 9, 30), built)
    assert [d.day for d in cov.days] == [day(n) for n in (6, 5, 3)]
    assert cov.rest == [(at(7, 17, 5), at(6)), (at(4), at(3)), (at(2), at(2, 9, 30))]
    assert cov.minus == []
    assert cov.hours_and_raw() == (
        [(at(7, 18), at(6), 1), (at(4), at(3), 1), (at(2), at(2, 9), 1)],
        [(at(7, 17, 5), at(7, 18), 1), (at(2, 9), at(2, 9, 30), 1)],
    )
    assert_exact(conn, a)
    assert_exact(conn, b)


def test_top_n_bound_decides_or_falls_back_and_is_exact_either_way(
    conn: psycopg.Connection[Any], tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = tenants
    built = built_days(conn, a.id, at(30), NOW)
    cov = coverage(NOW - timedelta(days=30), NOW, built)
    want = brute_force(conn, a.id, NOW - timedelta(days=30), NOW, "day")
    resources = [(r["resource_type"], r["resource_id"], r["count"]) for r in want["top_resources"]]
    users = [(uuid.UUID(u["user_id"]), u["count"]) for u in want["top_users"]]
    # Reading each day's top 20: the bound decides, from candidates' exact sums.
    assert top_bounded(conn, a.id, cov, "resources", listed=20) == resources
    assert top_bounded(conn, a.id, cov, "users", listed=11) == users
    assert top(conn, a.id, cov, "resources", listed=1) == resources
    # Every resource once a day: the same ten lead every day's list, and the rest could tie
    # them, so the bound cannot decide; top() then sums every daily row, exactly.
    flat = Tenant(uuid.UUID(str(create_tenant(conn, name="stats-flat")["id"])), "f")
    times = [at(d, h, 30) for d in range(3, 0, -1) for h in range(20)]
    store(
        conn, flat, times, random.Random(3), resources=[h + 1 for _ in range(3) for h in range(20)]
    )
    build(conn, 3, 2, 1)
    flat_cov = coverage(at(3), NOW, built_days(conn, flat.id, at(3), NOW))
    assert [d.day for d in flat_cov.days] == [day(3), day(2), day(1)]
    expected = sorted((f"f-type-{r % 3}", f"f-{r}", 3) for r in range(1, 21))[:10]
    assert top_bounded(conn, flat.id, flat_cov, "resources", listed=10) is None
    assert top(conn, flat.id, flat_cov, "resources", listed=10) == expected
    # Reading more rows than a day has lists everything: decided, with no bound needed.
    assert top_bounded(conn, flat.id, flat_cov, "resources", listed=20) == expected


def test_changes_after_a_build_make_the_day_unused_until_rebuilt(
    conn: psycopg.Connection[Any], tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    rng = random.Random(11)
    # Late events for a built day (the drain's transaction bumps the day's version).
    store(conn, a, random_times(rng, at(5, 3), at(5, 4), 40), rng)
    # A redaction erases user_id on a built day (no hourly row changes).
    conn.execute(
        "UPDATE audit_logs SET user_id = NULL WHERE tenant_id = %s AND created_at >= %s"
        " AND created_at < %s AND user_id IS NOT NULL",
        (a.id, at(3), at(3, 12)),
    )
    # Retention deletes the oldest events (a seq prefix), adjusting the hourly counts.
    first_seq = conn.execute(
        "SELECT min(seq) FROM audit_logs WHERE tenant_id = %s", (a.id,)
    ).fetchone()
    assert first_seq is not None
    deleted = conn.execute(
        QUERIES["delete_seq_prefix"], {"tenant_id": a.id, "last_seq": first_seq[0] + 150}
    ).fetchone()
    assert deleted is not None
    assert deleted[0] == 151
    built = built_days(conn, a.id, at(30), NOW)
    assert sorted(built) == [day(n) for n in (8, 7, 6, 2, 1)]  # 9, 5 and 3 changed
    assert day(5) in built_days(conn, b.id, at(30), NOW)  # B's day did not change
    assert_exact(conn, a)
    assert_exact(conn, b)
    build(conn, 9, 5, 3, 4)
    assert sorted(built_days(conn, a.id, at(30), NOW)) == [day(n) for n in range(9, 0, -1)]
    assert_exact(conn, a)


def test_tenant_isolation(conn: psycopg.Connection[Any], tenants: tuple[Tenant, Tenant]) -> None:
    a, b = tenants
    b_stats = tenant_stats(conn, b.id, NOW - timedelta(days=30), NOW, "day", NOW)
    b_total = conn.execute("SELECT count(*) FROM audit_logs WHERE tenant_id = %s", (b.id,))
    assert b_stats["total_logs"] == b_total.fetchone()[0]  # type: ignore[index]
    assert all(r["resource_id"].startswith("b-") for r in b_stats["top_resources"])
    assert all(t.startswith("b-") for t in b_stats["by_resource_type"])
    a_users = {
        str(r[0])
        for r in conn.execute(
            "SELECT DISTINCT user_id FROM audit_logs WHERE tenant_id = %s", (a.id,)
        )
    }
    assert not a_users & {u["user_id"] for u in b_stats["top_users"]}
    # A tenant with no events sees zeros, though other tenants' days are built.
    empty = uuid.UUID(str(create_tenant(conn, name="stats-empty")["id"]))
    stats = tenant_stats(conn, empty, NOW - timedelta(days=30), NOW, "hour", NOW)
    assert stats["total_logs"] == 0
    assert stats["last_7_days"] == 0
    assert stats["top_resources"] == []
    assert stats["top_users"] == []
    assert stats["series"] == []


def test_built_days_counted_whole_minus_their_outside_stay_exact_after_changes(
    conn: psycopg.Connection[Any],
) -> None:
    """A range covering most of a built day counts the day minus its part outside the range
    (Coverage.minus). Late events, a redaction or a retention delete in that outside part
    change the day: it is then counted from hourly and raw rows until rebuilt."""
    rng = random.Random(19)
    t = Tenant(uuid.UUID(str(create_tenant(conn, name="stats-minus")["id"])), "m")
    store(conn, t, random_times(rng, at(4), at(1), 1200), rng)
    build(conn, 4, 3, 2)
    start, end = at(4, 1, 30), at(2, 20, 15)

    def check() -> None:
        for bucket in BUCKETS:
            fast = tenant_stats(conn, t.id, start, end, bucket, NOW)
            want = brute_force(conn, t.id, start, end, bucket)
            assert {k: fast[k] for k in want} == want, bucket

    def used() -> Coverage:
        return coverage(start, end, built_days(conn, t.id, start, end, (start, end)))

    cov = used()
    assert [d.day for d in cov.days] == [day(4), day(3), day(2)]
    assert cov.minus == [(at(4), start), (end, at(1))]
    assert cov.rest == []
    check()

    # A late event in a closed hour of the part outside the range.
    store(conn, t, [at(2, 22, 10)], rng)
    assert [d.day for d in used().days] == [day(4), day(3)]
    check()
    build(conn, 2)
    assert [d.day for d in used().days] == [day(4), day(3), day(2)]
    check()

    # A redaction of user_id there (no hourly count changes).
    conn.execute(
        "UPDATE audit_logs SET user_id = NULL WHERE tenant_id = %s AND created_at >= %s"
        " AND created_at < %s AND user_id IS NOT NULL",
        (t.id, end, at(1)),
    )
    assert [d.day for d in used().days] == [day(4), day(3)]
    check()
    build(conn, 2)

    # Retention deletes the oldest events: all in day 4's part before the range.
    before_range = conn.execute(
        "SELECT count(*), max(seq) FROM audit_logs WHERE tenant_id = %s AND created_at < %s",
        (t.id, at(4, 1)),
    ).fetchone()
    assert before_range is not None
    assert before_range[0] > 10
    deleted = conn.execute(
        QUERIES["delete_seq_prefix"], {"tenant_id": t.id, "last_seq": before_range[1]}
    ).fetchone()
    assert deleted is not None
    assert deleted[0] == before_range[0]
    assert [d.day for d in used().days] == [day(3), day(2)]
    check()
    build(conn, 4)
    assert [d.day for d in used().days] == [day(4), day(3), day(2)]
    check()


def test_daily_counts_are_the_marginals_of_the_daily_rows(
    conn: psycopg.Connection[Any], tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = tenants
    build(conn, 6)
    differences = conn.execute(
        """
        WITH marginals AS (
            SELECT d.tenant_id, d.day, v.kind, v.name, sum(d.events) AS events
            FROM audit_stats_daily d,
                 LATERAL (VALUES (1::smallint, d.action_type), (2::smallint, d.severity),
                                 (3::smallint, d.resource_type)) v (kind, name)
            WHERE d.tenant_id = %(t)s AND d.day = %(day)s
            GROUP BY 1, 2, 3, 4
        )
        SELECT count(*), (SELECT count(*) FROM marginals)
        FROM marginals m
        FULL JOIN (SELECT * FROM audit_stats_daily_counts
                   WHERE tenant_id = %(t)s AND day = %(day)s) c USING (tenant_id, day, kind, name)
        WHERE m.events IS DISTINCT FROM c.events
        """,
        {"t": a.id, "day": day(6)},
    ).fetchone()
    assert differences is not None
    assert differences[1] > 10
    assert differences[0] == 0


def test_stats_in_a_transaction_of_the_caller(
    settings: Settings, tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = tenants
    with connect(settings.database_url) as tx:  # not autocommit: its transaction is used
        tx.execute("SELECT 1")
        fast = tenant_stats(tx, a.id, RANGES[1][1], RANGES[1][2], "hour", NOW)
        assert tx.info.transaction_status == TransactionStatus.INTRANS
        want = brute_force(tx, a.id, RANGES[1][1], RANGES[1][2], "hour")
        assert {k: fast[k] for k in want} == want
    with connect(settings.database_url) as idle:  # a snapshot of its own, then idle again
        fast = tenant_stats(idle, a.id, RANGES[1][1], RANGES[1][2], "day", NOW)
        assert idle.info.transaction_status == TransactionStatus.IDLE
        assert (
            fast["total_logs"]
            == brute_force(idle, a.id, RANGES[1][1], RANGES[1][2], "day")["total_logs"]
        )


def test_a_key_only_in_a_subtracted_part_is_not_listed(conn: psycopg.Connection[Any]) -> None:
    """Counted as the day minus its part outside the range, a key with events only in that
    part sums to 0: it is no top resource (or user), by the bound or by the exact sum."""
    rng = random.Random(23)
    t = Tenant(uuid.UUID(str(create_tenant(conn, name="stats-zero")["id"])), "z")
    times = [at(6, 0, 10), at(6, 0, 20)] + [at(6, h, 30) for h in range(2, 23)]
    store(conn, t, times, rng, resources=[99, 99] + [h % 4 + 1 for h in range(2, 23)])
    build(conn, 6)
    start, end = at(6, 1), at(6, 23, 50)
    cov = coverage(start, end, built_days(conn, t.id, start, end, (start, end)))
    assert cov.day_list == [day(6)]
    assert cov.minus == [(at(6), start), (end, at(5))]
    expected = sorted(
        Counter((f"z-type-{r % 3}", f"z-{r}") for r in [h % 4 + 1 for h in range(2, 23)]).items(),
        key=lambda kv: (-kv[1], kv[0]),
    )
    want = [(k[0], k[1], n) for k, n in expected]
    assert top(conn, t.id, cov, "resources") == want
    assert top_exact(conn, t.id, cov, "resources") == want  # when the bound cannot decide
    assert top_exact(conn, t.id, cov, "resources", n=2) == want[:2]
    assert top(conn, t.id, cov, "resources", n=3) == want[:3]
    stats = tenant_stats(conn, t.id, start, end, "hour", NOW)
    assert stats == {**stats, **brute_force(conn, t.id, start, end, "hour")}
    assert "z-99" not in {r["resource_id"] for r in stats["top_resources"]}


def test_random_ranges_are_exact(
    conn: psycopg.Connection[Any], tenants: tuple[Tenant, Tenant]
) -> None:
    """Ranges starting and ending anywhere (so built days are counted whole, whole minus a
    part, or from their rows) against the brute-force count."""
    build(conn, 9, 8, 7, 6, 5, 4, 3, 2, 1)
    rng = random.Random(29)
    for _ in range(25):
        start = at(9) + timedelta(seconds=rng.random() * 9 * 86400)
        end = start + timedelta(seconds=rng.random() * 4 * 86400)
        for tenant in tenants:
            bucket = rng.choice(BUCKETS)
            fast = tenant_stats(conn, tenant.id, start, end, bucket, NOW)
            want = brute_force(conn, tenant.id, start, end, bucket)
            assert {k: fast[k] for k in want} == want, (start, end, bucket)
