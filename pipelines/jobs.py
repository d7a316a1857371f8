"""Jobs started by sensors and schedules."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job, in_process_executor

from assets.events import DRAIN_TAG, audit_events
from assets.search import SEARCH_TAG, search_index, search_index_rebuild

drain_job = define_asset_job(
    "drain_audit_events",
    selection=AssetSelection.assets(audit_events),
    description="Drain the SQS queue into PostgreSQL until idle or out of time.",
    # The run coordinator limits concurrent runs carrying this tag (infra/dagster/dagster.yaml).
    tags={DRAIN_TAG: "true"},
    # One process per run: no subprocess per step, so a drain starts sooner and uses less memory.
    executor_def=in_process_executor,
)

index_search_job = define_asset_job(
    "index_search",
    selection=AssetSelection.assets(search_index),
    description="Index committed events into OpenSearch until idle or out of time.",
    tags={SEARCH_TAG: "true"},
    executor_def=in_process_executor,
)

rebuild_search_month_job = define_asset_job(
    "rebuild_search_month",
    selection=AssetSelection.assets(search_index_rebuild),
    description="Drop and rebuild one month's search index from PostgreSQL (backfill for a range).",
    executor_def=in_process_executor,
)
