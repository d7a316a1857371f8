"""Prometheus metrics at ``/metrics``.

Under gunicorn each worker is a process; when ``PROMETHEUS_MULTIPROC_DIR`` is set (``make
run`` sets it) the workers write to that directory and ``/metrics`` sums them.

The counters are labelled by tenant id, so a deployment whose metrics port is reachable
beyond the scraper sets ``METRICS_TOKEN``: ``/metrics`` then answers only requests that
carry ``Authorization: Bearer <METRICS_TOKEN>`` (Prometheus: ``authorization:
credentials:``), and 401 to anyone else. Unset, it stays open (loopback development).
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from flask import Blueprint, Response, current_app, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from api.errors import ApiProblem

REQUESTS = Counter(
    "auditlog_http_requests_total", "HTTP requests", ["method", "endpoint", "status"]
)
LATENCY = Histogram(
    "auditlog_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENTS_ACCEPTED = Counter("auditlog_events_accepted_total", "Events queued (202)", ["tenant_id"])
EVENTS_REJECTED = Counter(
    "auditlog_events_rejected_total", "Events rejected by validation", ["tenant_id"]
)
SQS_ERRORS = Counter("auditlog_sqs_errors_total", "Failed SQS sends")
RATE_LIMITED = Counter("auditlog_rate_limited_total", "Requests answered 429", ["tenant_id"])


class Children:
    """A metric's labelled child, looked up once per label tuple: ``labels()`` validates its
    arguments and takes a lock on every call, and it is called on every request."""

    def __init__(self, metric: Counter | Histogram) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *labels: str) -> Any:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._metric.labels(*labels)
        return child


events_accepted = Children(EVENTS_ACCEPTED)

bp = Blueprint("metrics", __name__)


def _check_token(expected: str) -> None:
    """Raise 401 unless the request carries ``Bearer <expected>`` (an empty ``expected``
    means the endpoint is open)."""
    if not expected:
        return
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    # compare_digest: the time taken does not tell how much of a guess was right.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode(), expected.encode()
    ):
        raise ApiProblem(
            401,
            "The metrics need Authorization: Bearer <METRICS_TOKEN>.",
            kind="unauthorized",
            headers={"WWW-Authenticate": "Bearer"},
        )


@bp.get("/metrics")
def metrics() -> Response:
    # Not api.services.services(): that module imports this one for its counters.
    _check_token(current_app.extensions["auditlog"].settings.metrics_token)
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        data = generate_latest(registry)
    else:
        data = generate_latest()
    return Response(data, content_type=CONTENT_TYPE_LATEST)  # it carries its charset
