"""Fault tests: real servers, real processes, real failures (SIGKILL, a stopped database).

Every case compares the set of accepted ids with the set stored: nothing lost, nothing
doubled, and every chain verifies."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from auditlog.events import AcceptedEvent, EventIn
from auditlog.ids import new_event_id
from auditlog.queue import EventQueue, ensure_queues, make_sqs_client
from auditlog.settings import Settings
from auditlog.verify import verify_tenant_chain

# `make soak` sets SOAK=1: every case runs with SOAK_FACTOR (default 10) times the data and
# the time budgets. CI runs the small sizes.
SOAK_FACTOR = int(os.environ.get("SOAK_FACTOR", "10")) if os.environ.get("SOAK") == "1" else 1


def scaled(n: int) -> int:
    """``n`` in CI, ``n * SOAK_FACTOR`` under `make soak`."""
    return n * SOAK_FACTOR


@pytest.fixture
def fault_settings(settings: Settings) -> Iterator[Settings]:
    """Queues of this test's own (visibility 2 s, maxReceiveCount 5)."""
    suffix = uuid.uuid4().hex[:8]
    mine = replace(settings, sqs_queue_name=f"fault-{suffix}", sqs_dlq_name=f"fault-dlq-{suffix}")
    client = make_sqs_client(mine)
    ensure_queues(
        client, mine.sqs_queue_name, mine.sqs_dlq_name, max_receive_count=5, visibility_timeout=2
    )
    yield mine
    for name in (mine.sqs_queue_name, mine.sqs_dlq_name):
        client.delete_queue(QueueUrl=client.get_queue_url(QueueName=name)["QueueUrl"])


@pytest.fixture
def fault_queue(fault_settings: Settings) -> EventQueue:
    return EventQueue.from_settings(fault_settings)


def make_records(tenants: list[uuid.UUID], per_tenant: int) -> list[dict[str, Any]]:
    records = []
    for i in range(per_tenant):
        for tenant in tenants:
            event_id, created_at = new_event_id()
            body = EventIn.model_validate(
                {
                    "action_type": "UPDATE",
                    "resource_type": "doc",
                    "resource_id": str(i),
                    "severity": "INFO",
                    "metadata": {"i": i, "pad": "x" * 200},
                }
            )
            records.append(AcceptedEvent(event_id, tenant, created_at, body).to_record())
    return records


def start_drain(
    settings: Settings, *, seconds: float, idle: float, batch_size: int = 200
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "SQS_QUEUE_NAME": settings.sqs_queue_name,
        "SQS_DLQ_NAME": settings.sqs_dlq_name,
        "LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "auditlog.cli",
            "drain",
            "--seconds",
            str(seconds),
            "--idle-seconds",
            str(idle),
            "--batch-size",
            str(batch_size),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stored_count(db: psycopg.Connection[Any], tenants: list[uuid.UUID]) -> int:
    row = db.execute(
        "SELECT count(*) FROM audit_logs WHERE tenant_id = ANY(%s)", (tenants,)
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def assert_exactly_once(
    db: psycopg.Connection[Any],
) -> Callable[[list[dict[str, Any]], list[uuid.UUID]], None]:
    def check(records: list[dict[str, Any]], tenants: list[uuid.UUID]) -> None:
        rows = db.execute(
            "SELECT id::text, tenant_id, seq FROM audit_logs WHERE tenant_id = ANY(%s)", (tenants,)
        ).fetchall()
        stored = [r[0] for r in rows]
        assert len(stored) == len(set(stored)), "an event was stored twice"
        assert set(stored) == {r["id"] for r in records}, "an accepted event is missing"
        for tenant in tenants:
            seqs = sorted(r[2] for r in rows if r[1] == tenant)
            assert seqs == list(range(1, len(seqs) + 1)), f"seq of {tenant} has gaps"
            result = verify_tenant_chain(db, tenant)
            assert result["ok"], result

    return check
