"""Drain benchmark: how fast the drain moves a backlog from SQS into PostgreSQL, how that
compares with a raw COPY of the same rows, and how long an event waits between being
accepted and being committed at a steady 100 events/s.

    .venv/bin/python -m bench.drain              # the whole run (about 5 minutes)
    .venv/bin/python -m bench.drain --cprofile   # and a cProfile of the packed drain
    .venv/bin/python -m bench.drain --quick      # a short smoke run

Needs the local stack up (``infra/stack.py up``). Every scenario gets a fresh database
(CREATE DATABASE + migrations) and fresh queues, both removed afterwards. The drain runs as
it does in operation, as ``python -m auditlog.cli drain`` in a subprocess; the benchmark
polls the tenants' chain heads (committed in the same transaction as the rows) to see when
the whole backlog is stored. Writes bench/results/drain.json (git-ignored) and
bench/results/drain.md.

Scenarios (throughput ones repeated ``--repeats`` times, interleaved in rounds):

* ``packed``: envelopes as bulk ingest sends them (``pack_records``, ~250 KB, hundreds of
  events each), drained with the default batch size.
* ``single``: one event per message, the worst case, at two drain batch sizes.
* ``raw COPY``: the same rows COPYed straight into ``audit_logs`` (seq and hash precomputed)
  and into a plain table with only the primary key: the ceiling for this machine.
* ``latency``: a producer sends one event per message at a steady rate while a drain runs;
  afterwards each event's ``stored_at - created_at`` (``stored_at`` is ``now()`` of the
  drain's transaction, i.e. its start) and its commit time (the drain's NOTIFY, which
  PostgreSQL delivers at COMMIT) minus ``created_at``.
* ``phases``: a packed and a single-event backlog drained in this process with timers
  around each phase (receive, decode, validate, staging COPY, each SQL statement, hashing,
  commit, delete), wall and CPU time. Only module globals of this process are wrapped; the
  application code is unchanged.

CPU time of the drain, its PostgreSQL backend, ElasticMQ and everything else is read from
/proc during each run. On a shared machine the wall-clock rates depend on what else runs;
events per CPU-second of the drain and its backend (which take turns) do much less so.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import hashlib
import io
import json
import math
import os
import platform
import pstats
import random
import resource
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file: make `auditlog` and `infra` importable
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

import auditlog.chain as chain_module  # noqa: E402
import auditlog.drain as drain_module  # noqa: E402
import auditlog.queue as queue_module  # noqa: E402
from auditlog.events import RECORD_FIELDS, AcceptedEvent, EventIn, canonical_json  # noqa: E402
from auditlog.ids import new_event_id  # noqa: E402
from auditlog.queue import (  # noqa: E402
    EventQueue,
    encode_envelope,
    ensure_queues,
    make_sqs_client,
    pack_records,
)
from auditlog.settings import Settings  # noqa: E402
from auditlog.store.migrate import migrate  # noqa: E402
from auditlog.store.pool import SESSION_OPTIONS, connect  # noqa: E402
from auditlog.store.queries import parse_named_sql  # noqa: E402
from infra.stack import stack_env  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TENANTS = 10
TARGET_PACKED_EVENTS_PER_S = 10_000
TARGET_P99_S = 2.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CPU_GROUPS = ("drain", "postgres", "postgres shared", "elasticmq", "other", "machine")
JSON_COLUMNS = ("before_state", "after_state", "metadata")
STORED_COLUMNS = (
    "id",
    "tenant_id",
    "seq",
    *RECORD_FIELDS[2:],
    "prev_hash",
    "hash",
)


def say(message: str) -> None:
    print(f"[drain-bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------------
# Events


USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Version/17.5 Safari/605.1.15",
    "acme-sync/4.2.1 (linux; amd64) python-requests/2.32.3",
)
RESOURCES = ("document", "invoice", "user", "project", "api_key", "report", "folder")
SOURCES = ("web", "api", "mobile", "scim", "cli")


def event_body(rng: random.Random, i: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A realistic client event: ~300-600 bytes once stamped, with before/after state."""
    action = rng.choices(("CREATE", "UPDATE", "DELETE", "VIEW"), weights=(2, 5, 1, 8))[0]
    resource = rng.choice(RESOURCES)
    version = rng.randrange(1, 40)
    if rng.random() < 0.8:
        ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    else:
        ip = f"2001:db8::{rng.randrange(1, 0xFFFF):x}:{rng.randrange(1, 0xFFFF):x}"
    body: dict[str, Any] = {
        "user_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "session_id": f"sess_{rng.getrandbits(64):016x}",
        "ip_address": ip,
        "user_agent": rng.choice(USER_AGENTS),
        "action_type": action,
        "resource_type": resource,
        "resource_id": f"{resource[:3]}-{rng.randrange(10**6):06d}",
        "severity": rng.choices(("INFO", "WARNING", "ERROR", "CRITICAL"), (90, 7, 2, 1))[0],
        "metadata": {
            "request_id": f"req_{rng.getrandbits(48):012x}",
            "source": rng.choice(SOURCES),
            "n": i,
            **(extra or {}),
        },
    }
    if action in ("UPDATE", "DELETE"):
        body["before_state"] = {"status": "draft", "version": version}
    if action in ("CREATE", "UPDATE"):
        body["after_state"] = {"status": "published", "version": version + 1}
    return body


def make_record(tenant: uuid.UUID, body: dict[str, Any]) -> dict[str, Any]:
    """Stamp an event as the API does: UUIDv7 id, created_at from the same clock reading."""
    event_id, created_at = new_event_id()
    return AcceptedEvent(event_id, tenant, created_at, EventIn.model_validate(body)).to_record()


def make_records(tenants: Sequence[uuid.UUID], count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [make_record(tenants[i % len(tenants)], event_body(rng, i)) for i in range(count)]


def record_bytes(records: Sequence[dict[str, Any]]) -> float:
    sample = records[: min(len(records), 2000)]
    return sum(len(json.dumps(r, separators=(",", ":")).encode()) for r in sample) / len(sample)


# ---------------------------------------------------------------------------------------
# Fresh databases and queues


def _database_url(settings: Settings, name: str) -> str:
    return settings.database_url.rsplit("/", 1)[0] + f"/{name}"


@contextlib.contextmanager
def fresh_database(base: Settings) -> Iterator[str]:
    name = f"bench_drain_{uuid.uuid4().hex[:10]}"
    admin = _database_url(base, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = _database_url(base, name)
        migrate(url)
        yield url
    finally:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        wait_for_postgres(admin)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(drop)


def wait_for_postgres(url: str, timeout: float = 90) -> None:
    """The machine is shared: other test runs stop and restart PostgreSQL now and then."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(url, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def retrying(
    what: str, base: Settings, fn: Callable[..., dict[str, Any]], *args: Any
) -> dict[str, Any]:
    """Run a scenario; if PostgreSQL went away under it (a restart by another process on
    this shared machine), wait for it and run the scenario once more."""
    try:
        return fn(*args)
    except psycopg.OperationalError as exc:
        say(f"{what}: PostgreSQL went away ({str(exc).strip()[:80]}); once more")
        wait_for_postgres(_database_url(base, "postgres"))
        result = fn(*args)
        result["retried_after_postgres_restart"] = True
        return result


@contextlib.contextmanager
def fresh_queues(base: Settings) -> Iterator[Settings]:
    suffix = uuid.uuid4().hex[:10]
    mine = replace(
        base, sqs_queue_name=f"bench-drain-{suffix}", sqs_dlq_name=f"bench-drain-dlq-{suffix}"
    )
    client = make_sqs_client(mine)
    # A visibility timeout well above any batch time: no redelivery during a run.
    ensure_queues(client, mine.sqs_queue_name, mine.sqs_dlq_name, 5, visibility_timeout=300)
    try:
        yield mine
    finally:
        for name in (mine.sqs_queue_name, mine.sqs_dlq_name):
            with contextlib.suppress(Exception):
                url = client.get_queue_url(QueueName=name)["QueueUrl"]
                client.delete_queue(QueueUrl=url)


@contextlib.contextmanager
def fresh_stack(base: Settings) -> Iterator[Settings]:
    with fresh_database(base) as url, fresh_queues(base) as queues:
        yield replace(queues, database_url=url)


SEND_BATCH_BYTES = 1024 * 1024  # SQS (and ElasticMQ, strict) limit for a whole batch


def _send_batch(client: Any, url: str, bodies: Sequence[str]) -> None:
    entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)]
    for _attempt in range(3):
        answer = client.send_message_batch(QueueUrl=url, Entries=entries)
        ok = {x["Id"] for x in answer.get("Successful", [])}
        entries = [e for e in entries if e["Id"] not in ok]
        if not entries:
            return
        time.sleep(0.1)
    raise RuntimeError(f"SQS did not accept {len(entries)} message(s)")


def fill_queue(settings: Settings, queue: EventQueue, bodies: Sequence[str]) -> float:
    """Send bodies with SendMessageBatch (10 entries and 1 MiB per call at most) from 4
    threads; wait until all are visible."""
    started = time.monotonic()
    client = make_sqs_client(settings)
    url = queue.url()
    batches: list[list[str]] = [[]]
    size = 0
    for body in bodies:
        n = len(body.encode())
        if batches[-1] and (len(batches[-1]) == 10 or size + n > SEND_BATCH_BYTES):
            batches.append([])
            size = 0
        batches[-1].append(body)
        size += n
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda b: _send_batch(client, url, b), batches))
    deadline = time.monotonic() + 30
    while queue.backlog().visible < len(bodies):
        if time.monotonic() > deadline:
            raise RuntimeError("the backlog did not become visible")
        time.sleep(0.1)
    return time.monotonic() - started


def bodies_for(shape: str, records: Sequence[dict[str, Any]]) -> list[str]:
    if shape == "single":
        return [encode_envelope([r]) for r in records]
    return list(pack_records(records))


# ---------------------------------------------------------------------------------------
# CPU accounting from /proc: where the machine's two cores went during a drain


def _proc_cpu(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _machine_busy() -> float:
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def _group_of(pid: int, drain_pid: int | None, database: str) -> str | None:
    """``drain``, ``postgres`` (backends of this run's database), ``postgres shared``
    (postmaster, WAL writer, checkpointer...), ``elasticmq``, ``bench``; None: others."""
    if pid == drain_pid:
        return "drain"
    if pid == os.getpid():
        return "bench"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    if cmdline.startswith("postgres:"):
        words = cmdline.split()
        if "(" in cmdline or "[local]" in cmdline or "autovacuum worker" in cmdline:
            return "postgres" if database in words else None  # another database's backend
        if "parallel worker" in cmdline:
            return None
        return "postgres shared"
    if "/postgres " in cmdline:
        return "postgres shared"
    if "elasticmq" in cmdline:
        return "elasticmq"
    return None


class CpuSampler:
    """CPU seconds per group (see ``_group_of``) over a window, and the whole machine's."""

    def __init__(self, drain_pid: int | None, database_url: str) -> None:
        self.drain_pid = drain_pid
        self.database = database_url.rsplit("/", 1)[1]
        self.baseline: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self.pids: dict[int, str | None] = {}
        self.started = time.monotonic()
        self.busy0 = _machine_busy()
        for pid, _group, cpu in self._scan():
            self.baseline[pid] = cpu

    def _scan(self) -> Iterator[tuple[int, str, float]]:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            if pid not in self.pids:
                self.pids[pid] = _group_of(pid, self.drain_pid, self.database)
            group = self.pids[pid]
            if group is None:
                continue
            cpu = _proc_cpu(pid)
            if cpu is not None:
                yield pid, group, cpu

    def sample(self) -> None:
        for pid, group, cpu in self._scan():
            self.last[pid] = (group, cpu)

    def result(self) -> dict[str, Any]:
        self.sample()
        wall = time.monotonic() - self.started
        groups: dict[str, float] = defaultdict(float)
        for pid, (group, cpu) in self.last.items():
            groups[group] += cpu - self.baseline.get(pid, 0.0)
        busy = _machine_busy() - self.busy0
        cores = {g: round(s / wall, 2) for g, s in sorted(groups.items())}
        cores["machine"] = round(busy / wall, 2)
        # Everything else on the machine (a shared machine: tests, other benchmarks).
        cores["other"] = round(max(0.0, busy - sum(groups.values())) / wall, 2)
        seconds = {g: round(v, 3) for g, v in sorted(groups.items())}
        return {"wall_s": round(wall, 2), "cores": cores, "cpu_seconds": seconds}


# ---------------------------------------------------------------------------------------
# The drain as a subprocess


def drain_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "SQS_QUEUE_NAME": settings.sqs_queue_name,
        "SQS_DLQ_NAME": settings.sqs_dlq_name,
        "LOG_LEVEL": "WARNING",
    }


def start_drain(
    settings: Settings, *, seconds: float, idle: float, batch_size: int
) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "-m",
        "auditlog.cli",
        "drain",
        "--seconds",
        str(seconds),
        "--idle-seconds",
        str(idle),
        "--batch-size",
        str(batch_size),
    ]
    return subprocess.Popen(
        command,
        env=drain_env(settings),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[dict[str, Any], str]:
    """Wait for the drain to end by itself (idle); stop it if it does not."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    stats: dict[str, Any] = {}
    for line in out.splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            stats = json.loads(line)
    return stats, err[-2000:]


def drain_startup(base: Settings) -> tuple[float, float]:
    """Wall and CPU seconds of interpreter start, imports and set-up of ``auditlog drain``
    (runs with no time budget: they do no work); medians of three."""
    walls, cpus = [], []
    with fresh_queues(base) as settings:
        for _ in range(3):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.monotonic()
            proc = start_drain(settings, seconds=0, idle=1, batch_size=500)
            finish(proc, 60)
            walls.append(time.monotonic() - started)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def add_derived(result: dict[str, Any], startup_wall: float, startup_cpu: float) -> None:
    """Rates without the process start-up, and per CPU-second (robust to a busy machine)."""
    total = result["events"]
    seconds = result["cpu"]["cpu_seconds"]
    drain_cpu = max(1e-9, seconds.get("drain", 0.0) - startup_cpu)
    backend_cpu = seconds.get("postgres", 0.0)
    net_wall = result["wall_s"] - startup_wall
    result["events_per_s_excl_startup"] = round(total / net_wall) if net_wall > 0 else None
    result["drain_cpu_s_excl_startup"] = round(drain_cpu, 3)
    result["events_per_drain_cpu_s"] = round(total / drain_cpu)
    # The drain waits for every statement, so its CPU time and its backend's add up.
    result["events_per_cpu_s_drain_plus_backend"] = round(total / (drain_cpu + backend_cpu))


def committed(db: psycopg.Connection[Any]) -> int:
    """Rows committed so far: the chain heads advance in the same transaction as the rows."""
    row = db.execute("SELECT coalesce(sum(last_seq), 0) FROM tenant_chain_heads").fetchone()
    return int(row[0]) if row else 0


def count_stored(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM audit_logs").fetchone()
    return int(row[0]) if row else 0


def run_drain(
    base: Settings, shape: str, records: Sequence[dict[str, Any]], batch_size: int
) -> dict[str, Any]:
    """Pre-fill a backlog, start the drain, time until every row is committed."""
    total = len(records)
    bodies = bodies_for(shape, records)
    with fresh_stack(base) as settings:
        queue = EventQueue.from_settings(settings)
        fill_s = fill_queue(settings, queue, bodies)
        with connect(settings.database_url, autocommit=True) as db:
            cpu = None
            started = time.monotonic()
            # Drainer.run measures idleness from the last receive, before the batch is
            # stored: a batch that takes longer than --idle-seconds ends the run with a
            # backlog left. Packed batches take seconds, so give them room.
            idle = 10 if shape == "packed" else 2
            proc = start_drain(settings, seconds=180, idle=idle, batch_size=batch_size)
            try:
                cpu = CpuSampler(proc.pid, settings.database_url)
                timeline: list[tuple[float, int]] = []
                done_at = None
                next_cpu = 0.0
                while time.monotonic() - started < 170:
                    count = committed(db)
                    now = time.monotonic()
                    if not timeline or count != timeline[-1][1]:
                        timeline.append((now - started, count))
                    if count >= total:
                        done_at = now
                        break
                    if proc.poll() is not None:
                        break
                    if now >= next_cpu:
                        cpu.sample()
                        next_cpu = now + 0.5
                    time.sleep(0.05)
                cpu_result = cpu.result()
            finally:
                stats, err = finish(proc, 40)
            stored = count_stored(db)
    if done_at is None or stored != total:
        raise RuntimeError(f"{shape}: {stored} of {total} rows stored; drain said {stats} {err}")
    wall = done_at - started
    first_t, first_n = next((t, n) for t, n in timeline if n > 0)
    return {
        "shape": shape,
        "batch_size": batch_size,
        "events": total,
        "messages": len(bodies),
        "events_per_message": round(total / len(bodies), 1),
        "fill_s": round(fill_s, 2),
        "wall_s": round(wall, 3),
        "events_per_s": round(total / wall),
        "first_commit_s": round(first_t, 3),
        "first_commit_events": first_n,
        "commits_seen": len(timeline),
        "drain_stats": stats,
        "cpu": cpu_result,
    }


# ---------------------------------------------------------------------------------------
# Raw COPY: the same rows, straight into the table


def stored_rows(records: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Rows shaped like audit_logs, as the drain sends them (JSON in canonical text), with
    per-tenant seq and a (not verifiable, but equally sized) hash chain."""
    heads: dict[str, tuple[int, bytes]] = {}
    rows = []
    for r in records:
        seq, prev = heads.get(r["tenant_id"], (0, bytes(32)))
        seq += 1
        digest = hashlib.sha256(prev + r["id"].encode()).digest()
        heads[r["tenant_id"]] = (seq, digest)
        values = {name: r[name] for name in RECORD_FIELDS}
        for name in JSON_COLUMNS:
            if values[name] is not None:
                values[name] = canonical_json(values[name])
        values.update(seq=seq, prev_hash=prev, hash=digest)
        rows.append(tuple(values[c] for c in STORED_COLUMNS))
    return rows


def copy_rows(
    conn: psycopg.Connection[Any], table: str, rows: Sequence[tuple[Any, ...]], chunk: int
) -> float:
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, STORED_COLUMNS))
    )
    started = time.monotonic()
    for start in range(0, len(rows), chunk):
        with conn.transaction(), conn.cursor().copy(statement) as copy:
            for row in rows[start : start + chunk]:
                copy.write_row(row)
    return time.monotonic() - started


def run_raw_copy(base: Settings, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    prep_started = time.monotonic()
    rows = stored_rows(records)
    prep_s = time.monotonic() - prep_started
    total = len(rows)
    with fresh_database(base) as url, connect(url) as conn:
        conn.execute(
            "CREATE TABLE plain_logs (LIKE audit_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS,"
            " PRIMARY KEY (id, created_at))"
        )
        conn.commit()
        audit_s = copy_rows(conn, "audit_logs", rows, chunk=10_000)
        plain_s = copy_rows(conn, "plain_logs", rows, chunk=10_000)
        count = conn.execute("SELECT count(*) FROM audit_logs").fetchone()[0]  # type: ignore[index]
        if count != total:
            raise RuntimeError(f"raw COPY stored {count} of {total}")
    return {
        "events": total,
        "prepare_rows_s": round(prep_s, 3),
        "audit_logs_s": round(audit_s, 3),
        "audit_logs_rows_per_s": round(total / audit_s),
        "plain_table_s": round(plain_s, 3),
        "plain_table_rows_per_s": round(total / plain_s),
    }


# ---------------------------------------------------------------------------------------
# Accepted -> committed latency at a steady rate


def percentiles(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    return {
        "p50_s": round(at(0.50), 4),
        "p90_s": round(at(0.90), 4),
        "p99_s": round(at(0.99), 4),
        "max_s": round(ordered[-1], 4),
        "mean_s": round(statistics.fmean(ordered), 4),
    }


class CommitListener(threading.Thread):
    """LISTENs for the drain's NOTIFY (sent on COMMIT) and notes when each arrived."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.conn = psycopg.connect(url, autocommit=True, options=SESSION_OPTIONS)
        self.conn.execute("LISTEN audit_events")
        self.seen: list[tuple[float, str, int]] = []  # (time.time(), tenant, last_seq)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for note in self.conn.notifies(timeout=0.2):
                tenant, _, seq = note.payload.rpartition(":")
                self.seen.append((time.time(), tenant, int(seq)))

    def close(self) -> None:
        self.stop.set()
        self.join(5)
        self.conn.close()


def run_latency(base: Settings, rate: float, duration: float, batch_size: int) -> dict[str, Any]:
    rng = random.Random(7)
    tenants = [uuid.uuid4() for _ in range(TENANTS)]
    with fresh_stack(base) as settings:
        queue = EventQueue.from_settings(settings)
        listener = CommitListener(settings.database_url)
        listener.start()
        proc = start_drain(settings, seconds=duration + 90, idle=3, batch_size=batch_size)
        try:
            with connect(settings.database_url, autocommit=True) as db:
                # Warm-up: the drain is up and has stored something before the clock runs.
                warm = [make_record(t, event_body(rng, -1)) for t in tenants]
                queue.send_bodies([encode_envelope([r]) for r in warm])
                deadline = time.monotonic() + 60
                while committed(db) < len(warm):
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("the drain did not store the warm-up events")
                    time.sleep(0.05)
                warm_ids = {r["id"] for r in warm}

                accepted: dict[str, float] = {}
                count = int(rate * duration)
                cpu = CpuSampler(proc.pid, settings.database_url)
                started = time.monotonic()
                late = 0
                for i in range(count):
                    due = started + i / rate
                    pause = due - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    elif pause < -0.05:
                        late += 1
                    record = make_record(tenants[i % TENANTS], event_body(rng, i))
                    queue.send_bodies([encode_envelope([record])])
                    accepted[record["id"]] = time.time()
                    if i % 100 == 0:
                        cpu.sample()
                send_s = time.monotonic() - started
                deadline = time.monotonic() + 60
                while committed(db) < len(warm) + count and time.monotonic() < deadline:
                    time.sleep(0.05)
                cpu_result = cpu.result()
                # id, tenant, seq, created_at and stored_at (epoch seconds, numeric).
                rows = cast(
                    list[tuple[str, str, int, Decimal, Decimal]],
                    db.execute(
                        "SELECT id::text, tenant_id::text, seq, extract(epoch FROM created_at),"
                        " extract(epoch FROM stored_at) FROM audit_logs"
                    ).fetchall(),
                )
        finally:
            stats, _err = finish(proc, 30)
            time.sleep(0.3)  # let the last NOTIFY arrive
            listener.close()
    notes: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for at, tenant, seq in listener.seen:
        notes[tenant].append((seq, at))
    stored_minus_created, commit_minus_created, commit_minus_accepted = [], [], []
    for event_id, tenant, seq, created, stored in rows:
        if event_id in warm_ids:
            continue
        created_s, stored_s = float(created), float(stored)
        stored_minus_created.append(stored_s - created_s)
        commit = min((at for last, at in notes[tenant] if last >= seq), default=None)
        if commit is not None:
            commit_minus_created.append(commit - created_s)
            commit_minus_accepted.append(commit - accepted[event_id])
    if len(stored_minus_created) != count:
        raise RuntimeError(f"latency: {len(stored_minus_created)} of {count} events stored")
    return {
        "rate_per_s": rate,
        "duration_s": duration,
        "events": count,
        "send_s": round(send_s, 2),
        "achieved_rate_per_s": round(count / send_s, 1),
        "late_sends": late,
        "batch_size": batch_size,
        "drain_stats": stats,
        "stored_at_minus_created_at": percentiles(stored_minus_created),
        "committed_minus_created_at": percentiles(commit_minus_created),
        "committed_minus_send_returned": percentiles(commit_minus_accepted),
        "events_with_commit_notice": len(commit_minus_created),
        "cpu": cpu_result,
    }


# ---------------------------------------------------------------------------------------
# Phase timing of the real Drainer, in this process


class Phases:
    """Wall time and this thread's CPU time per named phase (CPU time is what a phase
    costs whatever else the machine is doing; wall time adds waiting and contention)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    @staticmethod
    def start() -> tuple[float, float]:
        return time.perf_counter(), time.thread_time()

    def stop(self, name: str, started: tuple[float, float]) -> None:
        self.seconds[name] += time.perf_counter() - started[0]
        self.cpu[name] += time.thread_time() - started[1]
        self.calls[name] += 1

    def timed(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = self.start()
            try:
                return fn(*args, **kwargs)
            finally:
                self.stop(name, started)

        return wrapper


QUERY_NAMES = {
    text.strip(): name
    for name, text in parse_named_sql(
        (ROOT / "auditlog" / "store" / "queries.sql").read_text(encoding="utf-8")
    ).items()
}


def _query_name(query: Any) -> str:
    text = query if isinstance(query, str) else str(query)
    return QUERY_NAMES.get(text.strip(), "other")


def timed_connection_factory(phases: Phases) -> Callable[..., psycopg.Connection[Any]]:
    """``connect`` for the drain module: a connection whose statements, COPY blocks,
    fetches and commits are timed by name (the name of the query in queries.sql)."""

    class TimedCursor(psycopg.Cursor[Any]):
        _last = "other"

        def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
            self._last = _query_name(query)
            started = phases.start()
            try:
                return super().execute(query, *args, **kwargs)
            finally:
                phases.stop(f"sql {self._last}", started)

        def fetchall(self) -> Any:
            started = phases.start()
            try:
                return super().fetchall()
            finally:
                phases.stop(f"fetch {self._last}", started)

        @contextlib.contextmanager
        def copy(self, statement: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            name = _query_name(statement)
            started = phases.start()
            try:
                with super().copy(statement, *args, **kwargs) as copy:
                    yield copy
            finally:
                phases.stop(f"copy block {name}", started)

    class TimedTransaction:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __enter__(self) -> Any:
            return self.inner.__enter__()

        def __exit__(self, *exc: Any) -> Any:
            started = phases.start()
            try:
                return self.inner.__exit__(*exc)
            finally:
                phases.stop("commit", started)

    class TimedConnection(psycopg.Connection[Any]):
        def transaction(self, *args: Any, **kwargs: Any) -> Any:
            return TimedTransaction(super().transaction(*args, **kwargs))

    def factory(url: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
        return TimedConnection.connect(
            url, options=SESSION_OPTIONS, autocommit=autocommit, cursor_factory=TimedCursor
        )

    return factory


@contextlib.contextmanager
def instrumented_drain(phases: Phases, queue: EventQueue) -> Iterator[None]:
    """Wrap the drain module's globals (and this queue's calls) with timers; undo after."""
    names = ("decode_envelope", "validate_record", "_copy_row", "link_hash", "store_batch")
    # By name: some are the drain's imports (connect, decode_envelope, link_hash), which
    # it looks up in its own namespace at each call.
    saved = {name: getattr(drain_module, name) for name in (*names, "connect")}
    replacements: dict[str, Any] = {name: phases.timed(name, saved[name]) for name in names}
    replacements["connect"] = timed_connection_factory(phases)
    try:
        for name, replacement in replacements.items():
            setattr(drain_module, name, replacement)
        queue.receive = phases.timed("sqs receive", queue.receive)  # type: ignore[method-assign]
        queue.delete = phases.timed("sqs delete", queue.delete)  # type: ignore[method-assign]
        yield
    finally:
        for name, fn in saved.items():
            setattr(drain_module, name, fn)


def micro_costs(url: str, records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """CPU microseconds per event of the drain's Python steps, in tight loops without
    per-call timers (the real functions, on the same events)."""
    sample = list(records[:5000])
    with connect(url) as conn:
        # audit_canonical_fields returns text[]: a list of str (None for NULL fields).
        rendered: list[Sequence[str | None]] = [
            cast(list[str | None], row[0])
            for row in conn.execute(
                "SELECT audit_canonical_fields(id, tenant_id, created_at, occurred_at, user_id,"
                " session_id, ip_address, user_agent, action_type, resource_type, resource_id,"
                " severity, before_state, after_state, metadata) FROM audit_logs LIMIT %s",
                (len(sample),),
            ).fetchall()
        ]
    bodies = list(pack_records(sample))

    def cost(fn: Callable[[], Any], events: int) -> float:
        started = time.thread_time()
        fn()
        return round((time.thread_time() - started) / events * 1e6, 2)

    prev = bytes(32)
    return {
        "decode_envelope": cost(
            lambda: [queue_module.decode_envelope(b) for b in bodies], len(sample)
        ),
        # A list of Nones, built like the other loops' lists so that the loops cost the same.
        "validate_record": cost(
            lambda: [drain_module.validate_record(r) for r in sample],  # type: ignore[func-returns-value]
            len(sample),
        ),
        "_copy_row": cost(lambda: [drain_module._copy_row(r) for r in sample], len(sample)),
        "link_hash": cost(
            lambda: [chain_module.link_hash(prev, r, i + 1) for i, r in enumerate(rendered)],
            len(rendered),
        ),
    }


def timer_overhead_us() -> float:
    """What one timed call costs on top of the call itself (two clocks read twice)."""
    phases = Phases()
    noop = phases.timed("noop", lambda: None)
    started = time.perf_counter()
    for _ in range(20_000):
        noop()
    timed = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(20_000):
        (lambda: None)()
    bare = time.perf_counter() - started
    return max(0.0, (timed - bare) / 20_000 * 1e6)


def breakdown(seconds: dict[str, float], total: float) -> dict[str, float]:
    """Named phases from the raw timers; nested timers are subtracted from their block."""
    s = dict(seconds)
    copy_rows_s = s.pop("_copy_row", 0.0)
    hash_s = s.pop("link_hash", 0.0)
    s.pop("store_batch", None)
    phases = {
        "sqs receive (incl. 0.2 s top-up loop)": s.pop("sqs receive", 0.0),
        "JSON decode (decode_envelope)": s.pop("decode_envelope", 0.0),
        "validate (validate_record, pydantic)": s.pop("validate_record", 0.0),
        "rows for COPY (_copy_row, canonical_json)": copy_rows_s,
        "COPY into staging (send + server)": s.pop("copy block copy_staging", 0.0) - copy_rows_s,
        "canonical fields query (staged_new_events)": s.pop("sql staged_new_events", 0.0),
        "fetch canonical fields (rows to Python)": s.pop("fetch staged_new_events", 0.0),
        "hashing (link_hash)": hash_s,
        "COPY chain links": s.pop("copy block copy_staging_chain", 0.0) - hash_s,
        "INSERT from staging": s.pop("sql insert_from_staging", 0.0),
        "COMMIT": s.pop("commit", 0.0),
        "sqs delete": s.pop("sqs delete", 0.0),
    }
    for name, secs in s.items():  # every other statement, by its name in queries.sql
        phases[name] = secs
    phases["other (bookkeeping, timers)"] = total - sum(phases.values())
    return phases


def run_phases(
    base: Settings,
    shape: str,
    records: Sequence[dict[str, Any]],
    batch_size: int,
    profile: bool,
) -> dict[str, Any]:
    total = len(records)
    with fresh_stack(base) as settings:
        queue = EventQueue.from_settings(settings)
        fill_queue(settings, queue, bodies_for(shape, records))
        phases = Phases()
        stored = 0

        sampler: CpuSampler | None = None

        def on_batch(result: drain_module.BatchResult) -> None:
            nonlocal stored
            stored += result.stored
            if sampler is not None:  # while the drain's backend is still there
                sampler.sample()

        profiler = cProfile.Profile() if profile else None
        # The profile is taken without the phase timers, which would show up in it.
        timers = contextlib.nullcontext() if profile else instrumented_drain(phases, queue)
        with timers:
            drainer = drain_module.Drainer(queue, settings.database_url, batch_size)
            sampler = CpuSampler(None, settings.database_url)
            started = time.perf_counter()
            time_cpu_start = time.thread_time()
            if profiler:
                profiler.enable()
            stats = drainer.run(120, 30, on_batch=on_batch, should_stop=lambda: stored >= total)
            if profiler:
                profiler.disable()
            wall = time.perf_counter() - started
            time_cpu_end = time.thread_time()
            cpu_result = sampler.result()
        micro = {} if profile else micro_costs(settings.database_url, records)
    if stored != total:
        raise RuntimeError(f"phases: stored {stored} of {total}")
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        return {
            "shape": shape,
            "events": total,
            "events_per_s": round(total / wall),
            "cprofile_top_tottime": out.getvalue().splitlines()[:60],
        }
    wall_phases = breakdown(phases.seconds, wall)
    cpu_total = time_cpu_end - time_cpu_start
    cpu_phases = breakdown(phases.cpu, cpu_total)
    pg_cpu = cpu_result["cpu_seconds"].get("postgres", 0.0)
    result: dict[str, Any] = {
        "shape": shape,
        "events": total,
        "batch_size": batch_size,
        "batches": stats.batches,
        "events_per_batch": round(total / max(1, stats.batches)),
        "wall_s": round(wall, 3),
        "events_per_s": round(total / wall),
        "timer_overhead_us_per_call": round(timer_overhead_us(), 2),
        "python_cpu_us_per_event": micro,
        "timed_calls": sum(phases.calls.values()),
        "phases_s": {k: round(v, 3) for k, v in wall_phases.items()},
        "phases_pct": {k: round(100 * v / wall, 1) for k, v in wall_phases.items()},
        "phases_cpu_s": {k: round(v, 3) for k, v in cpu_phases.items()},
        "drain_cpu_s": round(cpu_total, 3),
        "postgres_backend_cpu_s": round(pg_cpu, 3),
        # The drain waits for each statement, so its CPU and its backend's add up: the
        # rate on an otherwise idle machine, SQS aside.
        "events_per_cpu_s_drain_plus_backend": round(total / (cpu_total + pg_cpu)),
        "cpu": cpu_result,
        "calls": dict(phases.calls),
    }
    return result


# ---------------------------------------------------------------------------------------
# Report


def machine_facts() -> dict[str, Any]:
    cpu_model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    with psycopg.connect(Settings.from_env().database_url) as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        sync = conn.execute("SHOW synchronous_commit").fetchone()[0]  # type: ignore[index]
    return {
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "postgresql": pg,
        "synchronous_commit": sync,
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def median_of(runs: Sequence[dict[str, Any]], key: str) -> float:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else float("nan")


def fmt(value: float) -> str:
    return f"{value:,.0f}"


def write_markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    s = data["summary"]
    lat = data["latency"]
    lines = [
        "# Drain benchmark",
        "",
        f"`.venv/bin/python -m bench.drain` on {m['nproc']} cores ({m['cpu_model']}), "
        f"{m['memory_gib']} GiB, Python {m['python']}, PostgreSQL {m['postgresql']} "
        f"(synchronous_commit={m['synchronous_commit']}), ElasticMQ with H2 persistence, all on "
        f"loopback; commit `{m['git_commit'][:12]}`{' (dirty)' if m['git_dirty'] else ''}, "
        f"{m['measured_at']}. Load average at start: {m['loadavg_at_start']}.",
        "",
        f"{TENANTS} tenants, events of ~{data['event_bytes']:.0f} bytes (stamped record as "
        "queued). Throughput: time from starting `auditlog drain` (a new process) until every "
        f"row is committed, fresh database and queues per run; median of {data['repeats']} "
        "runs (all runs in brackets).",
        "",
        "| measure | result | runs | target |",
        "| --- | --- | --- | --- |",
    ]
    for key, label in data["scenario_labels"].items():
        runs = data["throughput"][key]
        lines.append(
            f"| {label} | {fmt(s[key]['events_per_s'])} events/s | "
            f"{', '.join(fmt(r['events_per_s']) for r in runs)} | "
            f"{'≥ 10,000 events/s' if key == 'packed' else '—'} |"
        )
    packed = data["throughput"]["packed"]
    lines.append(
        "| packed: events per CPU-second of the drain process + its PostgreSQL backend "
        "(they take turns, so this is the rate with both on otherwise idle cores, SQS aside) | "
        f"{fmt(s['packed']['events_per_cpu_s_drain_plus_backend'])} events/s | "
        f"{', '.join(fmt(r['events_per_cpu_s_drain_plus_backend']) for r in packed)} "
        "| ≥ 10,000 events/s |"
    )
    raw = data["raw_copy"]
    lines += [
        f"| raw COPY into `audit_logs` (same rows, seq/hash precomputed, 10k rows per "
        f"transaction) | {fmt(s['raw_copy_rows_per_s'])} rows/s | "
        f"{', '.join(fmt(r['audit_logs_rows_per_s']) for r in raw)} | — |",
        f"| raw COPY into a plain table (primary key only) | "
        f"{fmt(s['raw_copy_plain_rows_per_s'])} rows/s | "
        f"{', '.join(fmt(r['plain_table_rows_per_s']) for r in raw)} | — |",
        f"| packed drain / raw COPY into `audit_logs` | {s['packed_vs_copy']:.0%} | "
        f"{', '.join(f'{x:.0%}' for x in s['packed_vs_copy_runs'])} | — |",
    ]
    c = lat["committed_minus_created_at"]
    st = lat["stored_at_minus_created_at"]
    lines += [
        f"| accepted → committed at {lat['rate_per_s']:.0f} events/s, one event per message, "
        f"{lat['duration_s']:.0f} s (commit NOTIFY - created_at) | p50 {c['p50_s']:.3f} s, "
        f"p99 {c['p99_s']:.3f} s, max {c['max_s']:.3f} s | — | p99 ≤ 2 s |",
        f"| same, `stored_at - created_at` (`stored_at` = now() at transaction start) | "
        f"p50 {st['p50_s']:.3f} s, p99 {st['p99_s']:.3f} s, max {st['max_s']:.3f} s | — "
        "| p99 ≤ 2 s |",
        "",
        "Drain process start-up (interpreter, imports, clients): "
        f"{data['drain_startup_s']:.2f} s ({data['drain_startup_cpu_s']:.2f} CPU s), included "
        "in the throughput times above (and left out of the per-CPU-second figures); without "
        "it the medians are "
        + ", ".join(
            f"{fmt(s[k]['events_per_s_excl_startup'])} events/s ({k})"
            for k in data["scenario_labels"]
        )
        + ".",
        "",
    ]
    ph = data.get("phases") or []
    for run in ph:
        lines += [
            f"## Where the drain's time goes ({run['shape']}, in-process, "
            f"{fmt(run['events'])} events, {run['batches']} batches of ~"
            f"{fmt(run['events_per_batch'])} events, {fmt(run['events_per_s'])} events/s)",
            "",
            "| phase | wall s | share of wall | drain CPU s |",
            "| --- | --- | --- | --- |",
        ]
        ordered = sorted(run["phases_s"].items(), key=lambda kv: -kv[1])
        for name, secs in ordered:
            lines.append(
                f"| {name} | {secs:.2f} | {run['phases_pct'][name]:.0f}% "
                f"| {run['phases_cpu_s'].get(name, 0.0):.2f} |"
            )
        lines += [
            "",
            f"The timers themselves: {run['timed_calls']:,} timed calls at "
            f"~{run['timer_overhead_us_per_call']:.1f} µs each, inside the phases they time. "
            f"Drain CPU {run['drain_cpu_s']:.2f} s, its PostgreSQL backend "
            f"{run['postgres_backend_cpu_s']:.2f} s over {run['wall_s']:.2f} s of wall time: "
            f"{fmt(run['events_per_cpu_s_drain_plus_backend'])} events per CPU-second of the "
            "two together (they take turns: the drain waits for each statement).",
            "",
        ]
        micro = run.get("python_cpu_us_per_event") or {}
        if micro and run["shape"] == "packed":
            lines += [
                "CPU per event of the drain's Python steps, measured in tight loops on "
                "5,000 of the same events (no timers): "
                + ", ".join(f"`{k}` {v:.1f} µs" for k, v in micro.items())
                + f"; together {sum(micro.values()):.0f} µs, i.e. at most "
                f"{fmt(1e6 / sum(micro.values()))} events/s for these steps alone on one core.",
                "",
            ]
    cpu_lines = []
    for key, label in data["scenario_labels"].items():
        runs = data["throughput"][key]
        cells = []
        for g in CPU_GROUPS:
            values = [r["cpu"]["cores"].get(g, 0.0) for r in runs]
            cells.append(f"{statistics.median(values):.2f}")
        per_cpu = statistics.median(r["events_per_drain_cpu_s"] for r in runs)
        per_both = statistics.median(r["events_per_cpu_s_drain_plus_backend"] for r in runs)
        cpu_lines.append(f"| {label} | {' | '.join(cells)} | {fmt(per_cpu)} | {fmt(per_both)} |")
    lat_cores = data["latency"]["cpu"]["cores"]
    cpu_lines.append(
        "| latency run (100 events/s) | "
        + " | ".join(f"{lat_cores.get(g, 0.0):.2f}" for g in CPU_GROUPS)
        + " | — | — |"
    )
    lines += [
        "## CPU while draining (cores busy, from /proc; median of the runs)",
        "",
        "| scenario | drain process | its postgres backend | postgres shared (WAL, "
        "checkpointer) | elasticmq | other processes | whole machine "
        "| events per drain CPU-second | events per CPU-second of drain + its backend |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *cpu_lines,
        "",
        "`other processes` is CPU used by everything else on the machine in the same window "
        "(other test runs and benchmarks on a shared machine); when it is large, the wall-clock "
        "rates above are lower than this machine can do, and the per-CPU-second columns are "
        "the better guide. elasticmq is shared with those runs too.",
        "",
    ]
    if data.get("cprofile"):
        prof = data["cprofile"]
        top = [line for line in prof["cprofile_top_tottime"] if line.strip()][:32]
        lines += [
            f"## cProfile of the packed drain ({fmt(prof['events'])} events, in-process, "
            "sorted by own time; profiling slows it down)",
            "",
            "```",
            *top,
            "```",
            "",
        ]
    if data.get("notes"):
        lines += ["## Notes", "", *[f"* {n}" for n in data["notes"]], ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------


NOTES = [
    "`--batch-size` counts messages: `Drainer.collect` tops a batch up to that many "
    "messages, for at most 0.2 s after the first receive, 10 messages per ReceiveMessage. "
    "The 0.2 s window ends a batch first in both shapes: ~60 packed messages (~20,000-"
    "30,000 events) or a few hundred single-event messages, so batch 500 vs 2000 is the same "
    "configuration here and their difference is noise.",
    "ElasticMQ (strict limits, like SQS) refuses a SendMessageBatch over 1 MiB in total "
    "(4 x 250 KB accepted, 5 x 250 KB is MessageTooLong); `EventQueue.send_entries` puts up "
    "to 10 envelopes of up to 250 KB in one call, so this benchmark fills its queues with "
    "its own batches of at most 1 MiB.",
    "Commit time is when the drain's NOTIFY (sent inside the transaction, delivered at "
    "COMMIT) reached a listener in this process; `stored_at` is `now()`, the start of the "
    "drain's transaction, so it is earlier than the commit by the batch's database time.",
    "`Drainer.run` restarts its idle clock when a receive returns messages, before the "
    "batch is stored, and checks it before the next receive: a batch that takes longer "
    "than `--idle-seconds` (a packed batch of ~60 messages / 26,000 events took over 2 s "
    "here) ends the run with the backlog still queued. The packed runs use 10 s.",
    "The machine is shared: the whole-machine column of the CPU table includes other work "
    "running at the same time (load average at start in the header).",
]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--packed-events", type=int, default=60_000)
    p.add_argument("--single-events", type=int, default=8_000)
    p.add_argument("--batch-sizes", default="500,2000", help="drain batch sizes (messages)")
    p.add_argument("--latency-rate", type=float, default=100)
    p.add_argument("--latency-seconds", type=float, default=30)
    p.add_argument("--no-phases", action="store_true", help="skip the in-process phase timing")
    p.add_argument("--cprofile", action="store_true", help="add a cProfile of the packed drain")
    p.add_argument("--quick", action="store_true", help="small sizes, one run: a smoke test")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.repeats, args.packed_events, args.single_events = 1, 5_000, 1_000
        args.latency_seconds = 5
    for key, value in stack_env().items():
        os.environ.setdefault(key, value)
    base = Settings.from_env()
    batch_sizes = [int(x) for x in args.batch_sizes.split(",") if x]
    begun = time.monotonic()
    machine = machine_facts()
    say(f"machine: {machine['nproc']} cores, load {machine['loadavg_at_start']}")

    tenants = [uuid.uuid4() for _ in range(TENANTS)]
    startup, startup_cpu = drain_startup(base)
    say(f"drain start-up (no work): {startup:.2f} s, {startup_cpu:.2f} CPU s")

    labels = {"packed": f"packed messages, drain batch {batch_sizes[0]}"}
    for b in batch_sizes:
        labels[f"single_b{b}"] = f"single-event messages, drain batch {b}"
    throughput: dict[str, list[dict[str, Any]]] = {k: [] for k in labels}
    raw_copy: list[dict[str, Any]] = []
    event_bytes = 0.0
    for round_no in range(args.repeats):
        seed = 1000 * round_no
        packed_records = make_records(tenants, args.packed_events, seed)
        event_bytes = record_bytes(packed_records)
        result = retrying("packed", base, run_drain, base, "packed", packed_records, batch_sizes[0])
        add_derived(result, startup, startup_cpu)
        throughput["packed"].append(result)
        say(
            f"round {round_no + 1} packed: {fmt(result['events'])} events in "
            f"{result['messages']} messages, {result['wall_s']:.2f} s, "
            f"{fmt(result['events_per_s'])}/s, cpu {result['cpu']['cores']}"
        )
        copy = retrying("raw COPY", base, run_raw_copy, base, packed_records)
        raw_copy.append(copy)
        say(
            f"round {round_no + 1} raw COPY: audit_logs {fmt(copy['audit_logs_rows_per_s'])}/s, "
            f"plain {fmt(copy['plain_table_rows_per_s'])}/s"
        )
        single_records = make_records(tenants, args.single_events, seed + 1)
        for b in batch_sizes:
            result = retrying("single", base, run_drain, base, "single", single_records, b)
            add_derived(result, startup, startup_cpu)
            throughput[f"single_b{b}"].append(result)
            say(
                f"round {round_no + 1} single batch {b}: {fmt(result['events'])} events, "
                f"{result['wall_s']:.2f} s, {fmt(result['events_per_s'])}/s, "
                f"cpu {result['cpu']['cores']}"
            )

    say(f"latency: {args.latency_rate:.0f}/s for {args.latency_seconds:.0f} s")
    latency = retrying(
        "latency",
        base,
        run_latency,
        base,
        args.latency_rate,
        args.latency_seconds,
        batch_sizes[0],
    )
    say(
        f"latency committed-created {latency['committed_minus_created_at']}, "
        f"stored_at-created {latency['stored_at_minus_created_at']}"
    )

    phases = []
    if not args.no_phases:
        records = make_records(tenants, args.packed_events, 99)
        phases.append(
            retrying("phases", base, run_phases, base, "packed", records, batch_sizes[0], False)
        )
        say(f"phases packed: {phases[-1]['events_per_s']}/s {phases[-1]['phases_pct']}")
        records = make_records(tenants, max(1000, args.single_events // 2), 98)
        phases.append(
            retrying("phases", base, run_phases, base, "single", records, batch_sizes[0], False)
        )
        say(f"phases single: {phases[-1]['events_per_s']}/s {phases[-1]['phases_pct']}")

    cprofile = None
    if args.cprofile:  # a separate run: cProfile slows Python down and skews the phases
        records = make_records(tenants, args.packed_events // 3, 97)
        run = retrying("cProfile", base, run_phases, base, "packed", records, batch_sizes[0], True)
        cprofile = {k: run[k] for k in ("events", "events_per_s", "cprofile_top_tottime")}
        say("cProfile of the packed drain: " + "\n".join(run["cprofile_top_tottime"][:40]))

    summary: dict[str, Any] = {
        k: {
            "events_per_s": median_of(v, "events_per_s"),
            "events_per_s_excl_startup": median_of(v, "events_per_s_excl_startup"),
            "events_per_drain_cpu_s": median_of(v, "events_per_drain_cpu_s"),
            "events_per_cpu_s_drain_plus_backend": median_of(
                v, "events_per_cpu_s_drain_plus_backend"
            ),
        }
        for k, v in throughput.items()
    }
    summary["raw_copy_rows_per_s"] = median_of(raw_copy, "audit_logs_rows_per_s")
    summary["raw_copy_plain_rows_per_s"] = median_of(raw_copy, "plain_table_rows_per_s")
    ratios = [
        d["events_per_s"] / c["audit_logs_rows_per_s"]
        for d, c in zip(throughput["packed"], raw_copy, strict=True)
    ]
    summary["packed_vs_copy_runs"] = [round(x, 3) for x in ratios]
    summary["packed_vs_copy"] = statistics.median(ratios)
    summary["packed_meets_target"] = summary["packed"]["events_per_s"] >= TARGET_PACKED_EVENTS_PER_S
    summary["latency_p99_meets_target"] = (
        latency["committed_minus_created_at"]["p99_s"] <= TARGET_P99_S
    )
    data = {
        "machine": machine,
        "repeats": args.repeats,
        "tenants": TENANTS,
        "event_bytes": round(event_bytes, 1),
        "drain_startup_s": round(startup, 3),
        "drain_startup_cpu_s": round(startup_cpu, 3),
        "scenario_labels": labels,
        "summary": summary,
        "throughput": throughput,
        "raw_copy": raw_copy,
        "latency": latency,
        "phases": phases,
        "cprofile": cprofile,
        "total_seconds": round(time.monotonic() - begun, 1),
        "notes": NOTES,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "drain.json").write_text(json.dumps(data, indent=2) + "\n")
    (RESULTS / "drain.md").write_text(write_markdown(data))
    say(f"done in {data['total_seconds']:.0f} s: bench/results/drain.json, drain.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
