"""Tenants: who may send events, and how long their events are kept."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg.rows import dict_row

from auditlog.store.queries import QUERIES

TENANT_STATUSES = ("active", "inactive", "suspended")


def create_tenant(
    conn: psycopg.Connection[Any], *, name: str, status: str = "active", retention_days: int = 365
) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            QUERIES["insert_tenant"],
            {"name": name, "status": status, "retention_days": retention_days},
        )
        row = cur.fetchone()
    assert row is not None  # INSERT ... RETURNING always returns the row
    return row


def tenant_status(conn: psycopg.Connection[Any], tenant_id: uuid.UUID) -> str | None:
    row = conn.execute(QUERIES["tenant_status"], {"id": tenant_id}).fetchone()
    return None if row is None else str(row[0])
