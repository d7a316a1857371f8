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


def install_request_context(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        offered = request.headers.get("X-Request-ID", "")
        g.request_id = offered if _CLIENT_REQUEST_ID.match(offered) else _request_ids.next()
        g.started = time.perf_counter()
        request_id_var.set(g.request_id)
        tenant_id_var.set(None)

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        principal = g.get("principal")
        if principal is not None and principal.tenant_id is not None:
            tenant_id_var.set(str(principal.tenant_id))
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        metrics.REQUESTS.labels(request.method, endpoint, str(response.status_code)).inc()
        metrics.LATENCY.labels(request.method, endpoint).observe(elapsed)
        log.info(
            "api.request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(
                    (time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 2
                ),
            },
        )
        return response
