"""Medians over repeated runs, the JSON results file and the markdown table."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TARGETS = {
    "single": "≥ 2,000 events/s, p99 ≤ 50 ms",
    "bulk": "≥ 20,000 events/s",
}


@dataclass
class Scenario:
    key: str
    label: str
    kind: str  # sqs_raw | healthz | single | bulk
    connections: int
    events_per_request: int
    runs: list[dict[str, Any]] = field(default_factory=list)

    def median(self) -> dict[str, Any]:
        def med(path: tuple[str, ...]) -> float:
            values = [_get(run, path) for run in self.runs]
            return round(statistics.median(values), 2)

        groups = sorted({g for run in self.runs for g in run["cpu_cores"]})
        api_ms = [_api_cpu_ms(run) for run in self.runs]
        per_message = [r["events_per_message"] for r in self.runs if r.get("events_per_message")]
        return {
            # CPU the API's processes spent per event (per request for /healthz): the figure
            # least disturbed by other work on a shared machine.
            "api_cpu_ms_per_event": round(statistics.median(api_ms), 3) if any(api_ms) else None,
            "events_per_message": round(statistics.median(per_message), 1) if per_message else None,
            "events_per_s": med(("events_per_s",)),
            "requests_per_s": med(("requests_per_s",)),
            "p50_ms": med(("latency_ms", "p50")),
            "p99_ms": med(("latency_ms", "p99")),
            "errors_total": sum(run["errors"] for run in self.runs),
            "cpu_cores": {g: med(("cpu_cores", g)) for g in groups},
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "kind": self.kind,
            "connections": self.connections,
            "events_per_request": self.events_per_request,
            "target": TARGETS.get(self.kind),
            "runs": self.runs,
            "median": self.median() if self.runs else None,
        }


def _api_cpu_ms(run: dict[str, Any]) -> float:
    cores = run["cpu_cores"].get("api (gunicorn)", 0.0)
    return 1000 * cores / run["events_per_s"] if run["events_per_s"] and cores else 0.0


def _get(run: dict[str, Any], path: tuple[str, ...]) -> float:
    value: Any = run
    for key in path:
        value = value.get(key, 0.0) if isinstance(value, dict) else 0.0
    return float(value)


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _unit(kind: str) -> str:
    return {"sqs_raw": "msg/s", "healthz": "req/s"}.get(kind, "events/s")


def _raw_rate(scenarios: list[Scenario]) -> float | None:
    raw = next((s for s in scenarios if s.kind == "sqs_raw" and s.runs), None)
    return raw.median()["events_per_s"] if raw else None


def _opt(value: float | None, fmt: str) -> str:
    return format(value, fmt) if value else ""


def throughput_table(scenarios: list[Scenario]) -> list[str]:
    raw = _raw_rate(scenarios)
    repeats = max((len(s.runs) for s in scenarios), default=0)
    lines = [
        f"| scenario | concurrency | median | {repeats} runs | p50 ms | p99 ms | errors"
        " | API CPU ms/event | events/SQS msg | x raw SQS | target |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in scenarios:
        if not s.runs:
            continue
        m = s.median()
        runs = " / ".join(_n(run["events_per_s"]) for run in s.runs)
        ratio = f"{m['events_per_s'] / raw:.2f}" if raw and s.kind in ("single", "bulk") else ""
        lines.append(
            f"| {s.label} | {s.connections} | **{_n(m['events_per_s'])}** {_unit(s.kind)}"
            f" | {runs} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} | {m['errors_total']}"
            f" | {_opt(m['api_cpu_ms_per_event'], '.3f')} | {_opt(m['events_per_message'], '.1f')}"
            f" | {ratio} | {TARGETS.get(s.kind, '')} |"
        )
    return lines


def baseline_comparison(scenarios: list[Scenario]) -> list[str]:
    """Ours against the seed-style baseline at the same concurrency, run by run."""
    baseline = next((s for s in scenarios if s.kind == "baseline" and s.runs), None)
    ours = next(
        (
            s
            for s in scenarios
            if baseline and s.kind == "single" and s.connections == baseline.connections
        ),
        None,
    )
    if baseline is None or ours is None or not ours.runs:
        return []
    b, o = baseline.median(), ours.median()
    return [
        "",
        f"**Against the seed-style baseline** (`bench/baselines/seed_api.py`: per request an "
        f"INSERT, an SQS SendMessage and an OpenSearch index, on the same servers and "
        f"gunicorn settings), single-event POSTs at {baseline.connections} connections: "
        f"throughput x{o['events_per_s'] / b['events_per_s']:.1f} "
        f"({_n(o['events_per_s'])} vs {_n(b['events_per_s'])} events/s), "
        f"p99 {o['p99_ms']:.0f} ms vs {b['p99_ms']:.0f} ms, "
        f"API CPU per event {o['api_cpu_ms_per_event']:.2f} ms vs "
        f"{b['api_cpu_ms_per_event']:.2f} ms. The baseline answers 201 after its three "
        "writes; ours answers 202 once SQS holds the event, after the full validation and "
        "idempotency checks the baseline lacks (the hash chain is built later, by the drain).",
    ]


CPU_ORDER = (
    "api (gunicorn)",
    "elasticmq",
    "postgres",
    "opensearch",
    "load generator",
    "other",
    "machine (all)",
)


def _cpu_groups(scenarios: list[Scenario]) -> list[str]:
    seen = {g for s in scenarios for run in s.runs for g in run["cpu_cores"]}
    return [g for g in CPU_ORDER if g in seen] + sorted(seen - set(CPU_ORDER))


def cpu_table(scenarios: list[Scenario]) -> list[str]:
    groups = _cpu_groups(scenarios)
    lines = [
        "| scenario | concurrency | " + " | ".join(groups) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in groups) + " |",
    ]
    for s in scenarios:
        if s.runs:
            cores = s.median()["cpu_cores"]
            values = " | ".join(f"{cores.get(g, 0.0):.2f}" for g in groups)
            lines.append(f"| {s.label} | {s.connections} | {values} |")
    return lines


def _overrides(config: dict[str, Any]) -> str:
    extra = config.get("api_env") or {}
    return f" API environment overrides: {extra}." if extra else ""


def markdown(machine: dict[str, Any], config: dict[str, Any], scenarios: list[Scenario]) -> str:
    commit = machine["git_commit"][:10] + (" + uncommitted changes" if machine["git_dirty"] else "")
    lines = [
        "# Ingest benchmark",
        "",
        f"Measured {machine['measured_at']} with `make bench` (`bench/ingest.py`) on "
        f"{machine['nproc']} cores ({machine['cpu_model']}), {machine['memory_gib']} GiB, "
        f"Python {machine['python']}, commit {commit}; load average at start "
        f"{', '.join(f'{x:.2f}' for x in machine['loadavg_at_start'])}.",
        "",
        f"API: gunicorn {config['workers']} workers ({config['worker_class']}), "
        "RATE_LIMIT_EVENTS_PER_SECOND=0, fresh database and queues; load generator "
        f"{config['wrk']} ({config['wrk_threads']} thread) on the same machine over loopback. "
        f"Each figure is the median of {config['repeats']} runs of {config['duration_s']} s "
        f"(bulk {config['bulk_duration_s']} s, /healthz and raw SQS "
        f"{config['short_duration_s']} s) after a {config['warmup_s']} s warm-up; latencies "
        "are medians of the runs' percentiles. Raw SQS: SendMessageBatch of "
        f"10 x 1 KB from one Python process with boto3, {config['sqs_threads']} threads."
        + _overrides(config),
        "",
        *throughput_table(scenarios),
        *baseline_comparison(scenarios),
        "",
        "CPU used during the measured window, in cores (median of the runs; "
        f"{machine['nproc']} available). *other* is CPU of processes outside this run (other "
        "users of a shared machine): where it is well above 0 the throughput figures are "
        "lower bounds, and *API CPU ms/event* (API CPU cores / events/s) is the steadier "
        "figure. *postgres* includes the server's own processes (checkpointer, WAL writer), "
        "which other databases' load also drives.",
        "",
        *cpu_table(scenarios),
        "",
    ]
    return "\n".join(lines)


def write_results(
    out_dir: Path, machine: dict[str, Any], config: dict[str, Any], scenarios: list[Scenario]
) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "machine": machine,
        "config": config,
        "targets": TARGETS,
        "scenarios": [s.as_dict() for s in scenarios],
    }
    (out_dir / "ingest.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    text = markdown(machine, config, scenarios)
    (out_dir / "ingest.md").write_text(text)
    return text
