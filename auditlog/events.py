"""The audit event model: what a client may send, and what the platform stamps on it.

Validation is strict on purpose. An audit record is evidence, so a typo in a field name is
rejected (422 naming the field) rather than silently dropped, and values are never coerced
from one JSON type to another (no number where a string belongs, no epoch seconds for a time).
Values are normalised once here (IP addresses compressed, times in UTC) so that what the
API accepts is byte for byte what is queued, stored and returned.
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

MAX_JSON_FIELD_BYTES = 64 * 1024
MAX_JSON_DEPTH = 16
MAX_EVENT_BYTES = 256 * 1024
JSON_FIELDS = ("before_state", "after_state", "metadata")


class ActionType(StrEnum):
    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    VIEW = "VIEW"


class Severity(StrEnum):
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


@dataclass(frozen=True)
class FieldError:
    """One problem with one field; ``field`` is a dotted path such as ``metadata`` or
    ``events.3.severity``."""

    field: str
    message: str


def _json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """How deeply objects and arrays nest in ``value``, counted level by level without
    recursion and only up to ``limit + 1``: a client picks the depth, and a recursive count
    of a few hundred levels raised RecursionError (a 500) instead of the 422."""
    depth = 0
    level = [value]
    while depth <= limit:
        containers = [v for v in level if isinstance(v, dict | list)]
        if not containers:
            break
        depth += 1
        level = [child for c in containers for child in (c.values() if isinstance(c, dict) else c)]
    return depth


def canonical_json(value: Any) -> str:
    """The one JSON spelling used for hashing and storage comparisons."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def json_bytes(value: Any) -> bytes | None:
    """Compact UTF-8 JSON of a parsed JSON value, by the C encoder; None when it cannot say
    (a lone surrogate, an integer beyond 64 bits): the caller takes the careful path."""
    try:
        return orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        return None


# orjson reads an integer beyond 64 bits as a float (silently losing digits): a run of 19
# digits anywhere sends the text to the stdlib, which keeps integers exact.
_LONG_DIGIT_RUN = re.compile(rb"[0-9]{19}")


def loads_fast(raw: bytes) -> tuple[bool, Any]:
    """``(True, value)`` when the C decoder read ``raw`` exactly as ``json.loads`` would,
    else ``(False, None)``: the caller takes the stdlib path, which decides the hard cases
    (big integers, NaN, lone surrogates, invalid UTF-8, extreme nesting) and names errors."""
    if _LONG_DIGIT_RUN.search(raw) is not None:
        return False, None
    try:
        return True, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False, None


def json_size(value: Any) -> int:
    """Bytes of the compact UTF-8 JSON spelling (key order does not change the size)."""
    fast = json_bytes(value)
    if fast is not None:
        return len(fast)
    return len(canonical_json(value).encode("utf-8", "surrogatepass"))


def clean_text_json(encoded: bytes | None) -> bool:
    """True when compact JSON from ``json_bytes`` proves that no string in the value holds
    U+0000 or a lone surrogate (the C encoder refuses surrogates and escapes NUL)."""
    return encoded is not None and b"\\u0000" not in encoded


def format_time(value: datetime) -> str:
    """UTC, microsecond precision, ``Z`` suffix: what PostgreSQL's timestamptz keeps.
    (``isoformat`` pads the year to four digits, unlike ``strftime('%Y')``.)"""
    v = value if value.tzinfo is UTC else value.astimezone(UTC)
    return v.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


# Times outside these years are refused: they cannot be told apart from mistakes, and the
# far edges of Python's datetime overflow when moved to UTC.
MIN_YEAR, MAX_YEAR = 1900, 9998


def parse_time(value: str) -> datetime:
    """An ISO-8601 date-time with a timezone, in UTC; ``ValueError`` says what is wrong."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO-8601 date-time with a timezone") from None
    if parsed.tzinfo is None:
        raise ValueError("must include a timezone offset, e.g. 2024-05-01T12:00:00Z")
    try:
        in_utc = parsed.astimezone(UTC)
    except OverflowError:
        in_utc = None
    if in_utc is None or not MIN_YEAR <= in_utc.year <= MAX_YEAR:
        raise ValueError(f"must lie between the years {MIN_YEAR} and {MAX_YEAR}")
    return in_utc


def text_problem(value: str) -> str | None:
    """Why a string cannot be stored as text (PostgreSQL refuses U+0000; a lone surrogate
    is not Unicode text), or None."""
    if "\x00" in value:
        return "must not contain the NUL character (U+0000)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must not contain unpaired surrogate code points"
    return None


def _json_text_problem(value: Any) -> str | None:
    if isinstance(value, str):
        return text_problem(value)
    if isinstance(value, dict):
        for key, item in value.items():
            if (problem := text_problem(key) or _json_text_problem(item)) is not None:
                return problem
    if isinstance(value, list):
        for item in value:
            if (problem := _json_text_problem(item)) is not None:
                return problem
    return None


def normalize_ip(value: str) -> str:
    """The one spelling of an address that PostgreSQL's inet gives back too."""
    if "%" in value:
        raise ValueError("must be an IPv4 or IPv6 address without a zone id")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError("must be an IPv4 or IPv6 address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


class EventIn(BaseModel):
    """The body of ``POST /api/v1/logs``: the seed prototype's fields plus ``occurred_at``."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    session_id: Annotated[StrictStr, Field(min_length=1, max_length=256)] | None = None
    ip_address: StrictStr | None = None
    user_agent: Annotated[StrictStr, Field(max_length=1024)] | None = None
    action_type: ActionType
    resource_type: Annotated[StrictStr, Field(min_length=1, max_length=128)]
    resource_id: Annotated[StrictStr, Field(min_length=1, max_length=256)]
    severity: Severity
    before_state: dict[str, Any] | None = None
    after_state: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    occurred_at: datetime | None = None

    @field_validator("tenant_id", "user_id", "action_type", "severity", mode="before")
    @classmethod
    def _must_be_string(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValueError("must be a string")
        return value

    @field_validator("session_id", "user_agent", "resource_type", "resource_id")
    @classmethod
    def _storable_text(cls, value: str | None, info: ValidationInfo) -> str | None:
        if _proven_clean(info):
            return value
        if value is not None and (problem := text_problem(value)) is not None:
            raise ValueError(problem)
        return value

    @field_validator("ip_address")
    @classmethod
    def _valid_ip(cls, value: str | None) -> str | None:
        return None if value is None else normalize_ip(value)

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _iso_time(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError("must be an ISO-8601 string with a timezone")
        return parse_time(value)

    @field_validator(*JSON_FIELDS)
    @classmethod
    def _bounded_object(
        cls, value: dict[str, Any] | None, info: ValidationInfo
    ) -> dict[str, Any] | None:
        if value is None:
            return None
        if _json_depth(value) > MAX_JSON_DEPTH:
            raise ValueError(f"nests deeper than {MAX_JSON_DEPTH} levels")
        if not _proven_clean(info) and (problem := _json_text_problem(value)) is not None:
            raise ValueError(problem.replace("must", "keys and strings must", 1))
        if json_size(value) > MAX_JSON_FIELD_BYTES:
            raise ValueError(f"is larger than {MAX_JSON_FIELD_BYTES} bytes")
        return value


# Validation context key: the caller proved no string in the event holds NUL or a lone
# surrogate (``clean_text_json``), so the per-string scans can be skipped.
CLEAN_TEXT = "clean_text"


def _proven_clean(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get(CLEAN_TEXT))


def _pydantic_errors(exc: ValidationError, prefix: str) -> list[FieldError]:
    errors = []
    for item in exc.errors(include_url=False):
        # Only the field itself is named, not pydantic's union-branch labels.
        path = [str(p) for p in item["loc"] if not str(p).startswith(("function-", "json-or"))]
        if item["type"] in ("missing",):
            message = "is required"
        elif item["type"] == "extra_forbidden":
            message = "is not a known field"
        else:
            message = item["msg"].removeprefix("Value error, ")
        field = ".".join([p for p in (prefix, *path[:1]) if p])
        errors.append(FieldError(field, message))
    return errors


def parse_event(
    raw: Any, token_tenant: uuid.UUID, *, prefix: str = ""
) -> tuple[EventIn | None, list[FieldError]]:
    """Validate one submitted event for the token's tenant.

    Returns the model or the list of field errors; never raises for bad input.
    """
    where = prefix or "body"
    if not isinstance(raw, Mapping):
        return None, [FieldError(where, "must be a JSON object")]
    encoded = json_bytes(raw)
    if encoded is None:
        # The C encoder also stops at 255 levels, and the careful way below recurses: name
        # the fields nested too deeply here (counted without recursion), as validation would.
        deep = [name for name, value in raw.items() if _json_depth(value) > MAX_JSON_DEPTH]
        if deep:
            message = f"nests deeper than {MAX_JSON_DEPTH} levels"
            return None, [FieldError(".".join(p for p in (prefix, n) if p), message) for n in deep]
    # Without the fast spelling (a lone surrogate, a huge integer), measure the careful way;
    # a lone surrogate is then reported by the field that holds it, below.
    try:
        size = len(encoded) if encoded is not None else json_size(raw)
    except RecursionError:  # the careful way recurses; past ~1000 levels it cannot measure
        return None, [FieldError(where, "nests too deeply")]
    if size > MAX_EVENT_BYTES:
        return None, [FieldError(where, f"event is larger than {MAX_EVENT_BYTES} bytes")]
    try:
        event = EventIn.model_validate(raw, context={CLEAN_TEXT: clean_text_json(encoded)})
    except ValidationError as exc:
        return None, _pydantic_errors(exc, prefix)
    if event.tenant_id is not None and event.tenant_id != token_tenant:
        field = f"{prefix}.tenant_id" if prefix else "tenant_id"
        return None, [FieldError(field, "does not match the tenant of the token")]
    return event, []


@dataclass(frozen=True)
class AcceptedEvent:
    """An event as the platform accepted it: the client's fields plus the stamped ones.

    ``to_record`` is the wire and storage form: every field, JSON types only. It is what
    goes on the queue, what the drain stores, and what the read API returns.
    """

    id: uuid.UUID
    tenant_id: uuid.UUID
    created_at: datetime
    body: EventIn

    def to_record(self) -> dict[str, Any]:
        b = self.body
        return {
            "id": str(self.id),
            "tenant_id": str(self.tenant_id),
            "created_at": format_time(self.created_at),
            "occurred_at": format_time(b.occurred_at) if b.occurred_at else None,
            "user_id": str(b.user_id) if b.user_id else None,
            "session_id": b.session_id,
            "ip_address": b.ip_address,
            "user_agent": b.user_agent,
            "action_type": b.action_type.value,
            "resource_type": b.resource_type,
            "resource_id": b.resource_id,
            "severity": b.severity.value,
            "before_state": b.before_state,
            "after_state": b.after_state,
            "metadata": b.metadata,
        }


# Fields of a stored record in a fixed order: the COPY column list, the hash input order.
RECORD_FIELDS = (
    "id",
    "tenant_id",
    "created_at",
    "occurred_at",
    "user_id",
    "session_id",
    "ip_address",
    "user_agent",
    "action_type",
    "resource_type",
    "resource_id",
    "severity",
    "before_state",
    "after_state",
    "metadata",
)
