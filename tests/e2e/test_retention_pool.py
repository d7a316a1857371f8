"""Retention and the drain never run at once: with the real Dagster daemon and the instance
config of infra/dagster/dagster.yaml, a retention run requested while a drain run is in
progress stays queued (both are in the `audit_logs_writes` pool, limit 1, run
granularity) and starts only after the drain run has ended."""

from __future__ import annotations

import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from auditlog.queue import ensure_queues, make_sqs_client
from auditlog.settings import Settings
from auditlog.store.migrate import migrate
from infra import run as platform

pytestmark = pytest.mark.e2e

LAUNCH = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}"""
RUN = """
query($id: ID!) {
  runOrError(runId: $id) { ... on Run { status startTime endTime } }
}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def dagster(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Daemon and webserver of this module's own: an app database, queues and a Dagster
    storage database made for it. Drain runs here last about 15 s (idle queue)."""
    suffix = uuid.uuid4().hex[:10]
    server = base_settings.database_url.rsplit("/", 1)[0]
    app_db, dagster_db = f"auditlog_pool_{suffix}", f"dagster_pool_{suffix}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        for name in (app_db, dagster_db):
            conn.execute(f'CREATE DATABASE "{name}"')  # names are ours, not input
    settings = replace(
        base_settings,
        database_url=f"{server}/{app_db}",
        sqs_queue_name=f"pool-events-{suffix}",
        sqs_dlq_name=f"pool-events-dlq-{suffix}",
    )
    migrate(settings.database_url)
    sqs = make_sqs_client(settings)
    ensure_queues(sqs, settings.sqs_queue_name, settings.sqs_dlq_name, 5)
    home = tmp_path_factory.mktemp("dagster_home")
    platform.prepare_dagster_home(home)
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "DAGSTER_PG_URL": f"{server}/{dagster_db}",
        "SQS_QUEUE_NAME": settings.sqs_queue_name,
        "SQS_DLQ_NAME": settings.sqs_dlq_name,
        "DRAIN_IDLE_SECONDS": "15",
        "DRAIN_TIME_BUDGET_SECONDS": "30",
        "DAGSTER_HOME": str(home),
    }
    logs = tmp_path_factory.mktemp("pool_logs")
    web = platform.spawn("dagster-webserver", platform.dagster_webserver_command(port), env, logs)
    children = [web, platform.spawn("dagster-daemon", platform.dagster_daemon_command(), env, logs)]
    try:
        platform.wait_http(f"http://127.0.0.1:{port}/server_info", 120, web)
        yield f"http://127.0.0.1:{port}"
    finally:
        platform.stop_children(children)
        shutil.copytree(logs, Path(".dev/logs/pool-last"), dirs_exist_ok=True)
        for name in (settings.sqs_queue_name, settings.sqs_dlq_name):
            sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"])
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            for name in (app_db, dagster_db):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def graphql(url: str, query: str, **variables: Any) -> Any:
    answer = requests.post(
        f"{url}/graphql", json={"query": query, "variables": variables}, timeout=60
    ).json()
    assert "errors" not in answer, answer
    return answer["data"]


def launch(url: str, job: str) -> str:
    params = {
        "selector": {
            "repositoryLocationName": "pipelines.definitions",
            "repositoryName": "__repository__",
            "jobName": job,
        },
        "runConfigData": {},
    }
    result = graphql(url, LAUNCH, params=params)["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return str(result["run"]["runId"])


def run_state(url: str, run_id: str) -> dict[str, Any]:
    return dict(graphql(url, RUN, id=run_id)["runOrError"])


def wait_for(url: str, run_id: str, statuses: set[str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = run_state(url, run_id)
        if state["status"] in statuses:
            return state
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} not {statuses} within {timeout}s: {state}")


def test_retention_waits_for_the_running_drain(dagster: str) -> None:
    drain = launch(dagster, "drain_audit_events")
    wait_for(dagster, drain, {"STARTED"}, 180)
    retention = launch(dagster, "apply_retention")
    # The coordinator looks at the queue every second; while the drain runs, retention waits.
    held = 0
    while run_state(dagster, drain)["status"] == "STARTED":
        assert run_state(dagster, retention)["status"] == "QUEUED"
        held += 1
        time.sleep(1)
    assert held >= 3, "the drain ended before retention was seen waiting"
    drained = wait_for(dagster, drain, {"SUCCESS"}, 60)
    done = wait_for(dagster, retention, {"SUCCESS", "FAILURE"}, 240)
    assert done["status"] == "SUCCESS"
    assert done["startTime"] >= drained["endTime"]
