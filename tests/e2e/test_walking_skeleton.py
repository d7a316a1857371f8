"""The walking skeleton through the running platform: POST with a JWT to the API under
gunicorn → SQS → the Dagster daemon's drain sensor starts a drain run → PostgreSQL →
GET returns the event with every field unchanged. Nothing runs in-process."""

from __future__ import annotations

import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from auditlog.queue import ensure_queues, make_sqs_client
from auditlog.settings import Settings
from auditlog.store.migrate import migrate
from auditlog.store.pool import connect
from auditlog.tenants import create_tenant
from auditlog.tokens import mint_token
from infra import run as platform

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Platform:
    settings: Settings
    api_url: str
    dagster_url: str
    dagster_home: Path


def _create_db(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def _drop_db(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def running_platform(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    suffix = uuid.uuid4().hex[:10]
    server = base_settings.database_url.rsplit("/", 1)[0]
    admin = f"{server}/postgres"
    app_db, dagster_db = f"auditlog_e2e_{suffix}", f"dagster_e2e_{suffix}"
    _create_db(admin, app_db)
    _create_db(admin, dagster_db)
    settings = replace(
        base_settings,
        database_url=f"{server}/{app_db}",
        dagster_pg_url=f"{server}/{dagster_db}",
        sqs_queue_name=f"e2e-events-{suffix}",
        sqs_dlq_name=f"e2e-events-dlq-{suffix}",
    )
    migrate(settings.database_url)
    sqs = make_sqs_client(settings)
    ensure_queues(
        sqs, settings.sqs_queue_name, settings.sqs_dlq_name, settings.sqs_max_receive_count
    )

    home = tmp_path_factory.mktemp("dagster_home")
    platform.prepare_dagster_home(home)
    port, dagster_port = free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "DAGSTER_PG_URL": settings.dagster_pg_url,
        "SQS_QUEUE_NAME": settings.sqs_queue_name,
        "SQS_DLQ_NAME": settings.sqs_dlq_name,
        "DRAIN_IDLE_SECONDS": "5",
        # Short runs, so the sensor's hand-over from one drain run to the next is exercised.
        "DRAIN_TIME_BUDGET_SECONDS": "6",
        "DRAIN_MAX_CONCURRENT_RUNS": "1",
        "DAGSTER_HOME": str(home),
    }
    logs = tmp_path_factory.mktemp("e2e_logs")
    children = [platform.spawn("api", platform.api_command(port, workers=1), env, logs)]
    children.append(platform.spawn("dagster-daemon", platform.dagster_daemon_command(), env, logs))
    web = platform.spawn(
        "dagster-webserver", platform.dagster_webserver_command(dagster_port), env, logs
    )
    children.append(web)
    try:
        platform.wait_http(f"http://127.0.0.1:{port}/healthz", 60, children[0])
        platform.wait_http(f"http://127.0.0.1:{dagster_port}/server_info", 120, web)
        yield Platform(
            settings, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{dagster_port}", home
        )
    finally:
        platform.stop_children(children)
        for name in (settings.sqs_queue_name, settings.sqs_dlq_name):
            sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"])
        _drop_db(admin, app_db)
        _drop_db(admin, dagster_db)
        # Keep the logs of a failed run for the CI output; they are small.
        shutil.copytree(logs, Path(".dev/logs/e2e-last"), dirs_exist_ok=True)


def test_post_then_get_round_trips_every_field_through_the_daemon(
    running_platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = running_platform.settings
    with connect(settings.database_url) as conn:
        tenant = create_tenant(conn, name="e2e")["id"]
        conn.commit()
    token = mint_token(settings, tenant_id=tenant, role="user")
    headers = {"Authorization": f"Bearer {token}"}
    event = {
        "tenant_id": str(tenant),
        "user_id": str(uuid.uuid4()),
        "session_id": "sess-e2e",
        "ip_address": "203.0.113.9",
        "user_agent": "e2e/1.0",
        "action_type": "DELETE",
        "resource_type": "project",
        "resource_id": "prj-7",
        "severity": "CRITICAL",
        "before_state": {"name": "alpha", "members": [1, 2, 3], "archived": False},
        "after_state": None,
        "metadata": {"reason": "cleanup", "ticket": {"id": 42, "url": "https://example.test/42"}},
        "occurred_at": "2026-01-02T03:04:05.678901Z",
    }
    posted = requests.post(
        f"{running_platform.api_url}/api/v1/logs", json=event, headers=headers, timeout=10
    )
    assert posted.status_code == 202, posted.text
    accepted = posted.json()

    deadline = time.monotonic() + 120
    got = None
    while time.monotonic() < deadline:
        response = requests.get(
            f"{running_platform.api_url}/api/v1/logs/{accepted['id']}", headers=headers, timeout=10
        )
        if response.status_code == 200:
            got = response.json()
            break
        assert response.status_code == 404, response.text
        time.sleep(1)
    assert got is not None, (
        "the event did not reach PostgreSQL within 120 s (see .dev/logs/e2e-last/)"
    )

    assert {k: got[k] for k in event} == event
    assert got["id"] == accepted["id"]
    assert got["created_at"] == accepted["created_at"]
    assert got["seq"] == 1
    assert got["prev_hash"] == "00" * 32
    assert len(got["hash"]) == 64

    # The row got there through a drain run the sensor started in the daemon.
    monkeypatch.setenv("DAGSTER_PG_URL", settings.dagster_pg_url)
    instance = DagsterInstance.from_config(str(running_platform.dagster_home))
    runs = instance.get_runs(
        RunsFilter(job_name="drain_audit_events", tags={"dagster/sensor_name": "drain_sensor"})
    )
    assert runs, "no drain run was started by drain_sensor"
    deadline = time.monotonic() + 60
    while (
        time.monotonic() < deadline
        and instance.get_run_by_id(runs[-1].run_id).status != DagsterRunStatus.SUCCESS
    ):  # type: ignore[union-attr]
        time.sleep(1)
    assert instance.get_run_by_id(runs[-1].run_id).status == DagsterRunStatus.SUCCESS  # type: ignore[union-attr]


def test_dagster_ui_serves_the_asset_graph(running_platform: Platform) -> None:
    """The webserver answers its pages and lists the assets (its storage runs on psycopg 3)."""
    page = requests.get(f"{running_platform.dagster_url}/asset-groups", timeout=30)
    assert page.status_code == 200
    assert "<html" in page.text.lower()
    answer = requests.post(
        f"{running_platform.dagster_url}/graphql",
        json={"query": "{ assetNodes { assetKey { path } groupName } }"},
        timeout=30,
    ).json()
    nodes = {tuple(n["assetKey"]["path"]): n["groupName"] for n in answer["data"]["assetNodes"]}
    assert nodes[("audit_events",)] == "ingest"
    runs = requests.post(
        f"{running_platform.dagster_url}/graphql",
        json={"query": "{ runsOrError { ... on Runs { results { jobName status } } } }"},
        timeout=30,
    ).json()
    assert isinstance(runs["data"]["runsOrError"]["results"], list)


def test_sensor_keeps_one_drain_in_flight_while_a_backlog_exists(
    running_platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs end after their time budget (6 s here); while events keep arriving the sensor
    starts the next within 10 s, and never more than DRAIN_MAX_CONCURRENT_RUNS at once.
    Each run's materialisation carries the drain's numbers."""
    settings = running_platform.settings
    with connect(settings.database_url) as conn:
        tenant = create_tenant(conn, name="steady")["id"]
        conn.commit()
    headers = {"Authorization": f"Bearer {mint_token(settings, tenant_id=tenant, role='writer')}"}
    monkeypatch.setenv("DAGSTER_PG_URL", settings.dagster_pg_url)
    instance = DagsterInstance.from_config(str(running_platform.dagster_home))
    before = {r.run_id for r in instance.get_runs(RunsFilter(job_name="drain_audit_events"))}

    sent = 0
    started = time.monotonic()
    while time.monotonic() - started < 40:  # a steady trickle for longer than several budgets
        body = {
            "action_type": "VIEW",
            "resource_type": "doc",
            "resource_id": str(sent),
            "severity": "INFO",
        }
        response = requests.post(
            f"{running_platform.api_url}/api/v1/logs", json=body, headers=headers, timeout=10
        )
        assert response.status_code == 202
        sent += 1
        time.sleep(0.1)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with connect(settings.database_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM audit_logs WHERE tenant_id = %s", (tenant,)
            ).fetchone()
        if row and row[0] == sent:
            break
        time.sleep(1)
    assert row is not None
    assert row[0] == sent

    def new_records() -> list[Any]:
        return [
            r
            for r in instance.get_run_records(RunsFilter(job_name="drain_audit_events"))
            if r.dagster_run.run_id not in before and r.start_time is not None
        ]

    # Let the last run finish (idle), so every run has reported its materialisation.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(r.end_time is None for r in new_records()):
        time.sleep(1)
    records = new_records()
    records.sort(key=lambda r: r.start_time or 0)
    assert len(records) >= 3, "the trickle outlasts several 6 s budgets"
    finished = [r for r in records if r.end_time is not None]
    for previous, following in zip(finished, records[1 : len(finished) + 1], strict=False):
        assert following.start_time is not None
        assert previous.end_time is not None
        # "In flight" from the moment the sensor created the run (queued, then launched).
        requested = following.create_timestamp.timestamp()
        assert requested - previous.end_time <= 10, "the next drain was requested late"
        assert following.start_time >= previous.end_time - 0.5, "two drain runs overlapped"

    stored_by_runs = 0
    for record in records:
        events = instance.all_logs(
            record.dagster_run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION
        )
        for event in events:
            metadata = event.asset_materialization.metadata  # type: ignore[union-attr]
            stored_by_runs += metadata["events_stored"].value  # type: ignore[operator]
            assert {"duplicates_skipped", "oldest_message_age_s", "batch_ms_median"} <= set(
                metadata
            )
    assert stored_by_runs == sent
