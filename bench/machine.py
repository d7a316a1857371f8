"""Facts about the machine, and where its CPU time went during a measurement (from /proc)."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def machine_facts() -> dict[str, Any]:
    return {
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_gib": _mem_total_gib(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "git_commit": _git("rev-parse", "HEAD"),
        # The work tree may hold uncommitted changes; the numbers are for what was there.
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "loadavg_at_start": list(os.getloadavg()),
    }


# ---------------------------------------------------------------------------------------
# CPU accounting: per process group, in "cores" (CPU seconds per wall second).

Classifier = Callable[[int, int, str], str | None]  # (pid, pgrp, cmdline) -> group


@dataclass
class CpuSnapshot:
    wall: float
    machine_busy: float  # seconds, all CPUs
    processes: dict[int, tuple[str, float]] = field(default_factory=dict)  # pid: group, s
    children: float = 0.0  # this process's waited-for children (wrk)
    itself: float = 0.0  # this process (the raw SQS client)


def _machine_busy_seconds() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def _proc_stat(pid: str) -> tuple[int, float] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = stat.rsplit(")", 1)[1].split()
    # Fields after "comm": state ppid pgrp ... utime(14) stime(15), 1-based in proc(5).
    return int(rest[2]), (int(rest[11]) + int(rest[12])) / CLOCK_TICKS


def _cmdline(pid: str) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _process_seconds(classify: Classifier) -> dict[int, tuple[str, float]]:
    found: dict[int, tuple[str, float]] = {}
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        stat = _proc_stat(entry)
        if stat is None:
            continue
        group = classify(int(entry), stat[0], _cmdline(entry))
        if group is not None:
            found[int(entry)] = (group, stat[1])
    return found


def snapshot(classify: Classifier) -> CpuSnapshot:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    itself = resource.getrusage(resource.RUSAGE_SELF)
    return CpuSnapshot(
        wall=time.monotonic(),
        machine_busy=_machine_busy_seconds(),
        processes=_process_seconds(classify),
        children=children.ru_utime + children.ru_stime,
        itself=itself.ru_utime + itself.ru_stime,
    )


def _group_deltas(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """CPU seconds per group between the snapshots. A process that started meanwhile counts
    from zero; one that ended meanwhile is missed (short-lived ones are rare here)."""
    deltas: dict[str, float] = {}
    for pid, (group, seconds) in after.processes.items():
        previous = before.processes.get(pid)
        start = previous[1] if previous is not None and previous[0] == group else 0.0
        deltas[group] = deltas.get(group, 0.0) + seconds - start
    return deltas


def cores_used(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """CPU use between two snapshots, in cores (CPU seconds per wall second)."""
    wall = after.wall - before.wall
    used = {name: seconds / wall for name, seconds in sorted(_group_deltas(before, after).items())}
    load = after.children - before.children + after.itself - before.itself
    used["load generator"] = load / wall
    machine_all = (after.machine_busy - before.machine_busy) / wall
    # Whatever else ran meanwhile (other users of the machine, the kernel's own work).
    used["other"] = machine_all - sum(used.values())
    used["machine (all)"] = machine_all
    return {name: round(max(value, 0.0), 2) for name, value in used.items()}


@contextmanager
def measure_cpu(classify: Classifier) -> Iterator[dict[str, float]]:
    """``with measure_cpu(...) as cores:`` fills ``cores`` when the block ends."""
    cores: dict[str, float] = {}
    before = snapshot(classify)
    yield cores
    cores.update(cores_used(before, snapshot(classify)))


def stack_classifier(
    api_pgrp: int, database: str, baseline: tuple[int, str] | None = None
) -> Classifier:
    """Groups for this stack: the API under test (gunicorn's process group) and the servers;
    with ``baseline`` (process group, database), the baseline app counts with the API and
    its database's backends with PostgreSQL.

    PostgreSQL backends of other databases (other users of the shared server) are left out,
    so they count as "other"; ElasticMQ's and OpenSearch's processes are shared as a whole.
    """

    def classify(pid: int, pgrp: int, cmdline: str) -> str | None:
        if pgrp == api_pgrp or (baseline is not None and pgrp == baseline[0]):
            return "api (gunicorn)"
        if "auditlog.elasticmq.Launcher" in cmdline:
            return "elasticmq"
        if cmdline.startswith("postgres: "):
            # "postgres: <user> <database> <client> <state>" for a backend, else a
            # server process ("postgres: checkpointer", "postgres: walwriter", ...).
            words = cmdline.split()
            is_backend = len(words) >= 4 and "(" in words[3]
            ours = {database, baseline[1]} if baseline is not None else {database}
            return None if is_backend and words[2] not in ours else "postgres"
        if cmdline.startswith("/usr/lib/postgresql"):
            return "postgres"
        if "opensearch.Main" in cmdline:
            return "opensearch"
        return None

    return classify
