"""Running wrk (Debian's package) with bench/lua/request.lua and reading its result line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LUA_SCRIPT = Path(__file__).resolve().parent / "lua" / "request.lua"
RESULT_PREFIX = "BENCH_RESULT "


class WrkError(RuntimeError):
    pass


@dataclass(frozen=True)
class Load:
    """What wrk sends: one fixed request, and the status that counts as success."""

    url: str
    method: str = "POST"
    body_file: Path | None = None
    token: str = ""
    expect_status: int = 202


@dataclass(frozen=True)
class WrkResult:
    requests: int
    unexpected: int  # responses with another status than expected
    socket_errors: int  # connect/read/write errors and timeouts (no response at all)
    duration_s: float
    statuses: dict[str, int]
    latency_ms: dict[str, float]

    @property
    def ok_per_s(self) -> float:
        return (self.requests - self.unexpected) / self.duration_s

    @property
    def errors(self) -> int:
        return self.unexpected + self.socket_errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok_per_s": round(self.ok_per_s, 1),
            "unexpected_status": self.unexpected,
            "socket_errors": self.socket_errors,
            "duration_s": round(self.duration_s, 3),
            "statuses": self.statuses,
            "latency_ms": self.latency_ms,
        }


def ensure_wrk() -> str:
    """wrk's path; installs Debian's package when missing and running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise WrkError("wrk is not installed: run `sudo apt-get install -y wrk`, then retry.")
    print("[bench] wrk is missing: apt-get install -y wrk", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False)
        subprocess.run(install, env=env, check=False)
    found = shutil.which("wrk")
    if not found:
        raise WrkError("could not install wrk with apt-get; install it and retry.")
    return found


def wrk_version(wrk: str) -> str:
    # wrk prints its version banner with a usage message and exit status 1.
    out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0].strip() if (out.stdout or out.stderr) else ""


def run_wrk(
    wrk: str, load: Load, *, connections: int, duration_s: float, threads: int = 1
) -> WrkResult:
    """One wrk run; bounded in time (wrk's own -d, and a hard timeout around it)."""
    seconds = max(1, round(duration_s))
    cmd = [
        wrk,
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA_SCRIPT),
        load.url,
    ]
    env = {
        **os.environ,
        "BENCH_METHOD": load.method,
        "BENCH_BODY_FILE": str(load.body_file or ""),
        "BENCH_TOKEN": load.token,
        "BENCH_EXPECT_STATUS": str(load.expect_status),
    }
    try:
        done = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=seconds + 30, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish: {' '.join(cmd)}") from exc
    return parse_result(done.stdout, done.stderr, done.returncode)


def parse_result(stdout: str, stderr: str, returncode: int) -> WrkResult:
    line = next((ln for ln in stdout.splitlines() if ln.startswith(RESULT_PREFIX)), None)
    if returncode != 0 or line is None:
        raise WrkError(f"wrk failed (exit {returncode}):\n{stdout}\n{stderr}")
    data = json.loads(line[len(RESULT_PREFIX) :])
    return WrkResult(
        requests=data["requests"],
        unexpected=data["unexpected"],
        socket_errors=sum(data["socket_errors"].values()),
        duration_s=data["duration_us"] / 1e6,
        statuses=data["statuses"],
        latency_ms={k: round(v / 1000, 2) for k, v in data["latency_us"].items()},
    )
