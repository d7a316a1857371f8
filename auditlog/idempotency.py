"""Idempotency keys: a retried request yields the first answer and no second event.

The first request with a key reserves its event ids (by item index) in PostgreSQL before
anything is queued. A retry with the same key and the same request gets those ids back: if
the first attempt completed, its stored answer is returned as is; if it did not (the API
process died, SQS failed), the same events are sent again with the same ids, which the
drain stores once. The same key with a different request is a client error.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from auditlog.store.queries import QUERIES

KEY_TTL = timedelta(hours=24)
MAX_KEY_LENGTH = 255


class KeyReusedError(ValueError):
    """The key was used within 24 h for a different request."""


@dataclass(frozen=True)
class Reservation:
    event_ids: list[uuid.UUID | None]
    completed: tuple[int, Any] | None  # (status, body) of the first answer, once it was sent


def request_fingerprint(method: str, path: str, query: str, body: bytes) -> bytes:
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query.encode()):
        digest.update(part + b"\0")
    digest.update(body)
    return digest.digest()


def valid_key(key: str) -> bool:
    return 0 < len(key) <= MAX_KEY_LENGTH and key.isprintable() and key.isascii()


class IdempotencyStore:
    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def reserve(
        self,
        tenant_id: uuid.UUID,
        key: str,
        fingerprint: bytes,
        proposed_ids: list[uuid.UUID | None],
    ) -> Reservation:
        """Reserve ``proposed_ids`` under the key, or return what the key already holds."""
        params = {"tenant_id": tenant_id, "key": key, "ttl": KEY_TTL}
        with self._pool.connection() as conn:
            for _ in range(3):
                row = conn.execute(QUERIES["find_idempotency_key"], params).fetchone()
                if row is not None:
                    request_hash, event_ids, status_code, response = row
                    if bytes(request_hash) != fingerprint:
                        raise KeyReusedError(key)
                    completed = None if status_code is None else (int(status_code), response)
                    return Reservation(list(event_ids), completed)
                inserted = conn.execute(
                    QUERIES["reserve_idempotency_key"],
                    {**params, "request_hash": fingerprint, "event_ids": proposed_ids},
                ).fetchone()
                conn.commit()
                if inserted is not None:
                    return Reservation(list(proposed_ids), None)
                # A concurrent request reserved the key first: read what it reserved.
        raise RuntimeError("idempotency key reservation did not settle")  # pragma: no cover

    def complete(self, tenant_id: uuid.UUID, key: str, status_code: int, body: Any) -> None:
        with self._pool.connection() as conn:
            conn.execute(
                QUERIES["complete_idempotency_key"],
                {
                    "tenant_id": tenant_id,
                    "key": key,
                    "status_code": status_code,
                    "response": Jsonb(body),
                },
            )

    def expire(self) -> int:
        with self._pool.connection() as conn:
            return conn.execute(QUERIES["expire_idempotency_keys"], {"ttl": KEY_TTL}).rowcount
