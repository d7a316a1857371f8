"""Hostile request bodies on every endpoint that reads one: oversize (413), nested deeper
than allowed (422 naming the field; 400 naming ``body`` past what the JSON parser takes),
invalid UTF-8 (400), wrong or missing media types (415); always application/problem+json,
never a 500, and nothing queued."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from auditlog.events import MAX_JSON_DEPTH
from auditlog.queue import EventQueue, make_sqs_client
from auditlog.settings import Settings
from tests.security.conftest import World, fields_named, problem

EVENT = {"action_type": "VIEW", "resource_type": "doc", "resource_id": "1", "severity": "INFO"}
BODY_LIMIT = 64 * 1024
BULK_LIMIT = 32 * 1024


@pytest.fixture(scope="module")
def small_app(settings: Settings) -> Iterator[Flask]:
    """Small body limits, so an oversize body is cheap to send."""
    app = create_app(
        replace(settings, api_max_body_bytes=BODY_LIMIT, api_max_bulk_bytes=BULK_LIMIT)
    )
    yield app
    app.extensions["auditlog"].close()


@pytest.fixture
def small(small_app: Flask) -> FlaskClient:
    return small_app.test_client()


@pytest.fixture
def nothing_queued(settings: Settings) -> Iterator[None]:
    queue = EventQueue.from_settings(settings)
    sqs = make_sqs_client(settings)
    sqs.purge_queue(QueueUrl=queue.url())
    yield
    assert queue.receive(10, 1) == [], "a refused request queued an event"


def endpoints(world: World) -> list[tuple[str, str, dict[str, str]]]:
    """Every (method, path, headers) that reads a JSON body."""
    return [
        ("POST", "/api/v1/logs", world.b.headers("writer")),
        ("POST", "/api/v1/logs/bulk", world.b.headers("writer")),
        ("POST", "/api/v1/tenants", world.platform_admin),
        ("PATCH", f"/api/v1/tenants/{world.c.id}", world.platform_admin),
    ]


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_oversize_bodies_are_413(small: FlaskClient, world: World, nothing_queued: None) -> None:
    for method, path, headers in endpoints(world):
        body = json.dumps({"name": "x", "metadata": {"pad": "y" * BODY_LIMIT}})
        response = small.open(
            path, method=method, data=body, content_type="application/json", headers=headers
        )
        assert response.status_code == 413, (path, response.status_code)
        assert (
            "too large" in problem(response)["detail"] or "at most" in problem(response)["detail"]
        )
    # Bulk has its own, smaller limit, checked on the bytes actually read as well.
    just_over = json.dumps([{**EVENT, "metadata": {"pad": "y" * BULK_LIMIT}}])
    response = small.post(
        "/api/v1/logs/bulk",
        data=just_over,
        content_type="application/json",
        headers=world.b.headers("writer"),
    )
    assert response.status_code == 413
    assert str(BULK_LIMIT) in problem(response)["detail"]


def test_deep_nesting_is_422_naming_the_field(
    client: FlaskClient, world: World, settings: Settings
) -> None:
    """Deeper than MAX_JSON_DEPTH inside an event's JSON field: 422 naming the field, at
    every depth the JSON parser still takes (a recursive depth count once made a few
    hundred levels a 500)."""
    headers = world.b.headers("writer")
    queue = EventQueue.from_settings(settings)
    make_sqs_client(settings).purge_queue(QueueUrl=queue.url())
    for depth in (MAX_JSON_DEPTH, 100, 400, 600, 900):
        for field in ("metadata", "before_state", "after_state"):
            event = json.dumps(EVENT)[:-1] + f', "{field}": {{"a": {nested(depth)}}}}}'
            single = client.post(
                "/api/v1/logs", data=event, content_type="application/json", headers=headers
            )
            bulk = client.post(
                "/api/v1/logs/bulk",
                data=f"[{event}]",
                content_type="application/json",
                headers=headers,
            )
            assert single.status_code == 422, (depth, field, single.status_code)
            assert fields_named(single) == {field}, depth
            assert bulk.status_code == 422, (depth, field, bulk.status_code)
            assert fields_named(bulk) == {f"events.0.{field}"}, depth
    shallow = json.dumps({**EVENT, "metadata": json.loads("{" + '"a":{' * 15 + "}" * 16)})
    accepted = client.post(
        "/api/v1/logs", data=shallow, content_type="application/json", headers=headers
    )
    assert accepted.status_code == 202  # exactly MAX_JSON_DEPTH levels are fine
    assert len(queue.receive(10, 1)) == 1  # that one event, none of the refused ones
    make_sqs_client(settings).purge_queue(QueueUrl=queue.url())


def test_nesting_past_the_parser_is_400_naming_body(
    client: FlaskClient, world: World, nothing_queued: None
) -> None:
    for method, path, headers in endpoints(world):
        for depth in (5_000, 200_000):
            body = '{"metadata": {"a": ' + nested(depth) + "}}"
            response = client.open(
                path, method=method, data=body, content_type="application/json", headers=headers
            )
            assert response.status_code in (400, 422), (path, depth, response.status_code)
            assert fields_named(response), (path, depth)
        array = nested(200_000)
        response = client.open(
            path, method=method, data=array, content_type="application/json", headers=headers
        )
        assert response.status_code == 400, path
        assert fields_named(response) == {"body"}


def test_invalid_utf8_and_media_types(
    client: FlaskClient, world: World, nothing_queued: None
) -> None:
    bad_bytes = [
        b'{"resource_id": "\xff"}',
        b'{"resource_id": "\xc0\xaf"}',  # overlong "/"
        b'{"resource_id": "\xed\xa0\x80"}',  # a UTF-8-encoded surrogate
        b"\xfe\xff" + '{"a": 1}'.encode("utf-16-be"),
    ]
    for method, path, headers in endpoints(world):
        for raw in bad_bytes:
            response = client.open(
                path, method=method, data=raw, content_type="application/json", headers=headers
            )
            assert response.status_code == 400, (path, raw)
            assert fields_named(response) == {"body"}
            assert "UTF-8" in problem(response)["detail"]
        lone_surrogate = b'{"name": "\\ud800", "resource_id": "\\ud800"}'
        response = client.open(
            path,
            method=method,
            data=lone_surrogate,
            content_type="application/json",
            headers=headers,
        )
        assert response.status_code == 422, (path, response.status_code)
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            response = client.open(
                path, method=method, data=b"{}", content_type=content_type, headers=headers
            )
            assert response.status_code == 415, (path, content_type)
            assert fields_named(response) == {"Content-Type"}
        for raw in (b"", b"null", b"\x00", b"{" * 3, b'{"a": NaN}', b"1e999999"):
            response = client.open(
                path, method=method, data=raw, content_type="application/json", headers=headers
            )
            assert response.status_code in (400, 422), (path, raw, response.status_code)
            problem(response)
