"""``daily_stats``: per tenant and UTC day, counts by action, severity and resource type
(combined, and each on its own), ranked per-resource and per-user counts and hourly totals
(auditlog/daily_stats.py), which GET /api/v1/logs/stats reads for whole days instead of
hourly aggregates and raw rows.

Daily partitions, backfillable. A schedule builds yesterday a little after midnight UTC; a
sensor rebuilds days whose events changed after they were built (late events, retention,
redaction). The API never depends on either: a day not built, or changed since, is counted
from audit_stats_hourly and raw rows (auditlog/stats.py).
"""

from datetime import date

from dagster import (
    AssetExecutionContext,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    MaterializeResult,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    asset,
    build_schedule_from_partitioned_job,
    define_asset_job,
    sensor,
)

from assets.events import audit_events
from assets.partitions import DAYS
from auditlog.daily_stats import build_day
from auditlog.stats import STATS_QUERIES
from auditlog.store.pool import connect
from pipelines.resources import AuditPlatform


@asset(
    group_name="stats",
    deps=[audit_events],
    partitions_def=DAYS,
    description="Per tenant and UTC day: counts by action, severity and resource type, every "
    "resource's and user's count ranked within the day, and hourly totals; the stats API "
    "reads them for whole days. Derived data: rebuildable from audit_logs at any time.",
    kinds={"postgres"},
)
def daily_stats(context: AssetExecutionContext, platform: AuditPlatform) -> MaterializeResult:
    day = date.fromisoformat(context.partition_key)
    with connect(platform.settings().database_url, autocommit=True) as conn:
        built = build_day(conn, day)
    context.log.info(f"{day}: {built.events} events of {built.tenants} tenant(s)")
    return MaterializeResult(metadata={"tenants": built.tenants, "events": built.events})


daily_stats_job = define_asset_job(
    "daily_stats_job",
    selection=[daily_stats],
    description="Build one day's daily_stats partition.",
)

# Yesterday's partition, at 00:20 UTC (the day is closed; late events are the sensor's).
daily_stats_schedule = build_schedule_from_partitioned_job(
    daily_stats_job,
    hour_of_day=0,
    minute_of_hour=20,
    default_status=DefaultScheduleStatus.RUNNING,
)


@sensor(
    job=daily_stats_job,
    minimum_interval_seconds=300,
    default_status=DefaultSensorStatus.RUNNING,
    description="Rebuild daily_stats partitions whose events changed after they were built.",
)
def stale_daily_stats_sensor(
    context: SensorEvaluationContext, platform: AuditPlatform
) -> list[RunRequest] | SkipReason:
    with connect(platform.settings().database_url) as conn:
        rows = conn.execute(STATS_QUERIES["stale_days"]).fetchall()
    first = date.fromisoformat(DAYS.get_first_partition_key() or "2024-01-01")
    requests = []
    for day, versions in rows:
        assert isinstance(day, date)
        if day >= first:
            # The key changes with the day's versions, so one change asks for one rebuild.
            key = day.isoformat()
            requests.append(RunRequest(run_key=f"{key}@{versions}", partition_key=key))
    return requests or SkipReason("every built day is current")
