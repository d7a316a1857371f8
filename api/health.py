"""Liveness (``/healthz``: the process answers) and readiness (``/readyz``: its
dependencies answer, and the database has every migration this code expects)."""

from __future__ import annotations

import psycopg
from flask import Blueprint, Response, jsonify
from psycopg_pool import PoolTimeout

from api.services import services
from auditlog.queue import QueueUnavailable
from auditlog.store.migrate import discover

# The migrations this code was written for: an API on a database without them would answer
# 500 wherever it touches what they create.
_EXPECTED_MIGRATIONS = frozenset(m.version for m in discover())

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
            applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        checks["postgres"] = "ok"
        missing = sorted(_EXPECTED_MIGRATIONS - applied)
        checks["schema"] = (
            f"error: migrations {', '.join(missing)} not applied (auditlog migrate)"
            if missing
            else "ok"
        )
    except psycopg.errors.UndefinedTable:
        checks["postgres"] = "ok"
        checks["schema"] = "error: no migrations applied (auditlog migrate)"
    except (psycopg.Error, PoolTimeout) as exc:
        checks["postgres"] = f"error: {type(exc).__name__}"
        checks["schema"] = "error: unknown (PostgreSQL did not answer)"
    try:
        svc.queue.ping()
        checks["sqs"] = "ok"
    except QueueUnavailable as exc:
        checks["sqs"] = f"error: {str(exc)[:200]}"
    ready = all(v == "ok" for v in checks.values())
    return jsonify(
        {"status": "ready" if ready else "not ready", "checks": checks}
    ), 200 if ready else 503
