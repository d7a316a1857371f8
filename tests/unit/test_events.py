import uuid

import pytest

from auditlog.events import (
    MAX_EVENT_BYTES,
    MAX_JSON_DEPTH,
    MAX_JSON_FIELD_BYTES,
    AcceptedEvent,
    parse_event,
)
from auditlog.ids import id_time, is_uuid7, new_event_id

TENANT = uuid.UUID("6f0c5a52-93a1-4a39-9a4e-2f0f0c1d2e3f")
VALID = {
    "action_type": "CREATE",
    "resource_type": "document",
    "resource_id": "doc-1",
    "severity": "INFO",
}


def errors_of(body: object) -> dict[str, str]:
    event, errors = parse_event(body, TENANT)
    assert event is None
    return {e.field: e.message for e in errors}


def test_seed_body_is_accepted_as_is() -> None:
    body = {
        **VALID,
        "tenant_id": str(TENANT),
        "user_id": "0b7d2f5e-8a51-4d8c-9d3e-1f2a3b4c5d6e",
        "session_id": "sess-1",
        "ip_address": "192.0.2.10",
        "user_agent": "Mozilla/5.0",
        "before_state": {"title": "a"},
        "after_state": {"title": "b"},
        "metadata": {"request": {"path": "/x"}},
    }
    event, errors = parse_event(body, TENANT)
    assert errors == []
    assert event is not None
    assert event.metadata == {"request": {"path": "/x"}}
    assert event.user_id == uuid.UUID("0b7d2f5e-8a51-4d8c-9d3e-1f2a3b4c5d6e")


def test_each_bad_field_is_named() -> None:
    found = errors_of(
        {
            "action_type": "ERASE",
            "resource_type": "",
            "resource_id": 7,
            "severity": "info",
            "user_id": "not-a-uuid",
            "ip_address": "300.1.1.1",
            "metadata": ["not", "an", "object"],
            "occurred_at": "yesterday",
        }
    )
    assert set(found) == {
        "action_type",
        "resource_type",
        "resource_id",
        "severity",
        "user_id",
        "ip_address",
        "metadata",
        "occurred_at",
    }
    assert "IPv4 or IPv6" in found["ip_address"]


def test_missing_required_fields_are_named() -> None:
    assert errors_of({}) == {
        "action_type": "is required",
        "resource_type": "is required",
        "resource_id": "is required",
        "severity": "is required",
    }


def test_unknown_fields_are_rejected_not_dropped() -> None:
    assert errors_of({**VALID, "acton_type": "CREATE"}) == {"acton_type": "is not a known field"}


@pytest.mark.parametrize("value", [123, 1.5, True])
def test_no_type_coercion_for_strings(value: object) -> None:
    assert "session_id" in errors_of({**VALID, "session_id": value})


def test_time_must_carry_a_timezone_and_be_a_string() -> None:
    assert "timezone" in errors_of({**VALID, "occurred_at": "2024-05-01T12:00:00"})["occurred_at"]
    assert "occurred_at" in errors_of({**VALID, "occurred_at": 1714564800})


def test_tenant_in_body_must_match_token() -> None:
    other = str(uuid.uuid4())
    assert errors_of({**VALID, "tenant_id": other}) == {
        "tenant_id": "does not match the tenant of the token"
    }


def test_json_objects_are_bounded_in_size_and_depth() -> None:
    big = {"blob": "x" * MAX_JSON_FIELD_BYTES}
    assert "larger than" in errors_of({**VALID, "after_state": big})["after_state"]
    deep: dict[str, object] = {}
    node = deep
    for _ in range(MAX_JSON_DEPTH + 1):
        node["n"] = {}
        node = node["n"]  # type: ignore[assignment]
    assert "deeper" in errors_of({**VALID, "metadata": deep})["metadata"]


def test_depth_past_the_recursion_limit_is_a_field_error() -> None:
    """The depth is counted without recursion: thousands of levels are the same field error
    (a recursive count raised RecursionError, an API 500, from a few hundred levels)."""
    nested: list[object] = []
    for _ in range(600):
        nested = [nested]
    for field in ("metadata", "before_state", "after_state"):
        assert "deeper" in errors_of({**VALID, field: {"a": nested}})[field]
    for _ in range(5_000):
        nested = [nested]
    # Past the C encoder's own limit too, the field is named (not the whole body).
    assert errors_of({**VALID, "metadata": {"a": nested}}) == {
        "metadata": f"nests deeper than {MAX_JSON_DEPTH} levels"
    }
    exactly: dict[str, object] = {}
    for _ in range(MAX_JSON_DEPTH - 1):
        exactly = {"n": exactly}
    event, errors = parse_event({**VALID, "metadata": exactly}, TENANT)
    assert errors == []
    assert event is not None


def test_whole_event_is_bounded_before_field_checks() -> None:
    body = {**VALID, "metadata": {"x": "y" * (MAX_EVENT_BYTES)}}
    assert errors_of(body) == {"body": f"event is larger than {MAX_EVENT_BYTES} bytes"}


def test_non_object_body() -> None:
    assert errors_of([VALID]) == {"body": "must be a JSON object"}


def test_values_are_normalised_once() -> None:
    event, _ = parse_event(
        {**VALID, "ip_address": "2001:DB8:0:0:0:0:0:1", "occurred_at": "2024-05-01T14:00:00+02:00"},
        TENANT,
    )
    assert event is not None
    event_id, created_at = new_event_id()
    record = AcceptedEvent(
        id=event_id, tenant_id=TENANT, created_at=created_at, body=event
    ).to_record()
    assert record["ip_address"] == "2001:db8::1"
    assert record["occurred_at"] == "2024-05-01T12:00:00.000000Z"
    assert record["id"] == str(event_id)
    assert record["tenant_id"] == str(TENANT)


def test_event_ids_are_uuid7_carrying_their_time() -> None:
    first, first_time = new_event_id()
    second, second_time = new_event_id()
    assert is_uuid7(first)
    assert first < second or first_time < second_time
    assert id_time(first) == first_time


def test_uuid7_at_carries_the_given_time() -> None:
    from datetime import UTC, datetime

    from auditlog.ids import uuid7_at

    when = datetime(2024, 2, 29, 12, 30, 15, 123000, tzinfo=UTC)
    made = uuid7_at(when)
    assert is_uuid7(made)
    assert made.variant == uuid.RFC_4122
    assert id_time(made) == when


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("resource_type", "a\x00b", "NUL"),
        ("session_id", "\ud800", "unicode"),
        ("metadata", {"k\x00": 1}, "NUL"),
        ("metadata", {"k": ["ok", "bad\x00"]}, "NUL"),
        ("ip_address", "fe80::1%eth0", "zone id"),
        ("occurred_at", "0001-01-01T00:00:00+01:00", "years"),
        ("occurred_at", "9999-12-31T23:59:59-01:00", "years"),
        ("occurred_at", "0202-01-01T00:00:00Z", "years"),
    ],
)
def test_values_postgresql_cannot_store_are_refused_up_front(
    field: str, value: object, message: str
) -> None:
    found = errors_of({**VALID, field: value})
    assert list(found) == [field]
    assert message in found[field]


def test_a_lone_surrogate_anywhere_is_a_422_not_a_crash() -> None:
    found = errors_of({**VALID, "metadata": {"\udcff": 1}})
    assert "surrogate" in found["metadata"]


def test_ipv4_mapped_addresses_use_the_spelling_postgresql_returns() -> None:
    event, _ = parse_event({**VALID, "ip_address": "::ffff:1.2.3.4"}, TENANT)
    assert event is not None
    assert event.ip_address == "::ffff:1.2.3.4"


def test_format_time_pads_the_year() -> None:
    from datetime import UTC, datetime

    from auditlog.events import format_time

    assert (
        format_time(datetime(202, 2, 25, 11, 30, 35, tzinfo=UTC)) == "0202-02-25T11:30:35.000000Z"
    )
