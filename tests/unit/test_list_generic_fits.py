"""Which whole-history listing searches run on a generic plan (auditlog.reads)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from auditlog.filters import EventFilters
from auditlog.reads import _generic_plan_fits, network_bounds

USER = uuid.UUID(int=7)


@pytest.mark.parametrize(
    ("filters", "fits"),
    [
        (EventFilters(), True),
        (EventFilters(user_id=USER), True),
        (EventFilters(user_id=USER, action_types=["DELETE"], severities=["ERROR"]), True),
        (EventFilters(user_id=USER, session_id="s"), True),
        (EventFilters(resource_type="doc", resource_id="d-1"), True),
        (EventFilters(resource_type="doc", resource_id="d-1", severities=["INFO"]), True),
        # Indexes that do not lead with the value, or no index at all.
        (EventFilters(resource_type="doc"), False),
        (EventFilters(resource_id="d-1"), False),
        (EventFilters(action_types=["DELETE"]), False),
        (EventFilters(severities=["CRITICAL"]), False),
        (EventFilters(session_id="s"), False),
        (EventFilters(occurred_from=datetime(2026, 1, 1, tzinfo=UTC)), False),
        (EventFilters(created_to=datetime(2026, 1, 1, tzinfo=UTC)), True),
        # `<<=` reaches the IP index only through a value.
        (EventFilters(ip_network="10.0.0.0/8"), False),
        (EventFilters(user_id=USER, ip_network="10.0.0.0/8"), False),
    ],
)
def test_generic_plan_fits(filters: EventFilters, fits: bool) -> None:
    assert _generic_plan_fits(filters) is fits


def test_network_bounds() -> None:
    assert network_bounds("198.51.100.0/24") == ("198.51.100.0/24", "198.51.100.255")
    assert network_bounds("198.51.100.7/24") == ("198.51.100.0/24", "198.51.100.255")
    assert network_bounds("10.1.2.3/32") == ("10.1.2.3/32", "10.1.2.3")
    assert network_bounds("2001:db8::/32") == (
        "2001:db8::/32",
        "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
    )
