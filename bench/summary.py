"""BENCHMARKS.md: the headline figures of every benchmark's last run, from
bench/results/<name>.json, beside their targets and the raw limits they are measured
against. A benchmark never run (or not written yet) says so instead of a number.

    .venv/bin/python -m bench.summary      # rebuild BENCHMARKS.md from the results
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

Row = tuple[str, str, str, str]  # measure, result, target, comparison


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    if not path.exists():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return data


def ingest_rows(d: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    scenarios = {s["key"]: s for s in d["scenarios"] if s.get("runs")}
    raw = next((s for s in scenarios.values() if s["kind"] == "sqs_raw"), None)
    raw_rate = raw["median"]["events_per_s"] if raw else None
    baseline = next((s for s in scenarios.values() if s["kind"] == "baseline"), None)
    for s in scenarios.values():
        m = s["median"]
        result = f"{_n(m['events_per_s'])}/s, p50 {m['p50_ms']:.0f} ms, p99 {m['p99_ms']:.0f} ms"
        comparison = ""
        if s["kind"] in ("single", "bulk") and raw_rate:
            comparison = f"{m['events_per_s'] / raw_rate:.2f} x raw SQS messages/s"
        if (
            baseline is not None
            and s["kind"] == "single"
            and s["connections"] == baseline["connections"]
        ):
            ratio = m["events_per_s"] / baseline["median"]["events_per_s"]
            comparison += f"; {ratio:.1f} x the seed-style baseline"
        label = f"{s['label']} (c={s['connections']})"
        rows.append((label, result, s.get("target") or "", comparison.strip("; ")))
    return rows


def drain_rows(d: dict[str, Any]) -> list[Row]:
    summary = d["summary"]
    raw = summary.get("raw_copy_rows_per_s")
    rows: list[Row] = []
    for key, label in d.get("scenario_labels", {}).items():
        figures = summary.get(key)
        if not figures:
            continue
        comparison = ""
        if key == "packed" and raw:
            comparison = f"{figures['events_per_s'] / raw:.0%} of raw COPY ({_n(raw)} rows/s)"
        target = "≥ 10,000 events/s" if key == "packed" else ""
        rows.append(
            (f"drain: {label}", f"{_n(figures['events_per_s'])} events/s", target, comparison)
        )
    latency = d.get("latency", {}).get("committed_minus_created_at")
    if latency:
        rows.append(
            (
                f"drain: accepted → committed at {d['latency'].get('rate_per_s', 100):g} events/s",
                f"p50 {latency['p50_s']:.2f} s, p99 {latency['p99_s']:.2f} s",
                "p99 ≤ 2 s",
                "",
            )
        )
    return rows


def stream_rows(d: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    latency = d.get("latency") or {}
    if latency.get("latency_ms"):
        ms = latency["latency_ms"]
        rows.append(
            (
                f"live tail: commit → client, {latency.get('clients')} clients at "
                f"{latency.get('rate_events_per_s', 0):g} events/s",
                f"p50 {ms['p50']:.0f} ms, p99 {ms['p99']:.0f} ms",
                "p50 ≤ 100 ms, p99 ≤ 500 ms",
                "gap-free: "
                + str(latency.get("every_client_in_seq_order_without_gap_or_duplicate")),
            )
        )
    runs = (d.get("http") or {}).get("runs") or []
    by_sockets: dict[str, list[float]] = {}
    for run in runs:
        by_sockets.setdefault(str(run["sockets_open"]), []).append(run["latency_ms"]["p99"])
    if len(by_sockets) >= 2:
        closed = statistics.median(by_sockets.get("0", [0.0]))
        opened_key = max(by_sockets, key=int)
        opened = statistics.median(by_sockets[opened_key])
        rows.append(
            (
                f"live tail: HTTP p99 with {opened_key} sockets open",
                f"{opened:.0f} ms (no sockets: {closed:.0f} ms)",
                "not starved",
                f"{opened / closed:.2f} x" if closed else "",
            )
        )
    return rows


def query_rows(d: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    events = d.get("config", {}).get("events")
    for s in d.get("scenarios", []):
        m = s.get("median")
        if not m:
            continue
        rows.append(
            (
                f"read: {s['label']} ({_n(events)} events)" if events else f"read: {s['label']}",
                f"p50 {m['p50_ms']:.0f} ms, p99 {m['p99_ms']:.0f} ms",
                s.get("target") or "",
                "",
            )
        )
    for key, export in (d.get("exports") or {}).items():
        runs = export if isinstance(export, list) else [export] if isinstance(export, dict) else []
        rates = [r["rows_per_s"] for r in runs if isinstance(r, dict) and "rows_per_s" in r]
        if rates:
            fmt = runs[0].get("format", key)
            growth = max((r.get("rss_growth_mib", 0.0) for r in runs), default=0.0)
            rows.append(
                (
                    f"export {fmt} ({key})",
                    f"{_n(statistics.median(rates))} rows/s, RSS +{growth:.0f} MiB",
                    "≥ 100,000 rows/s (CSV)" if fmt == "csv" else "",
                    "",
                )
            )
    return rows


def search_rows(d: dict[str, Any]) -> list[Row]:
    """Benchmarks that list their own headline rows (``summary_rows``)."""
    rows: list[Row] = []
    for item in d.get("summary_rows", []):
        rows.append(
            (item["measure"], item["result"], item.get("target", ""), item.get("comparison", ""))
        )
    return rows


SECTIONS: tuple[tuple[str, str, Callable[[dict[str, Any]], list[Row]]], ...] = (
    ("ingest", "Ingest (bench/ingest.py)", ingest_rows),
    ("drain", "Drain (bench/drain.py)", drain_rows),
    ("stream", "Live tail (bench/stream.py)", stream_rows),
    ("query", "Read API (bench/query.py)", query_rows),
    ("search", "Search (bench/search.py)", search_rows),
    ("soak", "Soak (bench/soak.py)", search_rows),
)


def _loadavg(values: object) -> str:
    if isinstance(values, list | tuple) and all(isinstance(v, int | float) for v in values):
        return ", ".join(f"{v:.2f}" for v in values)
    return "?"


def render(results: Path) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`bench/all.py`, then `bench/summary.py`) from the last "
        "run of each benchmark; each `bench/results/<name>.md` has the details (every run, "
        "CPU by process, methods). Medians of several runs unless noted. These machines are "
        "shared and noisy: each detail report gives the CPU other processes used during its "
        "runs, and where that is well above zero the figures are lower bounds. Nothing here "
        "is a pass/fail test.",
        "",
    ]
    for name, title, rows_for in SECTIONS:
        data = _load(results, name)
        lines += [f"## {title}", ""]
        if data is None:
            lines += ["Not run yet (no `bench/results/" + name + ".json`).", ""]
            continue
        machine = data.get("machine", {})
        if machine:
            commit = str(machine.get("git_commit", ""))[:10]
            lines += [
                f"Measured {machine.get('measured_at', '?')} on {machine.get('nproc', '?')} "
                f"cores ({machine.get('cpu_model', '?')}), commit {commit}"
                + (" (uncommitted changes)" if machine.get("git_dirty") else "")
                + f"; load average at start {_loadavg(machine.get('loadavg_at_start'))}.",
                "",
            ]
        try:
            rows = rows_for(data)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            lines += [f"Results present but unreadable here ({exc!r}); see the .md.", ""]
            continue
        lines += ["| measure | result | target | comparison |", "| --- | --- | --- | --- |"]
        lines += [f"| {m} | {r} | {t} | {c} |" for m, r, t, c in rows]
        lines += ["", f"Details: [bench/results/{name}.md](bench/results/{name}.md)", ""]
    return "\n".join(lines)


def write(out: Path, results: Path) -> Path:
    out.write_text(render(results))
    return out


if __name__ == "__main__":
    print(write(ROOT / "BENCHMARKS.md", ROOT / "bench" / "results"))
    sys.exit(0)
