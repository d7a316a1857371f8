"""daily_stats is registered with daily partitions, a schedule after midnight UTC and the
sensor that rebuilds changed days."""

from dagster import AssetKey, DailyPartitionsDefinition

from pipelines.definitions import defs


def test_daily_stats_is_daily_partitioned_and_scheduled() -> None:
    asset = defs.resolve_assets_def(AssetKey("daily_stats"))
    assert isinstance(asset.partitions_def, DailyPartitionsDefinition)
    assert asset.partitions_def.timezone == "UTC"
    schedule = defs.resolve_schedule_def("daily_stats_job_schedule")
    assert schedule.cron_schedule == "20 0 * * *"
    assert schedule.execution_timezone in (None, "UTC")
    assert defs.resolve_sensor_def("stale_daily_stats_sensor").job_name == "daily_stats_job"
