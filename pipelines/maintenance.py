"""Housekeeping jobs: partitions made ahead of time, expired idempotency keys removed."""

from dagster import DefaultScheduleStatus, OpExecutionContext, ScheduleDefinition, job, op

from auditlog.idempotency import IdempotencyStore
from auditlog.store.pool import connect, open_pool
from auditlog.store.queries import QUERIES
from pipelines.resources import AuditPlatform

PARTITION_DAYS_AHEAD = 14


@op(description=f"Create the daily audit_logs partitions for the next {PARTITION_DAYS_AHEAD} days.")
def create_partitions_ahead(context: OpExecutionContext, platform: AuditPlatform) -> int:
    from datetime import UTC, datetime, timedelta

    today = datetime.now(UTC).date()
    with connect(platform.settings().database_url) as conn:
        row = conn.execute(
            QUERIES["ensure_partitions"],
            {"first_day": today, "last_day": today + timedelta(days=PARTITION_DAYS_AHEAD)},
        ).fetchone()
        conn.commit()
    created = row[0] if row else 0
    assert isinstance(created, int)
    context.log.info(f"created {created} partition(s)")
    return created


@op(description="Delete Idempotency-Key reservations older than 24 hours.")
def expire_idempotency_keys(context: OpExecutionContext, platform: AuditPlatform) -> int:
    pool = open_pool(platform.settings().database_url, min_size=1, max_size=1, name="maintenance")
    try:
        removed = IdempotencyStore(pool).expire()
    finally:
        pool.close()
    context.log.info(f"removed {removed} expired key(s)")
    return removed


@job(description="Daily: audit_logs partitions ahead of time.")
def maintain_partitions() -> None:
    create_partitions_ahead()


@job(description="Hourly: expired Idempotency-Key reservations.")
def expire_keys() -> None:
    expire_idempotency_keys()


partitions_schedule = ScheduleDefinition(
    job=maintain_partitions,
    cron_schedule="15 0 * * *",
    default_status=DefaultScheduleStatus.RUNNING,
)
expire_keys_schedule = ScheduleDefinition(
    job=expire_keys, cron_schedule="7 * * * *", default_status=DefaultScheduleStatus.RUNNING
)
