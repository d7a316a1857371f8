"""Deleting from the search index what was deleted from PostgreSQL.

Cleanup and retention record every deletion in ``search_deletions`` (migration 0009) in the
transaction that deletes the rows: a tenant, a seq bound and a created_at span such that the
tenant has no event with ``seq <= through_seq`` and ``created_from <= created_at <
created_before``, and never will again. ``apply_deletions`` deletes exactly the indexed
documents matching that (``delete_by_query``, routed by tenant, filtered on ``tenant_id``)
and only then removes the rows; when OpenSearch fails the rows stay, and the next pass
applies them.

Why the seq bound and not only a time: an event can be stored after a cleanup with a
created_at before the cleanup's cut-off (a redriven dead letter, or one whose day was not
archived yet); it gets a seq above every deleted one and stays searchable. Why the time span
as well: a dropped daily partition removes one day of the tenant, while events with lower seq
may still live on other days; for a seq-prefix delete it only narrows the search."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import TransportError

from auditlog.events import format_time
from auditlog.search import DEFAULT_PREFIX, SearchUnavailable, index_pattern
from auditlog.store.queries import QUERIES

# Ranges combined into one delete_by_query (or one count's exclusion): keeps each query far
# below OpenSearch's clause limit (indices.query.bool.max_clause_count, 1024 by default).
RANGES_PER_QUERY = 100
# A delete_by_query waits for completion; a retention batch's documents may take a while.
DELETE_TIMEOUT_S = 300


@dataclass(frozen=True)
class DeletedRange:
    """One row of ``search_deletions``."""

    id: int
    tenant_id: uuid.UUID
    through_seq: int
    created_from: datetime
    created_before: datetime
    rows_deleted: int


@dataclass
class AppliedDeletions:
    requests: int = 0
    documents: int = 0


def pending_deletions(
    conn: psycopg.Connection[Any], limit: int | None = 1000
) -> dict[uuid.UUID, list[DeletedRange]]:
    """The deletions not applied to the index yet (the oldest ``limit``, or all when None),
    oldest first, by tenant."""
    rows = conn.execute(QUERIES["pending_search_deletions"], {"limit": limit}).fetchall()
    by_tenant: dict[uuid.UUID, list[DeletedRange]] = {}
    for row in rows:
        deleted = DeletedRange(*row)
        by_tenant.setdefault(deleted.tenant_id, []).append(deleted)
    return by_tenant


def range_clause(deleted: DeletedRange) -> dict[str, Any]:
    """The documents of one deletion (within its tenant)."""
    return {
        "bool": {
            "filter": [
                {"range": {"seq": {"lte": deleted.through_seq}}},
                {
                    "range": {
                        "created_at": {
                            "gte": format_time(deleted.created_from),
                            "lt": format_time(deleted.created_before),
                        }
                    }
                },
            ]
        }
    }


def deleted_documents_query(tenant_id: uuid.UUID, ranges: list[DeletedRange]) -> dict[str, Any]:
    """The tenant's documents inside any of ``ranges`` (all of the same tenant)."""
    if any(r.tenant_id != tenant_id for r in ranges):
        raise ValueError("every range must be of the tenant the query is for")
    return {
        "bool": {
            "filter": [{"term": {"tenant_id": str(tenant_id)}}],
            "should": [range_clause(r) for r in ranges],
            "minimum_should_match": 1,
        }
    }


def _chunks(ranges: list[DeletedRange]) -> list[list[DeletedRange]]:
    return [ranges[i : i + RANGES_PER_QUERY] for i in range(0, len(ranges), RANGES_PER_QUERY)]


def _delete_matching(
    client: OpenSearch, pattern: str, tenant_id: uuid.UUID, ranges: list[DeletedRange]
) -> int:
    try:
        answer = client.delete_by_query(
            index=pattern,
            body={"query": deleted_documents_query(tenant_id, ranges)},
            routing=str(tenant_id),
            conflicts="proceed",
            refresh=True,  # searches stop matching the deleted events as soon as this returns
            wait_for_completion=True,
            ignore_unavailable=True,
            allow_no_indices=True,
            request_timeout=DELETE_TIMEOUT_S,
        )
    except (OSConnectionError, TransportError) as exc:
        raise SearchUnavailable(str(exc)[:500]) from exc
    # A version conflict is a document written while it was being deleted: not done yet.
    if answer.get("failures") or answer.get("timed_out") or answer.get("version_conflicts"):
        raise SearchUnavailable(
            f"delete_by_query left documents: timed_out={answer.get('timed_out')} "
            f"version_conflicts={answer.get('version_conflicts')} "
            f"failures={str(answer.get('failures'))[:300]}"
        )
    return int(answer.get("deleted", 0))


def apply_deletions(
    client: OpenSearch,
    conn: psycopg.Connection[Any],
    prefix: str = DEFAULT_PREFIX,
    limit: int = 1000,
) -> AppliedDeletions:
    """Delete from the index the documents of up to ``limit`` pending deletions; each
    request is removed (and committed) only after its documents are gone. ``conn`` is not
    in autocommit. Raises ``SearchUnavailable`` when OpenSearch fails; what is not applied
    stays pending."""
    applied = AppliedDeletions()
    pending = pending_deletions(conn, limit)
    conn.commit()  # hold no snapshot while OpenSearch works
    if not pending:
        return applied
    pattern = index_pattern(prefix)
    try:
        # delete_by_query finds documents through a search, which sees only what was
        # refreshed: a document indexed in the last second would otherwise be missed.
        client.indices.refresh(index=pattern, ignore_unavailable=True, allow_no_indices=True)
    except (OSConnectionError, TransportError) as exc:
        raise SearchUnavailable(str(exc)[:500]) from exc
    for tenant_id, ranges in pending.items():
        for chunk in _chunks(ranges):
            applied.documents += _delete_matching(client, pattern, tenant_id, chunk)
            conn.execute(QUERIES["finish_search_deletions"], {"ids": [r.id for r in chunk]})
            conn.commit()
            applied.requests += len(chunk)
    return applied
