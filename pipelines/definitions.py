"""The Dagster code location (``workspace.yaml`` loads this module)."""

from __future__ import annotations

from dagster import Definitions

from assets.archive import archive
from assets.digests import digests_consistent, integrity_digests
from assets.events import audit_events, dead_letter_queue_empty
from assets.exports import parquet_exports, parquet_rows_match
from assets.retention import retention
from assets.search import search_counts_match, search_index, search_index_rebuild
from assets.stats import (
    daily_stats,
    daily_stats_job,
    daily_stats_schedule,
    stale_daily_stats_sensor,
)
from pipelines.alerts import alert_on_run_failure
from pipelines.datasets import (
    archive_job,
    archive_schedule,
    export_parquet_job,
    export_parquet_schedule,
)
from pipelines.integrity import (
    digests_job,
    digests_schedule,
    retention_job,
    retention_schedule,
)
from pipelines.jobs import drain_job, index_search_job, rebuild_search_month_job
from pipelines.maintenance import (
    expire_keys,
    expire_keys_schedule,
    maintain_partitions,
    partitions_schedule,
)
from pipelines.resources import AuditPlatform
from pipelines.sensors import drain_sensor, search_sensor

defs = Definitions(
    assets=[
        audit_events,
        search_index,
        search_index_rebuild,
        parquet_exports,
        archive,
        daily_stats,
        integrity_digests,
        retention,
    ],
    asset_checks=[
        dead_letter_queue_empty,
        search_counts_match,
        parquet_rows_match,
        digests_consistent,
    ],
    jobs=[
        drain_job,
        index_search_job,
        rebuild_search_month_job,
        maintain_partitions,
        expire_keys,
        export_parquet_job,
        archive_job,
        daily_stats_job,
        digests_job,
        retention_job,
    ],
    schedules=[
        partitions_schedule,
        expire_keys_schedule,
        export_parquet_schedule,
        archive_schedule,
        daily_stats_schedule,
        digests_schedule,
        retention_schedule,
    ],
    sensors=[drain_sensor, search_sensor, stale_daily_stats_sensor, alert_on_run_failure],
    resources={"platform": AuditPlatform()},
)
