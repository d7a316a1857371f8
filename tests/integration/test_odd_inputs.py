"""Inputs a hunt for 500s found (each once a 500, now the 4xx it should be or the right
answer), on the real app and servers."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

# A UUIDv7 whose timestamp lies past year 9999: no event can have it.
FAR_FUTURE_ID = "e677d21f-dc00-7000-8000-000000000000"


def cursor_of(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def fields(response: object) -> set[str]:
    assert response.status_code == 422, response.get_json()  # type: ignore[attr-defined]
    assert response.content_type == "application/problem+json"  # type: ignore[attr-defined]
    return {e["field"] for e in response.get_json()["errors"]}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "query",
    [
        "cursor="
        + cursor_of({"c": "0001-01-01T00:00:00+00:00", "i": str(uuid.uuid4()), "o": "desc"}),
        "cursor=" + cursor_of({"c": "2026-11-28T05:00:00", "i": str(uuid.uuid4()), "o": "desc"}),
        "q=doc&cursor="
        + cursor_of({"c": "2026-11-28T05:00:00", "i": str(uuid.uuid4()), "o": "desc"}),
        "cursor=" + base64.urlsafe_b64encode(b"[" * 3000).decode(),
        "cursor=" + "A" * 5000,
    ],
    ids=["year-1", "no-timezone", "no-timezone-search", "deep-nesting", "long"],
)
def test_a_tampered_listing_cursor_is_422(
    client: FlaskClient, auth: dict[str, str], query: str
) -> None:
    assert fields(client.get(f"/api/v1/logs?{query}", headers=auth)) == {"cursor"}


def test_a_tampered_tenants_cursor_is_422(
    client: FlaskClient, token_for: Callable[..., str]
) -> None:
    admin = {"Authorization": f"Bearer {token_for(None, 'admin')}"}
    for cursor in (base64.urlsafe_b64encode(b"[" * 3000).decode(), cursor_of({"c": "x", "i": "y"})):
        assert fields(client.get(f"/api/v1/tenants?cursor={cursor}", headers=admin)) == {"cursor"}


@pytest.mark.parametrize(
    "q", ["created:9999-12-31", "created>9999-12-31", "created<=9999-12-31", "occurred:9999-12-31"]
)
def test_a_date_past_the_years_events_have_is_422(
    client: FlaskClient, auth: dict[str, str], q: str
) -> None:
    assert fields(client.get(f"/api/v1/logs?q={q}", headers=auth)) == {"q"}


FULLWIDTH_FIVE = "\uff15"


@pytest.mark.parametrize("value", ["1_0", FULLWIDTH_FIVE, " 5", "+5", "9" * 5000])
def test_limits_are_plain_digits(client: FlaskClient, auth: dict[str, str], value: str) -> None:
    assert fields(client.get("/api/v1/logs", query_string={"limit": value}, headers=auth)) == {
        "limit"
    }


def test_an_id_dated_past_year_9999_is_404(
    client: FlaskClient, tenant: uuid.UUID, auth: dict[str, str], token_for: Callable[..., str]
) -> None:
    missing = client.get(f"/api/v1/logs/{FAR_FUTURE_ID}", headers=auth)
    assert missing.status_code == 404
    assert missing.content_type == "application/problem+json"
    admin = {"Authorization": f"Bearer {token_for(tenant, 'admin')}"}
    assert client.delete(f"/api/v1/logs/cleanup/{FAR_FUTURE_ID}", headers=admin).status_code == 404


@pytest.mark.parametrize("days", ["²", "①", "٣", "9" * 5000, "0"])
def test_cleanup_days_are_plain_digits(
    client: FlaskClient, tenant: uuid.UUID, token_for: Callable[..., str], days: str
) -> None:
    admin = {"Authorization": f"Bearer {token_for(tenant, 'admin')}"}
    response = client.delete(
        "/api/v1/logs/cleanup", query_string={"older_than_days": days}, headers=admin
    )
    assert fields(response) == {"older_than_days"}
