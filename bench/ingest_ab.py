"""Single-event ingest, configurations side by side: CPU per event, alternating runs.

    .venv/bin/python -m bench.ingest_ab [--in-process] [--rounds 5] NAME:[VAR=VALUE,...] ...

Each NAME:... is one configuration: environment variables for the API (e.g.
``senders4:PRODUCER_SENDERS=4``); ``ARGS=--flag value`` adds gunicorn arguments. Rounds run
the configurations in turn (A, B, A, B, ...), so a noisy machine weighs on all of them;
the report gives each one's median and lowest CPU per event, and its median events/s and p99.

* default: the API under gunicorn (bench/target.py, fresh database and queues, 2 workers),
  driven by wrk with ``--connections`` keep-alive connections for ``--duration`` seconds;
  CPU per event is the API's CPU time over the events it accepted (bench/machine.py).
* ``--in-process``: the Flask app in one process under gevent, ``--greenlets`` concurrent
  POSTs (no HTTP server, no client): the cost of the request handling and the SQS producer
  alone. ``BENCH_NO_GC_TUNING=1`` leaves the garbage collector at Python's defaults instead
  of the workers' settings (infra/gunicorn_conf.py ``tune_gc``).

Both talk to the local stack's real PostgreSQL and ElasticMQ.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def parse_configs(specs: list[str]) -> dict[str, dict[str, str]]:
    configs: dict[str, dict[str, str]] = {}
    for spec in specs:
        name, _, assignments = spec.partition(":")
        configs[name] = dict(a.split("=", 1) for a in assignments.split(",") if a)
    return configs


def in_process_child(posts: int, greenlets: int) -> None:
    """One measurement in this process (spawned with the configuration's environment)."""
    from gevent import monkey  # type: ignore[import-untyped]

    monkey.patch_all()
    import io
    import time

    import gevent

    from api import close_app, create_app
    from auditlog.settings import Settings
    from bench import payloads, target
    from infra.gunicorn_conf import tune_gc

    target.use_stack_env()
    settings = Settings.from_env()
    token = target.make_tenant_token(settings)
    app = create_app(settings)
    body = payloads.write_bodies(Path(tempfile.mkdtemp()), [])["single"].read_bytes()
    statuses: list[str] = []

    def start_response(status: str, _headers: Any, _exc: Any = None) -> Any:
        statuses.append(status)
        return lambda _data: None  # the WSGI write() callable; the app never calls it

    def post() -> None:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/api/v1/logs",
            "SERVER_NAME": "bench",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "QUERY_STRING": "",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_AUTHORIZATION": f"Bearer {token}",
        }
        b"".join(app.wsgi_app(environ, start_response))

    def worker(count: int) -> None:
        for _ in range(count):
            post()

    for _ in range(50):  # warm-up: caches, connections, the producer's threads
        post()
    if not os.environ.get("BENCH_NO_GC_TUNING"):
        tune_gc()
    statuses.clear()
    cpu, wall = time.process_time(), time.perf_counter()
    gevent.joinall([gevent.spawn(worker, posts // greenlets) for _ in range(greenlets)])
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    accepted = sum(s.startswith("202") for s in statuses)
    close_app(app)
    print(
        json.dumps(
            {
                "cpu_ms_per_event": 1000 * cpu / accepted,
                "events_per_s": accepted / wall,
                "rejected": len(statuses) - accepted,
            }
        )
    )


def in_process_run(env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.ingest_ab", "--child", str(args.posts), str(args.greenlets)],
        cwd=ROOT,
        env={**os.environ, "LOG_LEVEL": "WARNING", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    run: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    if run["rejected"]:
        raise RuntimeError(f"{run['rejected']} requests were not accepted")
    run["p99_ms"] = None
    return run


def server_run(env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    from bench import payloads, target
    from bench.ingest import Runner, define_scenarios
    from bench.ingest import parse_args as ingest_args
    from bench.wrk import ensure_wrk

    options = ingest_args(
        [
            *("--workers", str(args.workers), "--connections", str(args.connections)),
            *("--duration", str(args.duration), "--warmup", "2", "--no-baseline"),
        ]
    )
    scenario = next(s for s in define_scenarios(options) if s.kind == "single")
    env = dict(env)
    extra = env.pop("ARGS").split() if "ARGS" in env else []
    bodies = payloads.write_bodies(Path(tempfile.mkdtemp()), [])
    with target.api_under_test(args.workers, None, env, extra) as api:
        run = Runner(options, ensure_wrk(), api, bodies).run(scenario)
    return {
        "cpu_ms_per_event": 1000 * run["cpu_cores"]["api (gunicorn)"] / run["events_per_s"],
        "events_per_s": run["events_per_s"],
        "p99_ms": run["latency_ms"]["p99"],
        "other_cores": run["cpu_cores"].get("other", 0.0),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        in_process_child(int(argv[1]), int(argv[2]))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("configs", nargs="+", metavar="NAME:[VAR=VALUE,...]")
    p.add_argument("--in-process", action="store_true")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--connections", type=int, default=48)
    p.add_argument("--duration", type=float, default=8)
    p.add_argument("--posts", type=int, default=6400, help="in-process POSTs per run")
    p.add_argument("--greenlets", type=int, default=32)
    args = p.parse_args(argv)
    configs = parse_configs(args.configs)
    measure = in_process_run if args.in_process else server_run
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    for round_no in range(1, args.rounds + 1):
        for name, env in configs.items():
            run = measure(env, args)
            runs[name].append(run)
            p99 = f", p99 {run['p99_ms']} ms" if run["p99_ms"] is not None else ""
            print(
                f"round {round_no} {name}: {run['cpu_ms_per_event'] * 1000:.0f} us CPU/event, "
                f"{run['events_per_s']:,.0f} events/s{p99}",
                flush=True,
            )
    print("\n| configuration | CPU us/event, median (lowest) | events/s, median | p99 ms, median |")
    print("| --- | ---: | ---: | ---: |")
    for name, rows in runs.items():
        cpu = [r["cpu_ms_per_event"] * 1000 for r in rows]
        p99s = [r["p99_ms"] for r in rows if r["p99_ms"] is not None]
        print(
            f"| {name} | {statistics.median(cpu):.0f} ({min(cpu):.0f}) "
            f"| {statistics.median(r['events_per_s'] for r in rows):,.0f} "
            f"| {statistics.median(p99s) if p99s else '-'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
