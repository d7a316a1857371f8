"""Jobs started by sensors and schedules."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job, in_process_executor

from assets.events import DRAIN_TAG, audit_events

drain_job = define_asset_job(
    "drain_audit_events",
    selection=AssetSelection.assets(audit_events),
    description="Drain the SQS queue into PostgreSQL until idle or out of time.",
    # The run coordinator limits concurrent runs carrying this tag (infra/dagster/dagster.yaml).
    tags={DRAIN_TAG: "true"},
    # One process per run: no subprocess per step, so a drain starts sooner and uses less memory.
    executor_def=in_process_executor,
)
