"""Jobs and schedules of the S3 datasets: the nightly Parquet export of yesterday, and the
nightly archive of the days that have passed their tenant's hot window."""

from datetime import UTC, datetime

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    build_schedule_from_partitioned_job,
    define_asset_job,
    in_process_executor,
    schedule,
)

from assets.archive import archive
from assets.exports import parquet_exports
from auditlog.archive import due_days
from auditlog.store.pool import connect
from pipelines.resources import AuditPlatform

export_parquet_job = define_asset_job(
    "export_parquet",
    selection=AssetSelection.assets(parquet_exports),
    description="Write each tenant's events of the day(s) to S3 as Parquet.",
    executor_def=in_process_executor,
)

archive_job = define_asset_job(
    "archive_days",
    selection=AssetSelection.assets(archive),
    description="Archive, verify and record the day(s) past each tenant's hot window.",
    executor_def=in_process_executor,
)

# Shortly after midnight UTC, yesterday's partition (the newest complete day).
export_parquet_schedule = build_schedule_from_partitioned_job(
    export_parquet_job,
    hour_of_day=0,
    minute_of_hour=30,
    default_status=DefaultScheduleStatus.RUNNING,
)


@schedule(
    job=archive_job,
    cron_schedule="45 0 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
)
def archive_schedule(
    context: ScheduleEvaluationContext, platform: AuditPlatform
) -> list[RunRequest] | SkipReason:
    """One run per day that holds events past their tenant's hot window and is not in the
    ledger yet (at most a month of days per night, oldest first)."""
    now = context.scheduled_execution_time or datetime.now(UTC)
    with connect(platform.settings().database_url) as conn:
        days = due_days(conn, now)
    if not days:
        return SkipReason("no day is due for archiving")
    stamp = now.date().isoformat()
    return [
        RunRequest(run_key=f"archive-{day}-{stamp}", partition_key=day.isoformat()) for day in days
    ]
