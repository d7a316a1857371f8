"""Ingest benchmark: single-event and bulk POST throughput and latency of the API under
gunicorn, beside the SQS server's raw SendMessageBatch rate and a GET /healthz ceiling.

    .venv/bin/python -m bench.ingest            # or: make bench (starts the local stack)
    .venv/bin/python bench/ingest.py --quick    # a short smoke run

Needs the local stack up (``infra/stack.py up``). Starts its own gunicorn against a fresh
database and fresh queues, removes them afterwards, and writes bench/results/ingest.json
and bench/results/ingest.md. Every scenario runs ``--repeats`` times, interleaved in
rounds so that a noisy moment on the machine does not hit one scenario only.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file: make `bench` and `infra` importable
    sys.path.insert(0, str(ROOT))

from bench import machine, payloads, pyspy, report, sqs_raw, target  # noqa: E402
from bench.wrk import Load, WrkError, ensure_wrk, run_wrk, wrk_version  # noqa: E402

RunFn = Callable[[], dict[str, Any]]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workers", type=int, default=None, help="gunicorn workers (2; 1 profiling)")
    p.add_argument(
        "--worker-class",
        default=None,
        help="gunicorn worker class (run.py's: gevent; gthread to compare)",
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--duration", type=float, default=10, help="seconds per single-event run")
    p.add_argument("--bulk-duration", type=float, default=8)
    p.add_argument("--short-duration", type=float, default=5, help="/healthz and raw SQS runs")
    p.add_argument("--warmup", type=float, default=2)
    p.add_argument("--connections", default="16,32,48,64", help="single-event concurrency levels")
    p.add_argument("--bulk-sizes", default="500,1000")
    p.add_argument("--bulk-connections", type=int, default=4)
    p.add_argument("--healthz-connections", type=int, default=64)
    p.add_argument("--sqs-threads", type=int, default=4)
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument(
        "--api-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the API under test (repeatable), e.g. LOG_LEVEL=WARNING",
    )
    p.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the seed-style baseline (bench/baselines/seed_api.py)",
    )
    p.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--quick", action="store_true", help="1 repeat of 3 s runs (smoke test)")
    p.add_argument(
        "--profile",
        action="store_true",
        help="instead: sample the worker's stacks under single-event and bulk load",
    )
    args = p.parse_args(argv)
    if args.workers is None:
        args.workers = 1 if args.profile else 2
    if args.quick:
        args.repeats, args.duration, args.bulk_duration = 1, 3, 3
        args.short_duration, args.warmup = 2, 1
    return args


def api_env(args: argparse.Namespace) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in args.api_env]
    if any(len(pair) != 2 for pair in pairs):
        raise SystemExit("--api-env takes NAME=VALUE")
    return dict((name, value) for name, value in pairs)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def define_scenarios(args: argparse.Namespace) -> list[report.Scenario]:
    scenarios = [
        report.Scenario(
            "sqs_raw", "raw SQS SendMessageBatch (threads)", "sqs_raw", args.sqs_threads, 10
        ),
        report.Scenario(
            f"healthz_c{args.healthz_connections}",
            "GET /healthz",
            "healthz",
            args.healthz_connections,
            1,
        ),
    ]
    for c in _ints(args.connections):
        scenarios.append(report.Scenario(f"single_c{c}", "POST /api/v1/logs", "single", c, 1))
    if not args.no_baseline:
        # The seed prototype's design on the same servers and gunicorn settings, at the
        # middle single-event concurrency: the side-by-side comparison.
        c = _ints(args.connections)[len(_ints(args.connections)) // 2]
        scenarios.append(
            report.Scenario(
                f"baseline_c{c}",
                "seed-style baseline: POST /api/v1/logs (INSERT + SendMessage + index)",
                "baseline",
                c,
                1,
            )
        )
    for size in _ints(args.bulk_sizes):
        scenarios.append(
            report.Scenario(
                f"bulk_{size}_c{args.bulk_connections}",
                f"POST /api/v1/logs/bulk x {size}",
                "bulk",
                args.bulk_connections,
                size,
            )
        )
    return scenarios


class Runner:
    """Runs one measurement of a scenario against the API under test."""

    def __init__(
        self,
        args: argparse.Namespace,
        wrk: str,
        api: target.Target,
        bodies: dict[str, Path],
        baseline: target.Target | None = None,
    ) -> None:
        self.args = args
        self.wrk = wrk
        self.api = api
        self.baseline = baseline
        self.bodies = bodies
        database = api.settings.database_url.rsplit("/", 1)[-1]
        other = None
        if baseline is not None:
            other = (target.api_pgrp(baseline), baseline.settings.database_url.rsplit("/", 1)[-1])
        self.classify = machine.stack_classifier(target.api_pgrp(api), database, other)

    def load(self, scenario: report.Scenario) -> Load:
        base = self.api.base_url
        if scenario.kind == "healthz":
            return Load(f"{base}/healthz", method="GET", expect_status=200)
        if scenario.kind == "single":
            return Load(
                f"{base}/api/v1/logs", body_file=self.bodies["single"], token=self.api.token
            )
        if scenario.kind == "baseline":
            assert self.baseline is not None
            return Load(
                f"{self.baseline.base_url}/api/v1/logs",
                body_file=self.bodies["single"],
                token=self.baseline.token,
                expect_status=201,
            )
        body = self.bodies[f"bulk-{scenario.events_per_request}"]
        return Load(f"{base}/api/v1/logs/bulk", body_file=body, token=self.api.token)

    def duration(self, scenario: report.Scenario) -> float:
        if scenario.kind == "bulk":
            return float(self.args.bulk_duration)
        if scenario.kind in ("single", "baseline"):
            return float(self.args.duration)
        return float(self.args.short_duration)

    def run(self, scenario: report.Scenario) -> dict[str, Any]:
        if scenario.kind == "sqs_raw":
            return self.run_raw_sqs()
        return self.run_http(scenario)

    def run_http(self, scenario: report.Scenario) -> dict[str, Any]:
        load, c, t = self.load(scenario), scenario.connections, self.args.wrk_threads
        warmup = max(1.0, float(self.args.warmup))
        ingest = scenario.kind not in ("healthz", "baseline")
        run_wrk(self.wrk, load, connections=c, duration_s=warmup, threads=t)
        if ingest:
            self.api.purge_queue()
        with machine.measure_cpu(self.classify) as cores:
            result = run_wrk(
                self.wrk, load, connections=c, duration_s=self.duration(scenario), threads=t
            )
        run = {
            "events_per_s": round(result.ok_per_s * scenario.events_per_request, 1),
            "requests_per_s": round(result.ok_per_s, 1),
            "latency_ms": result.latency_ms,
            "errors": result.errors,
            "cpu_cores": cores,
            "wrk": result.as_dict(),
        }
        if ingest:
            # How well events share SQS messages (the producer's batching at work).
            events = (result.requests - result.unexpected) * scenario.events_per_request
            messages = self.api.queue_depth()
            run["sqs_messages"] = messages
            run["events_per_message"] = round(events / messages, 2) if messages else None
            self.api.purge_queue()
        return run

    def run_raw_sqs(self) -> dict[str, Any]:
        threads = self.args.sqs_threads
        with sqs_raw.raw_queue(self.api.settings) as (sqs, url):
            sqs_raw.measure_raw_rate(sqs, url, threads, max(1.0, float(self.args.warmup) / 2))
            with machine.measure_cpu(self.classify) as cores:
                result = sqs_raw.measure_raw_rate(sqs, url, threads, self.args.short_duration)
        return {
            "events_per_s": round(result.messages_per_s, 1),
            "requests_per_s": round(result.calls_per_s, 1),
            "latency_ms": result.latency_ms,
            "errors": result.errors + result.failed_entries,
            "cpu_cores": cores,
            "sqs": result.as_dict(),
        }


def estimate_seconds(args: argparse.Namespace, scenarios: list[report.Scenario]) -> float:
    per_round = 0.0
    for s in scenarios:
        length = {
            "bulk": args.bulk_duration,
            "single": args.duration,
            "baseline": args.duration,
        }.get(s.kind, args.short_duration)
        per_round += length + max(1.0, args.warmup) + 1
    total: float = per_round * args.repeats + 15
    return total


def measure(
    args: argparse.Namespace, wrk: str, scenarios: list[report.Scenario], workdir: Path
) -> None:
    sizes = _ints(args.bulk_sizes)
    bodies = payloads.write_bodies(workdir, sizes)
    print(f"[bench] starting gunicorn ({args.workers} workers) on a fresh database", flush=True)
    with contextlib.ExitStack() as stack:
        api = stack.enter_context(
            target.api_under_test(args.workers, args.worker_class, api_env(args))
        )
        baseline = None
        if any(s.kind == "baseline" for s in scenarios):
            baseline = stack.enter_context(
                target.baseline_under_test(args.workers, args.worker_class)
            )
        target.preflight(api, bodies["single"], bodies[f"bulk-{sizes[0]}"], sizes[0])
        api.purge_queue()
        runner = Runner(args, wrk, api, bodies, baseline)
        for round_no in range(1, args.repeats + 1):
            for scenario in scenarios:
                try:
                    scenario.runs.append(runner.run(scenario))
                except WrkError:
                    print(f"[bench] API log tail:\n{target.api_log_tail(api)}", file=sys.stderr)
                    raise
                m = scenario.runs[-1]
                print(
                    f"[bench] round {round_no}/{args.repeats} {scenario.key:<16} "
                    f"{m['events_per_s']:>10,.0f}/s  p50 {m['latency_ms']['p50']:7.1f} ms  "
                    f"p99 {m['latency_ms']['p99']:7.1f} ms  errors {m['errors']}  "
                    f"events/msg {m.get('events_per_message') or '-'}  "
                    f"other CPU {m['cpu_cores'].get('other', 0):.2f}",
                    flush=True,
                )


def profile(args: argparse.Namespace, wrk: str, workdir: Path) -> None:
    """Each scenario against its own gunicorn, its workers sampled by py-spy during the
    measured window; prints the roll-up (folded stacks stay in .dev/logs/bench/profile-*/)."""
    sizes = _ints(args.bulk_sizes)
    bodies = payloads.write_bodies(workdir, sizes)
    conns = _ints(args.connections)
    keys = {f"single_c{conns[len(conns) // 2]}", f"bulk_{sizes[-1]}_c{args.bulk_connections}"}
    for scenario in [s for s in define_scenarios(args) if s.key in keys]:
        out = target.LOG_DIR / f"profile-{scenario.key}"
        shutil.rmtree(out, ignore_errors=True)
        with target.api_under_test(args.workers, args.worker_class, api_env(args)) as api:
            runner = Runner(args, wrk, api, bodies)
            pids = pyspy.worker_pids(api.api.process.pid)
            # Sampled: the run's warm-up and its measured window.
            seconds = max(1.0, float(args.warmup)) + runner.duration(scenario)
            spies = pyspy.record(pids, seconds, out)
            run = runner.run(scenario)
            for spy in spies:
                spy.wait(timeout=60)
        print(
            f"\n## {scenario.label}, c={scenario.connections}, {args.workers} worker(s): "
            f"{run['events_per_s']:,.0f} events/s, p99 {run['latency_ms']['p99']} ms, "
            f"CPU {run['cpu_cores']}\n"
        )
        text = pyspy.summary(out)
        (out / "summary.txt").write_text(text + "\n")
        print(text, flush=True)


def config_facts(args: argparse.Namespace, wrk: str) -> dict[str, Any]:
    return {
        "workers": args.workers,
        "worker_class": target.worker_class_name(args.worker_class),
        "repeats": args.repeats,
        "duration_s": args.duration,
        "bulk_duration_s": args.bulk_duration,
        "short_duration_s": args.short_duration,
        "warmup_s": max(1.0, args.warmup),
        "sqs_threads": args.sqs_threads,
        "wrk": wrk_version(wrk).split(" [")[0] or "wrk",
        "wrk_threads": args.wrk_threads,
        "api_env": api_env(args),
    }


def _stop_on_sigterm() -> None:
    def handler(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    _stop_on_sigterm()
    wrk = ensure_wrk()
    scenarios = define_scenarios(args)
    facts = machine.machine_facts()
    config = config_facts(args, wrk)
    if not args.profile:
        print(f"[bench] about {estimate_seconds(args, scenarios):.0f} s of measurements")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as workdir:
        try:
            if args.profile:
                profile(args, wrk, Path(workdir))
                return 0
            measure(args, wrk, scenarios, Path(workdir))
        except KeyboardInterrupt:
            print("[bench] interrupted; cleaned up", file=sys.stderr)
            return 130
    text = report.write_results(args.out_dir, facts, config, scenarios)
    print(f"\n{text}")
    print(f"[bench] done in {time.monotonic() - started:.0f} s; wrote {args.out_dir}/ingest.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
