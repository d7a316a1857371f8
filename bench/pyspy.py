"""Profiling the API's gunicorn workers with py-spy (sampling from outside the process, so
it sees whichever greenlet or thread is on the CPU), and rolling the folded stacks up into
the functions that cost the most."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path


def pyspy_binary() -> str:
    found = shutil.which("py-spy") or str(Path(__file__).resolve().parents[1] / ".venv/bin/py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy is missing: make install (it is in the dev extra)")
    return found


def worker_pids(master_pid: int) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(master_pid)], capture_output=True, text=True, check=False
    ).stdout
    return [int(pid) for pid in out.split()]


def record(pids: list[int], seconds: float, out_dir: Path) -> list[subprocess.Popen[bytes]]:
    """Start one py-spy per worker, writing ``worker-<pid>.folded``; the caller waits."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [
                pyspy_binary(),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, round(seconds))),
                "--rate",
                "250",
                "--format",
                "raw",
                "--output",
                str(out_dir / f"worker-{pid}.folded"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]


def summary(out_dir: Path, top: int = 30) -> str:
    """Self and inclusive shares of the sampled on-CPU time, by function."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for path in sorted(out_dir.glob("*.folded")):
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack:
                continue
            count = int(count_text)
            total += count
            frames = stack.split(";")
            own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
    if total == 0:
        return "no samples"
    lines = [f"samples: {total}", "", "on CPU, by function (self):"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    lines += ["", "on CPU, by function (inclusive):"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)
