"""Jobs and schedules of the integrity digests and of retention."""

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    ScheduleDefinition,
    build_schedule_from_partitioned_job,
    define_asset_job,
    in_process_executor,
)

from assets.digests import integrity_digests
from assets.retention import retention

digests_job = define_asset_job(
    "sign_integrity_digests",
    selection=AssetSelection.assets(integrity_digests),
    description="Sign each tenant's digest of the day(s): seq range, count, head hash, chained.",
    executor_def=in_process_executor,
)

retention_job = define_asset_job(
    "apply_retention",
    selection=AssetSelection.assets(retention),
    description="Delete archived events past each tenant's retention_days (audited).",
    executor_def=in_process_executor,
)

# Yesterday's digests shortly after midnight UTC, once the drain has stored the day's
# stragglers that were still queued at midnight (a later one falls into the next digest).
digests_schedule = build_schedule_from_partitioned_job(
    digests_job,
    hour_of_day=0,
    minute_of_hour=25,
    default_status=DefaultScheduleStatus.RUNNING,
)

# After the nightly archive (00:45 UTC), so the days it archived can go the same night.
retention_schedule = ScheduleDefinition(
    job=retention_job,
    cron_schedule="30 2 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
)
