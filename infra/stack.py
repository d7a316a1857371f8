#!/usr/bin/env python3
"""The embedded local stack: real servers on 127.0.0.1 with their data under ``.dev/``.

    python infra/stack.py up       start whatever is not running, wait until each answers
    python infra/stack.py down     stop what ``up`` started (and nothing else)
    python infra/stack.py status   one line per server
    python infra/stack.py env      the environment that points the platform at this stack

Servers: PostgreSQL 15 (Debian's packages, installed by apt when missing), ElasticMQ for SQS
and a single OpenSearch 2.19 node (both Java, built from Maven Central artifacts by the
modules beside this file), and moto's server for S3. ``up`` is idempotent; when a server
fails to answer it exits non-zero and prints the tail of that server's log.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV = Path(os.environ.get("AUDITLOG_DEV_DIR", ROOT / ".dev"))
LOGS = DEV / "logs"
RUN = DEV / "run"
PY = Path(sys.executable)

PG_VERSION = "15"
PG_BIN = Path(f"/usr/lib/postgresql/{PG_VERSION}/bin")
PG_PORT = int(os.environ.get("AUDITLOG_PG_PORT", "55432"))
SQS_PORT = int(os.environ.get("AUDITLOG_SQS_PORT", "9324"))
OPENSEARCH_PORT = int(os.environ.get("AUDITLOG_OPENSEARCH_PORT", "9200"))
S3_PORT = int(os.environ.get("AUDITLOG_S3_PORT", "9000"))
HOST = "127.0.0.1"

# The platform's settings for this stack; `env` prints these plus the dev JWT secret.
STACK_ENV = {
    "DATABASE_URL": f"postgresql://auditlog@{HOST}:{PG_PORT}/auditlog",
    "DAGSTER_PG_URL": f"postgresql://auditlog@{HOST}:{PG_PORT}/dagster",
    "AWS_ENDPOINT_URL_SQS": f"http://{HOST}:{SQS_PORT}",
    "AWS_ENDPOINT_URL_S3": f"http://{HOST}:{S3_PORT}",
    "OPENSEARCH_URL": f"http://{HOST}:{OPENSEARCH_PORT}",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    # The local servers accept any credentials; boto3 only needs some to sign with.
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
}


def dev_jwt_secret() -> str:
    """A random HS256 secret for this checkout, made once and kept in .dev/ (never in git)."""
    path = DEV / "jwt-secret"
    if not path.exists():
        DEV.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def dev_digest_signing_key() -> str:
    """A random Ed25519 key for this checkout's integrity digests, made once and kept in .dev/
    (never in git): base64 of a 32-byte seed, which is all an Ed25519 private key is.
    ``auditlog digest-public-key`` prints the public half for verifiers."""
    path = DEV / "digest-signing-key"
    if not path.exists():
        DEV.mkdir(parents=True, exist_ok=True)
        path.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
        path.chmod(0o600)
    return path.read_text().strip()


def stack_env() -> dict[str, str]:
    """The environment that points the platform at this stack (what `env` prints)."""
    return {
        **STACK_ENV,
        "JWT_SECRET": dev_jwt_secret(),
        "DIGEST_SIGNING_KEY": dev_digest_signing_key(),
    }


class StackError(RuntimeError):
    pass


def say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


def log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"(no log at {path})"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    log: Path,
    alive: Callable[[], bool] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if alive is not None and not alive():
            raise StackError(
                f"{what} exited during start-up. Last lines of {log}:\n{log_tail(log)}"
            )
        time.sleep(0.5)
    raise StackError(
        f"{what} did not answer within {timeout:.0f}s. Last lines of {log}:\n{log_tail(log)}"
    )


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback URL we built)
            return bool(200 <= response.status < 500)
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; treat it as dead.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]


# ---------------------------------------------------------------------------------------
# Background processes started by `up`: a pidfile each under .dev/run/.


@dataclass
class Daemon:
    name: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def pidfile(self) -> Path:
        return RUN / f"{self.name}.pid"

    @property
    def log(self) -> Path:
        return LOGS / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def spawn(
        self, cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        RUN.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            process = subprocess.Popen(
                cmd,
                cwd=cwd,
                env={**os.environ, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # not killed by the terminal's Ctrl-C; `down` stops it
            )
        self.pidfile.write_text(str(process.pid))
        self.process = process

    def alive(self) -> bool:
        """Whether the process this object started still runs (poll() also reaps it)."""
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30) -> bool:
        pid = self.pid()
        if pid is None:
            self.pidfile.unlink(missing_ok=True)
            self.alive()  # reaps a child of ours that already exited
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.2)
        if pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=5)
        self.pidfile.unlink(missing_ok=True)
        return True


# ---------------------------------------------------------------------------------------
# PostgreSQL


class Postgres:
    name = "postgres"

    def __init__(self) -> None:
        self.base = DEV / "postgres"

    @property
    def log(self) -> Path:
        # Written by the postgres user, so it lives beside the data; .dev/logs links to it.
        return self.base.resolve() / "postgres.log"

    @property
    def data(self) -> Path:
        # Resolved: the postgres user may reach the target of a .dev/postgres link, but not
        # the checkout it lives in.
        return self.base.resolve() / "data"

    def _as_postgres(self, cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
            kwargs.setdefault("cwd", "/")  # the checkout may be out of the postgres user's reach
        return run(cmd, **kwargs)

    def install(self) -> None:
        if (PG_BIN / "initdb").exists():
            return
        if os.geteuid() != 0:
            raise StackError(
                f"PostgreSQL {PG_VERSION} is missing: apt-get install postgresql-{PG_VERSION}"
            )
        say(f"installing postgresql-{PG_VERSION} from Debian's packages")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
        run(
            ["apt-get", "install", "-y", "-q", f"postgresql-{PG_VERSION}"],
            env=env,
            stdout=subprocess.DEVNULL,
        )

    def _prepare_dirs(self) -> None:
        """PostgreSQL refuses to run as root, so its files belong to the postgres user.

        When the checkout lives where that user cannot reach (e.g. under /root), the data
        directory goes to /var/lib/auditlog-dev/<name> and .dev/postgres links to it.
        """
        LOGS.mkdir(parents=True, exist_ok=True)
        DEV.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0 and not self.base.exists() and not self.base.is_symlink():
            reachable = (
                subprocess.run(
                    ["runuser", "-u", "postgres", "--", "test", "-x", str(DEV)], check=False
                ).returncode
                == 0
            )
            if not reachable:
                digest = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
                target = Path("/var/lib/auditlog-dev") / digest
                target.mkdir(parents=True, exist_ok=True)
                self.base.symlink_to(target)
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "socket").mkdir(exist_ok=True)
        self.log.touch()
        link = LOGS / "postgres.log"
        if not link.is_symlink():
            link.unlink(missing_ok=True)
            link.symlink_to(self.log.resolve())
        if os.geteuid() == 0:
            shutil.chown(self.base.resolve(), "postgres", "postgres")
            shutil.chown(self.base / "socket", "postgres", "postgres")
            shutil.chown(self.log, "postgres", "postgres")

    def running(self) -> bool:
        if not (self.data / "postmaster.pid").exists():
            return False
        result = subprocess.run(
            [str(PG_BIN / "pg_isready"), "-h", HOST, "-p", str(PG_PORT), "-q"], check=False
        )
        return result.returncode == 0

    def up(self) -> None:
        self.install()
        self._prepare_dirs()
        if not (self.data / "PG_VERSION").exists():
            say("initdb (first start)")
            self._as_postgres(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ],
                stdout=subprocess.DEVNULL,
            )
            with (self.data / "postgresql.conf").open("a") as conf:
                conf.write(
                    "\n# auditlog local stack\n"
                    f"listen_addresses = '{HOST}'\n"
                    f"port = {PG_PORT}\n"
                    f"unix_socket_directories = '{(self.base / 'socket').resolve()}'\n"
                    "max_connections = 200\n"
                    "shared_buffers = 256MB\n"
                    "fsync = on\n"  # audit data is evidence: the dev stack is durable too
                    "synchronous_commit = on\n"
                    "max_wal_size = 2GB\n"
                    "log_min_messages = warning\n"
                )
        if self.running():
            say(f"postgres already running on {HOST}:{PG_PORT}")
        else:
            say(f"starting postgres on {HOST}:{PG_PORT}")
            try:
                self._as_postgres(
                    [
                        str(PG_BIN / "pg_ctl"),
                        "-D",
                        str(self.data),
                        "-l",
                        str(self.log),
                        "-w",
                        "-t",
                        "60",
                        "start",
                    ],
                    stdout=subprocess.DEVNULL,
                )
            except subprocess.CalledProcessError as exc:
                raise StackError(
                    f"postgres failed to start. Last lines of {self.log}:\n{log_tail(self.log)}"
                ) from exc
        self._bootstrap()

    def _psql(self, sql: str, db: str = "postgres") -> str:
        result = run(
            [
                str(PG_BIN / "psql"),
                "-h",
                HOST,
                "-p",
                str(PG_PORT),
                "-U",
                "postgres",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-qAtc",
                sql,
            ],
            capture_output=True,
        )
        return result.stdout.strip()

    def _bootstrap(self) -> None:
        """The platform's role and databases (idempotent)."""
        if "auditlog" not in self._psql("SELECT rolname FROM pg_roles").split():
            self._psql("CREATE ROLE auditlog LOGIN CREATEDB")
        # Tests drop their databases WITH (FORCE), which must also end autovacuum workers.
        self._psql("GRANT pg_signal_backend TO auditlog")
        existing = self._psql("SELECT datname FROM pg_database").split()
        for db in ("auditlog", "dagster"):
            if db not in existing:
                self._psql(f"CREATE DATABASE {db} OWNER auditlog")

    def down(self) -> bool:
        if not (self.data / "postmaster.pid").exists():
            return False
        self._as_postgres(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
            stdout=subprocess.DEVNULL,
        )
        return True

    def status(self) -> str:
        return f"postgres    {'up' if self.is_up() else 'down'}  {HOST}:{PG_PORT}  data={self.data}"

    def is_up(self) -> bool:
        return self.running()


# ---------------------------------------------------------------------------------------
# Java servers built from Maven Central artifacts by the modules in infra/<name>/.


def _newest_mtime(paths: list[Path]) -> float:
    newest = 0.0
    for path in paths:
        if path.is_dir():
            newest = max([newest, *(p.stat().st_mtime for p in path.rglob("*") if p.is_file())])
        elif path.exists():
            newest = max(newest, path.stat().st_mtime)
    return newest


class JavaServer:
    """A Maven module under infra/<module>/ whose ``package`` leaves a runnable classpath."""

    def __init__(
        self, name: str, module: str, port: int, ready_url: str, start_timeout: float
    ) -> None:
        self.name = name
        self.module = ROOT / "infra" / module
        self.port = port
        self.ready_url = ready_url
        self.start_timeout = start_timeout
        self.daemon = Daemon(name)
        self.stamp = self.module / "target" / ".built"

    def build(self) -> None:
        """Build once; rebuild only when the pom or sources changed (so a second `up` is fast)."""
        sources = [self.module / "pom.xml", self.module / "src"]
        if self.stamp.exists() and self.stamp.stat().st_mtime >= _newest_mtime(sources):
            return
        say(f"building {self.name} launcher with Maven (first time downloads from Maven Central)")
        build_log = LOGS / f"{self.name}-build.log"
        LOGS.mkdir(parents=True, exist_ok=True)
        with build_log.open("w") as out:
            result = subprocess.run(
                ["mvn", "-q", "-B", "-f", str(self.module / "pom.xml"), "package", "-DskipTests"],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if result.returncode != 0:
            raise StackError(
                f"Maven build of {self.name} failed. "
                f"Last lines of {build_log}:\n{log_tail(build_log)}"
            )
        self.stamp.touch()

    def command(self) -> list[str]:
        raise NotImplementedError

    def after_start(self) -> None:
        """Create what the platform expects to find (queues, buckets)."""

    def up(self) -> None:
        if self.daemon.pid() is not None and http_ok(self.ready_url):
            say(f"{self.name} already running on {HOST}:{self.port}")
        else:
            self.build()
            self.daemon.stop()
            say(f"starting {self.name} on {HOST}:{self.port}")
            self.daemon.spawn(self.command(), cwd=self.module)
            wait_until(
                lambda: http_ok(self.ready_url),
                self.start_timeout,
                self.name,
                self.daemon.log,
                self.daemon.alive,
            )
        self.after_start()

    def down(self) -> bool:
        return self.daemon.stop()

    def is_up(self) -> bool:
        return self.daemon.pid() is not None and http_ok(self.ready_url)

    def status(self) -> str:
        state = "up" if self.is_up() else "down"
        return f"{self.name:<11} {state}  {HOST}:{self.port}  log={self.daemon.log}"


class ElasticMQ(JavaServer):
    def __init__(self) -> None:
        super().__init__("elasticmq", "elasticmq", SQS_PORT, f"http://{HOST}:{SQS_PORT}/health", 60)

    def command(self) -> list[str]:
        data = DEV / "elasticmq"
        data.mkdir(parents=True, exist_ok=True)
        return [
            "java",
            "-Xms64m",
            "-Xmx256m",
            f"-Dconfig.file={self.module / 'elasticmq.conf'}",
            f"-Drest-sqs.bind-port={self.port}",
            f"-Delasticmq.data-dir={data.resolve()}",
            "-cp",
            str(self.module / "target" / "lib" / "*"),
            # Our launcher exits when the port is taken (ElasticMQ's Main would linger).
            "auditlog.elasticmq.Launcher",
        ]

    def after_start(self) -> None:
        import boto3  # the venv's; the stack runs with .venv/bin/python

        sys.path.insert(0, str(ROOT))
        from auditlog.queue import ensure_queues
        from auditlog.settings import Settings

        settings = Settings.from_env(os.environ)
        # Credentials and region come from STACK_ENV, which main() put in the environment.
        client = boto3.client("sqs", endpoint_url=STACK_ENV["AWS_ENDPOINT_URL_SQS"])
        ensure_queues(
            client, settings.sqs_queue_name, settings.sqs_dlq_name, settings.sqs_max_receive_count
        )


class OpenSearch(JavaServer):
    def __init__(self) -> None:
        super().__init__(
            "opensearch", "opensearch", OPENSEARCH_PORT, f"http://{HOST}:{OPENSEARCH_PORT}/", 180
        )

    def command(self) -> list[str]:
        data = DEV / "opensearch"
        data.mkdir(parents=True, exist_ok=True)
        return [
            "java",
            "-Xms512m",
            "-Xmx1g",
            "-cp",
            f"{self.module / 'target' / 'classes'}:{self.module / 'target' / 'lib' / '*'}",
            "dev.auditlog.opensearch.Main",
            "--data-dir",
            str(data.resolve()),
            "--http-port",
            str(self.port),
        ]


# ---------------------------------------------------------------------------------------
# moto's server for S3


class MotoS3:
    name = "s3"

    def __init__(self) -> None:
        self.daemon = Daemon("moto-s3")
        self.url = f"http://{HOST}:{S3_PORT}"

    def up(self) -> None:
        if self.daemon.pid() is not None and http_ok(self.url + "/moto-api/"):
            say(f"moto s3 already running on {HOST}:{S3_PORT}")
        else:
            moto = PY.parent / "moto_server"
            if not moto.exists():
                raise StackError(f"{moto} is missing: run `make install` first")
            say(f"starting moto s3 on {HOST}:{S3_PORT}")
            self.daemon.spawn([str(moto), "-H", HOST, "-p", str(S3_PORT)])
            wait_until(
                lambda: http_ok(self.url + "/moto-api/"),
                60,
                "moto s3",
                self.daemon.log,
                self.daemon.alive,
            )
        import boto3

        bucket = os.environ.get("S3_BUCKET") or "audit-archive"
        s3 = boto3.client("s3", endpoint_url=self.url)
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)

    def down(self) -> bool:
        return self.daemon.stop()

    def is_up(self) -> bool:
        return self.daemon.pid() is not None and http_ok(self.url + "/moto-api/")

    def status(self) -> str:
        state = "up" if self.is_up() else "down"
        return f"{'s3 (moto)':<11} {state}  {HOST}:{S3_PORT}  log={self.daemon.log}"


# ---------------------------------------------------------------------------------------


def servers() -> list[Postgres | JavaServer | MotoS3]:
    return [Postgres(), ElasticMQ(), OpenSearch(), MotoS3()]


def _running_names() -> set[str]:
    return {s.name for s in servers() if s.is_up()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="stack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    parser.add_argument(
        "--started-file",
        type=Path,
        help="up: write the names of the servers this call started; "
        "down: stop only those (so a test run leaves a running `make run` alone)",
    )
    args = parser.parse_args(argv[1:])
    for key, value in stack_env().items():
        os.environ.setdefault(key, value)
    if args.command == "up":
        started = time.monotonic()
        already = _running_names() if args.started_file else set()
        try:
            for server in servers():
                server.up()
        except (StackError, subprocess.CalledProcessError) as exc:
            print(f"[stack] FAILED: {exc}", file=sys.stderr)
            return 1
        if args.started_file:
            args.started_file.parent.mkdir(parents=True, exist_ok=True)
            args.started_file.write_text("\n".join(sorted(_running_names() - already)))
        say(f"all servers answer ({time.monotonic() - started:.1f}s)")
        return 0
    if args.command == "down":
        only: set[str] | None = None
        if args.started_file:
            only = (
                set(args.started_file.read_text().split()) if args.started_file.exists() else set()
            )
        for server in reversed(servers()):
            if only is not None and server.name not in only:
                continue
            if server.down():
                say(f"stopped {server.name}")
        return 0
    if args.command == "status":
        for server in servers():
            print(server.status())
        return 0
    for key, value in stack_env().items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
