"""CSV export throughput, this code against a baseline copy of the code, side by side.

    .venv/bin/python -m bench.csv_export --baseline DIR [--rounds 5] [--whole-tenant]

DIR holds the code to compare against (its ``auditlog``, ``api`` and ``infra`` packages;
the API runs there with this tree's gunicorn config), e.g. made with ``mkdir DIR && git
archive <commit> auditlog api infra | tar -x -C DIR``. Reads the bench database
``bench_query_<N>`` that ``bench/query.py`` loads (read-only; it must exist), and measures
the export ``bench/query.py`` measures: the 7-day CSV export of its busiest tenant (and,
with --whole-tenant, the whole tenant once per side).

In-process: ``auditlog.reads.copy_csv`` of each tree, each run in a fresh subprocess with
gevent's monkey-patching applied first, as in the API's gevent worker (psycopg then waits
through gevent instead of its C wait function). Over HTTP: one gunicorn API per tree (the
same command as the benchmarks, 2 workers), exports fetched with ``bench.query``'s
``http_export``. Runs alternate baseline, new, baseline, new...; the report gives each
side's median rows/s, CPU seconds (in-process: the client and its PostgreSQL backend, not
the backend's parallel workers; over HTTP: the API's workers) and the ratio new / baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def child(tree: str, database_url: str, tenant_id: str, since: str | None) -> None:
    """One in-process export with ``tree``'s code under gevent; prints JSON facts."""
    from gevent import monkey  # type: ignore[import-untyped]

    monkey.patch_all()
    sys.path.insert(0, tree)
    import uuid

    import psycopg

    from auditlog.filters import EventFilters
    from auditlog.reads import copy_csv
    from auditlog.store.pool import SESSION_OPTIONS

    filters = EventFilters(created_from=datetime.fromisoformat(since) if since else None)
    with psycopg.connect(database_url, options=SESSION_OPTIONS) as conn:
        backend = conn.info.backend_pid
        lines = size = 0
        backend_cpu = cpu_seconds(backend)
        cpu, started = time.process_time(), time.perf_counter()
        for chunk in copy_csv(conn, uuid.UUID(tenant_id), filters):
            lines += chunk.count(b"\n")
            size += len(chunk)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        backend_cpu = cpu_seconds(backend) - backend_cpu
        conn.rollback()
    facts = {
        "rows": lines - 1,
        "bytes": size,
        "seconds": seconds,
        "cpu_s": cpu,
        # The PostgreSQL backend (not its parallel workers, which come and go).
        "backend_cpu_s": backend_cpu,
        "code": sys.modules["auditlog.reads"].__file__,
    }
    print(json.dumps(facts))


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process on this machine (PostgreSQL's backends too)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def in_process(tree: Path, database_url: str, tenant_id: str, since: datetime | None) -> Any:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.csv_export",
            "--child",
            str(tree),
            database_url,
            tenant_id,
            since.isoformat() if since else "",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    facts = json.loads(out.stdout.splitlines()[-1])
    if not facts["code"].startswith(str(tree)):
        raise RuntimeError(f"{tree}: the child ran {facts['code']}")
    facts["rows_per_s"] = facts["rows"] / facts["seconds"]
    return facts


@contextlib.contextmanager
def api_from(tree: Path, database_url: str, workers: int = 2) -> Iterator[Any]:
    """bench.query.api_server, but running ``tree``'s code (gunicorn imports the app from
    its working directory first)."""
    from bench import query

    env = {"PYTHONPATH": str(tree)}
    name = f"csv-export-api-{tree.name}"
    with query.api_server(database_url, workers, env, cwd=tree, name=name) as api:
        yield api


def summary(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="the code to compare to")
    parser.add_argument("--events", type=int, default=10_000_000, help="bench_query_<N>")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-in-process", action="store_true")
    parser.add_argument("--whole-tenant", action="store_true", help="also one whole export")
    args = parser.parse_args()

    from auditlog.settings import Settings
    from auditlog.tokens import mint_token
    from bench import query

    settings = Settings.from_env()
    url = query.db_url(settings.database_url, f"bench_query_{args.events}")
    meta = query.stored_meta(url)
    if meta is None:
        raise SystemExit(f"{url.rsplit('/', 1)[1]} is not loaded: run bench/query.py first")
    plan = query._plan_from(meta)
    units = query.make_units(plan)
    index = max(range(len(meta["tenants"])), key=lambda i: sum(u.counts[i] for u in units))
    tenant_id = meta["tenants"][index]
    token = mint_token(settings, tenant_id=tenant_id, role="reader")
    tenant = query.Tenant(index, tenant_id, token, query.TenantPools.build(plan, index))
    since = datetime.fromtimestamp((plan.end_ms - 7 * query.DAY_MS) / 1000, UTC).replace(
        microsecond=0
    )
    week_rows = query.count_matching(url, tenant_id, since)
    sides = {"baseline": args.baseline.resolve(), "new": ROOT}
    results: dict[str, Any] = {"tenant": tenant_id, "from": since.isoformat(), "rows": week_rows}
    print(f"tenant {tenant_id}: {week_rows:,} rows since {since:%Y-%m-%d %H:%M}Z", flush=True)

    if not args.skip_in_process:
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
        for round_no in range(args.rounds):
            for name, tree in sides.items():
                run = in_process(tree, url, tenant_id, since)
                runs[name].append(run)
                print(
                    f"in-process #{round_no + 1} {name:<8} {run['rows_per_s']:>9,.0f} rows/s"
                    f"  client CPU {run['cpu_s']:.3f} s  backend CPU {run['backend_cpu_s']:.2f} s",
                    flush=True,
                )
        results["in_process"] = {
            name: report(r, ["cpu_s", "backend_cpu_s"]) for name, r in runs.items()
        }

    if not args.skip_http:
        with api_from(sides["baseline"], url) as base_api, api_from(sides["new"], url) as new_api:
            apis = {"baseline": base_api, "new": new_api}
            http_runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
            for round_no in range(args.rounds):
                for name, api in apis.items():
                    pids = api.worker_pids()
                    before = sum(cpu_seconds(pid) for pid in pids)
                    run = query.http_export(api, tenant, "csv", since, week_rows)
                    # Both workers: the one that served the export, and the other (idle).
                    run["api_cpu_s"] = sum(cpu_seconds(pid) for pid in pids) - before
                    http_runs[name].append(run)
                    print(
                        f"http #{round_no + 1} {name:<8} {run['rows_per_s']:>9,.0f} rows/s"
                        f"  first byte {run['first_byte_s']} s  API CPU {run['api_cpu_s']:.2f} s",
                        flush=True,
                    )
            results["http"] = {name: report(r, ["api_cpu_s"]) for name, r in http_runs.items()}
            if args.whole_tenant:
                all_rows = query.count_matching(url, tenant_id, None)
                results["http_whole_tenant"] = {}
                for name, api in apis.items():
                    run = query.http_export(api, tenant, "csv", None, all_rows)
                    results["http_whole_tenant"][name] = run["rows_per_s"]
                    print(f"http whole tenant {name:<8} {run['rows_per_s']:>9,.0f} rows/s")

    for part in ("in_process", "http"):
        if part in results:
            base, new = results[part]["baseline"], results[part]["new"]
            ratio = new["rows_per_s_median"] / base["rows_per_s_median"]
            results[part]["ratio"] = round(ratio, 3)
            cpu = ", ".join(
                f"{key} {base[key]} -> {new[key]}" for key in base if key.endswith("cpu_s_median")
            )
            print(
                f"{part}: baseline median {base['rows_per_s_median']:,.0f} rows/s,"
                f" new {new['rows_per_s_median']:,.0f} rows/s, ratio {ratio:.2f}; {cpu}"
            )
    print(json.dumps(results, indent=2, default=str))
    return 0


def report(runs: list[dict[str, Any]], cpu_keys: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rows_per_s_median": round(summary(runs, "rows_per_s")),
        "rows_per_s": [round(r["rows_per_s"]) for r in runs],
    }
    for key in cpu_keys:
        out[f"{key}_median"] = round(summary(runs, key), 3)
    return out


if __name__ == "__main__":
    sys.exit(main())
