"""``parquet_exports``: each tenant's events of each UTC day as one Parquet object on S3
(Hive layout ``tenant=<id>/date=<day>``, see README "Parquet datasets"), and a check that
the objects hold as many rows as PostgreSQL.

Daily partitions; a backfill over a range of days runs as one run (single-run backfill
policy), which is what lets ``dagster asset materialize --partition-range`` work from the
CLI as well as range backfills from the UI."""

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    TimeWindow,
    asset,
    asset_check,
)

from assets.events import audit_events
from assets.partitions import DAYS
from auditlog.parquet_dataset import (
    compare_day_counts,
    export_day,
    make_s3_client,
    snapshot_connection,
)
from pipelines.resources import AuditPlatform

# The UTC days the exports and the archive address. end_offset=0: the newest partition is
# yesterday, a day that is over (today's events are still arriving).


def days_of(window: TimeWindow) -> Iterator[date]:
    """The UTC days of a partition window (one day, or a backfill's range of days)."""
    day = window.start.astimezone(UTC).date()
    end = window.end.astimezone(UTC).date()
    while day < end:
        yield day
        day += timedelta(days=1)


@asset(
    group_name="datasets",
    deps=[audit_events],
    partitions_def=DAYS,
    backfill_policy=BackfillPolicy.single_run(),
    description="Each tenant's events of the day as one zstd Parquet object on S3: "
    "<S3_EXPORTS_PREFIX>/tenant=<id>/date=<yyyy-mm-dd>/events.parquet, a Hive-partitioned "
    "dataset for pyarrow.dataset, DuckDB or Athena. Re-materialising a day replaces its objects.",
    kinds={"parquet", "s3"},
)
def parquet_exports(context: AssetExecutionContext, platform: AuditPlatform) -> MaterializeResult:
    settings = platform.settings()
    s3 = make_s3_client(settings)
    rows = size = files = 0
    tenants: set[str] = set()
    days = list(days_of(context.partition_time_window))
    with snapshot_connection(settings.database_url) as conn:
        for day in days:
            written = export_day(conn, s3, settings, day)
            for item in written:
                rows += item.file.rows
                size += item.file.bytes
                tenants.add(str(item.tenant_id))
            files += len(written)
            context.log.info(
                f"{day}: {len(written)} tenant(s), {sum(w.file.rows for w in written)} rows"
            )
    return MaterializeResult(
        metadata={
            "rows": rows,
            "bytes": MetadataValue.int(size),
            "files": files,
            "tenants": len(tenants),
            "days": len(days),
            "location": MetadataValue.path(
                f"s3://{settings.s3_bucket}/{settings.s3_exports_prefix}/"
            ),
        }
    )


@asset_check(
    asset=parquet_exports,
    partitions_def=DAYS,
    description="Per tenant and day, the exported object holds as many rows as PostgreSQL "
    "(a difference: events arrived or were removed after the export; re-materialise the day).",
)
def parquet_rows_match(
    context: AssetCheckExecutionContext, platform: AuditPlatform
) -> AssetCheckResult:
    settings = platform.settings()
    s3 = make_s3_client(settings)
    checked = 0
    mismatched: dict[str, dict[str, int | None]] = {}
    window = context.op_execution_context.partition_time_window
    with snapshot_connection(settings.database_url) as conn:
        for day in days_of(window):
            tenants, mismatches = compare_day_counts(conn, s3, settings, day)
            checked += tenants
            for m in mismatches:
                mismatched[f"{m.tenant_id}/{m.day}"] = {"postgres": m.postgres, "s3": m.s3}
    return AssetCheckResult(
        passed=not mismatched,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "tenant_days_checked": checked,
            "mismatched": len(mismatched),
            "details": str(mismatched)[:2000],
            "checked_at": datetime.now(UTC).isoformat(),
        },
    )
