"""``archive``: days past each tenant's hot window (``retention_days``) copied to S3 as
Parquet, read back and verified (rows, seq range, chain links, head hash), and recorded in
the ``audit_archives`` ledger. Retention, downstream, deletes only days the ledger lists:
the lineage ``audit_events -> archive -> retention`` is why data may be dropped.

Daily partitions (the same UTC days as ``parquet_exports``); a partition archives the
tenants for which that day is past the hot window and skips the others. The
``archive_schedule`` asks each night for the days that are due and not archived yet."""

from datetime import UTC, datetime
from typing import Any

from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.events import audit_events
from assets.exports import days_of
from assets.partitions import DAYS
from auditlog.archive import archive_day
from auditlog.parquet_dataset import make_s3_client, snapshot_connection
from pipelines.resources import AuditPlatform


@asset(
    key="archive",
    group_name="retention",
    deps=[audit_events],
    partitions_def=DAYS,
    backfill_policy=BackfillPolicy.single_run(),
    description="Each tenant's day, once older than the tenant's retention_days, as a zstd "
    "Parquet object under <S3_ARCHIVE_PREFIX>/tenant=<id>/date=<yyyy-mm-dd>/, verified by "
    "reading it back (rows, seq range, chain links, head hash) and recorded in the "
    "audit_archives ledger that retention consults.",
    kinds={"parquet", "s3", "postgres"},
)
def archive(context: AssetExecutionContext, platform: AuditPlatform) -> MaterializeResult:
    settings = platform.settings()
    s3 = make_s3_client(settings)
    now = datetime.now(UTC)
    archived = already = not_due = rows = size = 0
    tenants: set[str] = set()
    refused: dict[str, str] = {}
    failed: dict[str, str] = {}
    with snapshot_connection(settings.database_url) as conn:
        for day in days_of(context.partition_time_window):
            report = archive_day(conn, s3, settings, day, now)
            archived += len(report.archived)
            tenants.update(str(t) for t in report.archived)
            already += len(report.already_archived)
            not_due += len(report.not_due)
            rows += report.rows
            size += report.bytes
            refused.update({f"{t}/{day}": why for t, why in report.refused.items()})
            failed.update({f"{t}/{day}": why for t, why in report.failed.items()})
            context.log.info(
                f"{day}: archived {len(report.archived)} tenant(s) ({report.rows} rows), "
                f"{len(report.already_archived)} already, {len(report.not_due)} not due, "
                f"{len(report.refused)} refused, {len(report.failed)} failed"
            )
    for what, why in refused.items():
        context.log.warning(f"not re-archived {what}: {why}")
    metadata: dict[str, Any] = {
        "tenant_days_archived": archived,
        "tenant_days_already_archived": already,
        "tenant_days_not_due": not_due,
        "tenant_days_refused": len(refused),
        "rows": rows,
        "bytes": MetadataValue.int(size),
        "files": archived,
        "tenants": len(tenants),
        "location": MetadataValue.path(f"s3://{settings.s3_bucket}/{settings.s3_archive_prefix}/"),
    }
    if failed:
        # Nothing unverified reached the ledger; failing the run keeps retention from running
        # on the strength of this materialisation.
        raise Failure(
            description=f"{len(failed)} tenant day(s) did not verify: {str(failed)[:1500]}",
            metadata={**metadata, "tenant_days_failed": len(failed)},
        )
    return MaterializeResult(metadata=metadata)
