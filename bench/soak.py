"""Soak: mixed reads and writes at a steady rate for minutes; the RSS of the API workers and
of the drain must stay flat and nothing may fail.

    .venv/bin/python -m bench.soak                  # 10 minutes at 500 requests/s
    .venv/bin/python -m bench.soak --quick          # 60 s smoke run

Starts its own gunicorn (as `make run`) against a fresh database and queues, and a drain
process (`auditlog drain`, as a Dagster drain run executes it) for the whole run. A paced
client (threads, keep-alive) sends single-event POSTs and reads (list pages, get by id,
stats) in a fixed mix, each for one of ``--tenants`` tenants drawn at random. RSS of every
API worker and of the drain is sampled every few seconds; "flat" compares the median of the
first measured minute (after a warm-up) with the median of the last minute. At the end
every accepted id must be stored (nothing lost). Writes bench/results/soak.json and soak.md
(and rows for BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


import jwt  # noqa: E402

from auditlog.tokens import mint_token  # noqa: E402
from bench import machine, payloads, target  # noqa: E402
from infra import run as platform  # noqa: E402

RESULTS = ROOT / "bench" / "results"
# The mix, by share of requests: mostly writes, as an audit log sees. Stats at a dashboard's
# cadence (2.5/s at 500/s): a stats request counts the tenant's rows of today raw (the daily
# aggregates cover closed days), so its cost grows with the day's volume. At 3 % (15/s) on
# this one tenant taking 400 events/s, PostgreSQL saturated after a few minutes and the
# load fell to ~100 requests/s (2026-11-27 21:10 UTC run, stopped): see README, Stats.
# Requests spread over --tenants tenants (10) as a multi-tenant platform's do; with all of
# them on one tenant and stats at 0.5 %, the 21:49 run held 426 of 500 requests/s.
MIX = (("post", 0.8), ("list", 0.11), ("get", 0.085), ("stats", 0.005))
FLATNESS_LIMIT = 0.10  # RSS growth allowed between the first and the last minute


@dataclass
class Tally:
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    accepted_ids: list[str] = field(default_factory=list)
    # Per tenant (index into Client.tenants), for gets with that tenant's token.
    accepted_by_tenant: dict[int, list[str]] = field(default_factory=dict)
    errors_seen: dict[str, str] = field(default_factory=dict)  # first error body per kind
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(
        self,
        kind: str,
        ms: float,
        ok: bool,
        accepted: str | None = None,
        status: int = 0,
        tenant: int = 0,
    ) -> None:
        with self.lock:
            self.latencies_ms.setdefault(kind, []).append(ms)
            if not ok:
                key = f"{kind} {status or 'no answer'}"
                self.errors[key] = self.errors.get(key, 0) + 1
            if accepted:
                self.accepted_ids.append(accepted)
                self.accepted_by_tenant.setdefault(tenant, []).append(accepted)


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    done = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in done.stdout.split()]


class Client:
    """One keep-alive connection per thread; requests paced from a shared schedule."""

    def __init__(self, base_url: str, tokens: list[str], tally: Tally, body: bytes) -> None:
        host, port = base_url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        # One token per tenant; each request acts for a tenant drawn at random.
        self.headers = [
            {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            for token in tokens
        ]
        self.tally = tally
        self.body = body

    def request(self, conn: http.client.HTTPConnection, kind: str, rng: random.Random) -> None:
        tenant = rng.randrange(len(self.headers))
        own_ids = self.tally.accepted_by_tenant.get(tenant)
        if kind == "post":
            method, path, body = "POST", "/api/v1/logs", self.body
        elif kind == "get" and own_ids:
            method, path, body = "GET", f"/api/v1/logs/{rng.choice(own_ids)}", None
        elif kind == "stats":
            method, path, body = "GET", "/api/v1/logs/stats", None
        else:
            kind, method, path, body = "list", "GET", "/api/v1/logs?limit=50", None
        started = time.perf_counter()
        conn.request(method, path, body=body, headers=self.headers[tenant])
        response = conn.getresponse()
        data = response.read()
        ms = (time.perf_counter() - started) * 1000
        # A get may race the drain (accepted, not stored yet): 404 then is not an error.
        ok = response.status < 400 or (kind == "get" and response.status == 404)
        accepted = json.loads(data)["id"] if kind == "post" and response.status == 202 else None
        if not ok and kind not in self.tally.errors_seen:
            self.tally.errors_seen[kind] = data[:300].decode(errors="replace")
        self.tally.record(kind, ms, ok, accepted, response.status, tenant)


def run_load(client: Client, rate: float, seconds: float, threads: int) -> None:
    start = time.monotonic() + 0.2
    total = int(rate * seconds)
    counter = iter(range(total))
    lock = threading.Lock()
    kinds = [k for k, _ in MIX]
    weights = [w for _, w in MIX]

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection(client.host, client.port, timeout=30)
        while True:
            with lock:
                slot = next(counter, None)
            if slot is None:
                break
            delay = start + slot / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            kind = rng.choices(kinds, weights)[0]
            try:
                client.request(conn, kind, rng)
            except (OSError, http.client.HTTPException):
                client.tally.record(kind, 0.0, False)
                conn.close()
                conn = http.client.HTTPConnection(client.host, client.port, timeout=30)
        conn.close()

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()


def sample_rss(
    api_master: int, drain_pid: int, stop: threading.Event, every_s: float
) -> list[dict[str, Any]]:
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    while not stop.wait(every_s):
        workers = {pid: rss_mib(pid) for pid in children(api_master)}
        samples.append(
            {
                "t_s": round(time.monotonic() - started, 1),
                "api_workers_mib": {str(p): round(v, 1) for p, v in workers.items() if v},
                "drain_mib": round(rss_mib(drain_pid) or 0.0, 1),
            }
        )
    return samples


def flatness(samples: list[dict[str, Any]], key: str, warmup_s: float) -> dict[str, float]:
    def value(sample: dict[str, Any]) -> float:
        v = sample[key]
        return float(sum(v.values())) if isinstance(v, dict) else float(v)

    measured = [s for s in samples if s["t_s"] >= warmup_s]
    if len(measured) < 4:
        return {}
    end = measured[-1]["t_s"]
    first = [value(s) for s in measured if s["t_s"] < warmup_s + 60]
    last = [value(s) for s in measured if s["t_s"] > end - 60]
    a, b = statistics.median(first), statistics.median(last)
    return {"first_minute_mib": round(a, 1), "last_minute_mib": round(b, 1), "growth": b / a - 1}


def new_tenants(database_url: str, count: int) -> list[str]:
    from auditlog.store.pool import connect
    from auditlog.tenants import create_tenant

    with connect(database_url) as conn:
        made = [str(create_tenant(conn, name=f"soak-{i}")["id"]) for i in range(count)]
        conn.commit()
    return made


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--rate", type=float, default=500, help="requests per second, all kinds")
    # Enough client threads that the pacing, not the clients, sets the rate even when
    # responses take 100 ms: 64 threads x 10 requests/s each.
    p.add_argument("--threads", type=int, default=64)
    p.add_argument("--warmup", type=float, default=30, help="seconds before RSS counts")
    p.add_argument("--tenants", type=int, default=10, help="tenants the requests spread over")
    p.add_argument("--quick", action="store_true", help="60 s")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.seconds, args.warmup = min(args.seconds, 60), 10
    facts = machine.machine_facts()
    tally = Tally()
    body = json.dumps(payloads.event(0, random.Random(3))).encode()
    with target.api_under_test(2, None, {"RATE_LIMIT_EVENTS_PER_SECOND": "0"}) as api:
        env = {
            **platform.platform_env(),
            "DATABASE_URL": api.settings.database_url,
            "SQS_QUEUE_NAME": api.settings.sqs_queue_name,
            "SQS_DLQ_NAME": api.settings.sqs_dlq_name,
        }
        drain_cmd = [
            sys.executable,
            "-m",
            "auditlog.cli",
            "drain",
            # Longer than the load can take even when it falls behind; the drain ends
            # itself once the queue has been empty for 20 s after the load.
            "--seconds",
            str(args.seconds * 3 + 120),
            "--idle-seconds",
            "20",
        ]
        drain = subprocess.Popen(
            drain_cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        stop = threading.Event()
        samples: list[dict[str, Any]] = []
        sampler = threading.Thread(
            target=lambda: samples.extend(sample_rss(api.api.process.pid, drain.pid, stop, 5.0)),
            daemon=True,
        )
        sampler.start()
        print(f"[soak] {args.rate:g} requests/s for {args.seconds:g} s", flush=True)
        started = time.monotonic()
        # The seed's `user` role reads and writes in its tenant: one token per tenant, the
        # API's own tenant and --tenants - 1 more, as a multi-tenant platform sees them.
        tenants = [jwt.decode(api.token, options={"verify_signature": False})["tenant_id"]]
        tenants += new_tenants(api.settings.database_url, args.tenants - 1)
        tokens = [mint_token(api.settings, tenant_id=t, role="user") for t in tenants]
        run_load(Client(api.base_url, tokens, tally, body), args.rate, args.seconds, args.threads)
        elapsed = time.monotonic() - started
        stop.set()
        sampler.join()
        drain_out, _ = drain.communicate(timeout=args.seconds + 300)
        from auditlog.store.pool import connect

        with connect(api.settings.database_url) as conn:
            stored = {
                str(r[0])
                for r in conn.execute(
                    "SELECT id FROM audit_logs WHERE id = ANY(%s::uuid[])", (tally.accepted_ids,)
                )
            }
    lost = len(set(tally.accepted_ids) - stored)
    requests = sum(len(v) for v in tally.latencies_ms.values())
    result: dict[str, Any] = {
        "machine": facts,
        "config": vars(args) | {"out_dir": str(args.out_dir), "mix": dict(MIX)},
        "elapsed_s": round(elapsed, 1),
        "requests": requests,
        "achieved_rate": round(requests / elapsed, 1),
        "errors": tally.errors,
        "first_error_bodies": tally.errors_seen,
        "accepted": len(tally.accepted_ids),
        "stored": len(stored),
        "lost": lost,
        "latency_ms": {
            k: {
                "p50": round(percentile(v, 0.5), 1),
                "p99": round(percentile(v, 0.99), 1),
                "n": len(v),
            }
            for k, v in tally.latencies_ms.items()
        },
        "rss_api": flatness(samples, "api_workers_mib", args.warmup),
        "rss_drain": flatness(samples, "drain_mib", args.warmup),
        "rss_samples": samples,
        "drain_output": drain_out.decode(errors="replace")[-2000:],
    }
    errors = sum(tally.errors.values())
    rows = [
        {
            "measure": f"soak: {args.rate:g} requests/s for {args.seconds / 60:g} min (80 % "
            "writes)",
            "result": f"{result['achieved_rate']:,.0f}/s achieved, errors {errors}, lost {lost}",
            "target": "no errors, nothing lost",
            "comparison": "",
        }
    ]
    for name, who in (("rss_api", "the API workers"), ("rss_drain", "the drain")):
        f = result[name]
        if f:
            rows.append(
                {
                    "measure": f"soak: RSS of {who}",
                    "result": f"{f['first_minute_mib']:.0f} → {f['last_minute_mib']:.0f} MiB "
                    f"({f['growth']:+.1%})",
                    "target": "flat (within 10 %)",
                    "comparison": "",
                }
            )
    result["summary_rows"] = rows
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out_dir / "soak.md").write_text(markdown(result))
    print(markdown(result))
    ok = (
        lost == 0
        and not tally.errors
        and all(
            result[n] and result[n]["growth"] <= FLATNESS_LIMIT for n in ("rss_api", "rss_drain")
        )
    )
    return 0 if ok else 1


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        "# Soak",
        "",
        f"`.venv/bin/python -m bench.soak`, measured {m['measured_at']} on {m['nproc']} cores "
        f"({m['cpu_model']}), commit {m['git_commit'][:10]}"
        + (" (uncommitted changes)" if m["git_dirty"] else "")
        + f"; load average at start {[round(x, 2) for x in m['loadavg_at_start']]}.",
        "",
        f"{r['config']['rate']:g} requests/s for {r['config']['seconds']:g} s "
        f"(mix {r['config']['mix']}, over {r['config']['tenants']} tenants), achieved "
        f"{r['achieved_rate']:,.0f}/s over "
        f"{r['elapsed_s']:g} s; API: gunicorn as `make run` (2 gevent workers), drain: one "
        "`auditlog drain` process for the whole run.",
        "",
        "| measure | result | target |",
        "| --- | --- | --- |",
    ]
    lines += [
        f"| {row['measure']} | {row['result']} | {row['target']} |" for row in r["summary_rows"]
    ]
    lines += ["", "| request | n | p50 ms | p99 ms |", "| --- | ---: | ---: | ---: |"]
    lines += [
        f"| {kind} | {v['n']:,} | {v['p50']:.1f} | {v['p99']:.1f} |"
        for kind, v in sorted(r["latency_ms"].items())
    ]
    lines += [
        "",
        f"Accepted {r['accepted']:,}, stored {r['stored']:,}, lost {r['lost']}; errors by "
        f"kind {r['errors'] or 'none'}. RSS is sampled every 5 s; flatness compares the "
        "median of the first minute after the warm-up with that of the last minute.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
