"""Whole-history listing searches on generic plans (auditlog.reads: _generic_plan_fits, the
IP probe): filters whose rows are all older than every window, or that match nothing, must
page exactly as a plain ORDER BY over everything, in both orders, in autocommit and inside
a transaction, and leave the session's plan_cache_mode as it was."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from auditlog.filters import EventFilters
from auditlog.reads import _generic_plan, list_events, network_bounds
from auditlog.settings import Settings
from auditlog.store.pool import connect
from auditlog.tenants import create_tenant

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
HASH = bytes(32)
OLD_USER = uuid.UUID(int=0xA11CE)  # every event of theirs is 30 to 40 days old
OLD_RESOURCE = ("invoice", "inv-old")
OLD_NETWORK = "192.0.2.0/24"
EMPTY_NETWORK = "198.51.100.0/24"
EMPTY_V6_NETWORK = "2001:db8:ffff::/48"


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


@pytest.fixture(scope="module")
def conn(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    with connect(settings.database_url, autocommit=True) as c:
        first = days_ago(45).date()
        c.execute("SELECT audit_ensure_partitions(%s, %s)", (first, NOW.date()))
        yield c


@pytest.fixture(scope="module")
def tenant_id(conn: psycopg.Connection[Any]) -> uuid.UUID:
    """A tenant busy today, whose old user, resource and network were active a month ago
    only, so that no window (1, 7 or 31 days) holds a page of them."""
    rng = random.Random(11)
    tenant = uuid.UUID(str(create_tenant(conn, name="generic plans")["id"]))
    times = [days_ago(rng.random() * 0.8) for _ in range(60)]
    times += [days_ago(30 + rng.random() * 10) for _ in range(45)]
    # Ties on created_at, so that the id decides the order within them.
    times += [days_ago(33)] * 4 + [days_ago(0.5)] * 3
    rows = []
    for seq, created in enumerate(sorted(times), start=1):
        old = created < days_ago(29)
        user = OLD_USER if old and rng.random() < 0.7 else uuid.UUID(int=rng.randrange(5))
        resource = OLD_RESOURCE if old and rng.random() < 0.6 else ("doc", f"doc-{seq % 4}")
        ip = f"192.0.2.{rng.randrange(1, 255)}" if old and rng.random() < 0.5 else "10.1.2.3"
        rows.append(
            (uuid.uuid4(), tenant, seq, created, user, ip, rng.choice(["VIEW", "DELETE"]),
             *resource, "INFO", HASH, HASH)
        )  # fmt: skip
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO audit_logs (id, tenant_id, seq, created_at, user_id, ip_address,"
            " action_type, resource_type, resource_id, severity, prev_hash, hash)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
    return tenant


def expected(
    conn: psycopg.Connection[Any], tenant_id: uuid.UUID, filters: EventFilters, newest_first: bool
) -> list[uuid.UUID]:
    where, params = filters.where(tenant_id)
    direction = sql.SQL("DESC" if newest_first else "ASC")
    query = sql.SQL("SELECT id FROM audit_logs WHERE {} ORDER BY created_at {}, id {}").format(
        where, direction, direction
    )
    return [r[0] for r in conn.execute(query, params)]


def walk(
    conn: psycopg.Connection[Any],
    tenant_id: uuid.UUID,
    filters: EventFilters,
    limit: int,
    newest_first: bool,
) -> list[uuid.UUID]:
    seen: list[uuid.UUID] = []
    after = None
    while True:
        rows = list_events(
            conn, tenant_id, filters, limit=limit + 1, newest_first=newest_first, after=after
        )
        seen += [r["id"] for r in rows[:limit]]
        if len(rows) <= limit:
            return seen
        after = (rows[limit - 1]["created_at"], rows[limit - 1]["id"])


PLANNER_SETTINGS = "SELECT current_setting('plan_cache_mode'), current_setting('enable_sort')"


def planner_settings(conn: psycopg.Connection[Any]) -> tuple[str, str] | None:
    return conn.execute(PLANNER_SETTINGS).fetchone()


def generic_executions(conn: psycopg.Connection[Any], statement_start: str) -> int:
    row = conn.execute(
        "SELECT coalesce(sum(generic_plans), 0) FROM pg_prepared_statements"
        " WHERE statement LIKE %s",
        (statement_start + "%",),
    ).fetchone()
    assert row is not None
    return int(row[0])


FILTERS = {
    "old user": EventFilters(user_id=OLD_USER),
    "old user's deletes": EventFilters(user_id=OLD_USER, action_types=["DELETE"]),
    "old resource": EventFilters(resource_type=OLD_RESOURCE[0], resource_id=OLD_RESOURCE[1]),
    "old network": EventFilters(ip_network=OLD_NETWORK),
    "no filter": EventFilters(),
    "no filter, before the old events": EventFilters(created_to=days_ago(31)),
    "empty network": EventFilters(ip_network=EMPTY_NETWORK),
    "empty IPv6 network": EventFilters(ip_network=EMPTY_V6_NETWORK),
    "nobody": EventFilters(user_id=uuid.UUID(int=999)),
}


@pytest.mark.parametrize("name", list(FILTERS))
def test_pages_equal_the_plain_order(
    settings: Settings, conn: psycopg.Connection[Any], tenant_id: uuid.UUID, name: str
) -> None:
    filters = FILTERS[name]
    for newest_first in (True, False):
        want = expected(conn, tenant_id, filters, newest_first)
        if name.startswith(("empty", "nobody")):
            assert want == []
        else:
            assert len(want) >= 10
        # A fresh connection in a transaction (as the API's pool hands them out) and the
        # module's autocommit one; page sizes below, around and above the matches.
        with connect(settings.database_url) as fresh:
            for limit in (3, 7, 100):
                assert walk(fresh, tenant_id, filters, limit, newest_first) == want
                assert walk(conn, tenant_id, filters, limit, newest_first) == want
            assert planner_settings(fresh) == ("auto", "on")
    assert planner_settings(conn) == ("auto", "on")


def test_whole_history_searches_run_on_generic_plans(
    settings: Settings, tenant_id: uuid.UUID
) -> None:
    with connect(settings.database_url, autocommit=True) as fresh:
        before = generic_executions(fresh, "SELECT created_at")
        rows = list_events(fresh, tenant_id, FILTERS["old user"], limit=11, rendered=True)
        assert len(rows) == 11
        assert generic_executions(fresh, "SELECT created_at") == before + 1
        # An empty network is answered by the probe alone, on its generic plan.
        assert list_events(fresh, tenant_id, FILTERS["empty network"], limit=11) == []
        assert generic_executions(fresh, "SELECT EXISTS") == 1
        assert generic_executions(fresh, "SELECT created_at") == before + 1
        # A page the first window fills is planned for its values, as before.
        rows = list_events(fresh, tenant_id, FILTERS["no filter"], limit=11)
        assert len(rows) == 11
        assert generic_executions(fresh, "SELECT id") == 0


def test_a_failed_statement_leaves_plan_cache_mode_as_it_was(settings: Settings) -> None:
    for autocommit in (True, False):
        with connect(settings.database_url, autocommit=autocommit) as fresh:
            with pytest.raises(errors.DivisionByZero), _generic_plan(fresh):
                fresh.execute("SELECT 1 / %s::int", (0,), prepare=True)
            fresh.rollback()
            assert planner_settings(fresh) == ("auto", "on")
            with _generic_plan(fresh):
                cur = fresh.execute(PLANNER_SETTINGS)
            assert cur.fetchone() == ("force_generic_plan", "off")
            assert planner_settings(fresh) == ("auto", "on")


@pytest.mark.parametrize(
    "network", ["192.0.2.0/24", "10.0.0.0/8", "10.1.2.3/32", "0.0.0.0/0", "2001:db8::/32",
                "2001:db8::1/128", "::/0"],
)  # fmt: skip
def test_network_bounds_hold_every_address_of_the_network(
    conn: psycopg.Connection[Any], network: str
) -> None:
    """The explicit bounds the probe reads the IP index with (what PostgreSQL derives from
    `<<=` with a value) keep every address and subnet that `<<=` matches."""
    low, high = network_bounds(network)
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE v <<= %(net)s::inet),"
        " count(*) FILTER (WHERE v <<= %(net)s::inet AND NOT (v >= %(low)s::inet"
        " AND v <= %(high)s::inet))"
        " FROM (SELECT (host(a) || '/' || m)::inet AS v FROM unnest(%(addresses)s::inet[]) a,"
        " generate_series(0, CASE WHEN family(a) = 4 THEN 32 ELSE 128 END, 8) m) s",
        {"net": network, "low": low, "high": high, "addresses": _around(network)},
    ).fetchone()
    assert row is not None
    inside, outside_bounds = row
    assert inside > 0
    assert outside_bounds == 0


def _around(network: str) -> list[str]:
    """Addresses at, inside, just outside and far from ``network``'s edges."""
    import ipaddress

    net = ipaddress.ip_network(network)
    top = 2**net.max_prefixlen - 1
    ints = {0, top, int(net.network_address), int(net.broadcast_address)}
    ints |= {i + d for i in list(ints) for d in (-1, 1, 2**7)}
    ints.add((int(net.network_address) + int(net.broadcast_address)) // 2)
    build = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
    return [str(build(i)) for i in sorted(ints) if 0 <= i <= top]
