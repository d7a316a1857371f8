#!/usr/bin/env python3
"""``make run``: the whole platform on the local stack, in the foreground.

Starts the local servers (infra/stack.py), applies migrations, then runs the API under
gunicorn on 127.0.0.1:8000 and the Dagster webserver (127.0.0.1:3000) and daemon. Ctrl-C
(SIGINT) or SIGTERM stops all of it, the local servers included.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a file: make the `infra` package importable
from infra import stack  # noqa: E402

BIN = Path(sys.executable).parent
API_PORT = int(os.environ.get("API_PORT", "8000"))
DAGSTER_PORT = int(os.environ.get("DAGSTER_PORT", "3000"))


def prepare_dagster_home(home: Path) -> None:
    """DAGSTER_HOME holds the instance config (copied from infra/dagster) and local logs."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "infra" / "dagster" / "dagster.yaml", home / "dagster.yaml")


# gevent: a request waiting on SQS, PostgreSQL or a WebSocket client holds a greenlet, not
# an OS thread, so one worker serves thousands of open live-tail sockets beside ordinary
# requests, and there is no GIL hand-off between request threads (about twice the
# single-event throughput of 16 gthread threads in bench/ingest). gthread still works:
# API_WORKER_CLASS=gthread.
#
# gevent_pywsgi: the same greenlets, with gevent's HTTP server (gevent.pywsgi) parsing and
# answering instead of gunicorn's Python parser and Response. Single-event ingest is
# CPU-bound in the worker, and this is less CPU per request: 752 vs 846 us CPU per event,
# median of 3 alternating rounds (bench/ingest_ab.py; gunicorn 27, gevent 26.9).
# infra/gunicorn_pywsgi.py keeps what gunicorn's handler did (a WebSocket ends its
# connection, its request limits and 400s, the keep-alive deadline, one write per small
# response). API_WORKER_CLASS=gevent: gunicorn's own HTTP handling.
DEFAULT_WORKER_CLASS = "gevent_pywsgi"
WORKER_CONNECTIONS = 2000
GTHREAD_THREADS = 16


def api_command(port: int, workers: int = 2, worker_class: str | None = None) -> list[str]:
    worker_class = worker_class or os.environ.get("API_WORKER_CLASS", DEFAULT_WORKER_CLASS)
    if worker_class.startswith("gevent"):
        concurrency = ["--worker-connections", str(WORKER_CONNECTIONS)]
    else:
        concurrency = ["--threads", str(GTHREAD_THREADS)]
    return [
        str(BIN / "gunicorn"),
        "api:create_app()",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        worker_class,
        *concurrency,
        "--graceful-timeout",
        "10",
        # Hooks only: each worker closes its pool, producer and listener as it exits.
        "--config",
        str(ROOT / "infra" / "gunicorn_conf.py"),
        # Long filter URLs are legitimate; past this the server answers itself (a 414: an
        # HTML page from gunicorn, an empty body from pywsgi).
        "--limit-request-line",
        "8190",
    ]


def dagster_webserver_command(port: int) -> list[str]:
    return [
        str(BIN / "dagster-webserver"),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        str(ROOT / "workspace.yaml"),
    ]


def dagster_daemon_command() -> list[str]:
    return [str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")]


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


def spawn(name: str, cmd: list[str], env: dict[str, str], log_dir: Path, cwd: Path = ROOT) -> Child:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Child(name, process, log)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_children(children: list[Child], timeout: float = 20) -> None:
    for child in children:
        if child.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()
    # The leaders are gone; their groups may not be (Dagster's code servers outlive the
    # webserver and daemon that started them, orphaned). Give them until the deadline,
    # then kill what is left, so a stop leaves no process behind.
    for child in children:
        while _group_alive(child.process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.process.pid, signal.SIGKILL)


def wait_http(url: str, timeout: float, child: Child) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise RuntimeError(
                f"{child.name} exited. Last lines of {child.log}:\n{stack.log_tail(child.log)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback URL)
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{child.name} did not answer {url} within {timeout:.0f}s. Log: {child.log}")


def platform_env() -> dict[str, str]:
    env = {**stack.stack_env(), **os.environ}
    env.setdefault("DAGSTER_HOME", str(stack.DEV / "dagster"))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def prometheus_dir(env: dict[str, str]) -> dict[str, str]:
    """gunicorn runs several API processes; they share metrics through this directory,
    emptied at each start (prometheus_client's multiprocess mode)."""
    path = stack.DEV / "prometheus"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return {**env, "PROMETHEUS_MULTIPROC_DIR": str(path)}


def main() -> int:
    started = time.monotonic()
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    if stack.main(["stack", "up"]) != 0:
        return 1
    env = platform_env()
    children: list[Child] = []
    try:
        subprocess.run([str(BIN / "auditlog"), "migrate"], env=env, check=True)
        prepare_dagster_home(Path(env["DAGSTER_HOME"]))
        logs = stack.LOGS
        api = spawn("api", api_command(API_PORT), prometheus_dir(env), logs)
        children.append(api)
        web = spawn("dagster-webserver", dagster_webserver_command(DAGSTER_PORT), env, logs)
        children.append(web)
        children.append(spawn("dagster-daemon", dagster_daemon_command(), env, logs))
        wait_http(f"http://127.0.0.1:{API_PORT}/healthz", 60, api)
        wait_http(f"http://127.0.0.1:{DAGSTER_PORT}/server_info", 120, web)
        print(
            f"""
  Audit log platform is up ({time.monotonic() - started:.1f}s).

  API         http://127.0.0.1:{API_PORT}        (health: /healthz, readiness: /readyz)
  Dagster UI  http://127.0.0.1:{DAGSTER_PORT}        (asset graph, runs, sensors)
  Logs        {logs}/*.log

  Get a token:  make tenant NAME=acme                  # prints the new tenant's id
                TOKEN=$(make -s token TENANT=<tenant id> ROLE=user)
  Try it:       curl -s -X POST http://127.0.0.1:{API_PORT}/api/v1/logs \\
                  -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
                  -d '{{"action_type":"CREATE","resource_type":"doc","resource_id":"1","severity":"INFO"}}'

  Ctrl-C stops everything.
""",  # noqa: E501 (the curl line is meant to be copied whole)
            flush=True,
        )
        while not stopping:
            for child in children:
                if child.process.poll() is not None:
                    tail = stack.log_tail(child.log)
                    print(f"[run] {child.name} exited; last lines of {child.log}:\n{tail}")
                    stopping = True
            time.sleep(0.5)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"[run] FAILED: {exc}", file=sys.stderr)
        return_code = 1
    else:
        return_code = 0
    finally:
        print("[run] stopping the API, Dagster and the local servers", flush=True)
        stop_children(children)
        stack.main(["stack", "down"])
    return return_code


if __name__ == "__main__":
    sys.exit(main())
