"""Read-path benchmark: the listing, stats and export endpoints over a large audit log.

    .venv/bin/python -m bench.query                    # 10,000,000 events (loads once, ~minutes)
    .venv/bin/python -m bench.query --events 200000 --quick   # a short smoke run

Needs the local stack up (``infra/stack.py up``). Loads N events over 10 tenants and 90 days
into a dedicated database ``bench_query_<N>`` (reused on later runs when it holds exactly the
same data set; ``--drop`` removes it at the end, ``--reload`` rebuilds it), starts the API
under gunicorn (2 workers) against it, and measures with real HTTP requests (wrk, keep-alive):
first pages of GET /api/v1/logs with and without filters, a deep keyset page, the stats
endpoint, and exports (rows/s, and the RSS growth of the gunicorn worker while it streams a
whole tenant). EXPLAIN (ANALYZE, BUFFERS) of every scenario's SQL and an in-process time
breakdown explain the numbers. Writes bench/results/query.json and bench/results/query.md.

Other options: --load-only (load or check the data set), --report-only (rewrite query.md
from query.json), --inprocess-only (redo the in-process part after a run that stopped once
it had saved query.partial.json). A scenario whose first requests take over --slow-ms is
measured one request at a time. Everything runs on the local machine: the numbers include
whatever else it is doing (the report shows the CPU other processes used meanwhile).
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file: make `bench`, `api` and `infra` importable
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import requests  # noqa: E402
from psycopg import sql  # noqa: E402

from auditlog.settings import Settings  # noqa: E402
from auditlog.store.migrate import migrate  # noqa: E402
from auditlog.store.pool import SESSION_OPTIONS  # noqa: E402
from auditlog.tokens import mint_token  # noqa: E402
from bench import machine  # noqa: E402
from bench.wrk import ensure_wrk, wrk_version  # noqa: E402
from infra import run as platform  # noqa: E402

RESULTS = ROOT / "bench" / "results"
LOG_DIR = ROOT / ".dev" / "logs" / "bench-query"
GENERATOR_VERSION = 1  # bump when the generated data changes: an older database is reloaded
DAY_MS = 86_400_000
TARGETS = {
    "list": ("p99 ≤ 50 ms", 50.0),
    "stats": ("p99 ≤ 100 ms", 100.0),
    "export": ("≥ 100,000 rows/s", 100_000.0),
    "export_rss": ("RSS growth < 100 MB while exporting 5 M rows", 100.0),
}


def say(message: str) -> None:
    print(f"[query] {message}", flush=True)


# ---------------------------------------------------------------------------------------
# The data set: a deterministic plan (tenants, time window, events per day and tenant), and
# the rows of one day, generated as COPY text.

N_TENANTS = 10
USERS_PER_TENANT = 1000
RESOURCES_PER_TENANT = 10_000
RESOURCE_TYPES = {  # type -> share of a tenant's resources (and, roughly, of its events)
    "document": 25,
    "project": 12,
    "repository": 12,
    "user": 10,
    "invoice": 9,
    "team": 8,
    "role": 7,
    "api_key": 7,
    "webhook": 6,
    "secret": 4,
}
ACTIONS = {"VIEW": 55, "UPDATE": 25, "CREATE": 12, "DELETE": 8}
SEVERITIES = {"INFO": 88, "WARNING": 8, "ERROR": 3.2, "CRITICAL": 0.8}
CLIENTS = ["web", "cli", "api", "mobile", "terraform", "sdk-python", "sdk-go"]
REGIONS = ["eu-west-1", "us-east-1", "us-west-2", "ap-southeast-2"]
TAGS = ["sso", "mfa", "bulk", "automated", "console", "scheduled", "support", "ci"]
STATES = ["draft", "active", "archived", "pending", "locked"]
USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Mobile/15E148",
    "auditlog-cli/2.3.1 (linux; amd64)",
    "terraform-provider-acme/1.8.0",
    "python-requests/2.32.3",
    "Go-http-client/2.0",
    "curl/8.7.1",
    "okhttp/4.12.0",
    "PostmanRuntime/7.39.0",
    "acme-mobile/5.4.0 (Android 14)",
]
USER_ZIPF = 0.8  # user activity ~ 1/rank^0.8
RESOURCE_ZIPF = 0.7  # resource popularity ~ 1/rank^0.7
TYPICAL_USER_RANK = 500  # the user the user_id filter asks for: the median user
TYPICAL_RESOURCE_RANK = 300  # the resource asked for: a few hundred events in 90 days


@dataclass(frozen=True)
class Plan:
    events: int
    seed: int
    start_ms: int  # epoch milliseconds, inclusive
    end_ms: int  # exclusive

    @property
    def tenants(self) -> list[str]:
        ns = uuid.UUID("6d1f3f0e-5a7c-4b8e-9a51-0c0ffee0a11d")
        return [str(uuid.uuid5(ns, f"bench-query-{self.seed}-{i}")) for i in range(N_TENANTS)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "seed": self.seed,
            "start": _iso(self.start_ms),
            "end": _iso(self.end_ms),
            "generator_version": GENERATOR_VERSION,
        }


@dataclass(frozen=True)
class Unit:
    """One UTC day of the window: the events of each tenant in [lo_ms, hi_ms) and the seq
    each tenant's first event of the day gets."""

    index: int
    lo_ms: int
    hi_ms: int
    counts: tuple[int, ...]
    seq_base: tuple[int, ...]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def make_units(plan: Plan) -> list[Unit]:
    """Events per (day, tenant): tenants of different sizes (0.7x..1.3x), quieter weekends,
    some noise, rounded so that the total is exactly ``plan.events``."""
    rng = random.Random(plan.seed)
    tenant_weight = [0.7 + 0.6 * i / (N_TENANTS - 1) for i in range(N_TENANTS)]
    rng.shuffle(tenant_weight)
    spans: list[tuple[int, int]] = []
    lo = plan.start_ms
    while lo < plan.end_ms:
        hi = min(plan.end_ms, (lo // DAY_MS + 1) * DAY_MS)
        spans.append((lo, hi))
        lo = hi
    expected: list[list[float]] = []
    for lo, hi in spans:
        weekday = datetime.fromtimestamp(lo / 1000, UTC).weekday()
        day_factor = (0.55 if weekday >= 5 else 1.0) * (hi - lo) / DAY_MS
        expected.append([day_factor * w * rng.uniform(0.85, 1.15) for w in tenant_weight])
    scale = plan.events / sum(map(sum, expected))
    exact = [[x * scale for x in row] for row in expected]
    counts = [[int(x) for x in row] for row in exact]
    short = plan.events - sum(map(sum, counts))
    by_remainder = sorted(
        ((exact[d][t] - counts[d][t], d, t) for d in range(len(spans)) for t in range(N_TENANTS)),
        reverse=True,
    )
    for _, d, t in by_remainder[:short]:
        counts[d][t] += 1
    units, base = [], [1] * N_TENANTS
    for d, (lo, hi) in enumerate(spans):
        units.append(Unit(d, lo, hi, tuple(counts[d]), tuple(base)))
        base = [b + c for b, c in zip(base, counts[d], strict=True)]
    return units


def _cum(weights: Sequence[float]) -> list[float]:
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


@dataclass
class TenantPools:
    """What a tenant's events are drawn from: users (with their IPs, user agent), resources,
    both with skewed popularity. Deterministic from the seed and the tenant's index."""

    tenant_id: str
    users: list[str]
    user_cum: list[float]
    user_ips: list[list[str]]
    user_agents: list[str]
    resources: list[tuple[str, str]]
    resource_cum: list[float]

    @classmethod
    def build(cls, plan: Plan, index: int) -> TenantPools:
        rng = random.Random(plan.seed * 7919 + index)
        users = [
            str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(USERS_PER_TENANT)
        ]
        ips: list[list[str]] = []
        for _ in users:
            own = []
            for _ in range(rng.choice((1, 1, 2, 3))):
                kind = rng.random()
                if kind < 0.7:  # the tenant's office and VPN networks
                    own.append(f"10.{index}.{rng.randrange(16)}.{rng.randrange(1, 255)}")
                elif kind < 0.95:
                    own.append(
                        f"{rng.choice((81, 92, 151, 185, 203))}.{rng.randrange(256)}."
                        f"{rng.randrange(256)}.{rng.randrange(1, 255)}"
                    )
                else:
                    own.append(
                        f"2001:db8:{index:x}:{rng.randrange(65536):x}::{rng.randrange(1, 65536):x}"
                    )
            ips.append(own)
        agents = [rng.choice(USER_AGENTS) for _ in users]
        types = [
            t
            for t, share in RESOURCE_TYPES.items()
            for _ in range(share * RESOURCES_PER_TENANT // 100)
        ]
        rng.shuffle(types)
        resources = [(t, f"{t[:3]}-{rng.randrange(16**8):08x}") for t in types]
        return cls(
            tenant_id=plan.tenants[index],
            users=users,
            user_cum=_cum([1 / (r + 1) ** USER_ZIPF for r in range(len(users))]),
            user_ips=ips,
            user_agents=agents,
            resources=resources,
            resource_cum=_cum([1 / (r + 1) ** RESOURCE_ZIPF for r in range(len(resources))]),
        )

    def typical_user(self) -> str:
        return self.users[TYPICAL_USER_RANK]

    def typical_resource(self) -> tuple[str, str]:
        return self.resources[TYPICAL_RESOURCE_RANK]

    def office_network(self, index: int) -> str:
        return f"10.{index}.3.0/24"


_HEX_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
_DAY_TEXT: dict[int, str] = {}


def _ts(ms: int) -> str:
    """PostgreSQL timestamptz text for epoch milliseconds (UTC)."""
    day, rem = divmod(ms, DAY_MS)
    text = _DAY_TEXT.get(day)
    if text is None:
        text = _DAY_TEXT[day] = datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d")
    secs, millis = divmod(rem, 1000)
    hours, secs = divmod(secs, 3600)
    minutes, secs = divmod(secs, 60)
    return f"{text} {hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}+00"


COPY_COLUMNS = (
    "id, tenant_id, seq, created_at, occurred_at, user_id, session_id, ip_address, user_agent, "
    "action_type, resource_type, resource_id, severity, before_state, after_state, metadata, "
    "prev_hash, hash, stored_at"
)


def tenant_day_lines(plan: Plan, unit: Unit, t: int, pools: TenantPools) -> list[tuple[int, str]]:
    """One tenant's events of one day as (created_at ms, COPY text line), oldest first.
    The id is a UUIDv7 carrying created_at (the layout of auditlog.ids.uuid7_at)."""
    count = unit.counts[t]
    rng = random.Random((plan.seed * 1_000_003 + unit.index) * 31 + t)
    times = sorted(rng.randrange(unit.lo_ms, unit.hi_ms) for _ in range(count))
    users = rng.choices(range(USERS_PER_TENANT), cum_weights=pools.user_cum, k=count)
    resources = rng.choices(pools.resources, cum_weights=pools.resource_cum, k=count)
    actions = rng.choices(list(ACTIONS), weights=list(ACTIONS.values()), k=count)
    severities = rng.choices(list(SEVERITIES), weights=list(SEVERITIES.values()), k=count)
    noise = os.urandom(count * 100).hex()  # ids, hashes, request and span ids
    tenant = pools.tenant_id
    out: list[tuple[int, str]] = []
    for i in range(count):
        ms = times[i]
        r = noise[i * 200 : (i + 1) * 200]
        h = f"{ms:012x}"
        event_id = f"{h[:8]}-{h[8:]}-7{r[0:3]}-{_HEX_VARIANT[r[3]]}{r[4:7]}-{r[7:19]}"
        u = users[i]
        action = actions[i]
        rtype, rid = resources[i]
        occurred = _ts(ms - rng.randrange(3000)) if rng.random() < 0.9 else "\\N"
        if action == "UPDATE":
            before = f'{{"status": "{rng.choice(STATES)}", "version": {rng.randrange(1, 40)}}}'
            after = f'{{"status": "{rng.choice(STATES)}", "version": {rng.randrange(1, 40)}}}'
        elif action == "CREATE":
            before, after = "\\N", f'{{"status": "draft", "owner": "{pools.users[u]}"}}'
        elif action == "DELETE":
            before, after = f'{{"status": "{rng.choice(STATES)}"}}', "\\N"
        else:
            before = after = "\\N"
        metadata = (
            f'{{"request_id": "{r[19:51]}", "client": "{rng.choice(CLIENTS)}", '
            f'"region": "{rng.choice(REGIONS)}", "trace": {{"span_id": "{r[51:67]}"}}, '
            f'"tags": ["{rng.choice(TAGS)}", "{rng.choice(TAGS)}"], '
            f'"duration_ms": {rng.randrange(1, 2500)}}}'
        )
        ips = pools.user_ips[u]
        out.append(
            (
                ms,
                f"{event_id}\t{tenant}\t{unit.seq_base[t] + i}\t{_ts(ms)}\t{occurred}\t"
                f"{pools.users[u]}\tsess-{t}-{u}-{unit.index}-{ms // 14_400_000 % 6}\t"
                f"{ips[0] if len(ips) == 1 else rng.choice(ips)}\t{pools.user_agents[u]}\t"
                f"{action}\t{rtype}\t{rid}\t{severities[i]}\t{before}\t{after}\t{metadata}\t"
                f"\\\\x{r[67:131]}\t\\\\x{r[131:195]}\t{_ts(ms + 20 + rng.randrange(800))}\n",
            )
        )
    return out


def day_lines(plan: Plan, unit: Unit, pools: list[TenantPools]) -> Iterator[str]:
    """A day's events of every tenant in created_at order, as the drain would append them."""
    per_tenant = [tenant_day_lines(plan, unit, t, pools[t]) for t in range(N_TENANTS)]
    for _, line in heapq.merge(*per_tenant):
        yield line


# ---------------------------------------------------------------------------------------
# The bench database: created, migrated and loaded once; reused while it holds the same plan.

META_TABLE = "bench_query_meta"


def admin_url(base_url: str) -> str:
    return base_url.rsplit("/", 1)[0] + "/postgres"


def db_url(base_url: str, name: str) -> str:
    return base_url.rsplit("/", 1)[0] + "/" + name


def database_exists(base_url: str, name: str) -> bool:
    with psycopg.connect(admin_url(base_url), autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return found is not None


def drop_database(base_url: str, name: str) -> None:
    with psycopg.connect(admin_url(base_url), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def stored_meta(url: str) -> dict[str, Any] | None:
    """The plan and load facts of a completely loaded bench database, else None."""
    with psycopg.connect(url, autocommit=True) as conn:
        found = conn.execute("SELECT to_regclass(%s)", (META_TABLE,)).fetchone()
        if found is None or found[0] is None:
            return None
        row = conn.execute(
            sql.SQL("SELECT meta FROM {} WHERE complete").format(sql.Identifier(META_TABLE))
        ).fetchone()
    return None if row is None else dict(row[0])


def count_rows(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM audit_logs").fetchone()
    return int(row[0]) if row else 0


# Loader processes (multiprocessing, spawn): each keeps one connection and the tenant pools.
_worker: dict[str, Any] = {}


def _load_init(url: str, plan: Plan) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    _worker["conn"] = psycopg.connect(url, options=SESSION_OPTIONS)
    _worker["plan"] = plan
    _worker["pools"] = [TenantPools.build(plan, i) for i in range(N_TENANTS)]


def _load_unit(unit: Unit) -> tuple[int, int, float, float]:
    """COPY one day in one transaction; returns (day, rows, generate seconds, total seconds)."""
    conn: psycopg.Connection[Any] = _worker["conn"]
    started = time.perf_counter()
    generating = 0.0
    copy_sql = sql.SQL("COPY audit_logs ({}) FROM STDIN").format(sql.SQL(COPY_COLUMNS))
    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        buffer: list[str] = []
        size = 0
        mark = time.perf_counter()
        for line in day_lines(_worker["plan"], unit, _worker["pools"]):
            buffer.append(line)
            size += len(line)
            if size >= 1 << 20:
                generating += time.perf_counter() - mark
                copy.write("".join(buffer))
                buffer, size = [], 0
                mark = time.perf_counter()
        generating += time.perf_counter() - mark
        if buffer:
            copy.write("".join(buffer))
    conn.commit()
    return unit.index, sum(unit.counts), generating, time.perf_counter() - started


def create_and_load(base_url: str, name: str, plan: Plan, jobs: int) -> dict[str, Any]:
    """A fresh database holding the plan's events, hourly stats, tenants and chain heads."""
    drop_database(base_url, name)
    with psycopg.connect(admin_url(base_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = db_url(base_url, name)
    migrate(url)
    units = make_units(plan)
    first_day = datetime.fromtimestamp(plan.start_ms / 1000, UTC).date()
    last_day = datetime.fromtimestamp((plan.end_ms - 1) / 1000, UTC).date()
    with psycopg.connect(url, autocommit=True, options=SESSION_OPTIONS) as conn:
        conn.execute(
            "SELECT audit_ensure_partitions(%s, %s)", (first_day, last_day + timedelta(days=7))
        )
        conn.execute(
            sql.SQL("CREATE TABLE {} (complete boolean NOT NULL, meta jsonb NOT NULL)").format(
                sql.Identifier(META_TABLE)
            )
        )
        conn.execute(
            "INSERT INTO tenants (id, name, status, retention_days, created_at)"
            " SELECT t.id::uuid, 'bench-' || t.n, 'active', 365, %s"
            " FROM unnest(%s::text[]) WITH ORDINALITY AS t(id, n)",
            (datetime.fromtimestamp(plan.start_ms / 1000, UTC), plan.tenants),
        )
    say(
        f"loading {plan.events:,} events: {len(units)} days x {N_TENANTS} tenants, {jobs} COPY jobs"
    )
    started = time.perf_counter()
    done_rows, gen_s, copy_s = 0, 0.0, 0.0
    # Big days first, so the two jobs finish together.
    order = sorted(units, key=lambda u: -sum(u.counts))
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(jobs, initializer=_load_init, initargs=(url, plan)) as pool:
        for i, (_day, rows, gen, total) in enumerate(pool.imap_unordered(_load_unit, order), 1):
            done_rows += rows
            gen_s += gen
            copy_s += total
            if i % 10 == 0 or i == len(units):
                elapsed = time.perf_counter() - started
                say(
                    f"  {i}/{len(units)} days, {done_rows:,} rows, {elapsed:.0f} s,"
                    f" {done_rows / elapsed:,.0f} rows/s"
                )
    copy_wall = time.perf_counter() - started
    facts: dict[str, Any] = {
        "rows": done_rows,
        "jobs": jobs,
        "copy_seconds": round(copy_wall, 1),
        "copy_rows_per_s": round(done_rows / copy_wall),
        "python_generate_share": round(gen_s / copy_s, 3),
    }
    with psycopg.connect(url, autocommit=True, options=SESSION_OPTIONS) as conn:
        mark = time.perf_counter()
        # What the drain would have kept, hour by hour (the 0003 migration's statement).
        conn.execute(
            "INSERT INTO audit_stats_hourly"
            " (tenant_id, hour, action_type, severity, resource_type, events)"
            " SELECT tenant_id, date_trunc('hour', created_at), action_type, severity,"
            " resource_type, count(*) FROM audit_logs GROUP BY 1, 2, 3, 4, 5"
        )
        # Chain heads as the drain leaves them (last seq; the hash is a stand-in).
        conn.execute(
            "INSERT INTO tenant_chain_heads (tenant_id, last_seq, last_hash)"
            " SELECT tenant_id, sum(events), sha256(tenant_id::text::bytea)"
            " FROM audit_stats_hourly GROUP BY 1"
        )
        facts["stats_fill_seconds"] = round(time.perf_counter() - mark, 1)
        mark = time.perf_counter()
        # Old partitions of a live table are all-visible and analysed (autovacuum); without
        # this the first reads would set hint bits and find no visibility map.
        conn.execute("VACUUM (ANALYZE) audit_logs")
        conn.execute("VACUUM (ANALYZE) audit_stats_hourly")
        conn.execute("ANALYZE tenants")
        facts["vacuum_analyze_seconds"] = round(time.perf_counter() - mark, 1)
        facts["total_seconds"] = round(time.perf_counter() - started, 1)
        facts["loaded_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        meta = {"plan": plan.as_dict(), "tenants": plan.tenants, "load": facts}
        conn.execute(
            sql.SQL("INSERT INTO {} (complete, meta) VALUES (true, %s)").format(
                sql.Identifier(META_TABLE)
            ),
            (json.dumps(meta),),
        )
    return meta


def prepare_daily_stats(url: str) -> dict[str, Any]:
    """Apply pending migrations (a reused database predates some), then build the
    ``daily_stats`` rows of every closed day not current yet, as the asset's schedule and a
    backfill would have: the stats endpoint reads them for whole days."""
    applied = migrate(url)
    if applied:
        say(f"applied migrations {', '.join(applied)}")
    try:
        from auditlog.daily_stats import build_day
    except ImportError:  # code from before the daily aggregates
        return {"migrations_applied": applied, "days_built": 0}
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True, options=SESSION_OPTIONS) as conn:
        rows = conn.execute(
            "SELECT d::date FROM generate_series("
            " date_trunc('day', (SELECT min(hour) FROM audit_stats_hourly) AT TIME ZONE 'UTC'),"
            " (now() AT TIME ZONE 'UTC')::date - 1, interval '1 day') d"
            " EXCEPT SELECT day FROM audit_stats_days GROUP BY day"
            " HAVING bool_and(built_version = version) ORDER BY 1"
        ).fetchall()
        events = 0
        for i, (day,) in enumerate(rows, 1):
            events += build_day(conn, day).events
            if i % 10 == 0 or i == len(rows):
                say(f"  daily_stats: {i}/{len(rows)} days, {time.perf_counter() - started:.0f} s")
        if rows or applied:  # a migration may have filled a table (0010: daily_counts)
            for table in ("days", "daily", "daily_counts", "daily_resources", "daily_users"):
                conn.execute(
                    sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(f"audit_stats_{table}"))
                )
        built = conn.execute(
            "SELECT count(*), count(DISTINCT day) FROM audit_stats_days"
            " WHERE built_version = version"
        ).fetchone()
    seconds = time.perf_counter() - started
    return {
        "migrations_applied": applied,
        "days_built": len(rows),
        "build_seconds": round(seconds, 1),
        "events_built": events,
        "tenant_days_current": int(built[0]) if built else 0,
        "days_current": int(built[1]) if built else 0,
    }


def database_facts(url: str) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        sizes = conn.execute(
            "SELECT sum(pg_table_size(relid)), sum(pg_indexes_size(relid)), count(*)"
            " FROM pg_partition_tree('audit_logs') WHERE isleaf"
        ).fetchone()
        assert sizes is not None
        indexes = conn.execute(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)"
            " FROM pg_index i WHERE i.indrelid = 'audit_logs'::regclass ORDER BY 1"
        ).fetchall()
        per_index = conn.execute(
            "SELECT parent.relname, sum(pg_relation_size(child.oid))"
            " FROM pg_inherits inh JOIN pg_class parent ON parent.oid = inh.inhparent"
            " JOIN pg_class child ON child.oid = inh.inhrelid"
            " WHERE parent.relkind = 'I' GROUP BY 1 ORDER BY 1"
        ).fetchall()
        stats_rows = conn.execute("SELECT count(*) FROM audit_stats_hourly").fetchone()
        db_size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        settings: dict[str, str] = dict(
            conn.execute(
                "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
                (
                    [
                        "shared_buffers",
                        "work_mem",
                        "effective_cache_size",
                        "random_page_cost",
                        "max_parallel_workers_per_gather",
                        "jit",
                        "plan_cache_mode",
                    ],
                ),
            ).fetchall()
        )
        version = conn.execute("SHOW server_version").fetchone()
    return {
        "server_version": version[0] if version else None,
        "partitions": int(sizes[2]),
        "heap_bytes": int(sizes[0] or 0),
        "index_bytes": int(sizes[1] or 0),
        "database_bytes": int(db_size[0]) if db_size else None,
        "indexes": {name: definition for name, definition in indexes},
        "index_bytes_by_index": {name: int(size) for name, size in per_index},
        "stats_hourly_rows": int(stats_rows[0]) if stats_rows else 0,
        "settings": settings,
    }


def ensure_database(args: argparse.Namespace, base_url: str) -> tuple[str, dict[str, Any], bool]:
    """The bench database's URL and meta; reloads it unless it holds a complete load of
    exactly ``--events`` rows of this generator version. Returns (url, meta, reused)."""
    name = args.db_name or f"bench_query_{args.events}"
    url = db_url(base_url, name)
    if database_exists(base_url, name) and not args.reload:
        meta = stored_meta(url)
        if (
            meta is not None
            and meta["plan"]["events"] == args.events
            and meta["plan"]["generator_version"] == GENERATOR_VERSION
            and meta["plan"]["seed"] == args.seed
        ):
            say(f"database {name} exists; counting its rows")
            rows = count_rows(url)
            if rows == args.events:
                say(f"reusing {name}: {rows:,} events, loaded {meta['load']['loaded_at']}")
                return url, meta, True
            say(f"{name} holds {rows:,} rows, not {args.events:,}: reloading")
        else:
            say(f"{name} is incomplete or from another plan: reloading")
    free = shutil.disk_usage(ROOT).free
    need = args.events * 1200  # heap + indexes (~950 bytes/event measured), and room to spare
    if free < need:
        raise SystemExit(
            f"[query] {free / 1e9:.1f} GB free on {ROOT}, about {need / 1e9:.1f} GB needed"
        )
    now_ms = int(time.time() * 1000) // 60_000 * 60_000
    plan = Plan(events=args.events, seed=args.seed, start_ms=now_ms - 90 * DAY_MS, end_ms=now_ms)
    meta = create_and_load(base_url, name, plan, args.jobs)
    load = meta["load"]
    say(
        f"loaded {load['rows']:,} rows in {load['copy_seconds']} s"
        f" ({load['copy_rows_per_s']:,} rows/s), hourly stats {load['stats_fill_seconds']} s,"
        f" VACUUM ANALYZE {load['vacuum_analyze_seconds']} s"
    )
    return url, meta, False


# ---------------------------------------------------------------------------------------
# The API under test: gunicorn (infra/run.py's command, 2 workers) against the bench database.


@dataclass
class Api:
    base_url: str
    child: platform.Child
    database_url: str

    def worker_pids(self) -> list[int]:
        """The gunicorn workers: children of the master process."""
        pid = self.child.process.pid
        path = Path(f"/proc/{pid}/task/{pid}/children")
        try:
            return [int(p) for p in path.read_text().split()]
        except OSError:
            return []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def api_server(
    url: str,
    workers: int,
    extra_env: dict[str, str],
    *,
    cwd: Path = ROOT,
    name: str = "api",
) -> Iterator[Api]:
    """The API under gunicorn on a free port, run from ``cwd`` (another tree's code: pass
    its path in ``extra_env``'s PYTHONPATH too), logging to ``LOG_DIR/<name>.log``."""
    port = free_port()
    env = {**platform.platform_env(), "DATABASE_URL": url, **extra_env}
    env = platform.prometheus_dir(env) if "PROMETHEUS_MULTIPROC_DIR" in env else env
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    (LOG_DIR / f"{name}.log").unlink(missing_ok=True)
    cmd = platform.api_command(port, workers=workers)
    child = platform.spawn(name, cmd, env, LOG_DIR, cwd=cwd)
    try:
        platform.wait_http(f"http://127.0.0.1:{port}/healthz", 60, child)
        api = Api(f"http://127.0.0.1:{port}", child, url)
        deadline = time.monotonic() + 30
        while len(api.worker_pids()) < workers and time.monotonic() < deadline:
            time.sleep(0.2)
        yield api
    finally:
        platform.stop_children([child])


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler(threading.Thread):
    """Peak VmRSS of each process, sampled every ``interval`` seconds."""

    def __init__(self, pids: Sequence[int], interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pids = list(pids)
        self.interval = interval
        self.peak: dict[int, int] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            for pid in self.pids:
                value = rss_kib(pid)
                if value is not None and value > self.peak.get(pid, 0):
                    self.peak[pid] = value
            self._stop_event.wait(self.interval)

    def stop(self) -> dict[int, int]:
        self._stop_event.set()
        self.join()
        return self.peak


# ---------------------------------------------------------------------------------------
# wrk: a Lua script that rotates over a list of requests (one tenant token and path a line),
# and reports its latency percentiles as one JSON line.

LUA = r"""
local list_file = os.getenv("BENCH_REQUESTS")
local host = os.getenv("BENCH_HOST")
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  unexpected = 0
  statuses = {}
  reqs = {}
  for line in io.lines(list_file) do
    local token, path = line:match("^([^\t]*)\t(.*)$")
    reqs[#reqs + 1] = wrk.format("GET", path, {
      ["Host"] = host, ["Authorization"] = "Bearer " .. token, ["Accept"] = "application/json",
    })
  end
  index = math.random(#reqs)
end

function request()
  index = index % #reqs + 1
  return reqs[index]
end

function response(status, headers, body)
  if status ~= 200 then
    unexpected = unexpected + 1
  end
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  local unexpected_total = 0
  local merged = {}
  for _, thread in ipairs(threads) do
    unexpected_total = unexpected_total + thread:get("unexpected")
    for status, count in pairs(thread:get("statuses")) do
      merged[status] = (merged[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(merged) do
    parts[#parts + 1] = string.format('"%s":%d', status, count)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"unexpected":%d,' ..
    '"statuses":{%s},"socket_errors":%d,' ..
    '"latency_us":{"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d}}\n',
    summary.requests, summary.duration, summary.bytes, unexpected_total,
    table.concat(parts, ","), e.connect + e.read + e.write + e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99)))
end
"""


@dataclass
class Wrk:
    path: str
    workdir: Path
    host: str
    base_url: str
    database_url: str

    def run(
        self, requests_list: Sequence[tuple[str, str]], connections: int, seconds: float
    ) -> dict[str, Any]:
        script = self.workdir / "query.lua"
        if not script.exists():
            script.write_text(LUA)
        listing = self.workdir / f"requests-{uuid.uuid4().hex[:8]}.txt"
        listing.write_text("".join(f"{token}\t{path}\n" for token, path in requests_list))
        cmd = [
            self.path,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            self.base_url,
        ]
        env = {**os.environ, "BENCH_REQUESTS": str(listing), "BENCH_HOST": self.host}
        try:
            done = subprocess.run(
                cmd, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False
            )
        finally:
            listing.unlink(missing_ok=True)
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_RESULT ")), None)
        if done.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        data = json.loads(line.removeprefix("BENCH_RESULT "))
        duration = data["duration_us"] / 1e6
        return {
            "requests": data["requests"],
            "requests_per_s": round(data["requests"] / duration, 1),
            "errors": data["unexpected"] + data["socket_errors"],
            "statuses": data["statuses"],
            "duration_s": round(duration, 2),
            "bytes_per_request": round(data["bytes"] / max(1, data["requests"])),
            "latency_ms": {k: round(v / 1000, 2) for k, v in data["latency_us"].items()},
        }


# ---------------------------------------------------------------------------------------
# Scenarios: per tenant, the query parameters of each request.


@dataclass
class Tenant:
    index: int
    id: str
    token: str
    pools: TenantPools


@dataclass
class Scenario:
    key: str
    label: str
    kind: str  # list | stats
    path: str
    params: list[dict[str, str]]  # one set per tenant (requests rotate over tenants)
    runs: list[dict[str, Any]] = field(default_factory=list)
    serial: dict[str, Any] | None = None
    page_rows: list[int] = field(default_factory=list)  # rows on the page, per tenant
    slow: bool = False  # measured one request at a time (see serial_run)

    def requests(self, tenants: Sequence[Tenant]) -> list[tuple[str, str]]:
        return [
            (t.token, f"{self.path}?{urllib.parse.urlencode(p)}" if p else self.path)
            for t, p in zip(tenants, self.params, strict=True)
        ]

    def median(self) -> dict[str, Any]:
        return summarize(self.runs)

    def as_dict(self) -> dict[str, Any]:
        target = TARGETS[self.kind]
        return {
            "key": self.key,
            "label": self.label,
            "kind": self.kind,
            "path": self.path,
            "params": self.params,
            "page_rows": self.page_rows,
            "slow_serial": self.slow,
            "target": target[0],
            "runs": self.runs,
            "median": self.median() if self.runs else None,
            "serial_c1": self.serial,
        }


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Medians over a scenario's runs."""

    def med(get: Callable[[dict[str, Any]], float]) -> float:
        return round(statistics.median(get(r) for r in runs), 2)

    def cpu_ms(group: str) -> Callable[[dict[str, Any]], float]:
        # CPU time per request, in ms, of one group of processes.
        return lambda r: 1000 * r.get("cpu_cores", {}).get(group, 0.0) / r["requests_per_s"]

    return {
        "requests_per_s": med(lambda r: r["requests_per_s"]),
        "p50_ms": med(lambda r: r["latency_ms"]["p50"]),
        "p90_ms": med(lambda r: r["latency_ms"]["p90"]),
        "p99_ms": med(lambda r: r["latency_ms"]["p99"]),
        "errors_total": sum(r["errors"] for r in runs),
        "other_cpu_cores": med(lambda r: r.get("cpu_cores", {}).get("other", 0.0)),
        "api_cpu_ms": med(cpu_ms("api")),
        "pg_cpu_ms": med(cpu_ms("postgres (bench db)")),
    }


def _z(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def define_scenarios(plan: Plan, tenants: Sequence[Tenant]) -> list[Scenario]:
    day = (plan.end_ms // DAY_MS - 10) * DAY_MS  # a whole UTC day, ten days before the end
    page = {"limit": "100"}
    logs, stats = "/api/v1/logs", "/api/v1/logs/stats"

    def each(make: Callable[[Tenant], dict[str, str]]) -> list[dict[str, str]]:
        return [make(t) for t in tenants]

    return [
        Scenario("list_first", "first page, no filter", "list", logs, each(lambda t: page)),
        Scenario(
            "list_action_delete",
            "action_type=DELETE (8 %)",
            "list",
            logs,
            each(lambda t: {**page, "action_type": "DELETE"}),
        ),
        Scenario(
            "list_min_severity_error",
            "min_severity=ERROR (4 %)",
            "list",
            logs,
            each(lambda t: {**page, "min_severity": "ERROR"}),
        ),
        Scenario(
            "list_user",
            f"user_id= (a median user, rank {TYPICAL_USER_RANK} of {USERS_PER_TENANT})",
            "list",
            logs,
            each(lambda t: {**page, "user_id": t.pools.typical_user()}),
        ),
        Scenario(
            "list_resource",
            f"resource_type + resource_id (rank {TYPICAL_RESOURCE_RANK} of "
            f"{RESOURCES_PER_TENANT:,})",
            "list",
            logs,
            each(
                lambda t: {
                    **page,
                    "resource_type": t.pools.typical_resource()[0],
                    "resource_id": t.pools.typical_resource()[1],
                }
            ),
        ),
        Scenario(
            "list_one_day",
            "from/to one whole day",
            "list",
            logs,
            each(lambda t: {**page, "from": _z(day), "to": _z(day + DAY_MS)}),
        ),
        Scenario(
            "list_ip_cidr",
            "ip=<office /24> (~4 %)",
            "list",
            logs,
            each(lambda t: {**page, "ip": t.pools.office_network(t.index)}),
        ),
        Scenario(
            "list_ip_nomatch",
            "ip=<a /24 without events> (scans the whole tenant)",
            "list",
            logs,
            each(lambda t: {**page, "ip": "198.51.100.0/24"}),
        ),
        Scenario(
            "list_deep_cursor",
            "keyset page 101 (cursor after 100 pages)",
            "list",
            logs,
            each(lambda t: page),  # the cursor is added once it has been walked to
        ),
        Scenario(
            "stats_default", "stats, default (last 30 days)", "stats", stats, each(lambda t: {})
        ),
        Scenario(
            "stats_90d_day",
            "stats, from/to 90 days, bucket=day",
            "stats",
            stats,
            each(lambda t: {"from": _z(plan.start_ms), "to": _z(plan.end_ms), "bucket": "day"}),
        ),
    ]


def walk_cursor(api: Api, tenant: Tenant, pages: int) -> tuple[str, list[float]]:
    """Follow next_cursor ``pages`` pages deep; the cursor of the next page, and latencies."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {tenant.token}"
    params: dict[str, str] = {"limit": "100"}
    latencies = []
    for _ in range(pages):
        mark = time.perf_counter()
        response = session.get(f"{api.base_url}/api/v1/logs", params=params, timeout=60)
        latencies.append((time.perf_counter() - mark) * 1000)
        response.raise_for_status()
        cursor = response.json()["next_cursor"]
        if cursor is None:
            raise RuntimeError(f"tenant {tenant.id} has fewer than {pages} pages")
        params = {"limit": "100", "cursor": cursor}
    return params["cursor"], latencies


def preflight(api: Api, tenants: Sequence[Tenant], scenario: Scenario) -> list[float]:
    """One request per tenant: every one must answer 200; record the rows on each page.
    Returns the latencies (ms)."""
    scenario.page_rows = []
    latencies = []
    session = requests.Session()
    for token, path in scenario.requests(tenants):
        mark = time.perf_counter()
        response = session.get(
            api.base_url + path, headers={"Authorization": f"Bearer {token}"}, timeout=300
        )
        latencies.append((time.perf_counter() - mark) * 1e3)
        if response.status_code != 200:
            raise RuntimeError(f"{scenario.key}: {path} -> {response.status_code} {response.text}")
        body = response.json()
        scenario.page_rows.append(len(body["data"]) if "data" in body else body["total_logs"])
    return latencies


def serial_run(api: Api, tenants: Sequence[Tenant], scenario: Scenario) -> dict[str, Any]:
    """For scenarios too slow for a timed wrk run (wrk would leave requests running in the
    API when it stops, slowing the next scenario): one request per tenant, one at a time."""
    latencies = []
    errors = 0
    session = requests.Session()
    started = time.perf_counter()
    for token, path in scenario.requests(tenants):
        mark = time.perf_counter()
        response = session.get(
            api.base_url + path, headers={"Authorization": f"Bearer {token}"}, timeout=300
        )
        latencies.append((time.perf_counter() - mark) * 1e3)
        errors += response.status_code != 200
    duration = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "mode": "serial (python client, c=1, one request per tenant)",
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / duration, 2),
        "errors": errors,
        "duration_s": round(duration, 2),
        "latency_ms": {
            "mean": round(statistics.mean(latencies), 1),
            "p50": round(statistics.median(latencies), 1),
            "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 1),
            "p99": round(ordered[-1], 1),  # ten samples: the slowest one
            "max": round(ordered[-1], 1),
        },
    }


# ---------------------------------------------------------------------------------------
# Exports over HTTP: rows/s and bytes, and the RSS of the gunicorn workers while streaming.


def count_matching(url: str, tenant_id: str, since: datetime | None) -> int:
    with psycopg.connect(url, autocommit=True, options=SESSION_OPTIONS) as conn:
        if since is None:
            row = conn.execute(
                "SELECT count(*) FROM audit_logs WHERE tenant_id = %s", (tenant_id,)
            ).fetchone()
        else:
            row = conn.execute(
                "SELECT count(*) FROM audit_logs WHERE tenant_id = %s AND created_at >= %s",
                (tenant_id, since),
            ).fetchone()
    return int(row[0]) if row else 0


def http_export(
    api: Api, tenant: Tenant, fmt: str, since: datetime | None, expected_rows: int
) -> dict[str, Any]:
    """One export; repeated once if the stream broke (PostgreSQL restarted under it, say)."""
    try:
        return _http_export(api, tenant, fmt, since, expected_rows)
    except (requests.RequestException, RuntimeError) as exc:
        say(f"  export failed ({exc}); repeating it once")
        wait_for_database(api.database_url)
        run = _http_export(api, tenant, fmt, since, expected_rows)
        run["retried_after"] = str(exc)
        return run


def _http_export(
    api: Api, tenant: Tenant, fmt: str, since: datetime | None, expected_rows: int
) -> dict[str, Any]:
    params = {"format": fmt}
    if since is not None:
        params["from"] = since.strftime("%Y-%m-%dT%H:%M:%SZ")
    pids = api.worker_pids()
    before = {pid: rss_kib(pid) or 0 for pid in pids}
    sampler = RssSampler(pids)
    sampler.start()
    started = time.perf_counter()
    first_byte = None
    size = lines = 0
    try:
        with requests.get(
            f"{api.base_url}/api/v1/logs/export",
            params=params,
            headers={"Authorization": f"Bearer {tenant.token}"},
            stream=True,
            timeout=600,
        ) as response:
            response.raise_for_status()
            for chunk in response.iter_content(chunk_size=1 << 20):
                if first_byte is None:
                    first_byte = time.perf_counter() - started
                size += len(chunk)
                if fmt in ("csv", "ndjson"):
                    lines += chunk.count(b"\n")
    finally:
        seconds = time.perf_counter() - started
        peak = sampler.stop()
    time.sleep(1.0)
    after = {pid: rss_kib(pid) or 0 for pid in pids}
    rows = lines - 1 if fmt == "csv" else lines if fmt == "ndjson" else expected_rows
    if rows != expected_rows:
        raise RuntimeError(f"{fmt} export returned {rows} rows, expected {expected_rows}")
    growth = {pid: (peak.get(pid, 0) - before[pid]) / 1024 for pid in pids}
    served_by = max(growth, key=lambda pid: growth[pid]) if growth else None
    return {
        "format": fmt,
        "from": params.get("from"),
        "rows": rows,
        "bytes": size,
        "seconds": round(seconds, 2),
        "first_byte_s": round(first_byte or 0.0, 3),
        "rows_per_s": round(rows / seconds),
        "mb_per_s": round(size / seconds / 1e6, 1),
        "rss_mib": {
            str(pid): {
                "before": round(before[pid] / 1024, 1),
                "peak": round(peak.get(pid, 0) / 1024, 1),
                "after": round(after[pid] / 1024, 1),
            }
            for pid in pids
        },
        "rss_growth_mib": round(growth[served_by], 1) if served_by else None,
    }


# ---------------------------------------------------------------------------------------
# In-process: the same functions the API calls, on one connection, timed; every statement
# recorded so that it can be EXPLAINed with the very parameters the API used.

_RECORD: list[dict[str, Any]] = []


class RecordingCursor(psycopg.Cursor[Any]):
    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        mark = time.perf_counter()
        result = super().execute(query, params, **kwargs)
        _RECORD.append({"query": query, "params": params, "ms": (time.perf_counter() - mark) * 1e3})
        return result


class RecordingServerCursor(psycopg.ServerCursor[Any]):
    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        mark = time.perf_counter()
        result = super().execute(query, params, **kwargs)
        _RECORD.append({"query": query, "params": params, "ms": (time.perf_counter() - mark) * 1e3})
        return result


def recording_connection(url: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(url, options=SESSION_OPTIONS, cursor_factory=RecordingCursor)
    conn.server_cursor_factory = RecordingServerCursor
    return conn


def query_name(query: Any) -> str:
    """The name a statement has in auditlog/store/queries.sql (``-- name: ...``), if any."""
    from auditlog.store.queries import QUERIES

    if isinstance(query, str):
        QUERIES["stats_top_users"]  # loads the file
        for name, text in (QUERIES._loaded or {}).items():
            if text == query:
                return name
    return stats_query_name(query)


def stats_query_name(query: Any) -> str:
    """The name in auditlog/store/stats.sql of a statement (composed from its fragments)."""
    try:
        from auditlog.stats import STATS_QUERIES
    except ImportError:  # code from before the daily aggregates
        return "?"
    text = query.as_string(None) if isinstance(query, sql.Composable) else str(query)
    STATS_QUERIES["total"]  # loads the file
    for name, template in (STATS_QUERIES._loaded or {}).items():
        if not name.endswith("_part") and text.startswith(template.split("{", 1)[0]):
            return name
    return "?"


_ACTUAL = re.compile(r"actual time=[\d.]+\.\.[\d.]+ rows=(\d+) loops=(\d+)")
_PARTITION_NODE = re.compile(r"->  .* on audit_logs_p\d{8}\b")


def explain(
    conn: psycopg.Connection[Any],
    query: Any,
    params: Any,
    name: str | None = None,
    cursor: bool = False,
) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS); ``cursor``: of ``DECLARE ... CURSOR FOR`` the statement,
    which is planned for a fast start (cursor_tuple_fraction) like the export's cursor."""
    statement = query if isinstance(query, sql.SQL | sql.Composed) else sql.SQL(query)
    text = psycopg.ClientCursor(conn).mogrify(statement, params)
    conn.rollback()
    prefix = "EXPLAIN (ANALYZE, BUFFERS) " + ("DECLARE bench_explain CURSOR FOR " if cursor else "")
    with conn.cursor() as cur:
        cur.execute(sql.SQL(prefix + "{}").format(statement), params)
        plan = [row[0] for row in cur.fetchall()]
    conn.rollback()
    numbers: dict[str, float] = {}
    for line in plan:
        for label in ("Planning Time", "Execution Time"):
            if line.startswith(label):
                numbers[label] = float(line.split(":")[1].split()[0])
        if "Timing:" in line and "Total" in line:  # the JIT section
            numbers["jit"] = float(line.rsplit("Total", 1)[1].split()[0])
    partition_nodes = [line for line in plan if _PARTITION_NODE.search(line)]
    return {
        "name": name or query_name(query),
        "sql": " ".join(text.split()),
        "planning_ms": numbers.get("Planning Time"),
        "execution_ms": numbers.get("Execution Time"),
        "jit_ms": numbers.get("jit"),
        "partition_scans": len(partition_nodes),
        "partition_scans_executed": sum("never executed" not in n for n in partition_nodes),
        "plan": plan,
    }


def fold_plan(plan: Sequence[str], keep: int = 2, limit: int = 60) -> list[str]:
    """A plan for reading: beyond the first ``keep`` scans of daily partitions, the scans
    are folded into one line (how many, how many ran, rows); the full plan is in the JSON."""
    out: list[str] = []
    shown = folded = executed = rows = 0
    summary_at: int | None = None
    indent = 0
    i = 0
    while i < len(plan):
        line = plan[i]
        if not _PARTITION_NODE.search(line):
            out.append(line)
            i += 1
            continue
        indent = line.index("->")
        j = i + 1
        while j < len(plan) and len(plan[j]) - len(plan[j].lstrip()) > indent:
            j += 1
        if shown < keep:
            out += plan[i:j]
            shown += 1
        else:
            folded += 1
            actual = _ACTUAL.search(line)
            if actual:
                executed += 1
                rows += int(actual[1]) * int(actual[2])
            if summary_at is None:
                summary_at = len(out)
                out.append("")
        i = j
    if summary_at is not None:
        out[summary_at] = (
            " " * indent + f"->  ... {folded} more partition scans like these, folded"
            f" ({executed} executed, {rows:,} rows in all)"
        )
    if len(out) > limit:
        out = [*out[:limit], f"... ({len(out) - limit} more lines; full plan in query.json)"]
    return out


def _median_ms(fn: Callable[[], Any], times: int, budget_s: float = 8.0) -> tuple[float, Any]:
    """Median of up to ``times`` timed calls after a warm-up call; stops early once the
    calls have taken ``budget_s`` (three calls at least), so a multi-second statement
    does not take minutes."""
    result = fn()  # warm
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < times and (len(samples) < 3 or time.perf_counter() - started < budget_s):
        mark = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - mark) * 1e3)
    return round(statistics.median(samples), 2), result


def _list_call(tenant: Tenant, scenario: Scenario) -> tuple[uuid.UUID, Any, Any]:
    """The arguments the view passes to list_events for this tenant's request."""
    from auditlog.cursor import decode_cursor
    from auditlog.filters import parse_filters

    params = scenario.params[tenant.index]
    errors: list[Any] = []
    filters = parse_filters(
        {k: [v] for k, v in params.items() if k not in ("limit", "cursor")}, errors
    )
    assert not errors, errors
    after = None
    if "cursor" in params:
        position = decode_cursor(params["cursor"], {"c", "i", "o"})
        after = (datetime.fromisoformat(position["c"]), uuid.UUID(position["i"]))
    return uuid.UUID(tenant.id), filters, after


def in_process_list(
    url: str, tenants: Sequence[Tenant], scenario: Scenario, times: int
) -> dict[str, Any]:
    """list_events (SQL + row decoding; rows rendered to JSON text by PostgreSQL), then the
    page's JSON text (orjson with the rows as fragments), as the view does, for tenant 0;
    EXPLAIN (ANALYZE, BUFFERS) of its statement; the planner's cost for every tenant's
    request (above jit_above_cost PostgreSQL JIT-compiles the plan) and, when any gets JIT,
    every tenant's request timed with jit on and off."""
    import orjson

    from auditlog.reads import list_events

    tenant = tenants[0]
    tenant_id, filters, after = _list_call(tenant, scenario)
    out: dict[str, Any] = {}
    with recording_connection(url) as conn:
        conn.autocommit = True

        def fetch() -> list[dict[str, Any]]:
            return list_events(
                conn, tenant_id, filters, limit=101, newest_first=True, after=after, rendered=True
            )

        _RECORD.clear()
        out["list_events_ms"], rows = _median_ms(fetch, times)
        out["statement_ms"] = round(statistics.median(r["ms"] for r in _RECORD[1:]), 2)
        out["json_ms"], _ = _median_ms(
            lambda: orjson.dumps(
                {"data": [orjson.Fragment(r["json"]) for r in rows[:100]], "next_cursor": "x"}
            ),
            times,
        )
        # The same statement without server-side prepared statements (psycopg prepares a
        # query after 5 executions on a connection; PostgreSQL may then use a generic plan).
        conn.prepare_threshold = None
        out["list_events_unprepared_ms"], _ = _median_ms(fetch, max(5, times // 2))
        record = _RECORD[-1]
        conn.autocommit = False
        out["explain"] = explain(conn, record["query"], record["params"])
        conn.autocommit = True
        costs = []
        for t in tenants:
            _RECORD.clear()
            t_id, t_filters, t_after = _list_call(t, scenario)
            list_events(conn, t_id, t_filters, limit=101, newest_first=True, after=t_after)
            query, params = _RECORD[-1]["query"], _RECORD[-1]["params"]
            plan = conn.execute(
                sql.SQL("EXPLAIN (FORMAT JSON) {}").format(query), params
            ).fetchone()[0][0]  # type: ignore[index]
            costs.append(
                {
                    "cost": round(plan["Plan"]["Total Cost"]),
                    "jit_functions": plan.get("JIT", {}).get("Functions", 0),
                }
            )
        out["plan_costs"] = costs
        out["jit_tenants"] = sum(1 for c in costs if c["jit_functions"])
        if out["jit_tenants"]:
            # Every tenant twice with jit on and off; once and three tenants only when a
            # request takes seconds.
            slow = out["list_events_ms"] > 1000
            subset = tenants[:3] if slow else tenants
            timings: dict[str, list[float]] = {}
            for setting in ("on", "off") if slow else ("on", "off", "on", "off"):
                conn.execute(sql.SQL("SET jit = {}").format(sql.SQL(setting)))
                for t in subset:
                    t_id, t_filters, t_after = _list_call(t, scenario)
                    mark = time.perf_counter()
                    list_events(conn, t_id, t_filters, limit=101, newest_first=True, after=t_after)
                    timings.setdefault(setting, []).append((time.perf_counter() - mark) * 1e3)
            out["all_tenants_ms"] = {
                f"jit_{k}": {"median": round(statistics.median(v), 1), "max": round(max(v), 1)}
                for k, v in timings.items()
            }
            out["all_tenants_ms"]["tenants"] = len(subset)
    _RECORD.clear()
    return out


def in_process_stats(url: str, tenant: Tenant, scenario: Scenario, times: int) -> dict[str, Any]:
    """tenant_stats as the view calls it: its statements one by one, and the Python rest."""
    from auditlog.stats import tenant_stats

    params = scenario.params[tenant.index]
    now = datetime.now(UTC)
    end = datetime.fromisoformat(params["to"]) if "to" in params else now
    start = datetime.fromisoformat(params["from"]) if "from" in params else end - timedelta(days=30)
    bucket = params.get("bucket", "day")
    tenant_id = uuid.UUID(tenant.id)
    with recording_connection(url) as conn:
        conn.autocommit = True
        tenant_stats(conn, tenant_id, start, end, bucket, now)  # type: ignore[arg-type]
        _RECORD.clear()
        totals: list[float] = []
        per_statement: dict[int, list[float]] = {}
        started = time.perf_counter()
        while len(totals) < times and (len(totals) < 3 or time.perf_counter() - started < 20):
            mark = time.perf_counter()
            tenant_stats(conn, tenant_id, start, end, bucket, now)  # type: ignore[arg-type]
            totals.append((time.perf_counter() - mark) * 1e3)
            for i, record in enumerate(_RECORD):
                per_statement.setdefault(i, []).append(record["ms"])
            statements = list(_RECORD)
            _RECORD.clear()
        conn.autocommit = False
        explained = []
        for i, record in enumerate(statements):
            with conn.cursor() as cur:
                rows = cur.execute(record["query"], record["params"]).fetchall()
            conn.rollback()
            entry = explain(conn, record["query"], record["params"])
            entry["median_ms_in_call"] = round(statistics.median(per_statement[i]), 2)
            entry["rows_returned"] = len(rows)
            explained.append(entry)
    total = statistics.median(totals)
    sql_ms = sum(e["median_ms_in_call"] for e in explained)
    return {
        "tenant_stats_ms": round(total, 2),
        "sql_ms": round(sql_ms, 2),
        "python_ms": round(total - sql_ms, 2),
        "statements": explained,
    }


def in_process_export(url: str, tenant: Tenant, since: datetime) -> dict[str, Any]:
    """Where an export's time goes: fetching and decoding rows (iter_events, the source of
    the NDJSON and Parquet writers), flattening them (flat_row), writing CSV in Python
    (write_csv); and COPY: the API's own COPY-based CSV (auditlog.reads.copy_csv) when the
    code has it, else a plain COPY (SELECT ...) TO STDOUT CSV of the same rows. When both
    CSV writers exist, which cells differ between them (a sample of the newest hour)."""
    import auditlog.reads as reads
    from auditlog.export import flat_row, write_csv
    from auditlog.filters import EventFilters

    tenant_id = uuid.UUID(tenant.id)
    filters = EventFilters(created_from=since)
    out: dict[str, Any] = {}

    def timed(name: str, fn: Callable[[psycopg.Connection[Any]], int]) -> None:
        with recording_connection(url) as conn:
            mark = time.perf_counter()
            rows = fn(conn)
            seconds = time.perf_counter() - mark
            conn.rollback()
        out[name] = {
            "rows": rows,
            "seconds": round(seconds, 2),
            "rows_per_s": round(rows / seconds),
        }

    def lines(chunks: Iterator[bytes]) -> int:
        return sum(chunk.count(b"\n") for chunk in chunks) - 1  # less the header

    iter_events = reads.iter_events
    timed("iter_events", lambda c: sum(1 for _ in iter_events(c, tenant_id, filters)))
    timed(
        "iter_events+flat_row",
        lambda c: sum(1 for r in iter_events(c, tenant_id, filters) if flat_row(r)),
    )
    timed("write_csv(iter_events)", lambda c: lines(write_csv(iter_events(c, tenant_id, filters))))
    copy_csv = getattr(reads, "copy_csv", None)
    if copy_csv is not None:
        timed("copy_csv (COPY)", lambda c: lines(copy_csv(c, tenant_id, filters)))
        out["cell_differences"] = csv_cell_differences(url, tenant_id, copy_csv, write_csv)
    else:

        def plain_copy(conn: psycopg.Connection[Any]) -> int:
            where, params = filters.where(tenant_id)
            query = sql.SQL(
                "COPY (SELECT {} FROM audit_logs WHERE {} ORDER BY created_at, id)"
                " TO STDOUT (FORMAT csv, HEADER)"
            ).format(sql.SQL(reads.EVENT_COLUMNS), where)
            with conn.cursor() as cur, cur.copy(query, params) as copy:
                return lines(bytes(data) for data in copy)

        timed("postgres COPY TO STDOUT csv", plain_copy)
    # The cursor's own plans: this export's, and a whole-tenant export's (no from); and, for
    # the COPY-based CSV, the whole-tenant statement planned as COPY plans it: as a plain
    # query (COPY has no cursor, so no fast-start plan).
    plans = [("explain", filters, True), ("explain_tenant", EventFilters(), True)]
    if copy_csv is not None:
        plans.append(("explain_tenant_copy", EventFilters(), False))
    for key, export_filters, as_cursor in plans:
        _RECORD.clear()
        with recording_connection(url) as conn:
            # A generator (typed as an Iterator): closing it closes its server-side cursor.
            rows = cast(Generator[Any], iter_events(conn, tenant_id, export_filters))
            next(rows)
            rows.close()
            record = _RECORD[-1]
            conn.rollback()
            out[key] = explain(conn, record["query"], record["params"], "iter_events", as_cursor)
    _RECORD.clear()
    return out


def csv_cell_differences(
    url: str, tenant_id: uuid.UUID, copy_csv: Any, write_csv: Any
) -> dict[str, Any]:
    """The COPY-based CSV against write_csv over the tenant's newest hour: the columns whose
    cells differ (with one example each), and whether the line endings agree."""
    import csv
    import io

    from auditlog.filters import EventFilters
    from auditlog.reads import iter_events

    with psycopg.connect(url, options=SESSION_OPTIONS) as conn:
        newest = conn.execute(
            "SELECT max(created_at) FROM audit_logs WHERE tenant_id = %s", (tenant_id,)
        ).fetchone()[0]  # type: ignore[index]
        filters = EventFilters(created_from=newest - timedelta(hours=1))
        python_bytes = b"".join(write_csv(iter_events(conn, tenant_id, filters)))
        conn.rollback()
        copy_bytes = b"".join(copy_csv(conn, tenant_id, filters))
        conn.rollback()
    python_rows = list(csv.reader(io.StringIO(python_bytes.decode())))
    copy_rows = list(csv.reader(io.StringIO(copy_bytes.decode())))
    header = python_rows[0]
    columns: dict[str, dict[str, str]] = {}
    for a, b in zip(python_rows, copy_rows, strict=False):
        for name, x, y in zip(header, a, b, strict=False):
            if x != y and name not in columns:
                columns[name] = {"write_csv": x[:200], "copy_csv": y[:200]}
    return {
        "rows_compared": min(len(python_rows), len(copy_rows)) - 1,
        "same_row_count": len(python_rows) == len(copy_rows),
        "identical_bytes": python_bytes == copy_bytes,
        "line_ending": {
            "write_csv": "CRLF" if b"\r\n" in python_bytes else "LF",
            "copy_csv": "CRLF" if b"\r\n" in copy_bytes else "LF",
        },
        "differing_columns": columns,
    }


# ---------------------------------------------------------------------------------------
# The run: scenarios interleaved in rounds, exports, in-process breakdowns, EXPLAIN.


def cpu_classifier(api: Api, db_name: str) -> machine.Classifier:
    """CPU groups while measuring: the API under test, PostgreSQL serving the bench database,
    PostgreSQL serving anything else; the rest of the machine ends up in "other"."""
    api_pgrp = os.getpgid(api.child.process.pid)

    def classify(pid: int, pgrp: int, cmdline: str) -> str | None:
        if pgrp == api_pgrp:
            return "api"
        if cmdline.startswith("postgres: "):
            return "postgres (bench db)" if f" {db_name} " in cmdline else "postgres (other)"
        return None

    return classify


def wait_for_database(url: str, timeout: float = 600) -> None:
    """Until PostgreSQL accepts connections again (something else on this machine may stop
    and restart it: the reliability tests do), then a few seconds for the API's pool."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(url, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not come back within {timeout:.0f} s") from None
            time.sleep(2)
    time.sleep(5)


def measured_run(
    wrk: Wrk,
    requests_list: Sequence[tuple[str, str]],
    connections: int,
    seconds: float,
    classify: machine.Classifier,
) -> dict[str, Any]:
    """One wrk run with the CPU use of each group; a run that saw errors (say, PostgreSQL
    restarted by someone else) is kept aside and the run repeated, twice at most."""
    discarded = []
    for _ in range(3):
        with machine.measure_cpu(classify) as cores:
            run = wrk.run(requests_list, connections, seconds)
        run["cpu_cores"] = dict(cores)
        if run["errors"] == 0:
            break
        discarded.append(run)
        say(f"  run with {run['errors']} errors ({run['statuses']}); repeating it")
        wait_for_database(wrk.database_url)
    if discarded:
        run["discarded_runs"] = discarded
    return run


def measure_http(
    args: argparse.Namespace,
    api: Api,
    wrk: Wrk,
    tenants: Sequence[Tenant],
    scenarios: Sequence[Scenario],
    classify: machine.Classifier,
) -> None:
    for s in scenarios:
        first = preflight(api, tenants, s)
        if statistics.median(first) > args.slow_ms:
            s.slow = True
            say(f"  {s.key}: {statistics.median(first):,.0f} ms a request; measured serially")
        else:
            wrk.run(s.requests(tenants), args.connections, args.warmup)
    for round_no in range(1, args.repeats + 1):
        for s in scenarios:
            if s.slow:
                if round_no > 2:
                    continue  # two serial rounds of ten requests are enough for a 1 s+ request
                with machine.measure_cpu(classify) as cores:
                    run = serial_run(api, tenants, s)
                run["cpu_cores"] = dict(cores)
            else:
                run = measured_run(
                    wrk, s.requests(tenants), args.connections, args.duration, classify
                )
            run["round"] = round_no
            s.runs.append(run)
            lat = run["latency_ms"]
            say(
                f"  round {round_no} {s.key:<24} {run['requests_per_s']:>7,.1f} req/s"
                f"  p50 {lat['p50']:>7.1f} ms  p99 {lat['p99']:>7.1f} ms  errors {run['errors']}"
                f"  other CPU {run['cpu_cores'].get('other', 0):.2f} cores"
            )
    if args.serial_duration > 0:
        for s in scenarios:
            if s.slow:
                continue  # its runs are serial already
            s.serial = measured_run(wrk, s.requests(tenants), 1, args.serial_duration, classify)
            lat = s.serial["latency_ms"]
            say(f"  serial  {s.key:<24} c=1  p50 {lat['p50']:>7.1f} ms  p99 {lat['p99']:>7.1f} ms")


def measure_exports(
    args: argparse.Namespace, url: str, api: Api, tenant: Tenant, plan: Plan
) -> dict[str, Any]:
    since = datetime.fromtimestamp((plan.end_ms - 7 * DAY_MS) / 1000, UTC).replace(microsecond=0)
    week_rows = count_matching(url, tenant.id, since)
    all_rows = count_matching(url, tenant.id, None)
    out: dict[str, Any] = {"tenant": tenant.id, "week_rows": week_rows, "tenant_rows": all_rows}
    out["csv_7d"] = []
    for i in range(args.repeats):
        run = http_export(api, tenant, "csv", since, week_rows)
        out["csv_7d"].append(run)
        say(
            f"  export csv 7 days #{i + 1}: {run['rows']:,} rows in {run['seconds']} s"
            f" = {run['rows_per_s']:,} rows/s, {run['mb_per_s']} MB/s"
        )
    for fmt in ("ndjson", "parquet"):
        run = http_export(api, tenant, fmt, since, week_rows)
        out[f"{fmt}_7d"] = run
        say(f"  export {fmt} 7 days: {run['rows']:,} rows = {run['rows_per_s']:,} rows/s")
    if not args.skip_full_export:
        run = http_export(api, tenant, "csv", None, all_rows)
        out["csv_tenant"] = run
        say(
            f"  export csv whole tenant: {run['rows']:,} rows, {run['bytes'] / 1e6:,.0f} MB in"
            f" {run['seconds']} s = {run['rows_per_s']:,} rows/s;"
            f" worker RSS growth {run['rss_growth_mib']} MiB"
        )
    return out


def in_process(
    args: argparse.Namespace,
    url: str,
    tenants: Sequence[Tenant],
    scenarios: Sequence[Scenario],
    plan: Plan,
    export_tenant: Tenant,
) -> dict[str, Any]:
    tenant = tenants[0]
    out: dict[str, Any] = {"tenant": tenant.id, "scenarios": {}}
    for s in scenarios:
        if s.kind == "list":
            out["scenarios"][s.key] = in_process_list(url, tenants, s, args.inprocess_times)
        else:
            out["scenarios"][s.key] = in_process_stats(url, tenant, s, args.inprocess_times)
    since = datetime.fromtimestamp((plan.end_ms - 7 * DAY_MS) / 1000, UTC).replace(microsecond=0)
    out["export_csv_7d"] = in_process_export(url, export_tenant, since)
    return out


# ---------------------------------------------------------------------------------------
# Results: bench/results/query.json (everything) and query.md (the tables).


def _n(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _mark(value: float, target: float, higher_is_better: bool = False) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "meets" if ok else "misses"


def baseline_lines(data: dict[str, Any]) -> list[str]:
    base = data.get("baseline")
    if not base:
        return []
    code = base["code"]
    lines = [
        "",
        f"**Against the baseline run** of {base['measured_at']} (commit"
        f" `{base['git_commit'][:12]}`: sessions `{code.get('session_options')}`, CSV by"
        f" {code.get('csv_export')}), same data set and scenarios:",
        "",
        "| scenario | baseline p50 / p99 ms | now p50 / p99 ms | baseline c=1 p50 / p99 |"
        " now c=1 p50 / p99 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for s in data["scenarios"]:
        old = base["scenarios"].get(s["key"])
        if not old:
            continue
        med = s["median"]
        now_serial = (s.get("serial_c1") or {}).get("latency_ms") or {}
        lines.append(
            f"| {s['label']} | {_n(old['p50_ms'], 1)} / {_n(old['p99_ms'], 1)}"
            f"{' †' if old['slow_serial'] else ''}"
            f" | {_n(med['p50_ms'], 1)} / {_n(med['p99_ms'], 1)}"
            f"{' †' if s.get('slow_serial') else ''}"
            f" | {_n(old['serial_p50_ms'], 1)} / {_n(old['serial_p99_ms'], 1)}"
            f" | {_n(now_serial.get('p50'), 1)} / {_n(now_serial.get('p99'), 1)} |"
        )
    ex, bex = data["exports"], base["exports"]
    now_csv = statistics.median(r["rows_per_s"] for r in ex["csv_7d"])
    tenant = ex.get("csv_tenant", {})
    lines += [
        "",
        f"Exports, rows/s baseline → now: CSV 7 days {_n(bex['csv_7d'])} → {_n(now_csv)};"
        f" NDJSON {_n(bex['ndjson_7d'])} → {_n(ex.get('ndjson_7d', {}).get('rows_per_s'))};"
        f" Parquet {_n(bex['parquet_7d'])} → {_n(ex.get('parquet_7d', {}).get('rows_per_s'))};"
        f" CSV whole tenant {_n(bex['csv_tenant'])} → {_n(tenant.get('rows_per_s'))}"
        f" (first byte {bex['csv_tenant_first_byte_s']} s → {tenant.get('first_byte_s')} s,"
        f" RSS growth {bex['csv_tenant_rss_growth_mib']} → {tenant.get('rss_growth_mib')} MiB).",
    ]
    return lines


def _jit_text(entry: dict[str, Any]) -> str:
    jit = entry.get("jit_ms")
    return f"JIT {jit:,.0f} ms (paid before the first row)" if jit else "no JIT"


def _daily_stats_lines(data: dict[str, Any]) -> list[str]:
    daily = data.get("daily_stats")
    if not daily or not daily.get("days_current"):
        return []
    built = (
        f" (this run built {daily['days_built']} days in {daily['build_seconds']} s,"
        f" {daily['events_built']:,} events)"
        if daily["days_built"]
        else ""
    )
    return [
        "* daily_stats (auditlog/daily_stats.py, as the asset builds them):"
        f" {daily['days_current']} closed days current,"
        f" {daily['tenant_days_current']:,} tenant-days{built}."
    ]


def markdown(data: dict[str, Any]) -> str:
    m, db, load = data["machine"], data["database"], data["load"]
    cfg = data["config"]
    lines = [
        "# Read-path benchmark: listing, stats and export over a large audit log",
        "",
        f"Measured {m['measured_at']} by `bench/query.py` on {m['nproc']} CPUs ({m['cpu_model']}),"
        f" {m['memory_gib']} GiB, Python {m['python']}, PostgreSQL {db['server_version']};"
        f" commit `{m['git_commit'][:12]}`"
        f"{' (work tree with uncommitted changes)' if m['git_dirty'] else ''}."
        f" Load average at start {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}"
        " (the machine is shared with the local stack and other jobs; every number below"
        " was measured with them running).",
        "",
        f"Code measured: database sessions `{data.get('code', {}).get('session_options', '?')}`;"
        f" CSV export by {data.get('code', {}).get('csv_export', '?')}.",
        "",
        "## Data set",
        "",
        f"* **{data['plan']['events']:,} events**, {N_TENANTS} tenants (0.7x to 1.3x of the"
        f" mean size), {data['plan']['start']} to {data['plan']['end']} (90 days), in database"
        f" `{data['database_name']}`: {db['partitions']} daily partitions, heap"
        f" {db['heap_bytes'] / 2**30:.2f} GiB, indexes {db['index_bytes'] / 2**30:.2f} GiB"
        f" (database {db['database_bytes'] / 2**30:.2f} GiB); audit_stats_hourly"
        f" {db['stats_hourly_rows']:,} rows.",
        *_daily_stats_lines(data),
        f"* Per tenant {USERS_PER_TENANT:,} users (activity ~ 1/rank^{USER_ZIPF}),"
        f" {RESOURCES_PER_TENANT:,} resources of {len(RESOURCE_TYPES)} types"
        f" (popularity ~ 1/rank^{RESOURCE_ZIPF}), actions VIEW/UPDATE/CREATE/DELETE"
        " 55/25/12/8 %, severities INFO/WARNING/ERROR/CRITICAL 88/8/3.2/0.8 %, metadata"
        " ~185 bytes of JSON, before/after states on writes.",
        f"* **Load**: COPY (text) with {load['jobs']} parallel connections, one transaction per"
        f" day: **{load['copy_rows_per_s']:,} rows/s** ({load['copy_seconds']} s for"
        f" {load['rows']:,} rows, all five indexes in place; Python generation was"
        f" {load['python_generate_share']:.0%} of the loaders' time), then hourly stats"
        f" (one INSERT ... SELECT ... GROUP BY) {load['stats_fill_seconds']} s, VACUUM"
        f" (ANALYZE) {load['vacuum_analyze_seconds']} s."
        + (
            f" (Loaded {load['loaded_at']}; this run reused the database.)"
            if data["database_reused"]
            else ""
        ),
        "* PostgreSQL settings: "
        + ", ".join(f"{k} {v}" for k, v in sorted(db["settings"].items()))
        + ".",
        "",
        f"## Listing and stats over HTTP (wrk, {cfg['connections']} keep-alive connections,"
        f" {cfg['duration']:.0f} s x {cfg['repeats']}, medians)",
        "",
        f"API: gunicorn, {cfg['workers']} workers (infra/run.py's command). Each request is"
        f" for one of the {N_TENANTS} tenants in turn (a `reader` token each). *c=1*: one"
        f" connection for {cfg['serial_duration']:.0f} s (the unloaded latency). *SQL*:"
        " execution time from EXPLAIN ANALYZE (tenant 0, same parameters). *In-process*:"
        " `list_events` (SQL + rows rendered to JSON by PostgreSQL) and the page's JSON"
        " text, as the view runs them, median of repeated calls.",
        "",
        "| scenario | rows/page | req/s | p50 ms | p99 ms | p99 per run | c=1 p50 / p99 ms"
        " | CPU ms/req API + PG | SQL plan + exec ms | in-process ms (SQL+decode / JSON)"
        " | other CPU | target |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    inproc = data["in_process"]["scenarios"]
    for s in data["scenarios"]:
        med = s["median"]
        target_text, target_ms = TARGETS[s["kind"]]
        serial = s["serial_c1"]["latency_ms"] if s["serial_c1"] else None
        ip = inproc.get(s["key"], {})
        if s["kind"] == "list":
            ex = ip.get("explain", {})
            sql_text = f"{_n(ex.get('planning_ms'), 1)} + {_n(ex.get('execution_ms'), 1)}"
            ip_text = f"{_n(ip.get('list_events_ms'), 1)} / {_n(ip.get('json_ms'), 1)}"
        else:
            statements = ip.get("statements", [])
            plan_ms = sum(st["planning_ms"] or 0 for st in statements)
            exec_ms = sum(st["execution_ms"] or 0 for st in statements)
            sql_text = f"{_n(plan_ms, 1)} + {_n(exec_ms, 1)}"
            ip_text = f"{_n(ip.get('sql_ms'), 1)} SQL + {_n(ip.get('python_ms'), 1)} Python"
        rows = s["page_rows"]
        lines.append(
            f"| {s['label']}{' † (serial, c=1)' if s.get('slow_serial') else ''}"
            f" | {_n(statistics.median(rows)) if rows else '-'}"
            f" | {_n(med['requests_per_s'])} | {_n(med['p50_ms'], 1)} | **{_n(med['p99_ms'], 1)}**"
            f" | {', '.join(_n(r['latency_ms']['p99'], 1) for r in s['runs'])}"
            f" | {_n(serial['p50'], 1) if serial else '-'}"
            f" / {_n(serial['p99'], 1) if serial else '-'}"
            f" | {_n(med.get('api_cpu_ms'), 1)} + {_n(med.get('pg_cpu_ms'), 1)}"
            f" | {sql_text} | {ip_text} | {med.get('other_cpu_cores', 0):.2f}"
            f" | {target_text}: {_mark(med['p99_ms'], target_ms)} |"
        )
    errors = sum(s["median"]["errors_total"] for s in data["scenarios"])
    lines += [
        "",
        f"Non-200 answers or socket errors over all runs: {errors}. Stats *rows/page* is the"
        " tenant's total_logs in the range. *other CPU*: cores used meanwhile by processes"
        " that are neither the API, PostgreSQL nor wrk (median over the runs; the machine"
        " has 2). *CPU ms/req*: CPU time of the API's processes and of PostgreSQL's backends"
        " per request (from /proc, over each run). †: a scenario whose first requests took over"
        f" {cfg.get('slow_ms', 1000):,.0f} ms is measured one request at a time (two runs of"
        " one request per tenant; p99 is the slowest of the ten), because a timed wrk run"
        " would leave its requests running in the API after wrk stops and slow the next"
        " scenario.",
    ]
    lines += baseline_lines(data)
    deep = data.get("deep_cursor_walk")
    if deep:
        lines.append(
            f"Walking to page 101 (100 sequential requests per tenant): median page"
            f" {deep['median_ms']} ms, slowest {deep['max_ms']} ms."
        )
    ex = data["exports"]
    lines += [
        "",
        "## Exports over HTTP (streamed to /dev/null by a Python client)",
        "",
        f"Tenant {ex['tenant']} ({ex['tenant_rows']:,} events; {ex['week_rows']:,} in its last"
        " 7 days).",
        "",
        "| export | rows | MB | seconds | first byte s | rows/s | MB/s"
        " | worker RSS growth MiB | target |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    export_rows: list[tuple[str, dict[str, Any]]] = [
        (f"CSV, last 7 days (run {i + 1})", r) for i, r in enumerate(ex["csv_7d"])
    ]
    export_rows += [
        ("NDJSON, last 7 days", ex["ndjson_7d"]),
        ("Parquet, last 7 days", ex["parquet_7d"]),
    ]
    if "csv_tenant" in ex:
        export_rows.append(("CSV, whole tenant", ex["csv_tenant"]))
    for label, r in export_rows:
        target = ""
        if r["format"] == "csv":
            target = f"{TARGETS['export'][0]}: {_mark(r['rows_per_s'], TARGETS['export'][1], True)}"
        lines.append(
            f"| {label} | {r['rows']:,} | {r['bytes'] / 1e6:,.1f} | {r['seconds']} |"
            f" {r['first_byte_s']} | **{r['rows_per_s']:,}** | {r['mb_per_s']} |"
            f" {r['rss_growth_mib']} | {target} |"
        )
    csv_median = statistics.median(r["rows_per_s"] for r in ex["csv_7d"])
    lines += ["", f"Median CSV rate over the 7-day runs: **{csv_median:,.0f} rows/s**."]
    if "csv_tenant" in ex:
        full = ex["csv_tenant"]
        lines += [
            "",
            f"RSS of the gunicorn workers during the whole-tenant CSV export ({full['rows']:,}"
            " rows; VmRSS sampled every 50 ms):",
            "",
            "| worker pid | before MiB | peak MiB | 1 s after MiB |",
            "| --- | ---: | ---: | ---: |",
        ]
        for pid, rss in full["rss_mib"].items():
            lines.append(f"| {pid} | {rss['before']} | {rss['peak']} | {rss['after']} |")
        growth = full["rss_growth_mib"]
        lines += [
            "",
            f"Growth of the serving worker: **{growth} MiB** for {full['rows']:,} rows"
            f" (target: {TARGETS['export_rss'][0]}:"
            f" {_mark(growth, TARGETS['export_rss'][1])} at this size; the export streams"
            " through a server-side cursor, so the growth does not scale with rows).",
        ]
    ipe = data["in_process"]["export_csv_7d"]
    lines += [
        "",
        "## Where the time goes",
        "",
        "### CSV export, in-process (same tenant, last 7 days, one connection)",
        "",
        "| stage | rows | seconds | rows/s |",
        "| --- | ---: | ---: | ---: |",
    ]
    for stage, r in ipe.items():
        if isinstance(r, dict) and "rows_per_s" in r:
            lines.append(f"| `{stage}` | {r['rows']:,} | {r['seconds']} | {r['rows_per_s']:,} |")
    lines += [
        "",
        "EXPLAIN (ANALYZE, BUFFERS) DECLARE ... CURSOR of the export's statement (the cursor"
        f" is planned for a fast start): {_n(ipe['explain']['execution_ms'], 1)} ms execution,"
        f" {_jit_text(ipe['explain'])}; for a whole-tenant export (no from):"
        f" {_n(ipe.get('explain_tenant', {}).get('execution_ms'), 1)} ms execution,"
        f" {_jit_text(ipe.get('explain_tenant', {}))}.",
        "",
        "### Stats, statement by statement (tenant 0, in-process)",
        "",
        "Statements named as in auditlog/store/queries.sql (or stats.sql); *ms in call*:"
        " median time of"
        " the statement inside `tenant_stats` (round trip and transfer, before decoding);"
        " planning, execution and JIT from EXPLAIN ANALYZE.",
        "",
        "| scenario | statement | rows returned | ms in call | planning ms | execution ms"
        " | JIT ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, ip in inproc.items():
        if "statements" not in ip:
            continue
        for st in ip["statements"]:
            lines.append(
                f"| {key} | `{st['name']}` | {st['rows_returned']:,} |"
                f" {st['median_ms_in_call']} | {_n(st['planning_ms'], 1)} |"
                f" {_n(st['execution_ms'], 1)} | {_n(st.get('jit_ms'), 1)} |"
            )
        lines.append(
            f"| {key} | **tenant_stats total** (of which Python) | |"
            f" **{ip['tenant_stats_ms']}** ({ip['python_ms']}) | | | |"
        )
    lines += [
        "",
        "### Listing: planning, prepared statements and JIT (in-process)",
        "",
        "psycopg prepares a statement after 5 executions on a connection (the API's pooled"
        " connections do too), after which PostgreSQL may switch to a generic plan."
        " *JIT*: how many of the 10 tenants' requests the planner costs above"
        " jit_above_cost, so that PostgreSQL JIT-compiles the plan (one expression set per"
        " partition); for those scenarios every tenant's request timed with jit on and off.",
        "",
        "| scenario | list_events ms (prepared after 5) | unprepared ms | planning ms"
        " | execution ms | planner cost (min-max) | JIT | all tenants ms, jit on / off |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, ip in inproc.items():
        if "list_events_ms" in ip:
            costs = [c["cost"] for c in ip.get("plan_costs", [])]
            both = ip.get("all_tenants_ms")
            onoff = (
                f"{both['jit_on']['median']} (max {both['jit_on']['max']}) /"
                f" {both['jit_off']['median']} (max {both['jit_off']['max']})"
                if both
                else "-"
            )
            lines.append(
                f"| {key} | {ip['list_events_ms']} | {ip['list_events_unprepared_ms']} |"
                f" {_n(ip['explain']['planning_ms'], 1)} | {_n(ip['explain']['execution_ms'], 1)}"
                f" | {_n(min(costs)) if costs else '-'}-{_n(max(costs)) if costs else '-'}"
                f" | {ip.get('jit_tenants', 0)}/{len(costs)} | {onoff} |"
            )
    lines += ["", "## EXPLAIN (ANALYZE, BUFFERS) of the slowest scenarios", ""]
    for key, entry in slowest_plans(data, 3):
        lines += [f"### {key}", "", "```sql", entry["sql"], "```", "", "```"]
        lines += fold_plan(entry["plan"])
        lines += ["```", ""]
    lines += observations(data)
    return "\n".join(lines) + "\n"


def slowest_plans(data: dict[str, Any], count: int) -> list[tuple[str, dict[str, Any]]]:
    """The EXPLAINs of the scenarios with the highest p99, slowest statement first."""
    ranked = sorted(data["scenarios"], key=lambda s: -s["median"]["p99_ms"])[:count]
    out = []
    for s in ranked:
        ip = data["in_process"]["scenarios"].get(s["key"], {})
        if "explain" in ip:
            out.append((s["key"], ip["explain"]))
        for st in sorted(ip.get("statements", []), key=lambda e: -(e["execution_ms"] or 0))[:2]:
            out.append((f"{s['key']}: {st['name']}", st))
    return out


def _buffers_gib(plan: Sequence[str]) -> float:
    """Shared buffers hit + read by the top plan node, in GiB."""
    line = next((ln for ln in plan if ln.strip().startswith("Buffers: shared")), "")
    pages = sum(int(m) for m in re.findall(r"(?:hit|read)=(\d+)", line.split(",")[0]))
    return pages * 8192 / 2**30


def observations(data: dict[str, Any]) -> list[str]:
    """Findings computed from the numbers, then the suggestions they lead to."""
    scen = {s["key"]: s for s in data["scenarios"]}
    ip = data["in_process"]["scenarios"]
    out = ["## Findings", ""]

    lists = [k for k, s in scen.items() if s["kind"] == "list"]
    met = [k for k in lists if scen[k]["median"]["p99_ms"] <= TARGETS["list"][1]]
    serial_met = [
        k
        for k in lists
        if scen[k]["serial_c1"] and scen[k]["serial_c1"]["latency_ms"]["p99"] <= TARGETS["list"][1]
    ]
    stats_keys = [k for k, s in scen.items() if s["kind"] == "stats"]
    stats_met = [k for k in stats_keys if scen[k]["median"]["p99_ms"] <= TARGETS["stats"][1]]
    ex = data["exports"]
    csv_rate = statistics.median(r["rows_per_s"] for r in ex["csv_7d"])
    full = ex.get("csv_tenant")
    out.append(
        f"* **Targets.** Listing p99 ≤ 50 ms at {data['config']['connections']} connections:"
        f" {len(met)} of {len(lists)} scenarios ({', '.join(met) or 'none'}); one request at"
        f" a time (c=1): {len(serial_met)} ({', '.join(serial_met) or 'none'}). Stats p99 ≤"
        f" 100 ms: {len(stats_met)} of {len(stats_keys)}. CSV export: {csv_rate:,.0f} rows/s"
        " against 100,000."
        + (
            f" Export RSS growth: {full['rss_growth_mib']} MiB over {full['rows']:,} CSV rows"
            " (flat: the export streams)."
            if full
            else ""
        )
    )
    other = [s["median"].get("other_cpu_cores", 0.0) for s in data["scenarios"]]
    out.append(
        f"* **A shared machine.** Other processes used {statistics.median(other):.2f} cores"
        f" (median; up to {max(other):.2f}) of the 2 while the HTTP scenarios ran. The"
        " in-process and EXPLAIN numbers below are less sensitive to that and say where the"
        " time goes."
    )
    lf = scen.get("list_first")
    if lf and lf["median"].get("api_cpu_ms") is not None:
        m = lf["median"]
        cpu = m["api_cpu_ms"] + m["pg_cpu_ms"]
        out.append(
            f"* **At {data['config']['connections']} connections the 2 cores are the limit.**"
            f" A first page costs {m['api_cpu_ms']:.1f} ms of API CPU and {m['pg_cpu_ms']:.1f}"
            f" ms of PostgreSQL CPU, so two cores serve at most ~{2000 / cpu:,.0f} a second"
            f" (measured {m['requests_per_s']:,.0f}); a request mostly waits for a core, and"
            " the tail (p99) is that wait. Cutting CPU per request is what lowers it."
        )
    first = ip.get("list_first", {})
    day = ip.get("list_one_day", {})
    if first and day and data.get("code", {}).get("list_windows"):
        fx = first["explain"]
        out.append(
            "* **Listing searches widening windows** (auditlog.reads.LIST_WINDOWS: 1, 7, 31"
            " days back from the newest row the page can hold, then everything): the first"
            f" page's statement plans {fx['partition_scans']} partitions in"
            f" {fx['planning_ms']} ms and executes in {fx['execution_ms']} ms (the unbounded"
            " statement planned all daily partitions: see the baseline's EXPLAIN)."
        )
    elif first and day:
        fx, dx = first["explain"], day["explain"]
        api_cpu = scen["list_first"]["median"].get("api_cpu_ms")
        out.append(
            f"* **Planning dominates a listing query.** The first page executes in"
            f" {fx['execution_ms']} ms but takes {fx['planning_ms']} ms to plan: the statement"
            " has no bound on created_at, so the planner works through all"
            f" {fx['partition_scans']} daily partitions and their 5 indexes each (an ordered"
            f" Append; only {fx['partition_scans_executed']} partitions are touched at run"
            " time). With from/to one day, pruning leaves 1-2 partitions: planning"
            f" {dx['planning_ms']} ms, execution {dx['execution_ms']} ms. Planning work grows"
            " with the partitions kept: at 365 days of retention it is about 4x today's."
            + (
                f" On the API's side a first page costs {api_cpu:.1f} ms of CPU (from /proc,"
                " under load), of which the page's JSON text (100 rendered rows) is"
                f" {first['json_ms']} ms in-process; the rest is reading the rows (psycopg),"
                " Flask, JWT verification, logging and gunicorn."
                if api_cpu
                else ""
            )
        )
    for key in lists:
        entry = ip.get(key, {})
        if not entry.get("jit_tenants"):
            continue
        costs = [c["cost"] for c in entry["plan_costs"]]
        both = entry["all_tenants_ms"]
        funcs = max(c["jit_functions"] for c in entry["plan_costs"])
        out.append(
            f"* **JIT compilation of a partitioned plan ({key}).** The planner costs"
            f" {entry['jit_tenants']} of the 10 tenants' requests above jit_above_cost"
            f" (100,000; costs {min(costs):,} to {max(costs):,}), so PostgreSQL JIT-compiles"
            f" the plan: up to {funcs} functions, the expressions of every partition's scan."
            f" The same requests in-process ({both.get('tenants', 10)} tenants): median"
            f" {both['jit_on']['median']:,} ms (max {both['jit_on']['max']:,}) with jit on,"
            f" {both['jit_off']['median']:,} ms (max {both['jit_off']['max']:,}) with jit off."
        )
    nomatch = ip.get("list_ip_nomatch")
    if nomatch:
        nx = nomatch["explain"]
        seq = any("Seq Scan" in ln for ln in nx["plan"])
        how = (
            "the planner expects a few matches scattered everywhere and picks a parallel"
            " sequential scan of every partition, all tenants' rows included, then a sort"
            if seq
            else "the scan walks every row of the tenant through the time index"
        )
        jit = " with JIT (see above for jit off)" if nx.get("jit_ms") else ""
        ip_index = any(
            "ip_address" in d for d in data.get("database", {}).get("indexes", {}).values()
        )
        if ip_index:
            out.append(
                f"* **ip filter for a /24 without events**: {nx['execution_ms']:,.1f} ms"
                f" execution, {_buffers_gib(nx['plan']):.3f} GiB of buffers, with the index"
                " on (tenant_id, ip_address) (migration 0006)."
            )
        else:
            out.append(
                "* **An ip filter that matches little reads far too much.** There is no index on"
                f" ip_address. For a /24 without events {how}: {_buffers_gib(nx['plan']):.1f} GiB"
                f" of buffers, {nx['execution_ms']:,.0f} ms{jit}. The office /24 (~4 % of"
                " events) finds its 100 rows after ~2,500 rows of the time index."
            )
    for key in stats_keys:
        entry = ip.get(key)
        if not entry:
            continue
        by_name: dict[str, float] = {}
        rows_by_name: dict[str, int] = {}
        jit_ms = 0.0
        for st in entry["statements"]:
            by_name[st["name"]] = by_name.get(st["name"], 0) + st["median_ms_in_call"]
            rows_by_name[st["name"]] = rows_by_name.get(st["name"], 0) + st["rows_returned"]
            jit_ms += st.get("jit_ms") or 0
        if "built_days" in by_name:  # the daily aggregates (migration 0006)
            parts = ", ".join(
                f"{name} {ms:,.1f} ms ({rows_by_name[name]:,} rows)"
                for name, ms in sorted(by_name.items(), key=lambda kv: -kv[1])
            )
            out.append(
                f"* **Stats ({key}): {entry['tenant_stats_ms']:,.1f} ms in-process** from"
                " daily_stats for the built days, hourly aggregates and raw rows for the rest:"
                f" {parts}; Python {entry['python_ms']:,.1f} ms."
            )
            continue
        tops = by_name.get("stats_top_resources", 0) + by_name.get("stats_top_users", 0)
        scanned = [
            int(m[1]) * int(m[2])
            for st in entry["statements"]
            if st["name"] == "stats_top_resources"
            for ln in st["plan"]
            if "Append" in ln and (m := _ACTUAL.search(ln))
        ]
        out.append(
            f"* **Stats ({key}): {entry['tenant_stats_ms']:,.0f} ms in-process.** The top"
            f" resources and top users statements take {tops:,.0f} ms"
            + (f" (each aggregates {scanned[0]:,} raw rows)" if scanned else "")
            + "; the hourly aggregates return"
            f" {rows_by_name.get('stats_hours_aggregated', 0):,} rows that Python folds into"
            f" the answer ({entry['python_ms']:,.0f} ms of Python, including last_7_days,"
            " which fetches a week of hourly rows only to sum them)"
            + (f"; JIT adds {jit_ms:,.0f} ms" if jit_ms else "")
            + "."
        )
    stages = data["in_process"]["export_csv_7d"]
    python_path = (
        "iter_events alone (psycopg builds a dict per row and parses three jsonb columns)"
        f" {stages['iter_events']['rows_per_s']:,} rows/s; with flat_row (json.dumps of those"
        " columns with sorted keys, hex of the hashes, str of the UUIDs)"
        f" {stages['iter_events+flat_row']['rows_per_s']:,} rows/s; write_csv"
        f" {stages['write_csv(iter_events)']['rows_per_s']:,} rows/s"
    )
    copy_stage = stages.get("copy_csv (COPY)")
    if copy_stage:
        ndjson = ex.get("ndjson_7d", {}).get("rows_per_s")
        out.append(
            "* **CSV comes from PostgreSQL's COPY now; NDJSON and Parquet still from Python.**"
            f" In-process on the same rows, copy_csv runs at {copy_stage['rows_per_s']:,}"
            f" rows/s, over HTTP {csv_rate:,.0f} rows/s (median of the 7-day runs). The"
            f" Python path that NDJSON ({ndjson:,} rows/s over HTTP) and Parquet still take:"
            f" {python_path}."
        )
        diff = stages.get("cell_differences")
        if diff and not diff["identical_bytes"]:
            cols = diff["differing_columns"]
            example = next(iter(cols.items()), None)
            out.append(
                "* **The COPY CSV is not byte-identical to write_csv's** (newest hour of the"
                f" tenant, {diff['rows_compared']:,} rows): cells differ in"
                f" {', '.join(cols) or 'no column'}"
                + (
                    f" (e.g. {example[0]}: write_csv `{example[1]['write_csv'][:70]}` vs"
                    f" COPY `{example[1]['copy_csv'][:70]}`: PostgreSQL's jsonb text has"
                    " spaces and orders keys by length, json.dumps(sort_keys) does neither)"
                    if example
                    else ""
                )
                + f"; line endings {diff['line_ending']['write_csv']} vs"
                f" {diff['line_ending']['copy_csv']}."
            )
    elif "postgres COPY TO STDOUT csv" in stages:
        out.append(
            "* **The export is bound by Python, not PostgreSQL.** In-process on the same rows:"
            f" {python_path}. PostgreSQL's own COPY (SELECT ...) TO STDOUT (FORMAT csv) of"
            f" the same rows: {stages['postgres COPY TO STDOUT csv']['rows_per_s']:,} rows/s."
        )
    tenant_plan = stages.get("explain_tenant", {})
    copy_plan = stages.get("explain_tenant_copy")
    if full and copy_stage and copy_plan:
        sort = next((ln.strip() for ln in copy_plan["plan"] if "Sort Method" in ln), "")
        top = copy_plan["plan"][0].split("  (")[0].strip() if copy_plan["plan"] else "?"
        out.append(
            f"* **A whole-tenant CSV export waits {full['first_byte_s']} s for its first"
            f" byte** (the 7-day one {ex['csv_7d'][0]['first_byte_s']} s): COPY plans its query"
            " for all rows, not for a fast start as a cursor would, and for a whole tenant"
            f" that is a full sort before the first row (top node `{top}`"
            + (f", `{sort}`" if sort else "")
            + f"; {copy_plan['execution_ms']:,.0f} ms in EXPLAIN ANALYZE). At 5 M rows the"
            " wait and the temporary files grow in proportion."
        )
    elif full and tenant_plan.get("jit_ms"):
        out.append(
            f"* **A whole-tenant export waits {full['first_byte_s']} s for its first byte**:"
            " its cursor's plan is costed above jit_above_cost and JIT-compiled first"
            f" ({tenant_plan['jit_ms']:,.0f} ms in EXPLAIN; the 7-day export, under the"
            f" threshold, starts in {ex['csv_7d'][0]['first_byte_s']} s)."
        )
    parquet = ex.get("parquet_7d")
    if parquet and (parquet["rss_growth_mib"] or 0) > 50:
        out.append(
            f"* **Parquet export memory**: the worker grew {parquet['rss_growth_mib']} MiB for"
            f" a {parquet['rows']:,}-row export (CSV: a few MiB at most). write_parquet collects"
            " 50,000 rows as Python dicts before it builds each row group, which also delays"
            f" the first byte ({parquet['first_byte_s']} s). One row group is held at a time,"
            " so the growth should not scale with the export (not measured beyond this size)."
        )
    out += ["", "## Suggestions (no application code was changed)", ""]
    out += suggestions(data)
    return out


def suggestions(data: dict[str, Any]) -> list[str]:
    """Concrete changes, numbered; those the measured code already has are left out."""
    code = data.get("code", {})
    jit_off = code.get("jit_off_in_sessions", False)
    csv_copy = code.get("csv_export", "").startswith("COPY")
    list_windows = code.get("list_windows", False)
    ip_index = any("ip_address" in d for d in data.get("database", {}).get("indexes", {}).values())
    daily_stats = code.get("daily_stats", False)
    items = []
    if not jit_off:
        items.append(
            "**Turn JIT off for the platform's sessions**: add `-c jit=off` to"
            " `SESSION_OPTIONS` in auditlog/store/pool.py (or `ALTER DATABASE ... SET jit ="
            " off`). Its compile time is paid per partition and per parallel worker; it turns"
            " a filtered first page into a 0.5-2 s request whenever the planner's estimate"
            " crosses 100,000, and delays a large export's first byte by seconds."
        )
    if not list_windows:
        items.append(
            "**Let the planner prune partitions in list_events**: (a) next to the keyset row"
            " comparison add the plain bound `created_at <= %(after_created)s` (`>=` for"
            " order=asc), which prunes every newer partition at plan time; (b) search a window"
            " first (the newest day, or the day of the cursor), then widen it (7 days, 31 days,"
            " everything) only when fewer than limit+1 rows came back. A typical first page then"
            " plans 1-2 partitions (the one-day scenario plans in a fraction of a millisecond)."
            " (c) Or keep fewer partitions: retention deletes a verified seq prefix row by row"
            " rather than dropping partitions, so weekly (or monthly) partitions lose nothing and"
            " cut the planner's work 7x (30x). Prepared statements with generic plans are no cure"
            " on PostgreSQL 15: they still lock and set up every partition at each execution."
        )
    if not ip_index:
        items.append(
            "**Index the ip filter** for rare networks: `CREATE INDEX ON audit_logs (tenant_id,"
            " ip_address)`; a btree serves `ip_address <<= network` as a range (checked with"
            " EXPLAIN on the small bench database: `Index Cond: ip_address >= '198.51.100.0/24'"
            " AND ip_address <= '198.51.100.255'`), and the planner keeps walking the time index"
            " for common networks. Or require from/to with ip, so that the window bounds the scan."
        )
    if not daily_stats:
        items.append(
            "**Stats**: (a) aggregate in SQL, not Python: one statement with `GROUP BY GROUPING"
            " SETS ((action_type), (severity), (resource_type), (date_trunc(bucket, hour)))` over"
            " audit_stats_hourly returns ~50 rows instead of tens of thousands, and last_7_days"
            " becomes one `sum(events)`; (b) keep a daily rollup beside the hourly one for ranges"
            " over a few days (24x fewer rows); (c) top resources and top users must not scan raw"
            " rows per request: keep `audit_stats_daily_users (tenant_id, day, user_id, events)`"
            " in the drain's transaction like audit_stats_hourly (about 1,000 rows per"
            " tenant-day, 10x fewer than events), and for resources either the same table"
            " limited to each day's top few hundred (exact for heavy hitters) or a Dagster asset"
            " that precomputes the default 30-day tops per tenant; (d) cache the answer per"
            " (tenant, from, to, bucket) for a minute with `now` rounded to the minute."
        )
    if csv_copy:
        items.append(
            "**Export**: CSV is COPY-fast now, but its JSON cells and line endings differ from"
            " write_csv's (see the findings): either render JSON in SQL as the contract says"
            " (or document PostgreSQL's jsonb text and LF as the format), or keep write_csv"
            " as the reference in a test that compares both. Run the COPY per day (one"
            " statement per partition, oldest first) so that each sorts or index-scans one"
            " day: the first byte comes at once and no whole-tenant sort spills to disk."
            " NDJSON can come from COPY too"
            " (`SELECT json_build_object(...)::text` per row, in text format so that COPY"
            " escaping does not touch it, or with jsonb text accepted as the format). For"
            " Parquet, build each row group from column lists (or Arrow record batches per"
            " fetched batch) and in smaller groups (10,000 rows) to cut the per-group memory."
        )
    else:
        items.append(
            "**Export**: move the per-row work out of Python. Fetch JSON columns as text and"
            " hashes and ids already formatted (`encode(hash, 'hex')`, `id::text`), or stream"
            " PostgreSQL's `COPY (SELECT ...) TO STDOUT (FORMAT csv)` straight into the"
            " response with the formula guard done in SQL (a `CASE WHEN left(col, 1) IN"
            " (...)` that prefixes a quote). Caveat: PostgreSQL prints jsonb with its own key"
            " order and separators, not json.dumps(sort_keys) compact, so the JSON cells'"
            " bytes would change (a contract decision). For Parquet, build each row group from"
            " column lists and in smaller groups (10,000 rows) to cut the per-group memory."
        )
    items.append(
        "**Per-request overhead**: the pool checks every connection on checkout"
        " (`check=ConnectionPool.check_connection`, one extra round trip per request);"
        " checking only connections idle for a while, or relying on a retry on failure,"
        " saves it."
    )
    return [f"{i}. {text}" for i, text in enumerate(items, 1)]


# ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=10_000_000, help="events to load (10,000,000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--jobs", type=int, default=2, help="parallel COPY connections while loading")
    p.add_argument("--db-name", default=None, help="database name (bench_query_<events>)")
    p.add_argument(
        "--keep-db",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep the loaded database for the next run (default)",
    )
    p.add_argument("--drop", action="store_true", help="drop the database at the end")
    p.add_argument("--reload", action="store_true", help="reload even if the database matches")
    p.add_argument("--load-only", action="store_true", help="load (or check) the data, then stop")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    p.add_argument("--connections", type=int, default=4, help="wrk connections")
    p.add_argument("--duration", type=float, default=10, help="seconds per measured run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per scenario")
    p.add_argument(
        "--serial-duration", type=float, default=5, help="c=1 run per scenario (0: skip)"
    )
    p.add_argument(
        "--slow-ms",
        type=float,
        default=1000,
        help="scenarios slower than this (first requests' median) are measured serially",
    )
    p.add_argument("--deep-pages", type=int, default=100, help="pages to walk for the deep cursor")
    p.add_argument("--inprocess-times", type=int, default=20)
    p.add_argument("--skip-full-export", action="store_true", help="no whole-tenant CSV export")
    p.add_argument(
        "--api-env", action="append", default=[], metavar="NAME=VALUE", help="extra API env"
    )
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--quick", action="store_true", help="1 repeat of 3 s runs (smoke test)")
    p.add_argument(
        "--report-only", action="store_true", help="rewrite query.md from query.json, no run"
    )
    p.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="QUERY_JSON",
        help="an earlier query.json whose medians query.md shows beside this run's",
    )
    p.add_argument(
        "--inprocess-only",
        action="store_true",
        help="redo the in-process part after a run that saved query.partial.json",
    )
    args = p.parse_args(argv)
    if args.drop:
        args.keep_db = False
    if args.quick:
        args.repeats, args.duration, args.warmup, args.serial_duration = 1, 3, 1, 2
        args.inprocess_times = 5
    return args


def code_facts() -> dict[str, Any]:
    """What of the application's code decides the numbers (it changes between runs)."""
    import auditlog.reads as reads
    import auditlog.stats as stats

    return {
        "session_options": SESSION_OPTIONS,
        "jit_off_in_sessions": "jit=off" in SESSION_OPTIONS,
        "list_windows": hasattr(reads, "LIST_WINDOWS"),
        "daily_stats": hasattr(stats, "STATS_QUERIES"),
        "csv_export": (
            "COPY (auditlog.reads.copy_csv)"
            if hasattr(reads, "copy_csv")
            else "Python (auditlog.export.write_csv)"
        ),
    }


def code_facts_at(commit: str) -> dict[str, Any]:
    """code_facts() as they were at a commit (read with git show)."""

    def show(path: str) -> str:
        done = subprocess.run(
            ["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, text=True
        )
        return done.stdout if done.returncode == 0 else ""

    pool, reads = show("auditlog/store/pool.py"), show("auditlog/reads.py")
    options = re.search(r'SESSION_OPTIONS = "([^"]*)"', pool)
    return {
        "session_options": options[1] if options else "?",
        "jit_off_in_sessions": options is not None and "jit=off" in options[1],
        "csv_export": (
            "COPY (auditlog.reads.copy_csv)"
            if "def copy_csv" in reads
            else "Python (auditlog.export.write_csv)"
        ),
    }


def baseline_summary(path: Path) -> dict[str, Any]:
    """The medians of an earlier query.json, to print beside this run's."""
    old = json.loads(path.read_text())
    scenarios = {}
    for s in old["scenarios"]:
        med = summarize(s["runs"])
        serial = (s.get("serial_c1") or {}).get("latency_ms") or {}
        scenarios[s["key"]] = {
            "p50_ms": med["p50_ms"],
            "p99_ms": med["p99_ms"],
            "requests_per_s": med["requests_per_s"],
            "serial_p50_ms": serial.get("p50"),
            "serial_p99_ms": serial.get("p99"),
            "slow_serial": s.get("slow_serial", False),
        }
    ex = old["exports"]
    commit = old["machine"]["git_commit"]
    return {
        "file": str(path),
        "measured_at": old["machine"]["measured_at"],
        "git_commit": commit,
        "code": old.get("code") or code_facts_at(commit),
        "scenarios": scenarios,
        "exports": {
            "csv_7d": statistics.median(r["rows_per_s"] for r in ex["csv_7d"]),
            "ndjson_7d": ex.get("ndjson_7d", {}).get("rows_per_s"),
            "parquet_7d": ex.get("parquet_7d", {}).get("rows_per_s"),
            "csv_tenant": ex.get("csv_tenant", {}).get("rows_per_s"),
            "csv_tenant_first_byte_s": ex.get("csv_tenant", {}).get("first_byte_s"),
            "csv_tenant_rss_growth_mib": ex.get("csv_tenant", {}).get("rss_growth_mib"),
        },
    }


def save_partial(out_dir: Path, data: dict[str, Any]) -> None:
    """What has been measured so far, should a later step fail (query.partial.json)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "query.partial.json").write_text(json.dumps(data, indent=2, default=str) + "\n")


def _plan_from(meta: dict[str, Any]) -> Plan:
    def ms(text: str) -> int:
        return int(datetime.fromisoformat(text).timestamp() * 1000)

    p = meta["plan"]
    return Plan(events=p["events"], seed=p["seed"], start_ms=ms(p["start"]), end_ms=ms(p["end"]))


def _stop_on_sigterm() -> None:
    def handler(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def measure_api(
    args: argparse.Namespace,
    url: str,
    db_name: str,
    wrk_path: str,
    tenants: Sequence[Tenant],
    scenarios: Sequence[Scenario],
    export_tenant: Tenant,
    plan: Plan,
    data: dict[str, Any],
) -> None:
    """The HTTP part: the API under gunicorn, the scenarios through wrk, the exports."""
    extra_env = dict(item.split("=", 1) for item in args.api_env)
    with (
        tempfile.TemporaryDirectory(prefix="bench-query-") as workdir,
        api_server(url, args.workers, extra_env) as api,
    ):
        host = urllib.parse.urlsplit(api.base_url).netloc
        wrk = Wrk(wrk_path, Path(workdir), host, api.base_url, url)
        say(f"API up at {api.base_url} (workers {api.worker_pids()})")
        deep = next(s for s in scenarios if s.key == "list_deep_cursor")
        walk: list[float] = []
        for t in tenants:
            cursor, latencies = walk_cursor(api, t, args.deep_pages)
            deep.params[t.index] = {"limit": "100", "cursor": cursor}
            walk += latencies
        data["deep_cursor_walk"] = {
            "pages": args.deep_pages,
            "median_ms": round(statistics.median(walk), 1),
            "max_ms": round(max(walk), 1),
        }
        say(f"walked {args.deep_pages} pages deep for each tenant")
        measure_http(args, api, wrk, tenants, scenarios, cpu_classifier(api, db_name))
        data["scenarios"] = [s.as_dict() for s in scenarios]
        save_partial(args.out_dir, data)
        data["exports"] = measure_exports(args, url, api, export_tenant, plan)
        save_partial(args.out_dir, data)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.report_only:
        data: dict[str, Any] = json.loads((args.out_dir / "query.json").read_text())
        for scenario in data["scenarios"]:
            scenario["median"] = summarize(scenario["runs"])
        if args.baseline:
            data["baseline"] = baseline_summary(args.baseline)
        (args.out_dir / "query.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
        (args.out_dir / "query.md").write_text(markdown(data))
        say(f"wrote {args.out_dir}/query.md from query.json")
        return 0
    _stop_on_sigterm()
    env = platform.platform_env()
    settings = Settings.from_env(env)
    wrk_path = ensure_wrk()
    facts = machine.machine_facts()
    started = time.monotonic()
    free = shutil.disk_usage(ROOT)
    say(f"disk: {free.free / 1e9:.0f} GB free of {free.total / 1e9:.0f} GB")
    url, meta, reused = ensure_database(args, settings.database_url)
    db_name = url.rsplit("/", 1)[1]
    try:
        daily = prepare_daily_stats(url)
        if args.load_only:
            return 0
        plan = _plan_from(meta)
        pools = [TenantPools.build(plan, i) for i in range(N_TENANTS)]
        tenants = [
            Tenant(i, tid, mint_token(settings, tenant_id=tid, role="reader"), pools[i])
            for i, tid in enumerate(meta["tenants"])
        ]
        export_tenant = max(tenants, key=lambda t: sum(u.counts[t.index] for u in make_units(plan)))
        data = {
            "machine": facts,
            "config": {
                **{k: v for k, v in vars(args).items() if k != "out_dir"},
                "wrk": wrk_version(wrk_path),
                "gunicorn": " ".join(platform.api_command(0, args.workers)[1:]),
            },
            "database_name": db_name,
            "database_reused": reused,
            "plan": meta["plan"],
            "load": meta["load"],
            "database": database_facts(url),
            "daily_stats": daily,
            "targets": {k: v[0] for k, v in TARGETS.items()},
            "code": code_facts(),
        }
        scenarios = define_scenarios(plan, tenants)
        if args.inprocess_only:
            # HTTP and export results of an earlier run that stopped after them.
            partial = json.loads((args.out_dir / "query.partial.json").read_text())
            for key in ("machine", "deep_cursor_walk", "scenarios", "exports"):
                data[key] = partial[key]
            for scenario in data["scenarios"]:
                scenario["median"] = summarize(scenario["runs"])
            data["code"] = partial.get("code") or data["code"]
            data["config"]["inprocess_rerun_at"] = facts["measured_at"]
            saved = {s["key"]: s for s in partial["scenarios"]}
            for s in scenarios:
                s.params = saved[s.key]["params"]
        else:
            measure_api(args, url, db_name, wrk_path, tenants, scenarios, export_tenant, plan, data)
        if args.baseline:
            data["baseline"] = baseline_summary(args.baseline)
        say("in-process breakdown and EXPLAIN (ANALYZE, BUFFERS)")
        data["in_process"] = in_process(args, url, tenants, scenarios, plan, export_tenant)
        data["duration_s"] = round(time.monotonic() - started)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "query.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
        text = markdown(data)
        (args.out_dir / "query.md").write_text(text)
        (args.out_dir / "query.partial.json").unlink(missing_ok=True)
        print("\n" + text)
        say(f"done in {data['duration_s']} s; wrote {args.out_dir}/query.md and query.json")
        return 0
    except KeyboardInterrupt:
        print("[query] interrupted; the API was stopped", file=sys.stderr)
        return 130
    finally:
        if not args.keep_db:
            say(f"dropping {db_name}")
            drop_database(settings.database_url, db_name)
        else:
            say(f"kept database {db_name} (--drop removes it)")


if __name__ == "__main__":
    sys.exit(main())
