"""Shared fixtures. Service-backed fixtures talk to the real local servers (infra/stack.py);
when a server is missing they fail loudly, they never skip."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from auditlog.queue import ensure_queues, make_sqs_client
from auditlog.settings import Settings
from auditlog.store.migrate import migrate
from auditlog.store.pool import connect
from auditlog.tenants import create_tenant
from auditlog.tokens import mint_token
from infra.stack import stack_env

# Point at the local stack unless the environment says otherwise (`make test` sets the
# same values): endpoints, dummy AWS credentials, this checkout's dev JWT secret.
for _key, _value in stack_env().items():
    os.environ.setdefault(_key, _value)


def _admin_url(settings: Settings, database: str) -> str:
    return settings.database_url.rsplit("/", 1)[0] + f"/{database}"


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
def test_database(base_settings: Settings) -> Iterator[str]:
    """A fresh, migrated database for this test session, dropped afterwards."""
    name = f"auditlog_test_{uuid.uuid4().hex[:10]}"
    admin = _admin_url(base_settings, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # name is ours, not input
    url = _admin_url(base_settings, name)
    migrate(url)
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def test_queues(base_settings: Settings) -> Iterator[tuple[str, str]]:
    """An events queue and dead-letter queue of this session's own, deleted afterwards."""
    suffix = uuid.uuid4().hex[:10]
    queue, dlq = f"test-events-{suffix}", f"test-events-dlq-{suffix}"
    client = make_sqs_client(base_settings)
    # A short visibility timeout lets redelivery and dead-lettering happen within a test.
    ensure_queues(client, queue, dlq, max_receive_count=2, visibility_timeout=2)
    yield queue, dlq
    for name in (queue, dlq):
        client.delete_queue(QueueUrl=client.get_queue_url(QueueName=name)["QueueUrl"])


@pytest.fixture(scope="session")
def settings(base_settings: Settings, test_database: str, test_queues: tuple[str, str]) -> Settings:
    return replace(
        base_settings,
        database_url=test_database,
        sqs_queue_name=test_queues[0],
        sqs_dlq_name=test_queues[1],
        sqs_max_receive_count=2,
        drain_idle_seconds=1.0,
        drain_time_budget_seconds=20.0,
    )


@pytest.fixture
def db(settings: Settings) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with connect(settings.database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def new_tenant(db: psycopg.Connection[Any]) -> Callable[..., uuid.UUID]:
    def make(status: str = "active") -> uuid.UUID:
        row = create_tenant(db, name=f"tenant-{uuid.uuid4().hex[:6]}", status=status)
        return uuid.UUID(str(row["id"]))

    return make


@pytest.fixture
def tenant(new_tenant: Callable[..., uuid.UUID]) -> uuid.UUID:
    return new_tenant()


@pytest.fixture
def token_for(settings: Settings) -> Callable[..., str]:
    def make(tenant_id: uuid.UUID | None, role: str = "user", **kwargs: Any) -> str:
        return mint_token(settings, tenant_id=tenant_id, role=role, **kwargs)

    return make


@pytest.fixture
def auth(tenant: uuid.UUID, token_for: Callable[..., str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(tenant)}"}
