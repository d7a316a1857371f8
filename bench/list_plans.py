"""Listing on generic plans vs planned per request, side by side (auditlog.reads.list_events).

    .venv/bin/python -m bench.list_plans                  # every scenario, 40 rounds each
    .venv/bin/python -m bench.list_plans --rounds 80 user resource ip_nomatch

Runs on the 10 M-event database bench.query loads (``bench_query_10000000``, read only) with
bench.query's scenarios (tenant i's median user, its resource of rank 300, ...), cycling over
the 10 tenants. *old*: list_events as it was before whole-history searches ran on generic
plans (no generic plan, no IP probe: windows of 1, 7, 31 days, then a statement planned for
its values); *new*: list_events as it is. Each variant has its own connection (as a pooled
API connection, each call in a transaction) and both are warmed up first; calls alternate
old, new, new, old... and each reports the median wall time, the CPU time of its PostgreSQL
backend per call (/proc/<pid>/stat, so it needs the database on this machine) and this
process's CPU per call. Every page is checked equal (ids and JSON text) between the two.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from auditlog import reads
from auditlog.filters import EventFilters
from auditlog.settings import Settings
from auditlog.store.pool import SESSION_OPTIONS
from bench import query as bq

ListCall = tuple[uuid.UUID, EventFilters, dict[str, Any]]


@contextlib.contextmanager
def old_behaviour() -> Iterator[None]:
    """list_events without generic plans and without the IP probe."""
    fits, probe = reads._generic_plan_fits, reads._any_in_network
    reads._generic_plan_fits = lambda filters: False
    reads._any_in_network = lambda *args: True
    try:
        yield
    finally:
        reads._generic_plan_fits, reads._any_in_network = fits, probe


def scenarios(
    plan: bq.Plan, tenants: Sequence[uuid.UUID], pools: Sequence[bq.TenantPools], url: str
) -> dict[str, Callable[[int], ListCall]]:
    day = datetime.fromtimestamp((plan.end_ms // bq.DAY_MS - 10) * bq.DAY_MS / 1000, UTC)
    deep: dict[int, tuple[datetime, uuid.UUID]] = {}

    def deep_cursor(i: int) -> tuple[datetime, uuid.UUID]:
        if i not in deep:  # page 101 of the tenant's newest-first walk
            with psycopg.connect(url, options=SESSION_OPTIONS) as conn:
                row = conn.execute(
                    "SELECT created_at, id FROM audit_logs WHERE tenant_id = %s"
                    " ORDER BY created_at DESC, id DESC OFFSET 10099 LIMIT 1",
                    (tenants[i],),
                ).fetchone()
            assert row is not None
            deep[i] = (row[0], row[1])
        return deep[i]

    def resource(i: int) -> EventFilters:
        kind, rid = pools[i].typical_resource()
        return EventFilters(resource_type=kind, resource_id=rid)

    return {
        "first": lambda i: (tenants[i], EventFilters(), {}),
        "action_delete": lambda i: (tenants[i], EventFilters(action_types=["DELETE"]), {}),
        "min_severity_error": lambda i: (
            tenants[i],
            EventFilters(severities=["ERROR", "CRITICAL"]),
            {},
        ),
        "user": lambda i: (
            tenants[i],
            EventFilters(user_id=uuid.UUID(pools[i].typical_user())),
            {},
        ),
        "resource": lambda i: (tenants[i], resource(i), {}),
        "one_day": lambda i: (
            tenants[i],
            EventFilters(created_from=day, created_to=day + timedelta(days=1)),
            {},
        ),
        "ip_office": lambda i: (
            tenants[i],
            EventFilters(ip_network=pools[i].office_network(i)),
            {},
        ),
        "ip_nomatch": lambda i: (tenants[i], EventFilters(ip_network="198.51.100.0/24"), {}),
        "deep_cursor": lambda i: (tenants[i], EventFilters(), {"after": deep_cursor(i)}),
        "empty_tenant": lambda i: (uuid.UUID(int=i + 1), EventFilters(), {}),
        "oldest_first": lambda i: (tenants[i], EventFilters(), {"newest_first": False}),
        "oldest_first_user": lambda i: (
            tenants[i],
            EventFilters(user_id=uuid.UUID(pools[i].typical_user())),
            {"newest_first": False},
        ),
    }


def backend_cpu(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def compare(
    conns: dict[str, tuple[psycopg.Connection[Any], int]],
    make: Callable[[int], ListCall],
    rounds: int,
) -> dict[str, Any]:
    def run(variant: str, i: int) -> list[dict[str, Any]]:
        conn = conns[variant][0]
        tenant_id, filters, kwargs = make(i)
        with conn.transaction():
            if variant == "old":
                with old_behaviour():
                    return reads.list_events(
                        conn, tenant_id, filters, limit=101, rendered=True, **kwargs
                    )
            return reads.list_events(conn, tenant_id, filters, limit=101, rendered=True, **kwargs)

    for variant in conns:  # catalog caches; past PostgreSQL's first plans of a statement
        for i in range(12):
            run(variant, i % 10)
    wall: dict[str, list[float]] = {v: [] for v in conns}
    server = dict.fromkeys(conns, 0.0)
    client = dict.fromkeys(conns, 0.0)
    rows = 0
    for r in range(rounds):
        i = r % 10
        pages = {}
        for variant in ("old", "new") if r % 2 == 0 else ("new", "old"):
            pid = conns[variant][1]
            cpu0, own0, t0 = backend_cpu(pid), time.process_time(), time.perf_counter()
            pages[variant] = run(variant, i)
            wall[variant].append(time.perf_counter() - t0)
            server[variant] += backend_cpu(pid) - cpu0
            client[variant] += time.process_time() - own0
        old, new = ([(p["id"], p["json"]) for p in pages[v]] for v in ("old", "new"))
        if old != new:
            raise SystemExit(f"pages differ in round {r}")
        rows = len(new)
    out: dict[str, Any] = {"rows": rows}
    for variant in conns:
        out[variant] = {
            "wall_ms": statistics.median(wall[variant]) * 1000,
            "pg_cpu_ms": server[variant] / rounds * 1000,
            "client_cpu_ms": client[variant] / rounds * 1000,
        }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("scenarios", nargs="*", help="names (default: all)")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--db-name", default="bench_query_10000000")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    url = bq.db_url(Settings.from_env().database_url, args.db_name)
    meta = bq.stored_meta(url)
    if meta is None:
        raise SystemExit(f"{args.db_name} is not a loaded bench.query database")
    plan = bq._plan_from(meta)
    pools = [bq.TenantPools.build(plan, i) for i in range(bq.N_TENANTS)]
    tenants = [uuid.UUID(t) for t in meta["tenants"]]
    table = scenarios(plan, tenants, pools, url)
    names = args.scenarios or list(table)
    conns = {}
    for variant in ("old", "new"):
        conn = psycopg.connect(url, options=SESSION_OPTIONS)
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        conn.commit()
        assert row is not None
        conns[variant] = (conn, int(row[0]))
    print(
        f"{args.rounds} rounds per scenario; load average {os.getloadavg()[0]:.2f}\n\n"
        "| scenario | rows | wall ms old / new | ratio | PostgreSQL CPU ms/call old / new |"
        " ratio | client CPU ms/call old / new |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        flush=True,
    )
    for name in names:
        res = compare(conns, table[name], args.rounds)
        o, n = res["old"], res["new"]
        print(
            f"| {name} | {res['rows']} | {o['wall_ms']:.2f} / {n['wall_ms']:.2f} |"
            f" {n['wall_ms'] / o['wall_ms']:.2f} | {o['pg_cpu_ms']:.2f} / {n['pg_cpu_ms']:.2f} |"
            f" {n['pg_cpu_ms'] / max(o['pg_cpu_ms'], 1e-9):.2f} |"
            f" {o['client_cpu_ms']:.2f} / {n['client_cpu_ms']:.2f} |",
            flush=True,
        )
    for conn, _ in conns.values():
        conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
