"""JWT handling: every forged, stale, tampered or malformed token is a 401 problem with
`WWW-Authenticate: Bearer` (on a write and on a read), a valid token whose role may not act
is a 403, and an app configured for RS256 refuses HS256 tokens (the confusion attack) and
an HS app refuses RS256 ones. Nothing a refused request sent reaches the queue."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from auditlog.queue import EventQueue, make_sqs_client
from auditlog.settings import Settings
from tests.security.conftest import World, problem

EVENT = {"action_type": "VIEW", "resource_type": "doc", "resource_id": "1", "severity": "INFO"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{signature}"


def hs256_by_hand(claims: dict[str, Any], secret: bytes) -> str:
    """PyJWT refuses a PEM as an HMAC key, so the confusion token is built by hand."""
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


def claims_for(tenant: uuid.UUID | None, role: str = "user", **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": "sec", "role": role, "iat": now, "nbf": now, "exp": now + 300}
    if tenant is not None:
        claims["tenant_id"] = str(tenant)
    return {**claims, **extra}


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture
def empty_queue(settings: Settings) -> Iterator[EventQueue]:
    """The session queue, purged before and after (the assertion is: nothing was sent)."""
    queue = EventQueue.from_settings(settings)
    sqs = make_sqs_client(settings)
    sqs.purge_queue(QueueUrl=queue.url())
    yield queue
    sqs.purge_queue(QueueUrl=queue.url())


def assert_401(client: FlaskClient, name: str, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for response in (
        client.post("/api/v1/logs", json=EVENT, headers=headers),
        client.get("/api/v1/logs", headers=headers),
    ):
        assert response.status_code == 401, (name, response.get_data(as_text=True))
        assert response.headers["WWW-Authenticate"] == "Bearer", name
        assert problem(response)["type"].endswith("/unauthorized"), name


def test_forged_stale_and_tampered_tokens_are_401(
    client: FlaskClient,
    world: World,
    settings: Settings,
    rsa_keys: tuple[str, str],
    empty_queue: EventQueue,
) -> None:
    secret = settings.jwt_secret
    good_claims = claims_for(world.b.id)
    good = jwt.encode(good_claims, secret, algorithm="HS256")
    head, body, signature = good.split(".")
    as_a = b64(json.dumps({**good_claims, "tenant_id": str(world.a.id)}).encode())
    as_admin = b64(json.dumps({**good_claims, "role": "admin"}).encode())
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    now = int(time.time())
    cases: dict[str, str | None] = {
        "alg none": "Bearer " + unsigned({"alg": "none", "typ": "JWT"}, good_claims),
        "alg None, signature kept": "Bearer "
        + unsigned({"alg": "None", "typ": "JWT"}, good_claims, signature),
        "alg NONE, empty signature": "Bearer " + unsigned({"alg": "NONE"}, good_claims),
        "no alg": "Bearer " + unsigned({"typ": "JWT"}, good_claims, signature),
        "payload tampered (tenant)": f"Bearer {head}.{as_a}.{signature}",
        "payload tampered (role)": f"Bearer {head}.{as_admin}.{signature}",
        "signature tampered": f"Bearer {head}.{body}.{flipped}",
        "signature stripped": f"Bearer {head}.{body}.",
        "two parts": f"Bearer {head}.{body}",
        "wrong secret": "Bearer " + jwt.encode(good_claims, "x" * 40, algorithm="HS256"),
        "HS512 with the right secret": "Bearer "
        + jwt.encode(good_claims, secret, algorithm="HS512"),
        "RS256 against the HS app": "Bearer "
        + jwt.encode(good_claims, rsa_keys[0], algorithm="RS256"),
        "expired": "Bearer "
        + jwt.encode({**good_claims, "iat": now - 600, "exp": now - 60}, secret, algorithm="HS256"),
        "not yet valid (nbf)": "Bearer "
        + jwt.encode({**good_claims, "nbf": now + 600}, secret, algorithm="HS256"),
        "issued in the future (iat)": "Bearer "
        + jwt.encode({**good_claims, "iat": now + 600}, secret, algorithm="HS256"),
        "exp not a number": "Bearer "
        + jwt.encode({**good_claims, "exp": "tomorrow"}, secret, algorithm="HS256"),
        "no tenant claim": "Bearer " + jwt.encode(claims_for(None), secret, algorithm="HS256"),
        "tenant claim not a UUID": "Bearer "
        + jwt.encode({**good_claims, "tenant_id": "' OR 1=1"}, secret, algorithm="HS256"),
        "tenant claim a list": "Bearer "
        + jwt.encode(
            {**good_claims, "tenant_id": [str(world.a.id), str(world.b.id)]},
            secret,
            algorithm="HS256",
        ),
        "no role claim": "Bearer "
        + jwt.encode(
            {k: v for k, v in good_claims.items() if k != "role"}, secret, algorithm="HS256"
        ),
        "unknown role": "Bearer "
        + jwt.encode({**good_claims, "role": "root"}, secret, algorithm="HS256"),
        "missing header": None,
        "empty header": "",
        "Bearer without token": "Bearer",
        "Bearer and a space": "Bearer ",
        "lower-case scheme": "bearer " + good,
        "Basic scheme": "Basic " + base64.b64encode(b"admin:admin").decode(),
        "token without scheme": good,
        "two tokens": f"Bearer {good} {good}",
        "garbage": "Bearer not.a.jwt",
        "not base64": "Bearer @@@.@@@.@@@",
        "header not JSON": f"Bearer {b64(b'not json')}.{body}.{signature}",
    }
    for name, authorization in cases.items():
        assert_401(client, name, authorization)
    assert empty_queue.receive(10, 1) == []
    # The same token untampered works: the cases above fail for what was changed.
    assert (
        client.get("/api/v1/logs", headers={"Authorization": f"Bearer {good}"}).status_code == 200
    )


def test_role_that_may_not_act_is_403(
    client: FlaskClient, world: World, settings: Settings, empty_queue: EventQueue
) -> None:
    b = world.b
    a_event = world.a.ids[0]
    cases = [
        ("reader", "POST", "/api/v1/logs", EVENT),
        ("auditor", "POST", "/api/v1/logs/bulk", [EVENT]),
        ("writer", "GET", "/api/v1/logs", None),
        ("writer", "GET", f"/api/v1/logs/{a_event}", None),
        ("writer", "GET", "/api/v1/logs/export", None),
        ("writer", "GET", "/api/v1/logs/stats", None),
        ("writer", "GET", "/api/v1/logs/verify", None),
        ("writer", "GET", "/api/v1/logs/stream", None),
        ("user", "DELETE", "/api/v1/logs/cleanup?older_than_days=1", None),
        ("reader", "DELETE", f"/api/v1/logs/cleanup/{a_event}", None),
        ("user", "GET", "/api/v1/tenants", None),
        ("auditor", "GET", f"/api/v1/tenants/{world.a.id}", None),
        ("user", "POST", "/api/v1/tenants", {"name": "mine"}),
        ("writer", "PATCH", f"/api/v1/tenants/{world.a.id}", {"status": "suspended"}),
    ]
    for role, method, path, body in cases:
        response = client.open(path, method=method, json=body, headers=b.headers(role))
        assert response.status_code == 403, (role, method, path, response.get_data(as_text=True))
        assert role in str(problem(response)["detail"]), (role, path)
    # A platform admin's token (no tenant) may not act inside a tenant.
    platform_admin = {
        "Authorization": "Bearer "
        + jwt.encode(claims_for(None, "admin"), settings.jwt_secret, algorithm="HS256")
    }
    for method, path in (("POST", "/api/v1/logs"), ("GET", "/api/v1/logs")):
        response = client.open(path, method=method, json=EVENT, headers=platform_admin)
        assert response.status_code == 403, path
        assert "names none" in str(problem(response)["detail"])
    assert empty_queue.receive(10, 1) == []


@pytest.fixture
def rs_app(settings: Settings, rsa_keys: tuple[str, str]) -> Iterator[Flask]:
    app = create_app(
        replace(settings, jwt_algorithm="RS256", jwt_public_key=rsa_keys[1], jwt_secret="")
    )
    yield app
    app.extensions["auditlog"].close()


def test_rs256_app_refuses_hs_confusion_and_accepts_its_own_tokens(
    rs_app: Flask,
    world: World,
    settings: Settings,
    rsa_keys: tuple[str, str],
    empty_queue: EventQueue,
) -> None:
    client = rs_app.test_client()
    private, public = rsa_keys
    claims = claims_for(world.b.id)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused: dict[str, str] = {
        "HS256 signed with the public key": hs256_by_hand(claims, public.encode()),
        "HS256 signed with the public key, no newline": hs256_by_hand(
            claims, public.strip().encode()
        ),
        "HS256 with the dev secret": jwt.encode(claims, settings.jwt_secret, algorithm="HS256"),
        "RS256 by another key": jwt.encode(claims, other_key, algorithm="RS256"),
        "RS512 by the right key": jwt.encode(claims, private, algorithm="RS512"),
        "alg none": unsigned({"alg": "none", "typ": "JWT"}, claims),
        "expired RS256": jwt.encode(
            {**claims, "exp": int(time.time()) - 60}, private, algorithm="RS256"
        ),
    }
    for name, token in refused.items():
        assert_401(client, name, f"Bearer {token}")
    assert empty_queue.receive(10, 1) == []
    good = {"Authorization": f"Bearer {jwt.encode(claims, private, algorithm='RS256')}"}
    accepted = client.post("/api/v1/logs", json=EVENT, headers=good)
    assert accepted.status_code == 202
    listed = client.get(
        f"/api/v1/logs?resource_id={world.b.records[0]['resource_id']}", headers=good
    )
    assert [e["id"] for e in listed.get_json()["data"]] == [world.b.ids[0]]
    assert len(empty_queue.receive(10, 1)) == 1


def test_the_token_cache_never_outlives_exp(
    client: FlaskClient, world: World, settings: Settings
) -> None:
    """A token verified once is cached; once its ``exp`` has passed it is refused again."""
    now = int(time.time())
    token = jwt.encode(
        claims_for(world.b.id, iat=now, nbf=now, exp=now + 2), settings.jwt_secret, "HS256"
    )
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/logs", headers=headers).status_code == 200
    time.sleep(2.5)
    assert client.get("/api/v1/logs", headers=headers).status_code == 401
