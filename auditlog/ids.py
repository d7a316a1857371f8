"""Event ids: UUIDv7, minted by the API.

A UUIDv7 starts with its Unix time in milliseconds, so ids sort by acceptance time, index
well, and tell the store which time partition holds the row. ``created_at`` is taken from
the same clock reading as the id, so the two always agree.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

import uuid_utils


def new_event_id() -> tuple[uuid.UUID, datetime]:
    """A fresh UUIDv7 and the acceptance time embedded in it (millisecond precision)."""
    event_id = uuid.UUID(bytes=uuid_utils.uuid7().bytes)
    return event_id, id_time(event_id)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def id_time(event_id: uuid.UUID) -> datetime:
    """The millisecond timestamp carried by a UUIDv7."""
    return _EPOCH + timedelta(milliseconds=event_id.int >> 80)


def is_uuid7(event_id: uuid.UUID) -> bool:
    return event_id.version == 7


def time_hint(event_id: uuid.UUID) -> datetime | None:
    """The time an id of ours carries, to find its partition; None for another UUID version
    or a UUIDv7 from a client dated past year 9999, which no event of ours can have."""
    if not is_uuid7(event_id):
        return None
    try:
        return id_time(event_id)
    except OverflowError:
        return None


def uuid7_at(when: datetime) -> uuid.UUID:
    """A UUIDv7 carrying ``when`` (millisecond precision), for backfills and test data."""
    millis = int(when.timestamp() * 1000)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 64) & 0xFFF) << 64  # rand_a
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b
    return uuid.UUID(int=value)
