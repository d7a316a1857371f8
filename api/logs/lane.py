"""The single-event ingest lane: the common ``POST /api/v1/logs`` without Flask's
per-request machinery.

A single-event POST is the API's hottest request, and most of its CPU went to Flask and
werkzeug around the view (contexts, URL matching, hooks, the request and response
objects), not to the event (``bench/ingest.py --profile``). This WSGI middleware, in front
of Flask's ``wsgi_app``, serves the plain and common form of that request itself:

* ``POST /api/v1/logs`` (or ``/api/v1/logs/``), ``Content-Type: application/json`` exactly,
  a ``Content-Length`` within ``MAX_CONTENT_LENGTH``, no ``Idempotency-Key``;
* a plain bearer token this process has fully verified before (``verified_principal``),
  whose role may write inside its tenant;
* a body that is a valid event.

It runs what the view runs (``parse_event``, ``service.accept_one``), renders a failure
there as Flask's error handlers do (``response_for``), and does the request bookkeeping
the Flask hooks do (``begin_request``, ``finish_request``: X-Request-ID, metrics, access
line). Any other request, and one whose body turns out not to be JSON or not a valid
event, goes to Flask with the body already read: each refusal has one source, the view.
``tests/integration/test_ingest_lane.py`` checks that both paths answer alike.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from flask import Flask
from werkzeug.http import HTTP_STATUS_CODES

from api.auth import WRITE_ROLES, verified_principal
from api.errors import response_for
from api.logs import service
from api.observability import begin_request, finish_request
from api.services import Services
from auditlog.events import loads_fast, parse_event
from auditlog.filters import whole_number

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

PATHS = frozenset({"/api/v1/logs", "/api/v1/logs/"})


class SingleEventLane:
    def __init__(self, app: Flask, flask_wsgi: WSGIApp) -> None:
        self._app = app
        self._flask = flask_wsgi
        self._services: Services = app.extensions["auditlog"]

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        length = self._plain_single_post_length(environ)
        if length is None:
            return self._flask(environ, start_response)
        principal = verified_principal(environ.get("HTTP_AUTHORIZATION", ""))
        if principal is None or principal.tenant_id is None or principal.role not in WRITE_ROLES:
            return self._flask(environ, start_response)
        started = time.perf_counter()
        try:
            raw = environ["wsgi.input"].read(length)
        except (OSError, ValueError):
            # The client went away mid-body: Flask's read fails the same way and answers.
            return self._flask(environ, start_response)
        try:
            parsed, value = loads_fast(raw) if len(raw) == length else (False, None)
            event = parse_event(value, principal.tenant_id)[0] if parsed else None
        except Exception:  # noqa: BLE001 (Flask's view meets it again, and its handler answers)
            event = None
        if event is None:
            # Cut off, not JSON, or not a valid event: the view says what is wrong.
            environ["wsgi.input"] = io.BytesIO(raw)
            return self._flask(environ, start_response)

        path: str = environ["PATH_INFO"]
        request_id = begin_request(environ.get("HTTP_X_REQUEST_ID", ""))
        try:
            answer = service.accept_one(self._services, principal.tenant_id, event, None)
        except Exception as exc:  # noqa: BLE001 (rendered as Flask's handlers render it)
            with self._app.app_context():  # the app's JSON provider, as Flask's path uses
                response = response_for(exc)
            response.headers["X-Request-ID"] = request_id
            status = response.status_code
            body: Iterable[bytes] = response(environ, start_response)
        else:
            status = answer.status
            content = orjson.dumps(answer.body) + b"\n"  # as Flask's jsonify writes it
            start_response(
                f"{status} {HTTP_STATUS_CODES[status].upper()}",  # as werkzeug writes it
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(content))),
                    ("Location", service.location(answer)),
                    ("X-Request-ID", request_id),
                ],
            )
            body = [content]
        finish_request(
            "POST",
            path,
            path,
            status,
            time.perf_counter() - started,
            str(principal.tenant_id),
        )
        return body

    def _plain_single_post_length(self, environ: dict[str, Any]) -> int | None:
        """The body's length if this is the lane's kind of request, else None."""
        if (
            environ.get("REQUEST_METHOD") != "POST"
            or environ.get("PATH_INFO") not in PATHS
            or environ.get("SCRIPT_NAME")
            or environ.get("CONTENT_TYPE") != "application/json"
            or "HTTP_IDEMPOTENCY_KEY" in environ
            or "HTTP_TRANSFER_ENCODING" in environ
        ):
            return None
        length = whole_number(environ.get("CONTENT_LENGTH", ""))
        limit = self._app.config["MAX_CONTENT_LENGTH"]
        if not length or (limit is not None and length > limit):
            return None
        return length


def install(app: Flask) -> None:
    """Put the lane in front of Flask, if the settings ask for it."""
    if app.extensions["auditlog"].settings.api_ingest_lane:
        app.wsgi_app = SingleEventLane(app, app.wsgi_app)  # type: ignore[method-assign]
