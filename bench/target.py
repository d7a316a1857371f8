"""The API under test: gunicorn against a fresh database and its own SQS queues.

Everything made here (database, queues, gunicorn and its workers) is removed again when the
``api_under_test`` block ends, also on errors and Ctrl-C.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from botocore.exceptions import BotoCoreError, ClientError
from psycopg import sql

from auditlog.queue import ensure_queues, make_sqs_client
from auditlog.settings import Settings
from auditlog.store.migrate import migrate
from auditlog.store.pool import connect
from auditlog.tenants import create_tenant
from auditlog.tokens import mint_token
from infra import run as platform
from infra import stack

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

LOG_DIR = stack.LOGS / "bench"


@dataclass(frozen=True)
class Target:
    base_url: str
    token: str
    settings: Settings
    sqs: SQSClient
    api: platform.Child

    @property
    def queue_url(self) -> str:
        return self.sqs.get_queue_url(QueueName=self.settings.sqs_queue_name)["QueueUrl"]

    def queue_depth(self) -> int:
        """Messages on the events queue now (each holds an envelope of 1..n events)."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attrs.get("ApproximateNumberOfMessages", 0))

    def purge_queue(self) -> None:
        """Drop what the last run queued (ElasticMQ keeps messages in a 256 MiB heap)."""
        self.sqs.purge_queue(QueueUrl=self.queue_url)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _admin_url(database_url: str) -> str:
    return f"{database_url.rsplit('/', 1)[0]}/postgres"


def _execute_admin(database_url: str, statement: sql.Composed) -> None:
    with psycopg.connect(_admin_url(database_url), autocommit=True) as conn:
        conn.execute(statement)


@contextmanager
def fresh_database(base: Settings, name: str) -> Iterator[str]:
    url = f"{base.database_url.rsplit('/', 1)[0]}/{name}"
    _execute_admin(base.database_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        migrate(url)
        yield url
    finally:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        _execute_admin(base.database_url, drop.format(sql.Identifier(name)))


def delete_queues(sqs: SQSClient, names: list[str]) -> None:
    for name in names:
        with suppress(BotoCoreError, ClientError):
            sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"])


@contextmanager
def fresh_queues(settings: Settings) -> Iterator[SQSClient]:
    sqs = make_sqs_client(settings)
    try:
        ensure_queues(
            sqs, settings.sqs_queue_name, settings.sqs_dlq_name, settings.sqs_max_receive_count
        )
        yield sqs
    finally:
        delete_queues(sqs, [settings.sqs_queue_name, settings.sqs_dlq_name])


def make_tenant_token(settings: Settings) -> str:
    with connect(settings.database_url) as conn:
        tenant = create_tenant(conn, name="bench")["id"]
        conn.commit()
    return mint_token(settings, tenant_id=tenant, role="writer")


def gunicorn_command(port: int, workers: int, worker_class: str | None) -> list[str]:
    return platform.api_command(port, workers=workers, worker_class=worker_class)


def worker_class_name(worker_class: str | None) -> str:
    cmd = gunicorn_command(0, 1, worker_class)
    return cmd[cmd.index("--worker-class") + 1]


def api_env(settings: Settings, extra: dict[str, str]) -> dict[str, str]:
    return {
        **platform.platform_env(),
        "DATABASE_URL": settings.database_url,
        "SQS_QUEUE_NAME": settings.sqs_queue_name,
        "SQS_DLQ_NAME": settings.sqs_dlq_name,
        "RATE_LIMIT_EVENTS_PER_SECOND": "0",  # the limit is off for the API under test
        **extra,
    }


@contextmanager
def gunicorn(
    settings: Settings,
    workers: int,
    worker_class: str | None,
    extra_env: dict[str, str],
    extra_args: list[str],
) -> Iterator[tuple[str, platform.Child]]:
    port = free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / "api.log"
    log.unlink(missing_ok=True)  # one run's log only
    cmd = gunicorn_command(port, workers, worker_class) + extra_args
    child = platform.spawn("api", cmd, api_env(settings, extra_env), LOG_DIR)
    try:
        base_url = f"http://127.0.0.1:{port}"
        platform.wait_http(f"{base_url}/healthz", 60, child)
        yield base_url, child
    finally:
        platform.stop_children([child])


def use_stack_env() -> None:
    """Point this process (boto3, psycopg) at the local stack unless the environment
    already says otherwise, as `eval "$(infra/stack.py env)"` would."""
    for name, value in stack.stack_env().items():
        os.environ.setdefault(name, value)


@contextmanager
def api_under_test(
    workers: int,
    worker_class: str | None = None,
    extra_env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
) -> Iterator[Target]:
    use_stack_env()
    base = Settings.from_env()
    suffix = uuid.uuid4().hex[:10]
    with fresh_database(base, f"auditlog_bench_{suffix}") as database_url:
        settings = replace(
            base,
            database_url=database_url,
            sqs_queue_name=f"bench-events-{suffix}",
            sqs_dlq_name=f"bench-events-dlq-{suffix}",
        )
        with fresh_queues(settings) as sqs:
            token = make_tenant_token(settings)
            server = gunicorn(settings, workers, worker_class, extra_env or {}, extra_args or [])
            with server as (base_url, child):
                yield Target(base_url, token, settings, sqs, child)


# ---------------------------------------------------------------------------------------
# Pre-flight: one request of each kind must be accepted before anything is measured.


def post_json(url: str, token: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(  # noqa: S310 (loopback URL)
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def preflight(target: Target, single_body: Path, bulk_body: Path, bulk_events: int) -> None:
    status, answer = post_json(
        f"{target.base_url}/api/v1/logs", target.token, single_body.read_bytes()
    )
    if status != 202:
        raise RuntimeError(f"single-event POST answered {status}: {answer}")
    status, answer = post_json(
        f"{target.base_url}/api/v1/logs/bulk", target.token, bulk_body.read_bytes()
    )
    if status != 202 or answer.get("accepted") != bulk_events:
        raise RuntimeError(f"bulk POST answered {status}: {str(answer)[:500]}")


def api_log_tail(target: Target) -> str:
    return stack.log_tail(target.api.log)


def api_pgrp(target: Target) -> int:
    return os.getpgid(target.api.process.pid)


# ---------------------------------------------------------------------------------------
# The seed-style baseline (bench/baselines/seed_api.py) on the same servers.


@contextmanager
def baseline_under_test(workers: int, worker_class: str | None) -> Iterator[Target]:
    """The baseline app under the same gunicorn settings as the platform, with its own
    database (the seed's schema), queue and per-tenant OpenSearch indices, all removed
    afterwards."""
    from opensearchpy import OpenSearch

    from bench.baselines.seed_api import SCHEMA

    use_stack_env()
    base = Settings.from_env()
    suffix = uuid.uuid4().hex[:10]
    name = f"auditlog_baseline_{suffix}"
    url = f"{base.database_url.rsplit('/', 1)[0]}/{name}"
    prefix = f"bench-baseline-{suffix}"
    _execute_admin(base.database_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    sqs = make_sqs_client(base)
    queue_name = f"bench-baseline-{suffix}"
    search = OpenSearch(base.opensearch_url, timeout=30)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SCHEMA)  # the seed's table and indexes, no partitions
        queue_url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
        settings = replace(base, database_url=url, sqs_queue_name=queue_name)
        cmd = gunicorn_command(free_port(), workers, worker_class)
        port = int(cmd[cmd.index("--bind") + 1].rsplit(":", 1)[1])
        cmd[cmd.index("api:create_app()")] = "bench.baselines.seed_api:create_app()"
        env = {
            **platform.platform_env(),
            "DATABASE_URL": url,
            "BASELINE_QUEUE_URL": queue_url,
            "BASELINE_INDEX_PREFIX": prefix,
        }
        child = platform.spawn("baseline", cmd, env, LOG_DIR)
        try:
            base_url = f"http://127.0.0.1:{port}"
            platform.wait_http(f"{base_url}/healthz", 60, child)
            token = mint_token(settings, tenant_id=uuid.uuid4(), role="writer")
            yield Target(base_url, token, settings, sqs, child)
        finally:
            platform.stop_children([child])
    finally:
        with suppress(Exception):
            search.indices.delete(index=f"{prefix}-*")
        delete_queues(sqs, [queue_name])
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        _execute_admin(base.database_url, drop.format(sql.Identifier(name)))
