from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg

from auditlog.queue import EventQueue, encode_envelope, pack_records
from auditlog.settings import Settings
from infra.stack import Postgres
from tests.reliability.conftest import make_records, scaled, start_drain, stored_count


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkill_mid_batch_loses_and_doubles_nothing(
    fault_settings: Settings,
    fault_queue: EventQueue,
    db: psycopg.Connection[Any],
    new_tenant: Callable[..., uuid.UUID],
    assert_exactly_once: Callable[..., None],
) -> None:
    tenants = [new_tenant() for _ in range(3)]
    # Small messages (~15 events) in small batches (10 messages): some 60 batches, so each
    # kill lands mid-run even on a quiet machine, where a drain stores ~1,000 events between
    # two polls of the wait below (with 3,000 events in 4 batches, the second run once
    # finished before its kill).
    records = make_records(tenants, scaled(3000))
    fault_queue.send_bodies(list(pack_records(records, max_bytes=8_000, compress=False)))

    for _ in range(2):
        drain = start_drain(fault_settings, seconds=120, idle=5, batch_size=10)
        before = stored_count(db, tenants)
        wait_for(
            lambda b=before: stored_count(db, tenants) > b + 200, 60, "the drain to make progress"
        )  # type: ignore[misc]
        drain.send_signal(signal.SIGKILL)
        drain.communicate(timeout=10)  # reaps it and closes its pipes
        assert drain.returncode == -signal.SIGKILL
    assert 0 < stored_count(db, tenants) < len(records)

    finisher = start_drain(fault_settings, seconds=scaled(120), idle=6)
    _, err = finisher.communicate(timeout=scaled(150))
    assert finisher.returncode == 0, err
    assert_exactly_once(records, tenants)
    assert fault_queue.dead_letter_backlog().visible == 0


def test_postgres_stopped_for_30s_during_load_loses_nothing(
    fault_settings: Settings,
    fault_queue: EventQueue,
    db: psycopg.Connection[Any],
    new_tenant: Callable[..., uuid.UUID],
) -> None:
    tenants = [new_tenant() for _ in range(2)]
    records = make_records(tenants, scaled(600))
    drain = start_drain(fault_settings, seconds=scaled(150), idle=12, batch_size=100)
    postgres = Postgres()
    try:
        # Load arrives before, during and after the outage.
        chunks = [records[i : i + 100] for i in range(0, len(records), 100)]
        for chunk in chunks[:2]:
            fault_queue.send_bodies([encode_envelope(chunk)])
            time.sleep(0.5)
        postgres.down()
        outage_started = time.monotonic()
        for chunk in chunks[2:4]:
            fault_queue.send_bodies([encode_envelope(chunk)])
            time.sleep(2)
        time.sleep(max(0.0, 30 - (time.monotonic() - outage_started)))
        postgres.up()
        for chunk in chunks[4:]:
            fault_queue.send_bodies([encode_envelope(chunk)])
        _, err = drain.communicate(timeout=scaled(150))
    finally:
        if not postgres.running():
            postgres.up()
        if drain.poll() is None:
            drain.kill()
            drain.communicate()
    assert drain.returncode == 0, err
    assert "drain.database_unavailable" in err
    assert_exactly_once_fresh(fault_settings, records, tenants)
    assert fault_queue.dead_letter_backlog().visible == 0


def assert_exactly_once_fresh(
    settings: Settings, records: list[dict[str, Any]], tenants: list[uuid.UUID]
) -> None:
    """The test's `db` connection died with the server; check over a new one."""
    from auditlog.store.pool import connect
    from auditlog.verify import verify_tenant_chain

    with connect(settings.database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id::text, tenant_id, seq FROM audit_logs WHERE tenant_id = ANY(%s)", (tenants,)
        ).fetchall()
        stored = [r[0] for r in rows]
        assert len(stored) == len(set(stored))
        assert set(stored) == {r["id"] for r in records}
        for tenant in tenants:
            assert verify_tenant_chain(conn, tenant)["ok"]


def test_concurrent_drains_keep_every_chain_linear(
    fault_settings: Settings,
    fault_queue: EventQueue,
    new_tenant: Callable[..., uuid.UUID],
    assert_exactly_once: Callable[..., None],
) -> None:
    tenants = [new_tenant() for _ in range(4)]
    records = make_records(tenants, scaled(400))
    # Every message holds events of every tenant, so both drains contend for every head.
    fault_queue.send_bodies(list(pack_records(records, max_bytes=6_000, compress=False)))
    drains = [
        start_drain(fault_settings, seconds=scaled(90), idle=4, batch_size=30) for _ in range(3)
    ]
    for drain in drains:
        _, err = drain.communicate(timeout=scaled(120))
        assert drain.returncode == 0, err
    assert_exactly_once(records, tenants)
