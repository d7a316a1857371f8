"""The live tail's wire protocol: query parameters, messages, close codes.

Messages are JSON text frames with a ``type``:

* ``ready``: sent once, when the subscription is in place (``since_seq``, ``head_seq``).
* ``event``: one committed event, the API's event JSON (as ``GET /api/v1/logs/{id}``
  returns it) plus ``"type": "event"``.
* ``heartbeat``: every ``STREAM_HEARTBEAT_SECONDS`` with ``last_seq``, the highest seq this
  socket has passed (delivered or filtered out): reconnecting with ``since_seq=last_seq``
  resumes without a gap or a duplicate.

Refusals and ends are close frames with a code and a reason naming the cause.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import orjson

from auditlog.events import FieldError
from auditlog.filters import EventFilters, parse_filters, whole_number

MAX_REASON_BYTES = 123  # RFC 6455 §5.5: a control frame's payload is at most 125 bytes


class CloseCode(IntEnum):
    NORMAL = 1000
    POLICY = 1008  # authentication failed, the role may not read, `tenant_id` was sent
    INTERNAL_ERROR = 1011  # an unexpected failure (logged); reconnect with since_seq
    TRY_AGAIN_LATER = 1013  # the database is unavailable; reconnect with since_seq
    BAD_PARAMETER = 4400  # a query parameter is not valid; the reason names it
    SLOW_CONSUMER = 4429  # overflowed its buffer again while catching up: reads too slowly


class StreamRefused(Exception):
    """End the socket with ``code`` and ``reason`` (before or during the stream)."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def close_reason(text: str) -> str:
    """``text`` cut to what fits a close frame (whole UTF-8 characters only)."""
    raw = text.encode()
    if len(raw) <= MAX_REASON_BYTES:
        return text
    return raw[: MAX_REASON_BYTES - 3].decode(errors="ignore") + "..."


FILTER_PARAMETERS = frozenset({"action_type", "severity", "min_severity", "resource_type"})
KNOWN_PARAMETERS = FILTER_PARAMETERS | {"since_seq", "token"}
MAX_SEQ = 2**63 - 1


@dataclass(frozen=True)
class StreamRequest:
    filters: EventFilters
    since_seq: int | None  # None: live from now on, no backlog


def parse_request(args: Mapping[str, Sequence[str]]) -> StreamRequest:
    """The stream's query parameters, or ``StreamRefused`` naming the first bad one."""
    if "tenant_id" in args:
        raise StreamRefused(
            CloseCode.POLICY,
            "tenant_id is not accepted: the tenant comes from the token",
        )
    errors: list[FieldError] = [
        FieldError(name, "is not a known parameter")
        for name in args
        if name not in KNOWN_PARAMETERS
    ]
    filters = parse_filters({k: v for k, v in args.items() if k in FILTER_PARAMETERS}, errors)
    since_seq = None
    raw = args.get("since_seq", [])
    if len(raw) > 1:
        errors.append(FieldError("since_seq", "may be given once"))
    elif raw:
        since_seq = whole_number(raw[0])
        if since_seq is None or not 0 <= since_seq <= MAX_SEQ:
            errors.append(FieldError("since_seq", "must be a whole number >= 0"))
    if errors:
        first = errors[0]
        raise StreamRefused(
            CloseCode.BAD_PARAMETER, close_reason(f"{first.field}: {first.message}")
        )
    return StreamRequest(filters=filters, since_seq=since_seq)


def matches(filters: EventFilters, action_type: str, severity: str, resource_type: str) -> bool:
    """The live path's version of ``filters.where()`` for the stream's filters (the backlog
    path filters in SQL): an event passes when every given filter admits it."""
    return (
        (not filters.action_types or action_type in filters.action_types)
        and (not filters.severities or severity in filters.severities)
        and (filters.resource_type is None or resource_type == filters.resource_type)
    )


def _dumps(message: dict[str, Any]) -> str:
    try:
        return orjson.dumps(message).decode()
    except orjson.JSONEncodeError:
        # An integer beyond 64 bits (events keep them exact) or a lone surrogate: the
        # stdlib spells both, as the REST reads do (api/json_provider.py).
        return json.dumps(message, separators=(",", ":"))


def event_message(event: dict[str, Any]) -> str:
    return _dumps({"type": "event", **event})


def ready_message(tenant_id: uuid.UUID, since_seq: int, head_seq: int) -> str:
    return _dumps(
        {
            "type": "ready",
            "tenant_id": str(tenant_id),
            "since_seq": since_seq,
            "head_seq": head_seq,
        }
    )


def heartbeat_message(last_seq: int) -> str:
    return _dumps({"type": "heartbeat", "last_seq": last_seq, "time": round(time.time(), 3)})
