"""Event ids: UUIDv7, minted by the API.

A UUIDv7 starts with its Unix time in milliseconds, so ids sort by acceptance time, index
well, and tell the store which time partition holds the row. ``created_at`` is taken from
the same clock reading as the id, so the two always agree.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import uuid_utils


def new_event_id() -> tuple[uuid.UUID, datetime]:
    """A fresh UUIDv7 and the acceptance time embedded in it (millisecond precision)."""
    event_id = uuid.UUID(bytes=uuid_utils.uuid7().bytes)
    return event_id, id_time(event_id)


def id_time(event_id: uuid.UUID) -> datetime:
    """The millisecond timestamp carried by a UUIDv7."""
    millis = event_id.int >> 80
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)


def is_uuid7(event_id: uuid.UUID) -> bool:
    return event_id.version == 7
