from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from auditlog.queue import EventQueue, ReceivedMessage, make_sqs_client
from auditlog.settings import Settings


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
