"""Liveness (``/healthz``: the process answers) and readiness (``/readyz``: its
dependencies answer)."""

from __future__ import annotations

import psycopg
from flask import Blueprint, Response, jsonify
from psycopg_pool import PoolTimeout

from api.services import services
from auditlog.queue import QueueUnavailable

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    svc = services()
    checks: dict[str, str] = {}
    try:
        with svc.pool.connection(timeout=2) as conn:
            conn.execute("SELECT 1")
        checks["postgres"] = "ok"
    except (psycopg.Error, PoolTimeout) as exc:
        checks["postgres"] = f"error: {type(exc).__name__}"
    try:
        svc.queue.ping()
        checks["sqs"] = "ok"
    except QueueUnavailable as exc:
        checks["sqs"] = f"error: {str(exc)[:200]}"
    ready = all(v == "ok" for v in checks.values())
    return jsonify(
        {"status": "ready" if ready else "not ready", "checks": checks}
    ), 200 if ready else 503
