"""Live-tail benchmark: commit -> client latency, and ordinary HTTP beside open sockets.

    .venv/bin/python -m bench.stream            # the whole run (about 2 minutes)
    .venv/bin/python -m bench.stream --quick    # a short smoke run

Needs the local stack up (``infra/stack.py up``). Starts the API as it ships (gunicorn,
gevent worker, 2 workers) against a fresh database and queues (``bench/target.py``), all on
loopback, and stops everything at the end.

* ``latency``: ``--clients`` WebSocket clients (the ``websockets`` asyncio client, in this
  process) tail one tenant while a producer sends ``--rate`` single-event SQS messages per
  second and the real drain (``Drainer``, in a thread) commits them. An event's commit time
  is when the drain's NOTIFY (delivered by PostgreSQL at COMMIT) reaches a LISTEN
  connection of this process; its latency at a client is that client's receive time minus
  the commit time (one clock). Every client must see every event once, in seq order.
* ``http``: p50/p99 of ``GET /api/v1/logs?limit=20`` (wrk, 8 connections) with no socket
  open and with ``--sockets`` live-tail sockets open (held by a second asyncio loop in this
  process), alternating, ``--rounds`` times each.

Writes bench/results/stream.json (git-ignored) and bench/results/stream.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file: make `bench`, `api` and `infra` importable
    sys.path.insert(0, str(ROOT))

import jwt  # noqa: E402
import orjson  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

from auditlog.drain import Drainer  # noqa: E402
from auditlog.events import AcceptedEvent, EventIn  # noqa: E402
from auditlog.ids import new_event_id  # noqa: E402
from auditlog.queue import EventQueue, encode_envelope  # noqa: E402
from auditlog.store.pool import connect as db_connect  # noqa: E402
from auditlog.tokens import mint_token  # noqa: E402
from bench import machine, wrk  # noqa: E402
from bench.target import Target, api_under_test  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TARGET_P50_MS, TARGET_P99_MS = 100.0, 500.0
HTTP_PATH = "/api/v1/logs?limit=20"
OPEN_CONCURRENCY = 50  # sockets being opened at once


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# -- commit clock, producer, drain ---------------------------------------------------------


class CommitClock:
    """When each seq of the tenant was committed: the drain's NOTIFY as received here."""

    def __init__(self, database_url: str, tenant: uuid.UUID) -> None:
        self.database_url = database_url
        self.tenant = str(tenant)
        self.committed: dict[int, float] = {}
        self.head = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        with db_connect(self.database_url, autocommit=True) as conn:
            conn.execute("LISTEN audit_events")
            self._ready.set()
            while not self._stop.is_set():
                for notify in conn.notifies(timeout=0.2):
                    now = time.perf_counter()
                    tenant, last = notify.payload.split(":")
                    if tenant != self.tenant:
                        continue
                    for seq in range(self.head + 1, int(last) + 1):
                        self.committed[seq] = now
                    self.head = max(self.head, int(last))


def event_record(tenant: uuid.UUID, i: int) -> dict[str, Any]:
    event_id, created_at = new_event_id()
    body = EventIn.model_validate(
        {
            "action_type": ("CREATE", "UPDATE", "DELETE", "VIEW")[i % 4],
            "resource_type": "document",
            "resource_id": f"doc-{i}",
            "severity": ("INFO", "WARNING", "ERROR", "CRITICAL")[i % 4],
            "user_id": str(uuid.uuid4()),
            "ip_address": "203.0.113.7",
            "user_agent": "bench-stream/1.0",
            "metadata": {"request": i, "path": "/documents/edit", "note": "x" * 200},
        }
    )
    return AcceptedEvent(event_id, tenant, created_at, body).to_record()


PRODUCER_THREADS = 4  # an SQS send takes a few ms; several keep the schedule under load


def produce(queue: EventQueue, tenant: uuid.UUID, rate: float, seconds: float) -> tuple[int, float]:
    """One single-event message every 1/rate s on a fixed schedule (sent by a few threads
    in turn); returns how many and the rate actually achieved."""
    count = int(rate * seconds)
    start = time.perf_counter()

    def lane(first: int) -> None:
        for i in range(first, count, PRODUCER_THREADS):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            queue.send_bodies([encode_envelope([event_record(tenant, i)])])

    lanes = [threading.Thread(target=lane, args=(k,)) for k in range(PRODUCER_THREADS)]
    for thread in lanes:
        thread.start()
    for thread in lanes:
        thread.join()
    return count, count / (time.perf_counter() - start)


# -- clients -------------------------------------------------------------------------------


@dataclass
class Tail:
    received: list[tuple[int, float]] = field(default_factory=list)  # (seq, perf_counter)
    ready: bool = False
    close_code: int | None = None


async def open_socket(url: str, token: str, compression: bool) -> ClientConnection:
    return await connect(
        url,
        additional_headers={"Authorization": f"Bearer {token}"},
        open_timeout=60,
        compression="deflate" if compression else None,
        max_queue=None,  # read everything; the server's buffer is what is being measured
    )


async def read_tail(ws: ClientConnection, tail: Tail) -> None:
    try:
        async for raw in ws:
            now = time.perf_counter()
            message = orjson.loads(raw)
            if message["type"] == "event":
                tail.received.append((message["seq"], now))
            elif message["type"] == "ready":
                tail.ready = True
    finally:
        tail.close_code = ws.close_code


async def open_many(
    url: str, token: str, count: int, compression: bool
) -> list[tuple[ClientConnection, Tail, asyncio.Task[None]]]:
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def one() -> tuple[ClientConnection, Tail, asyncio.Task[None]]:
        async with gate:
            ws = await open_socket(url, token, compression)
        tail = Tail()
        return ws, tail, asyncio.create_task(read_tail(ws, tail))

    opened = await asyncio.gather(*(one() for _ in range(count)))
    deadline = time.monotonic() + 30
    while not all(tail.ready for _, tail, _ in opened) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return opened


async def close_all(opened: list[tuple[ClientConnection, Tail, asyncio.Task[None]]]) -> None:
    await asyncio.gather(*(ws.close() for ws, _, _ in opened), return_exceptions=True)
    await asyncio.gather(*(task for _, _, task in opened), return_exceptions=True)


# -- scenarios -----------------------------------------------------------------------------


def ws_url(target: Target) -> str:
    return target.base_url.replace("http://", "ws://") + "/api/v1/logs/stream"


def classifier(target: Target) -> machine.Classifier:
    return machine.stack_classifier(
        target.api.process.pid, target.settings.database_url.rsplit("/", 1)[1]
    )


def client_process(
    url: str,
    token: str,
    count: int,
    compression: bool,
    slot: int,
    progress: Any,  # multiprocessing Array('q'): per process, clients ready / fewest events
    stop: Any,  # multiprocessing Event
    results: Any,  # multiprocessing Queue
) -> None:
    """``count`` tailing clients in a process of their own, so that the clients' CPU work
    is spread over the cores like the server's; reports what each client received."""

    async def run() -> list[list[tuple[int, float]]]:
        opened = await open_many(url, token, count, compression)
        tails = [tail for _, tail, _ in opened]
        progress[2 * slot] = sum(tail.ready for tail in tails)
        while not stop.is_set():
            progress[2 * slot + 1] = min(len(tail.received) for tail in tails)
            await asyncio.sleep(0.1)
        await close_all(opened)
        return [tail.received for tail in tails]

    results.put((slot, asyncio.run(run())))


def latency_scenario(
    target: Target, tenant: uuid.UUID, token: str, args: argparse.Namespace
) -> dict[str, Any]:
    queue = EventQueue.from_settings(target.settings)
    clock = CommitClock(target.settings.database_url, tenant)
    clock.start()
    stop_drain = threading.Event()
    drainer = Drainer(queue, target.settings.database_url)
    drain = threading.Thread(
        target=lambda: drainer.run(
            time_budget_s=args.seconds + 60, idle_s=args.seconds + 60, should_stop=stop_drain.is_set
        ),
        daemon=True,
    )
    # spawn, not fork: this process has threads (the commit clock).
    mp = multiprocessing.get_context("spawn")
    procs_n = max(1, min(args.client_procs, args.clients))
    shares = [args.clients // procs_n + (i < args.clients % procs_n) for i in range(procs_n)]
    progress = mp.Array("q", 2 * procs_n, lock=False)
    for i in range(procs_n):
        progress[2 * i] = -1
    stop, results = mp.Event(), mp.Queue()
    procs = [
        mp.Process(
            target=client_process,
            args=(ws_url(target), token, n, args.compression, i, progress, stop, results),
            daemon=True,
        )
        for i, n in enumerate(shares)
    ]
    try:
        for proc in procs:
            proc.start()
        deadline = time.monotonic() + 60
        while any(progress[2 * i] < 0 for i in range(procs_n)) and time.monotonic() < deadline:
            time.sleep(0.1)
        ready = sum(max(0, progress[2 * i]) for i in range(procs_n))
        drain.start()
        started = time.monotonic()
        base, client_pids = classifier(target), {proc.pid for proc in procs}

        def classify(pid: int, pgrp: int, cmdline: str) -> str | None:
            return "ws clients" if pid in client_pids else base(pid, pgrp, cmdline)

        with machine.measure_cpu(classify) as cores:
            sent, achieved_rate = produce(queue, tenant, args.rate, args.seconds)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and (
                clock.head < sent or any(progress[2 * i + 1] < sent for i in range(procs_n))
            ):
                time.sleep(0.1)
        elapsed = time.monotonic() - started
        stop.set()
        received: list[list[tuple[int, float]]] = []
        for _ in procs:
            received.extend(results.get(timeout=60)[1])
        for proc in procs:
            proc.join(30)
    finally:
        stop.set()
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        stop_drain.set()
        drain.join(15)
        drainer.close()
        clock.stop()
    latencies = [
        (at - clock.committed[seq]) * 1000
        for seqs in received
        for seq, at in seqs
        if seq in clock.committed
    ]
    in_order = all([seq for seq, _ in seqs] == list(range(1, len(seqs) + 1)) for seqs in received)
    return {
        "clients": args.clients,
        "client_processes": procs_n,
        "clients_ready": ready,
        "rate_events_per_s": args.rate,
        "seconds": args.seconds,
        "elapsed_s": round(elapsed, 1),
        "achieved_rate_events_per_s": round(achieved_rate, 1),
        "compression": args.compression,
        "events_sent": sent,
        "events_committed": clock.head,
        "deliveries": len(latencies),
        "deliveries_expected": sent * args.clients,
        "every_client_in_seq_order_without_gap_or_duplicate": in_order,
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 1),
            "p90": round(percentile(latencies, 90), 1),
            "p99": round(percentile(latencies, 99), 1),
            "max": round(max(latencies), 1),
            "mean": round(statistics.fmean(latencies), 1),
        },
        "cores": cores,
    }


class SocketHolder:
    """``count`` live-tail sockets held open by an asyncio loop in a thread of its own."""

    def __init__(self, url: str, token: str, count: int) -> None:
        self.url, self.token, self.count = url, token, count
        self.ready = 0
        self.still_open = 0
        self.open_seconds = 0.0
        self._opened = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._hold()), daemon=True)

    def __enter__(self) -> SocketHolder:
        self._thread.start()
        if not self._opened.wait(120):
            raise RuntimeError("the sockets did not open within 120 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._thread.join(60)

    async def _hold(self) -> None:
        started = time.monotonic()
        opened = await open_many(self.url, self.token, self.count, compression=True)
        self.open_seconds = time.monotonic() - started
        self.ready = sum(tail.ready for _, tail, _ in opened)
        self._opened.set()
        await asyncio.to_thread(self._release.wait)
        self.still_open = sum(task.done() is False for _, _, task in opened)
        await close_all(opened)


def http_scenario(target: Target, token: str, args: argparse.Namespace) -> dict[str, Any]:
    binary = wrk.ensure_wrk()
    load = wrk.Load(url=target.base_url + HTTP_PATH, method="GET", token=token, expect_status=200)

    def measure(label: str) -> dict[str, Any]:
        with machine.measure_cpu(classifier(target)) as cores:
            result = wrk.run_wrk(binary, load, connections=8, duration_s=args.http_seconds)
        row = {"sockets_open": label, **result.as_dict(), "cores": cores}
        print(f"[bench] http with {label} sockets: {result.latency_ms}", flush=True)
        return row

    runs: list[dict[str, Any]] = []
    holders: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        runs.append(measure("0"))
        with SocketHolder(ws_url(target), token, args.sockets) as holder:
            runs.append(measure(str(args.sockets)))
        holders.append(
            {
                "ready": holder.ready,
                "still_open_after_http_run": holder.still_open,
                "open_seconds": round(holder.open_seconds, 1),
            }
        )
    return {"runs": runs, "sockets": holders}


# -- report --------------------------------------------------------------------------------


def _median(runs: list[dict[str, Any]], label: str, key: str) -> float:
    median: float = statistics.median(
        r["latency_ms"][key] for r in runs if r["sockets_open"] == label
    )
    return median


def markdown(data: dict[str, Any]) -> str:
    facts, lat, http = data["machine"], data["latency"], data["http"]
    runs, sockets = http["runs"], str(data["config"]["sockets"])

    def ok(value: float, target: float) -> str:
        return "yes" if value <= target else "**no**"

    deflate = (
        "offered by the clients (as browsers do), not negotiated by the server"
        if lat["compression"]
        else "not offered"
    )
    lines = [
        "# Live-tail benchmark",
        "",
        f"`.venv/bin/python -m bench.stream` on {facts['nproc']} cores ({facts['cpu_model']}), "
        f"{facts['memory_gib']} GiB, Python {facts['python']}; commit "
        f"`{facts['git_commit'][:12]}`{' (dirty)' if facts['git_dirty'] else ''}, "
        f"{facts['measured_at']}. Load average at start: "
        f"{', '.join(f'{x:.2f}' for x in facts['loadavg_at_start'])}. "
        "API: gunicorn, gevent worker, 2 workers, on loopback; PostgreSQL, ElasticMQ and the "
        "clients on the same machine.",
        "",
        "## Commit -> client latency",
        "",
        f"{lat['clients']} clients tail one tenant while the drain commits "
        f"{lat['rate_events_per_s']:g} events/s (single-event SQS messages) for "
        f"{lat['seconds']:g} s, clients in {lat['client_processes']} processes; per-message "
        f"deflate {deflate}. Commit time: the "
        "drain's NOTIFY received by a LISTEN connection of the benchmark process.",
        "",
        "| measure | result | target | met |",
        "| --- | --- | --- | --- |",
        f"| p50 | {lat['latency_ms']['p50']} ms | <= {TARGET_P50_MS:g} ms | "
        f"{ok(lat['latency_ms']['p50'], TARGET_P50_MS)} |",
        f"| p99 | {lat['latency_ms']['p99']} ms | <= {TARGET_P99_MS:g} ms | "
        f"{ok(lat['latency_ms']['p99'], TARGET_P99_MS)} |",
        f"| p90 / max / mean | {lat['latency_ms']['p90']} / {lat['latency_ms']['max']} / "
        f"{lat['latency_ms']['mean']} ms | — | — |",
        f"| deliveries | {lat['deliveries']:,} of {lat['deliveries_expected']:,} "
        f"({lat['events_sent']} events x {lat['clients']} clients) | all | "
        f"{'yes' if lat['deliveries'] == lat['deliveries_expected'] else '**no**'} |",
        f"| every client in seq order, no gap, no duplicate | "
        f"{lat['every_client_in_seq_order_without_gap_or_duplicate']} | True | "
        f"{'yes' if lat['every_client_in_seq_order_without_gap_or_duplicate'] else '**no**'} |",
        "",
        "Cores used meanwhile (CPU seconds per second): "
        + ", ".join(f"{k} {v}" for k, v in lat["cores"].items())
        + f" ('ws clients': the {lat['client_processes']} client processes; 'load generator': "
        "the benchmark's main process, i.e. the producer, the drain and the commit clock).",
        "",
        f"## Ordinary HTTP beside {sockets} open sockets",
        "",
        f"`GET {HTTP_PATH}` (wrk, 8 connections, {data['config']['http_seconds']} s per run), "
        f"runs alternating without and with {sockets} idle live-tail sockets open (held by "
        "the benchmark process; heartbeats and pings every 5 s).",
        "",
        "| sockets open | requests/s | p50 ms | p99 ms | max ms | errors | API cores | "
        "other processes' cores |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in runs:
        lines.append(
            f"| {run['sockets_open']} | {run['ok_per_s']:,} | {run['latency_ms']['p50']} | "
            f"{run['latency_ms']['p99']} | {run['latency_ms']['max']} | "
            f"{run['unexpected_status'] + run['socket_errors']} | "
            f"{run['cores'].get('api (gunicorn)', 0)} | {run['cores'].get('other', 0)} |"
        )
    api_us_per_delivery = (
        lat["cores"].get("api (gunicorn)", 0) / max(1.0, lat["deliveries"] / lat["seconds"]) * 1e6
    )
    base_p99, loaded_p99 = _median(runs, "0", "p99"), _median(runs, sockets, "p99")
    base_p50, loaded_p50 = _median(runs, "0", "p50"), _median(runs, sockets, "p50")
    lines += [
        "",
        f"Medians: p50 {base_p50:.1f} ms without, {loaded_p50:.1f} ms with {sockets} sockets "
        f"(x{loaded_p50 / base_p50:.2f}); p99 {base_p99:.1f} ms without, {loaded_p99:.1f} ms "
        f"with (x{loaded_p99 / base_p99:.2f}).",
        "",
        "Sockets per round (spread over the API's 2 workers by the kernel): "
        + "; ".join(
            f"{h['ready']} ready in {h['open_seconds']} s, {h['still_open_after_http_run']} "
            "still open after the HTTP run"
            for h in http["sockets"]
        )
        + ".",
        "",
        "## Notes",
        "",
        "* The machine is shared: the `other` figures are CPU that unrelated work used during "
        "the same runs (load average above). The API itself needed "
        f"{api_us_per_delivery:.0f} µs of CPU per delivered event in the latency run "
        f"({lat['cores'].get('api (gunicorn)', 0)} cores for "
        f"{lat['deliveries'] / lat['seconds']:,.0f} deliveries/s): a committed event is read "
        "from PostgreSQL and rendered into a WebSocket frame once per API process, and each "
        "socket gets the bytes of that frame, one write per drain commit.",
        "* The API's own CPU is small next to the latencies, so they most likely come from "
        "waiting for a CPU: with both cores nearly always busy, each hop (PostgreSQL -> API "
        "worker -> client process) waits its turn, and the results move with the load "
        "other work puts on the machine.",
        "* The clients run in several processes because one asyncio process reading 100 "
        "sockets (10,000 messages/s) lagged behind by itself on this machine and made the "
        "latency its own.",
        "",
    ]
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--client-procs", type=int, default=4, help="processes the clients run in")
    p.add_argument("--rate", type=float, default=100.0, help="events per second")
    p.add_argument("--seconds", type=float, default=30.0, help="length of the latency run")
    p.add_argument("--sockets", type=int, default=1000, help="sockets open in the HTTP runs")
    p.add_argument("--http-seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=2, help="HTTP runs without/with sockets")
    p.add_argument(
        "--compression",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="offer per-message deflate in the latency run (browsers do)",
    )
    p.add_argument("--report-only", action="store_true", help="rewrite stream.md from .json")
    p.add_argument("--latency-only", action="store_true", help="no HTTP runs, no report")
    p.add_argument("--quick", action="store_true", help="10 clients, 5 s, 100 sockets, 1 round")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.quick:
        args.clients, args.seconds, args.sockets = 10, 5.0, 100
        args.http_seconds, args.rounds = 3.0, 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only:
        data = json.loads((args.out_dir / "stream.json").read_text())
        (args.out_dir / "stream.md").write_text(markdown(data))
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 4 * args.sockets + 1000))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))  # gunicorn inherits it
    facts = machine.machine_facts()
    env = {"STREAM_HEARTBEAT_SECONDS": "5", "LOG_LEVEL": "WARNING"}
    with api_under_test(workers=2, extra_env=env) as target:
        tenant = uuid.UUID(
            jwt.decode(target.token, options={"verify_signature": False})["tenant_id"]
        )
        reader = mint_token(target.settings, tenant_id=tenant, role="reader", subject="bench")
        print(f"[bench] latency: {args.clients} clients, {args.rate:g} events/s", flush=True)
        latency = latency_scenario(target, tenant, reader, args)
        print(f"[bench] latency: {latency['latency_ms']}", flush=True)
        if args.latency_only:
            print(json.dumps(latency, indent=2))
            return 0
        http = http_scenario(target, reader, args)
    data = {
        "machine": facts,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "latency": latency,
        "http": http,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "stream.json").write_text(json.dumps(data, indent=2) + "\n")
    (args.out_dir / "stream.md").write_text(markdown(data))
    print((args.out_dir / "stream.md").read_text(), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
