"""Hardening of the API process: ``/metrics`` behind ``METRICS_TOKEN`` (on a real app, and
on gunicorn as ``infra/run.py api_command`` starts it), and a clean worker exit (the
``worker_exit`` hook of ``infra/gunicorn_conf.py`` closes the pool, producer and listener)."""

from __future__ import annotations

import json
import os
import signal
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from websockets.sync.client import connect

from api import close_app, create_app
from auditlog.settings import Settings
from infra import run as platform

METRICS_TOKEN = "metrics-" + uuid.uuid4().hex
EVENT = {"action_type": "VIEW", "resource_type": "doc", "resource_id": "1", "severity": "INFO"}
# What a worker prints when its pool is left to the garbage collector under gevent.
EXIT_NOISE = ("Exception ignored", "Traceback", "greenlet is being finalized", "__del__")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn_api(
    settings: Settings, logs: Path, workers: int, extra: dict[str, str] | None = None
) -> tuple[platform.Child, str]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "SQS_QUEUE_NAME": settings.sqs_queue_name,
        "SQS_DLQ_NAME": settings.sqs_dlq_name,
        "LOG_LEVEL": "WARNING",
        **(extra or {}),
    }
    child = platform.spawn("api", platform.api_command(port, workers=workers), env, logs)
    base = f"http://127.0.0.1:{port}"
    try:
        platform.wait_http(f"{base}/healthz", 60, child)
    except RuntimeError:
        platform.stop_children([child])
        raise
    return child, base


def assert_unauthorized(status: int, content_type: str, www: str | None, body: str) -> None:
    assert status == 401
    assert content_type == "application/problem+json"
    assert www == "Bearer"
    problem = json.loads(body)
    assert problem["status"] == 401
    assert problem["type"].endswith("/unauthorized")
    assert "METRICS_TOKEN" in problem["detail"]
    assert "auditlog_" not in body  # no metric leaks into the refusal


# -- /metrics on a real app --------------------------------------------------------------


@pytest.fixture
def guarded(settings: Settings) -> Iterator[FlaskClient]:
    app = create_app(replace(settings, metrics_token=METRICS_TOKEN))
    try:
        yield app.test_client()
    finally:
        close_app(app)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Bearer {METRICS_TOKEN[:-1]}",
        f"Bearer {METRICS_TOKEN}x",
        f"Basic {METRICS_TOKEN}",
        METRICS_TOKEN,
    ],
)
def test_metrics_refuse_a_request_without_the_token(
    guarded: FlaskClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = guarded.get("/metrics", headers=headers)
    assert_unauthorized(
        response.status_code,
        response.content_type,
        response.headers.get("WWW-Authenticate"),
        response.get_data(as_text=True),
    )


def test_metrics_refuse_an_api_token_in_place_of_the_metrics_token(
    guarded: FlaskClient, tenant: uuid.UUID, token_for: Callable[..., str]
) -> None:
    for role in ("admin", "auditor"):
        headers = {"Authorization": f"Bearer {token_for(tenant, role=role)}"}
        assert guarded.get("/metrics", headers=headers).status_code == 401, role


def test_metrics_answer_with_the_token(
    guarded: FlaskClient, tenant: uuid.UUID, auth: dict[str, str]
) -> None:
    assert guarded.post("/api/v1/logs", json=EVENT, headers=auth).status_code == 202
    for scheme in ("Bearer", "bearer"):
        response = guarded.get("/metrics", headers={"Authorization": f"{scheme} {METRICS_TOKEN}"})
        assert response.status_code == 200, scheme
        assert response.content_type == "text/plain; version=1.0.0; charset=utf-8"
        text = response.get_data(as_text=True)
        assert f'auditlog_events_accepted_total{{tenant_id="{tenant}"}}' in text


def test_metrics_stay_open_without_a_token_configured(settings: Settings) -> None:
    app: Flask = create_app(replace(settings, metrics_token=""))
    try:
        response = app.test_client().get("/metrics")
    finally:
        close_app(app)
    assert response.status_code == 200
    assert "auditlog_http_requests_total" in response.get_data(as_text=True)


def test_request_metrics_count_each_request_and_fold_unknown_methods(settings: Settings) -> None:
    """Counted per method, route and status; a method the client made up is counted as
    OTHER (each label value is a time series, so it must not come from the client)."""
    app: Flask = create_app(replace(settings, metrics_token=""))
    try:
        client = app.test_client()

        def count(labels: str) -> float:
            text = client.get("/metrics").get_data(as_text=True)
            prefix = f"auditlog_http_requests_total{{{labels}}} "
            found = [line for line in text.splitlines() if line.startswith(prefix)]
            return float(found[0].removeprefix(prefix)) if found else 0.0

        health = 'endpoint="/healthz",method="GET",status="200"'
        other = 'endpoint="unmatched",method="OTHER",status="405"'
        before_health, before_other = count(health), count(other)
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
        made_up = client.open("/healthz", method="BREW")
        assert made_up.status_code == 405
        assert count(health) == before_health + 3
        assert count(other) == before_other + 1
        assert 'method="BREW"' not in client.get("/metrics").get_data(as_text=True)
    finally:
        close_app(app)


# -- gunicorn ----------------------------------------------------------------------------


def test_gunicorn_api_reads_metrics_token_from_the_environment(
    settings: Settings, tmp_path: Path
) -> None:
    child, base = spawn_api(settings, tmp_path, workers=1, extra={"METRICS_TOKEN": METRICS_TOKEN})
    try:
        refused = requests.get(f"{base}/metrics", timeout=10)
        assert_unauthorized(
            refused.status_code,
            refused.headers["Content-Type"],
            refused.headers.get("WWW-Authenticate"),
            refused.text,
        )
        wrong = requests.get(f"{base}/metrics", headers={"Authorization": "Bearer x"}, timeout=10)
        assert wrong.status_code == 401
        allowed = requests.get(
            f"{base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
        )
        assert allowed.status_code == 200
        # The refusals above were counted like any request.
        assert 'endpoint="/metrics",method="GET",status="401"' in allowed.text
    finally:
        platform.stop_children([child])


def test_workers_close_their_pool_and_listener_on_sigterm(
    settings: Settings, tmp_path: Path, tenant: uuid.UUID, token_for: Callable[..., str]
) -> None:
    child, base = spawn_api(settings, tmp_path, workers=2)
    try:
        for _ in range(6):  # both workers use their pool (spread by the kernel; not forced)
            assert requests.get(f"{base}/readyz", timeout=10).json()["checks"]["postgres"] == "ok"
        # A live-tail socket starts its worker's LISTEN connection and listener greenlet,
        # which stay up after the socket is gone.
        ws_url = base.replace("http://", "ws://") + "/api/v1/logs/stream"
        headers = {"Authorization": f"Bearer {token_for(tenant, role='reader')}"}
        with connect(ws_url, additional_headers=headers, open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        os.killpg(child.process.pid, signal.SIGTERM)
        assert child.process.wait(30) == 0
    finally:
        platform.stop_children([child])
    log = child.log.read_text()
    assert log.count("Worker exiting") == 2, log
    noise = [line for line in log.splitlines() if any(n in line for n in EXIT_NOISE)]
    assert not noise, log
