"""Body limits as a real client meets them: the API under gunicorn (gevent_pywsgi, as
`make run`), where a chunked upload has no Content-Length and the stack depth is not the
test client's. An oversize chunked body is a 413 (it was once cut off at the limit and
answered as invalid JSON, 400); nesting at and past the JSON parser's depth is a 4xx, never
a 500."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from auditlog.settings import Settings
from infra import run as platform
from tests.security.conftest import World

BODY_LIMIT = 64 * 1024
BULK_LIMIT = 32 * 1024
HEAD = b'{"action_type": "VIEW", "resource_type": "doc", "resource_id": "1", "severity": "INFO"'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def api_url(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "SQS_QUEUE_NAME": settings.sqs_queue_name,
        "SQS_DLQ_NAME": settings.sqs_dlq_name,
        "API_MAX_BODY_BYTES": str(BODY_LIMIT),
        "API_MAX_BULK_BYTES": str(BULK_LIMIT),
        "LOG_LEVEL": "WARNING",
    }
    logs = tmp_path_factory.mktemp("security_api")
    child = platform.spawn("api", platform.api_command(port, workers=1), env, logs)
    try:
        platform.wait_http(f"http://127.0.0.1:{port}/healthz", 60, child)
        yield f"http://127.0.0.1:{port}"
    finally:
        platform.stop_children([child])
        shutil.copytree(logs, Path(".dev/logs/security-last"), dirs_exist_ok=True)


def chunked(body: bytes, size: int = 8192) -> Iterator[bytes]:
    """A generator body: requests sends it with Transfer-Encoding: chunked."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def event_bytes(pad: int) -> bytes:
    return HEAD + b', "metadata": {"pad": "' + b"y" * pad + b'"}}'


def test_oversize_chunked_bodies_are_413(api_url: str, world: World) -> None:
    writer = {**world.b.headers("writer"), "Content-Type": "application/json"}
    admin = {**world.platform_admin, "Content-Type": "application/json"}
    big = event_bytes(4 * BODY_LIMIT)
    for method, path, headers in (
        ("POST", "/api/v1/logs", writer),
        ("POST", "/api/v1/logs/bulk", writer),
        ("POST", "/api/v1/tenants", admin),
        ("PATCH", f"/api/v1/tenants/{world.c.id}", admin),
    ):
        for body in (chunked(big), big):  # without and with Content-Length
            response = requests.request(
                method, f"{api_url}{path}", data=body, headers=headers, timeout=30
            )
            assert response.status_code == 413, (path, response.status_code, response.text[:200])
            assert response.headers["Content-Type"] == "application/problem+json"
            assert response.json()["status"] == 413
    small = requests.post(
        f"{api_url}/api/v1/logs", data=chunked(event_bytes(1000)), headers=writer, timeout=30
    )
    assert small.status_code == 202, small.text


def test_nesting_around_the_parser_depth_is_4xx(api_url: str, world: World) -> None:
    writer = {**world.b.headers("writer"), "Content-Type": "application/json"}
    for depth in (17, 500, 900, 950, 990, 1000, 1100, 12_000):  # 24 KB: under both limits
        body = HEAD + b', "metadata": {"a": ' + b"[" * depth + b"]" * depth + b"}}"
        for path, data in (("/api/v1/logs", body), ("/api/v1/logs/bulk", b"[" + body + b"]")):
            response = requests.post(f"{api_url}{path}", data=data, headers=writer, timeout=30)
            assert response.status_code in (400, 422), (depth, path, response.status_code)
            fields = {e["field"] for e in response.json()["errors"]}
            assert fields & {"body", "metadata", "events.0.metadata"}, (depth, fields)
