"""Per-request id and access log line."""

from __future__ import annotations

import itertools
import logging
import os
import re
import time

from flask import Flask, Response, g, request

from api import metrics
from auditlog.logs import request_id_var, tenant_id_var

log = logging.getLogger("api.access")
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class _RequestIds:
    """Request ids unique across processes without a random read per request: a random
    prefix per process (re-drawn after a fork) and a counter."""

    def __init__(self) -> None:
        self._pid = -1
        self._prefix = ""
        self._counter = itertools.count()

    def next(self) -> str:
        if self._pid != os.getpid():
            self._pid, self._prefix = os.getpid(), os.urandom(8).hex()
        return f"{self._prefix}{next(self._counter):016x}"


_request_ids = _RequestIds()


_request_count = metrics.Children(metrics.REQUESTS)
_request_latency = metrics.Children(metrics.LATENCY)
# A method label outside these is counted as OTHER: the method is whatever the client sent,
# and every new label value is a new time series.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def request_id_for(offered: str) -> str:
    """The client's ``X-Request-ID`` when it is a sensible one, else a new id."""
    return offered if _CLIENT_REQUEST_ID.match(offered) else _request_ids.next()


def begin_request(offered_request_id: str) -> str:
    """Start a request's log context; returns its request id."""
    request_id = request_id_for(offered_request_id)
    request_id_var.set(request_id)
    tenant_id_var.set(None)
    return request_id


def finish_request(
    method: str, endpoint: str, path: str, status: int, elapsed: float, tenant: str | None
) -> None:
    """Count and time the request, and write its access line (with ``tenant`` in the
    log context). ``endpoint`` is the URL rule, never the path: it is a metric label."""
    if tenant is not None:
        tenant_id_var.set(tenant)
    method_label = method if method in _METHODS else "OTHER"
    _request_count(method_label, endpoint, str(status)).inc()
    _request_latency(method_label, endpoint).observe(elapsed)
    log.info(
        "api.request",
        extra={
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round(elapsed * 1000, 2),
        },
    )


def install_request_context(app: Flask) -> None:
    # Each hook takes the request and g objects once: every attribute read through Flask's
    # context proxies costs a lookup, and these hooks run on every request.
    @app.before_request
    def _start() -> None:
        context = g._get_current_object()
        context.request_id = begin_request(request.headers.get("X-Request-ID", ""))
        context.started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        context = g._get_current_object()
        current = request._get_current_object()  # type: ignore[attr-defined]
        response.headers["X-Request-ID"] = context.get("request_id", "")
        principal = context.get("principal")
        tenant = None
        if principal is not None and principal.tenant_id is not None:
            tenant = str(principal.tenant_id)
        rule = current.url_rule
        finish_request(
            current.method,
            rule.rule if rule is not None else "unmatched",
            current.path,
            response.status_code,
            time.perf_counter() - context.get("started", time.perf_counter()),
            tenant,
        )
        return response
