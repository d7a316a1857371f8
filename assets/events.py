"""``audit_events``: the drain target. Each materialisation is one drain run that moved
events from SQS into PostgreSQL; its metadata says how many and how late."""

import statistics

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from auditlog.drain import BatchResult, Drainer
from pipelines.resources import AuditPlatform

DRAIN_TAG = "auditlog/drain"
# The drain and retention share this Dagster pool (limit 1, run granularity, set in
# infra/dagster/dagster.yaml): retention never drops or deletes in audit_logs while a drain
# run is writing to it, and the next drain run starts after retention ends.
AUDIT_LOGS_POOL = "audit_logs_writes"


@asset(
    group_name="ingest",
    description="Audit events in PostgreSQL, drained from the SQS queue with an exactly-once "
    "effect (per-tenant seq and hash chain assigned at commit).",
    kinds={"postgres", "sqs"},
    pool=AUDIT_LOGS_POOL,
)
def audit_events(context: AssetExecutionContext, platform: AuditPlatform) -> MaterializeResult:
    settings = platform.settings()
    drainer = Drainer(
        platform.queue(),
        settings.database_url,
        settings.drain_batch_size,
        settings.drain_batch_events,
    )

    def on_batch(result: BatchResult) -> None:
        context.log.info(
            f"batch: {result.messages} messages, {result.stored} stored, "
            f"{result.duplicates} duplicates, {result.rejected_messages} rejected, "
            f"lag {result.oldest_message_age_s:.2f}s, db {result.db_seconds * 1000:.0f}ms"
        )

    stats = drainer.run(settings.drain_time_budget_seconds, settings.drain_idle_seconds, on_batch)
    timings = sorted(stats.batch_seconds) or [0.0]
    return MaterializeResult(
        metadata={
            "events_stored": stats.stored,
            "duplicates_skipped": stats.duplicates,
            "messages": stats.messages,
            "messages_rejected": MetadataValue.int(stats.rejected_messages),
            "batches": stats.batches,
            "oldest_message_age_s": MetadataValue.float(round(stats.max_lag_s, 3)),
            "batch_ms_median": MetadataValue.float(round(statistics.median(timings) * 1000, 1)),
            "batch_ms_max": MetadataValue.float(round(timings[-1] * 1000, 1)),
        }
    )


@asset_check(asset=audit_events, description="Messages waiting in the dead-letter queue.")
def dead_letter_queue_empty(platform: AuditPlatform) -> AssetCheckResult:
    depth = platform.queue().dead_letter_backlog()
    total = depth.visible + depth.in_flight
    return AssetCheckResult(
        passed=total == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={"dead_letters": total},
        description=None if total == 0 else "see README: 'Dead letters' for how to replay them",
    )
