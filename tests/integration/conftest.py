from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from auditlog.queue import EventQueue, ReceivedMessage, make_sqs_client
from auditlog.settings import Settings
from auditlog.tenants import create_tenant
from auditlog.tokens import mint_token


@pytest.fixture(scope="session")
def app(settings: Settings) -> Iterator[Flask]:
    application = create_app(settings)
    yield application
    application.extensions["auditlog"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def queue(settings: Settings) -> Iterator[EventQueue]:
    """The session's events queue, emptied before and after each test."""
    client = make_sqs_client(settings)
    q = EventQueue(client, settings.sqs_queue_name, settings.sqs_dlq_name)
    client.purge_queue(QueueUrl=q.url())
    client.purge_queue(QueueUrl=q.url(settings.sqs_dlq_name))
    yield q
    client.purge_queue(QueueUrl=q.url())


def drain_messages(q: EventQueue, wait_seconds: int = 1) -> list[ReceivedMessage]:
    """Everything currently visible on the queue (received, not deleted)."""
    found: list[ReceivedMessage] = []
    while True:
        batch = q.receive(10, wait_seconds)
        if not batch:
            return found
        found.extend(batch)
        wait_seconds = 0


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
