"""The Dagster code location loads, with the assets, job and sensor the platform relies on."""

from dagster import AssetKey

from pipelines.definitions import defs


def test_definitions_load() -> None:
    job = defs.resolve_job_def("drain_audit_events")
    assert job.tags["auditlog/drain"] == "true"
    assert defs.resolve_assets_def(AssetKey("audit_events")) is not None
    assert {s.name for s in defs.sensors or []} >= {"drain_sensor", "search_sensor"}
    assert defs.resolve_job_def("rebuild_search_month").partitions_def is not None
    assert defs.resolve_assets_def(AssetKey("search_index")) is not None
