"""The drain sensor: start a drain run when the queue has a backlog and fewer than the
allowed number of drain runs are in flight.

Sensors tick at most every 5 s, so drain runs are long-lived (they long-poll and end after
a time budget or when idle); this sensor only keeps one going while there is work.
"""

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from auditlog.store.pool import connect
from auditlog.store.queries import QUERIES
from pipelines.jobs import drain_job, index_search_job
from pipelines.resources import AuditPlatform

RUNNING = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]
QUEUED = [DagsterRunStatus.QUEUED]
IN_FLIGHT = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


@sensor(job=drain_job, minimum_interval_seconds=5, default_status=DefaultSensorStatus.RUNNING)
def drain_sensor(
    context: SensorEvaluationContext, platform: AuditPlatform
) -> SensorResult | SkipReason:
    """Keep one drain run queued behind the running ones while there is a backlog.

    The run coordinator starts a queued run within a second of a running one ending (its
    tag limit on ``auditlog/drain`` is what caps how many run at once), so hand-over does
    not wait for this sensor's next tick."""
    settings = platform.settings()
    running = context.instance.get_runs_count(RunsFilter(job_name=drain_job.name, statuses=RUNNING))
    queued = context.instance.get_runs_count(RunsFilter(job_name=drain_job.name, statuses=QUEUED))
    if queued or running > settings.drain_max_concurrent_runs:
        return SkipReason(f"{running} drain run(s) running, {queued} queued")
    backlog = platform.queue().backlog()
    if backlog.visible == 0:
        return SkipReason("queue is empty")
    return SensorResult(run_requests=[RunRequest(tags={"backlog": str(backlog.visible)})])


@sensor(
    job=index_search_job, minimum_interval_seconds=5, default_status=DefaultSensorStatus.RUNNING
)
def search_sensor(
    context: SensorEvaluationContext, platform: AuditPlatform
) -> SensorResult | SkipReason:
    """Keep one indexing run going while any tenant's events are ahead of its watermark."""
    in_flight = context.instance.get_runs_count(
        RunsFilter(job_name=index_search_job.name, statuses=IN_FLIGHT)
    )
    if in_flight:
        return SkipReason("an indexing run is in flight")
    with connect(platform.settings().database_url) as conn:
        lagging = conn.execute(QUERIES["search_lagging_tenants"]).fetchall()
    if not lagging:
        return SkipReason("the search index is up to date")
    behind = sum(int(str(head)) - int(str(mark)) for _, mark, head in lagging)
    return SensorResult(run_requests=[RunRequest(tags={"events_behind": str(behind)})])
