"""``search_index``: OpenSearch kept in step with ``audit_events`` from per-tenant watermarks,
a count check, and a monthly rebuild that can be backfilled from the UI or the CLI."""

import uuid
from datetime import UTC, datetime
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    MaterializeResult,
    MonthlyPartitionsDefinition,
    asset,
    asset_check,
)

from assets.events import audit_events
from auditlog.indexer import SearchIndexer
from auditlog.search import index_pattern, make_client
from auditlog.search_deletions import RANGES_PER_QUERY, deleted_documents_query, pending_deletions
from auditlog.store.pool import connect
from auditlog.store.queries import QUERIES
from pipelines.resources import AuditPlatform

SEARCH_TAG = "auditlog/search"
# The months the rebuild can address; a backfill picks a range of them.
MONTHS = MonthlyPartitionsDefinition(start_date="2024-01-01", end_offset=1)


@asset(
    group_name="search",
    deps=[audit_events],
    description="Every stored event, searchable in OpenSearch (audit-events-YYYY.MM, routed by "
    "tenant), indexed from per-tenant seq watermarks; events deleted by cleanup or retention "
    "are deleted from it too (search_deletions). Derived data: rebuildable from PostgreSQL.",
    kinds={"opensearch"},
)
def search_index(context: AssetExecutionContext, platform: AuditPlatform) -> MaterializeResult:
    settings = platform.settings()
    indexer = SearchIndexer(
        make_client(settings.opensearch_url), settings.database_url, settings.search_index_prefix
    )
    stats = indexer.run(settings.drain_time_budget_seconds, settings.drain_idle_seconds)
    context.log.info(
        f"indexed {stats.indexed}, re-indexed {stats.reindexed}, deletions applied "
        f"{stats.deletions_applied} ({stats.documents_deleted} documents), "
        f"failures {stats.failures}"
    )
    return MaterializeResult(
        metadata={
            "documents_indexed": stats.indexed,
            "documents_reindexed": stats.reindexed,
            "deletions_applied": stats.deletions_applied,
            "documents_deleted": stats.documents_deleted,
            "tenants": len(stats.tenants),
            "failed_passes": stats.failures,
        }
    )


@asset_check(
    asset=search_index,
    description="Per tenant, OpenSearch holds as many events as PostgreSQL up to the tenant's "
    "search watermark (events past it are the indexing lag; events deleted by cleanup or "
    "retention whose deletion the indexer has not applied yet are not counted).",
)
def search_counts_match(platform: AuditPlatform) -> AssetCheckResult:
    settings = platform.settings()
    client = make_client(settings.opensearch_url)
    pattern = index_pattern(settings.search_index_prefix)
    client.indices.refresh(index=pattern, ignore_unavailable=True)
    mismatched = {}
    skipped = []
    with connect(settings.database_url) as conn:
        rows = conn.execute(QUERIES["indexed_counts"]).fetchall()
        pending = pending_deletions(conn, limit=None)
    for tenant_id, last_seq, expected in rows:
        assert isinstance(tenant_id, uuid.UUID)
        ranges = pending.get(tenant_id, [])
        if len(ranges) > RANGES_PER_QUERY:
            skipped.append(str(tenant_id))  # too many to exclude in one query: next time
            continue
        filters = [{"term": {"tenant_id": str(tenant_id)}}, {"range": {"seq": {"lte": last_seq}}}]
        query: dict[str, Any] = {"bool": {"filter": filters}}
        if ranges:
            # Gone from PostgreSQL, still in the index until the indexer's next pass: like
            # the lag past the watermark, not a mismatch. Anything else left over is one.
            query["bool"]["must_not"] = [deleted_documents_query(tenant_id, ranges)]
        found = client.count(index=pattern, body={"query": query}, routing=str(tenant_id))
        if found["count"] != expected:
            mismatched[str(tenant_id)] = {"postgres": expected, "opensearch": found["count"]}
    return AssetCheckResult(
        passed=not mismatched,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "tenants_checked": len(rows) - len(skipped),
            "tenants_with_pending_deletions": len(pending),
            "tenants_skipped": len(skipped),
            "mismatched": len(mismatched),
            "details": str(mismatched)[:2000],
        },
    )


@asset(
    group_name="search",
    deps=[audit_events],
    partitions_def=MONTHS,
    description="Rebuild one month's index (audit-events-YYYY.MM) from PostgreSQL: drop it and "
    "index every event of that month again (the incremental indexer waits meanwhile; the "
    "deletions and redactions committed during it are applied before it ends). Backfill a "
    "range of months to rebuild them.",
    kinds={"opensearch"},
)
def search_index_rebuild(
    context: AssetExecutionContext, platform: AuditPlatform
) -> MaterializeResult:
    settings = platform.settings()
    window = context.partition_time_window
    start, end = window.start.astimezone(UTC), window.end.astimezone(UTC)
    indexer = SearchIndexer(
        make_client(settings.opensearch_url), settings.database_url, settings.search_index_prefix
    )
    # Excludes the incremental indexer while it runs and applies the deletions and redactions
    # committed meanwhile before it lets it go, so that its snapshot cannot bring back
    # redacted or deleted data (auditlog.indexer.SEARCH_WRITER_LOCK says why).
    rebuilt = indexer.rebuild(start, end)
    applied = rebuilt.applied
    context.log.info(
        f"rebuilt {rebuilt.index}: {rebuilt.documents} documents; then re-indexed "
        f"{applied.reindexed}, deletions applied {applied.deletions_applied} "
        f"({applied.documents_deleted} documents)"
    )
    return MaterializeResult(
        metadata={
            "index": rebuilt.index,
            "documents": rebuilt.documents,
            "documents_reindexed": applied.reindexed,
            "deletions_applied": applied.deletions_applied,
            "documents_deleted": applied.documents_deleted,
            "rebuilt_at": datetime.now(UTC).isoformat(),
        }
    )
