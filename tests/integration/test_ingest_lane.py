"""The single-event ingest lane (api/logs/lane.py) answers exactly as Flask's view does:
the same 202, the same record on the real queue, the same refusals; what it does not
serve it hands to Flask with the body intact. Each case runs on an app with the lane and
on one without it (``API_INGEST_LANE=0``), and the answers are compared."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from werkzeug.test import Client, TestResponse

from api import close_app, create_app
from api.logs.lane import SingleEventLane
from auditlog.queue import EventQueue, decode_envelope
from auditlog.settings import Settings
from infra import run as platform
from tests.integration.conftest import drain_messages
from tests.integration.test_api_server import spawn_api

EVENT = {
    "user_id": "0b7d2f5e-8a51-4d8c-9d3e-1f2a3b4c5d6e",
    "ip_address": "203.0.113.9",
    "action_type": "UPDATE",
    "resource_type": "invoice",
    "resource_id": "inv-9",
    "severity": "WARNING",
    "after_state": {"amount": 12.5},
    "occurred_at": "2024-05-01T12:00:00.123456Z",
}
REQUEST_ID = "lane-test-1"


@dataclass
class Routed:
    """An app's lane in front of its Flask, counting the requests it handed to Flask."""

    client: Client
    handed_to_flask: list[str]


def routed(app: Flask) -> Routed:
    flask_only = partial(Flask.wsgi_app, app)  # Flask itself, not the lane installed on app
    handed: list[str] = []

    def fallback(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        handed.append(environ["PATH_INFO"])
        return flask_only(environ, start_response)

    return Routed(Client(SingleEventLane(app, fallback)), handed)


@pytest.fixture
def make_app() -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def make(settings: Settings, **changes: Any) -> Flask:
        app = create_app(replace(settings, **changes))
        apps.append(app)
        return app

    yield make
    for app in apps:
        close_app(app)


def post(client: Client, token: str, body: bytes | None = None, **headers: str) -> TestResponse:
    return client.post(
        "/api/v1/logs",
        data=json.dumps(EVENT).encode() if body is None else body,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "X-Request-ID": REQUEST_ID,
            **headers,
        },
    )


def same_answer(lane: TestResponse, flask: TestResponse) -> None:
    """Status, headers (names, order, values) and body alike; a 202's id and times differ."""
    assert lane.status == flask.status
    assert [name for name, _ in lane.headers] == [name for name, _ in flask.headers]
    if lane.status_code == 202:
        lane_body, flask_body = lane.get_json(), flask.get_json()
        assert set(lane_body) == set(flask_body) == {"id", "created_at", "status"}
        assert lane_body["status"] == "queued"
        assert len(lane_body["created_at"]) == len(flask_body["created_at"])
        assert lane.headers["Location"] == f"/api/v1/logs/{lane_body['id']}"
        for name in ("Content-Type", "Content-Length", "X-Request-ID"):
            assert lane.headers[name] == flask.headers[name], name
    else:
        assert dict(lane.headers) == dict(flask.headers)
        assert lane.get_data() == flask.get_data()


def test_a_verified_token_takes_the_lane_and_gets_flasks_answer(
    make_app: Callable[..., Flask],
    settings: Settings,
    queue: EventQueue,
    tenant: uuid.UUID,
    token_for: Callable[..., str],
) -> None:
    lane = routed(make_app(settings, api_ingest_lane=1))
    flask = make_app(settings, api_ingest_lane=0).test_client()
    token = token_for(tenant, role="writer")

    first = post(lane.client, token)  # verifies the token, in Flask
    assert first.status_code == 202
    assert lane.handed_to_flask == ["/api/v1/logs"]
    served = post(lane.client, token)
    assert lane.handed_to_flask == ["/api/v1/logs"]  # served by the lane itself
    same_answer(served, post(flask, token))
    assert served.headers["X-Request-ID"] == REQUEST_ID

    records = {r["id"]: r for m in drain_messages(queue) for r in decode_envelope(m.body)}
    assert len(records) == 3
    body = served.get_json()
    assert records[body["id"]] == {
        **EVENT,
        "session_id": None,
        "user_agent": None,
        "before_state": None,
        "metadata": None,
        "id": body["id"],
        "tenant_id": str(tenant),
        "created_at": body["created_at"],
    }


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        pytest.param(json.dumps({**EVENT, "severity": "LOUD"}).encode(), {}, 422, id="invalid"),
        pytest.param(b'{"action_type": "UPDATE", ', {}, 400, id="malformed-json"),
        pytest.param(b'{"resource_id": "\xff"}', {}, 400, id="not-utf8"),
        pytest.param(b"[]", {}, 422, id="not-an-object"),
        pytest.param(None, {"Content-Type": "text/plain"}, 415, id="media-type"),
        pytest.param(None, {"Idempotency-Key": "k-1"}, 202, id="idempotency-key"),
    ],
)
def test_what_the_lane_does_not_serve_flask_answers_with_the_body_intact(
    make_app: Callable[..., Flask],
    settings: Settings,
    queue: EventQueue,
    new_tenant: Callable[..., uuid.UUID],
    token_for: Callable[..., str],
    body: bytes | None,
    headers: dict[str, str],
    status: int,
) -> None:
    lane = routed(make_app(settings, api_ingest_lane=1))
    flask = make_app(settings, api_ingest_lane=0).test_client()
    lane_token, flask_token = token_for(new_tenant()), token_for(new_tenant())
    assert post(lane.client, lane_token).status_code == 202  # the token is verified now
    drain_messages(queue)

    answer = post(lane.client, lane_token, body, **headers)
    assert lane.handed_to_flask == ["/api/v1/logs", "/api/v1/logs"]
    assert answer.status_code == status
    same_answer(answer, post(flask, flask_token, body, **headers))
    # A refusal queues nothing; an accepted request (and its twin on Flask) one event each.
    assert len(drain_messages(queue)) == (2 if status == 202 else 0)


def test_roles_that_may_not_write_are_left_to_flask(
    make_app: Callable[..., Flask],
    tenant: uuid.UUID,
    settings: Settings,
    token_for: Callable[..., str],
) -> None:
    lane = routed(make_app(settings, api_ingest_lane=1))
    reader = token_for(tenant, role="reader")
    assert lane.client.get("/api/v1/logs", headers={"Authorization": f"Bearer {reader}"})
    refused = post(lane.client, reader)
    assert refused.status_code == 403
    assert lane.handed_to_flask == ["/api/v1/logs", "/api/v1/logs"]
    assert refused.get_json()["detail"] == "The role `reader` may not do this."


def test_refusals_the_lane_meets_read_as_flasks(
    make_app: Callable[..., Flask],
    settings: Settings,
    queue: EventQueue,
    new_tenant: Callable[..., uuid.UUID],
    token_for: Callable[..., str],
) -> None:
    """A tenant that is not active (403), the rate limit (429), SQS down (503): met after
    the lane took the request, and answered as Flask's error handlers answer."""
    cases: list[tuple[dict[str, Any], str, int, str | None]] = [
        ({}, "suspended", 403, None),
        ({"rate_limit_events_per_second": 1, "rate_limit_burst": 1}, "active", 429, "1"),
        ({"aws_endpoint_url_sqs": "http://127.0.0.1:9"}, "active", 503, "2"),
    ]
    for changes, tenant_status, status, retry_after in cases:
        tenant = new_tenant(tenant_status)
        token = token_for(tenant)
        lane = routed(make_app(settings, api_ingest_lane=1, **changes))
        flask = make_app(settings, api_ingest_lane=0, **changes).test_client()
        warm = post(lane.client, token)  # in Flask: verifies the token (and, 429: fills up)
        assert warm.status_code == (202 if status == 429 else status)
        answers = [post(lane.client, token) for _ in range(2)]
        assert lane.handed_to_flask == ["/api/v1/logs"]
        assert [a.status_code for a in answers] == [status, status]
        assert answers[0].content_type == "application/problem+json"
        assert answers[0].headers.get("Retry-After") == retry_after
        if status == 429:
            assert post(flask, token).status_code == 202  # its own bucket, as each process
        same_answer(answers[1], post(flask, token))
    assert len(drain_messages(queue)) == 2  # the two accepted: the rate-limit case's first


def test_the_lane_counts_its_requests_in_the_metrics(
    make_app: Callable[..., Flask],
    settings: Settings,
    tenant: uuid.UUID,
    token_for: Callable[..., str],
) -> None:
    app = make_app(settings, api_ingest_lane=1, metrics_token="")
    client, lane = app.test_client(), routed(app)
    token = token_for(tenant)

    def count() -> float:
        prefix = 'auditlog_http_requests_total{endpoint="/api/v1/logs",method="POST",status="202"} '
        text = client.get("/metrics").get_data(as_text=True)
        found = [line for line in text.splitlines() if line.startswith(prefix)]
        return float(found[0].removeprefix(prefix)) if found else 0.0

    before = count()
    for _ in range(4):
        assert post(lane.client, token).status_code == 202
    assert len(lane.handed_to_flask) <= 1
    assert count() == before + 4


def cut_off_post(base: str, headers: dict[str, str], body: bytes) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST /api/v1/logs HTTP/1.1\r\nHost: {host}\r\n{head}"
            f"Content-Type: application/json\r\nContent-Length: {len(body) + 10}\r\n\r\n".encode()
            + body
        )
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_under_gunicorn_the_lane_serves_keep_alive_posts_and_logs_them(
    settings: Settings,
    queue: EventQueue,
    tenant: uuid.UUID,
    token_for: Callable[..., str],
    tmp_path: Path,
) -> None:
    """On the real server (pywsgi's request body, not a test client's): accepted, refused
    with the body passed on intact, and each request's access line written."""
    child, base = spawn_api(settings, tmp_path, workers=1, extra={"LOG_LEVEL": "INFO"})
    try:
        headers = {"Authorization": f"Bearer {token_for(tenant)}", "X-Request-ID": REQUEST_ID}
        with requests.Session() as session:
            accepted = [
                session.post(f"{base}/api/v1/logs", json=EVENT, headers=headers, timeout=10)
                for _ in range(3)
            ]
            malformed = session.post(
                f"{base}/api/v1/logs",
                data=b'{"action_type": ',
                headers={**headers, "Content-Type": "application/json"},
                timeout=10,
            )
            # A client that leaves mid-body (its write side closed): werkzeug's 400, as on
            # Flask's path, not a JSON error about a body that never came.
            cut_off = cut_off_post(base, headers, json.dumps(EVENT).encode())
        assert [a.status_code for a in accepted] == [202, 202, 202]
        assert malformed.status_code == 400
        assert malformed.json()["errors"][0]["field"] == "body"
        assert cut_off.startswith(b"HTTP/1.1 400 "), cut_off[:80]
        assert json.loads(cut_off.split(b"\r\n\r\n", 1)[1])["type"].endswith("/bad-request")
        ids = {a.json()["id"] for a in accepted}
        records = [r for m in drain_messages(queue) for r in decode_envelope(m.body)]
        assert {r["id"] for r in records} == ids
        time.sleep(0.5)  # access lines are written in batches, up to 20 ms late
    finally:
        platform.stop_children([child])
    lines = [
        json.loads(line)
        for line in (tmp_path / "api.log").read_text().splitlines()
        if line.startswith("{") and '"path":"/api/v1/logs"' in line
    ]
    assert [(line["status"], line["path"], line["request_id"]) for line in lines] == [
        (202, "/api/v1/logs", REQUEST_ID)
    ] * 3 + [(400, "/api/v1/logs", REQUEST_ID)] * 2
    assert {line["tenant_id"] for line in lines} == {str(tenant)}
