"""Rate limits, an unreachable SQS, RS256 tokens and metrics, each on an app of its own."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask

from api import create_app
from auditlog.queue import EventQueue
from auditlog.settings import Settings
from auditlog.store.migrate import discover
from tests.integration.conftest import drain_messages

EVENT = {"action_type": "VIEW", "resource_type": "doc", "resource_id": "1", "severity": "INFO"}


@pytest.fixture
def make_app() -> Iterator[Callable[[Settings], Flask]]:
    apps: list[Flask] = []

    def make(settings: Settings) -> Flask:
        app = create_app(settings)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["auditlog"].close()


def test_rate_limit_answers_429_with_retry_after(
    make_app: Callable[[Settings], Flask],
    settings: Settings,
    queue: EventQueue,
    auth: dict[str, str],
) -> None:
    client = make_app(
        replace(settings, rate_limit_events_per_second=1, rate_limit_burst=3)
    ).test_client()
    statuses = [client.post("/api/v1/logs", json=EVENT, headers=auth).status_code for _ in range(4)]
    assert statuses == [202, 202, 202, 429]
    limited = client.post("/api/v1/logs", json=EVENT, headers=auth)
    assert limited.headers["Retry-After"] == "1"
    assert limited.content_type == "application/problem+json"
    bulk = client.post("/api/v1/logs/bulk", json=[EVENT] * 5, headers=auth)
    assert bulk.status_code == 429
    assert int(bulk.headers["Retry-After"]) >= 3
    assert len(drain_messages(queue)) == 3


def test_unreachable_sqs_is_503_and_nothing_is_accepted(
    make_app: Callable[[Settings], Flask],
    settings: Settings,
    queue: EventQueue,
    auth: dict[str, str],
) -> None:
    # Nothing listens on port 9 (discard) here: a real connection refusal, not a mock.
    down = replace(settings, aws_endpoint_url_sqs="http://127.0.0.1:9")
    client = make_app(down).test_client()
    started = time.monotonic()
    single = client.post("/api/v1/logs", json=EVENT, headers=auth)
    bulk = client.post("/api/v1/logs/bulk", json=[EVENT, EVENT], headers=auth)
    assert time.monotonic() - started < 20
    for response in (single, bulk):
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "2"
        assert response.content_type == "application/problem+json"
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["checks"]["sqs"].startswith("error")
    assert ready.get_json()["checks"]["postgres"] == "ok"
    assert drain_messages(queue) == []


def test_rs256_tokens_and_algorithm_confusion(
    make_app: Callable[[Settings], Flask], settings: Settings, queue: EventQueue, tenant: uuid.UUID
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    client = make_app(
        replace(settings, jwt_algorithm="RS256", jwt_public_key=public_pem, jwt_secret="")
    ).test_client()
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "svc",
        "tenant_id": str(tenant),
        "role": "writer",
        "iat": now,
        "exp": now + 60,
    }

    good = jwt.encode(claims, private_pem, algorithm="RS256")
    assert (
        client.post(
            "/api/v1/logs", json=EVENT, headers={"Authorization": f"Bearer {good}"}
        ).status_code
        == 202
    )
    # HS256 signed with the public key as the secret: the classic confusion attack.
    forged = _hs256(claims, public_pem.encode())
    assert (
        client.post(
            "/api/v1/logs", json=EVENT, headers={"Authorization": f"Bearer {forged}"}
        ).status_code
        == 401
    )
    hs_with_dev_secret = jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
    assert (
        client.post(
            "/api/v1/logs", json=EVENT, headers={"Authorization": f"Bearer {hs_with_dev_secret}"}
        ).status_code
        == 401
    )
    assert len(drain_messages(queue)) == 1


def _hs256(claims: dict[str, Any], secret: bytes) -> str:
    """PyJWT refuses a PEM as an HMAC key, so build the forged token by hand."""
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def test_missing_secret_is_refused_at_start(settings: Settings) -> None:
    with pytest.raises(ValueError, match="JWT_SECRET"):
        create_app(replace(settings, jwt_secret="short"))


def test_metrics_count_requests_and_accepted_events(
    client: Any, queue: EventQueue, tenant: uuid.UUID, auth: dict[str, str]
) -> None:
    client.post("/api/v1/logs", json=EVENT, headers=auth)
    client.post("/api/v1/logs", json={"nope": 1}, headers=auth)
    text = client.get("/metrics").get_data(as_text=True)
    assert f'auditlog_events_accepted_total{{tenant_id="{tenant}"}} 1.0' in text
    assert f'auditlog_events_rejected_total{{tenant_id="{tenant}"}} 1.0' in text
    assert (
        'auditlog_http_requests_total{endpoint="/api/v1/logs",method="POST",status="202"}' in text
    )
    assert "auditlog_http_request_duration_seconds_bucket" in text
    assert len(drain_messages(queue)) == 1


def test_readiness_names_the_migrations_the_database_lacks(
    make_app: Callable[[Settings], Flask], settings: Settings
) -> None:
    ready = make_app(settings).test_client().get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"postgres": "ok", "schema": "ok", "sqs": "ok"}

    name = f"auditlog_readyz_{uuid.uuid4().hex[:10]}"
    admin = settings.database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # name is ours, not input
    try:
        stale = replace(settings, database_url=settings.database_url.rsplit("/", 1)[0] + f"/{name}")
        client = make_app(stale).test_client()
        empty = client.get("/readyz")
        assert empty.status_code == 503
        assert (
            empty.get_json()["checks"]["schema"]
            == "error: no migrations applied (auditlog migrate)"
        )
        versions = [m.version for m in discover()]
        with psycopg.connect(stale.database_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY)")
            for version in versions[:-1]:
                conn.execute("INSERT INTO schema_migrations VALUES (%s)", (version,))
        behind = client.get("/readyz")
        assert behind.status_code == 503
        assert behind.get_json()["checks"] == {
            "postgres": "ok",
            "schema": f"error: migrations {versions[-1]} not applied (auditlog migrate)",
            "sqs": "ok",
        }
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_exports_have_their_own_connections(
    make_app: Callable[[Settings], Flask],
    settings: Settings,
    tenant: uuid.UUID,
    token_for: Callable[..., str],
) -> None:
    """An export holds its connection until the client has read it all. Slow readers take
    the exports' connections only: the next export is told to retry (503), and everything
    else still gets a connection."""
    app = make_app(replace(settings, db_export_pool_max=1, db_pool_max=1))
    client = app.test_client()
    auth = {"Authorization": f"Bearer {token_for(tenant, 'reader')}"}
    reading = client.get("/api/v1/logs/export?format=csv", headers=auth, buffered=False)
    assert reading.status_code == 200
    try:
        started = time.monotonic()
        busy = client.get("/api/v1/logs/export?format=csv", headers=auth)
        assert busy.status_code == 503
        assert busy.headers["Retry-After"] == "10"
        assert busy.get_json()["type"].endswith("/exports-busy")
        assert time.monotonic() - started < 15
        listing = client.get("/api/v1/logs", headers=auth)  # the one ordinary connection
        assert listing.status_code == 200
        assert listing.get_json()["data"] == []
    finally:
        reading.close()  # the client is done: the export's connection goes back
    assert client.get("/api/v1/logs/export?format=csv", headers=auth).status_code == 200
