"""Reading request bodies without ever answering 500 for what a client sent."""

from __future__ import annotations

import json
import math
from typing import Any

from flask import Request, request

from api.errors import ApiProblem
from auditlog.events import FieldError, loads_fast


def refuse_cut_off_body(current: Request, raw: bytes) -> None:
    """413 for a body sent without Content-Length (chunked) that filled the whole
    MAX_CONTENT_LENGTH: werkzeug stops reading there and hands over what it read, so the
    body was cut off, and parsing the cut-off JSON would answer a misleading 400. (A body
    of exactly the limit is refused too: it cannot be told apart without reading on.)"""
    limit = current.max_content_length
    if current.content_length is None and limit is not None and len(raw) >= limit:
        raise ApiProblem(413, "The request body is too large.")


class NonFiniteNumber(ValueError):
    """NaN, Infinity, or a number too large for a float: not JSON (RFC 8259 section 6), and
    PostgreSQL's jsonb would keep none of them, so the event could not be stored as sent."""


def _refuse_constant(name: str) -> Any:
    raise NonFiniteNumber(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NonFiniteNumber(f"{text[:40]} is beyond a float's range")
    return value


def json_body() -> Any:
    """The request's JSON value, or a 4xx problem: 415 for another media type, 400 for
    bytes that are not UTF-8 JSON (named ``body``)."""
    current: Request = request._get_current_object()  # type: ignore[attr-defined]
    # The usual spelling is taken as it is; anything else is parsed (parameters, case).
    if current.environ.get("CONTENT_TYPE") != "application/json":
        mimetype = current.mimetype or ""
        if mimetype != "application/json" and not mimetype.endswith("+json"):
            raise ApiProblem(
                415,
                "Send the body as application/json.",
                errors=[FieldError("Content-Type", "must be application/json")],
            )
    raw = current.get_data()  # cached: the Idempotency-Key fingerprint reads it again
    refuse_cut_off_body(current, raw)
    parsed, value = loads_fast(raw)  # the common case, by the C decoder
    if parsed:
        return value
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiProblem(
            400,
            "The body is not valid UTF-8.",
            errors=[FieldError("body", f"invalid UTF-8 at byte {exc.start}")],
        ) from None
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except NonFiniteNumber as exc:
        raise ApiProblem(
            400,
            "The body holds a number JSON cannot carry.",
            errors=[FieldError("body", str(exc))],
            kind="malformed-json",
        ) from None
    except json.JSONDecodeError as exc:
        raise ApiProblem(
            400,
            "The body is not valid JSON.",
            errors=[FieldError("body", f"{exc.msg} at line {exc.lineno} column {exc.colno}")],
            kind="malformed-json",
        ) from None
    except RecursionError:
        raise ApiProblem(
            400, "The body nests too deeply.", errors=[FieldError("body", "nests too deeply")]
        ) from None
    except ValueError:  # an integer past Python's int-from-text limit (4,300 digits)
        raise ApiProblem(
            400,
            "The body holds a number too long to read.",
            errors=[FieldError("body", "holds an integer of more than 4,300 digits")],
        ) from None
