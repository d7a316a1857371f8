"""The run-failure sensor: any failed run of this code location (drain, indexing, exports,
archive, digests, retention, maintenance) raises an alert through the hooks of
``auditlog.alerts``: always a structured log line, and a JSON POST to ``ALERT_WEBHOOK_URL``
when it is set."""

from datetime import UTC, datetime
from typing import Any

from dagster import (
    DagsterRun,
    DefaultSensorStatus,
    RunFailureSensorContext,
    run_failure_sensor,
)

from auditlog.alerts import alert_hooks, dispatch
from auditlog.settings import Settings

# Tags worth carrying in an alert (partition, backfill, what started the run).
_TAGS = ("dagster/partition", "dagster/backfill", "dagster/schedule_name", "dagster/sensor_name")


def run_failure_alert(run: DagsterRun, message: str | None) -> dict[str, Any]:
    return {
        "event": "dagster.run_failed",
        "job": run.job_name,
        "run_id": run.run_id,
        "status": run.status.value,
        "message": message,
        "tags": {k: v for k, v in run.tags.items() if k in _TAGS},
        "alerted_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


@run_failure_sensor(
    name="alert_on_run_failure",
    description="Alert on every failed run: a structured log line, and ALERT_WEBHOOK_URL.",
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
)
def alert_on_run_failure(context: RunFailureSensorContext) -> None:
    alert = run_failure_alert(context.dagster_run, context.failure_event.message)
    failures = dispatch(alert, alert_hooks(Settings.from_env()))
    for failure in failures:
        context.log.warning(f"alert hook failed: {failure}")
