"""One error shape for every response: RFC 9457 ``application/problem+json``.

Validation failures carry ``errors: [{field, message}]``. Werkzeug's HTTP errors (404, 405,
413, ...) and anything unexpected are rendered the same way, so a client never sees an HTML
error page or a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import psycopg
from flask import Flask, Response, json
from psycopg_pool import PoolTimeout
from werkzeug.exceptions import HTTPException

from auditlog.events import FieldError

log = logging.getLogger(__name__)

PROBLEM_TYPE_BASE = "https://auditlog.dev/problems/"


class ApiProblem(Exception):
    """Raise to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: Sequence[FieldError] = (),
        kind: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = list(errors)
        self.kind = kind
        self.headers = headers or {}


def problem_response(
    status: int,
    detail: str,
    *,
    errors: Sequence[FieldError] = (),
    kind: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    title = HTTPStatus(status).phrase
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + (kind or title.lower().replace(" ", "-")),
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = [{"field": e.field, "message": e.message} for e in errors]
    response = Response(json.dumps(body), status=status, mimetype="application/problem+json")
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def validation_problem(
    errors: Sequence[FieldError], detail: str = "The request is not valid."
) -> ApiProblem:
    return ApiProblem(422, detail, errors=errors, kind="validation-error")


def _api_problem(exc: ApiProblem) -> Response:
    return problem_response(
        exc.status, exc.detail, errors=exc.errors, kind=exc.kind, headers=exc.headers
    )


def _http(exc: HTTPException) -> Response:
    status = exc.code or 500
    headers = {}
    if status == 405 and exc.valid_methods:  # type: ignore[attr-defined]
        headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
    detail = {
        404: "No such resource.",
        405: "This method is not allowed here.",
        413: "The request body is too large.",
    }.get(status, exc.description or HTTPStatus(status).phrase)
    return problem_response(status, detail, headers=headers)


def _database_unavailable(exc: Exception) -> Response:
    log.warning("api.database_unavailable", extra={"error": str(exc)[:300]})
    return problem_response(
        503,
        "The database is unavailable; retry later.",
        kind="database-unavailable",
        headers={"Retry-After": "5"},
    )


def _unexpected(exc: Exception) -> Response:
    log.exception("api.unhandled_error")
    return problem_response(500, "An internal error occurred; it has been logged.")


def response_for(exc: Exception) -> Response:
    """The answer Flask's handlers below give for ``exc``, for code that runs outside
    Flask's dispatch (the ingest lane, api/logs/lane.py). Call it inside ``except``:
    an unexpected error is logged with its traceback."""
    if isinstance(exc, ApiProblem):
        return _api_problem(exc)
    if isinstance(exc, HTTPException):
        return _http(exc)
    if isinstance(exc, psycopg.OperationalError | PoolTimeout):
        return _database_unavailable(exc)
    return _unexpected(exc)


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ApiProblem, _api_problem)
    app.register_error_handler(HTTPException, _http)
    app.register_error_handler(psycopg.OperationalError, _database_unavailable)
    app.register_error_handler(PoolTimeout, _database_unavailable)
    app.register_error_handler(Exception, _unexpected)
