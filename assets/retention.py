"""``retention``: per tenant, events older than the tenant's ``retention_days`` are deleted,
but only on days the ``archive`` asset recorded in the ``audit_archives`` ledger; the
lineage ``audit_events -> archive -> retention`` shows why data may be dropped
(``auditlog/retention_policy.py`` has the rules). Every run is itself audited: an event in
each affected tenant's log, and a summary in the platform's.

It shares the ``audit_logs_writes`` pool with the drain, so it never drops a partition or
deletes rows while a drain run writes (see README: "Retention")."""

import uuid
from datetime import UTC, datetime

from dagster import (
    AssetExecutionContext,
    AssetKey,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from assets.events import AUDIT_LOGS_POOL
from auditlog.retention_policy import apply_retention
from auditlog.store.pool import connect
from pipelines.resources import AuditPlatform


class RetentionConfig(Config):
    """``dry_run`` reports what would go without deleting or recording anything;
    ``batch_rows`` bounds each delete transaction; ``tenants`` limits a run to these ids."""

    dry_run: bool = False
    batch_rows: int = 5000
    tenants: list[str] = Field(default_factory=list)


@asset(
    key="retention",
    group_name="retention",
    # By key, not by import: the archive asset is defined in assets/archive.py.
    deps=[AssetKey("archive")],
    pool=AUDIT_LOGS_POOL,
    description="Deletes, per tenant, the events older than its retention_days whose day is in "
    "the audit_archives ledger (a verified copy is in the archive): whole daily partitions "
    "where every row may go, batched seq-prefix deletes otherwise. Audited in each tenant's log.",
    kinds={"postgres"},
)
def retention(
    context: AssetExecutionContext, config: RetentionConfig, platform: AuditPlatform
) -> MaterializeResult:
    settings = platform.settings()
    now = datetime.now(UTC)
    with connect(settings.database_url, autocommit=True) as conn:
        report = apply_retention(
            conn,
            platform.queue(),
            now,
            batch_rows=config.batch_rows,
            dry_run=config.dry_run,
            only={uuid.UUID(t) for t in config.tenants},
        )
    for tenant in report.tenants:
        context.log.info(
            f"tenant {tenant.tenant_id}: through seq {tenant.through_seq}, "
            f"{tenant.rows_deleted + tenant.rows_in_dropped_partitions} row(s), "
            f"cut-off {tenant.cutoff}, archived days {', '.join(tenant.archived_days)}"
        )
    return MaterializeResult(
        metadata={
            "dry_run": MetadataValue.bool(report.dry_run),
            "rows_deleted": MetadataValue.int(report.rows_deleted),
            "tenants": MetadataValue.int(len(report.tenants)),
            "partitions_dropped": MetadataValue.json(report.partitions_dropped),
            "partitions_left_locked": MetadataValue.json(report.partitions_kept_locked),
            "delete_batches": MetadataValue.int(report.batches),
            "why": MetadataValue.md(
                "Events older than each tenant's `retention_days` whose UTC day is listed in "
                "`audit_archives` (archived to S3 and verified); a seq prefix per tenant, so "
                "each retained chain still verifies from its first event."
            ),
            "per_tenant": MetadataValue.json(
                [
                    {
                        "tenant_id": t.tenant_id,
                        "retention_days": t.retention_days,
                        "cutoff": t.cutoff,
                        "through_seq": t.through_seq,
                        "rows": t.rows_deleted + t.rows_in_dropped_partitions,
                        "archived_days": t.archived_days,
                    }
                    for t in report.tenants
                ]
            ),
        }
    )
