"""Removing and erasing stored events: cleanup of old events (a seq prefix, archived days
only unless told otherwise) and redaction of personal-data fields of one event."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from auditlog.chain import CANONICAL_FIELDS, field_digest
from auditlog.ids import time_hint
from auditlog.store.queries import QUERIES

REDACTABLE_FIELDS = (
    "user_id",
    "session_id",
    "ip_address",
    "user_agent",
    "before_state",
    "after_state",
    "metadata",
)


def cleanup_before(
    conn: psycopg.Connection[Any], tenant_id: uuid.UUID, before: datetime, *, require_archive: bool
) -> dict[str, Any]:
    """Delete the tenant's events created before ``before`` that may go; in the caller's
    transaction. Returns what was deleted and what had to stay."""
    params = {"tenant_id": tenant_id, "before": before, "require_archive": require_archive}
    older = conn.execute(QUERIES["count_older_than"], params).fetchone()
    boundary_row = conn.execute(QUERIES["cleanup_boundary"], params).fetchone()
    boundary = boundary_row[0] if boundary_row else None
    deleted, oldest, newest = 0, None, None
    if boundary is not None and boundary > 0:
        row = conn.execute(
            QUERIES["delete_seq_prefix"], {"tenant_id": tenant_id, "last_seq": boundary}
        ).fetchone()
        if row is not None:
            deleted, oldest, newest = int(row[0]), row[1], row[2]
    older_count = int(older[0]) if older else 0
    return {
        "deleted": deleted,
        "kept": older_count - deleted,
        "through_seq": boundary if deleted else None,
        "oldest_deleted": oldest,
        "newest_deleted": newest,
    }


def redact_event(
    conn: psycopg.Connection[Any], tenant_id: uuid.UUID, event_id: uuid.UUID, fields: Sequence[str]
) -> list[str] | None:
    """Erase ``fields`` of one event, keeping each one's digest so the chain still verifies.
    Returns the fields that held a value and were erased now, or None if there is no such
    event in the tenant."""
    when = time_hint(event_id)
    row = conn.execute(
        QUERIES["event_for_redaction"], {"tenant_id": tenant_id, "id": event_id, "id_time": when}
    ).fetchone()
    if row is None:
        return None
    created_at, already, rendered = row
    already = already or {}
    texts = dict(zip(CANONICAL_FIELDS, rendered, strict=False))
    digests = {
        name: field_digest(texts[name])
        for name in fields
        if name not in already and texts.get(name) is not None
    }
    if digests:
        conn.execute(
            QUERIES["redact_event"],
            {
                "tenant_id": tenant_id,
                "id": event_id,
                "created_at": created_at,
                "fields": list(digests),
                "digests": Jsonb(digests),
            },
        )
        # The search index holds a copy of the erased values until it is refreshed.
        conn.execute(
            QUERIES["request_reindex"],
            {"tenant_id": tenant_id, "id": event_id, "created_at": created_at},
        )
    return sorted(digests)
