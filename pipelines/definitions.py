"""The Dagster code location (``workspace.yaml`` loads this module)."""

from __future__ import annotations

from dagster import Definitions

from assets.events import audit_events, dead_letter_queue_empty
from assets.search import search_counts_match, search_index, search_index_rebuild
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
    assets=[audit_events, search_index, search_index_rebuild],
    asset_checks=[dead_letter_queue_empty, search_counts_match],
    jobs=[drain_job, index_search_job, rebuild_search_month_job, maintain_partitions, expire_keys],
    schedules=[partitions_schedule, expire_keys_schedule],
    sensors=[drain_sensor, search_sensor],
    resources={"platform": AuditPlatform()},
)
