"""Event filters shared by the listing, the export and the stats: parsed from query
parameters (every problem named by its parameter) and turned into one SQL WHERE clause.

SQL is composed from fixed fragments with named parameters (psycopg.sql), never from the
client's strings."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, LiteralString

from psycopg import sql

from auditlog.events import ActionType, FieldError, Severity, parse_time, text_problem

SEVERITY_ORDER = [s.value for s in Severity]  # INFO < WARNING < ERROR < CRITICAL
MAX_VALUES = 50


@dataclass
class EventFilters:
    user_id: uuid.UUID | None = None
    session_id: str | None = None
    action_types: list[str] = field(default_factory=list)
    resource_type: str | None = None
    resource_id: str | None = None
    severities: list[str] = field(default_factory=list)
    ip_network: str | None = None  # an address is a /32 or /128 network
    created_from: datetime | None = None
    created_to: datetime | None = None
    occurred_from: datetime | None = None
    occurred_to: datetime | None = None

    def where(self, tenant_id: uuid.UUID) -> tuple[sql.Composed, dict[str, Any]]:
        """``tenant_id = … AND …``: the tenant is always the first condition."""
        clauses: list[sql.Composable] = [sql.SQL("tenant_id = %(tenant_id)s")]
        params: dict[str, Any] = {"tenant_id": tenant_id}
        simple = {
            "user_id": self.user_id,
            "session_id": self.session_id,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
        }
        for column, value in simple.items():
            if value is not None:
                clauses.append(
                    sql.SQL("{} = {}").format(sql.Identifier(column), sql.Placeholder(column))
                )
                params[column] = value
        if self.action_types:
            clauses.append(sql.SQL("action_type = ANY(%(action_types)s)"))
            params["action_types"] = self.action_types
        if self.severities:
            clauses.append(sql.SQL("severity = ANY(%(severities)s)"))
            params["severities"] = self.severities
        if self.ip_network is not None:
            clauses.append(sql.SQL("ip_address <<= %(ip_network)s::inet"))
            params["ip_network"] = self.ip_network
        ranges: list[tuple[str, LiteralString, str, datetime | None]] = [
            ("created_at", ">=", "created_from", self.created_from),
            ("created_at", "<", "created_to", self.created_to),
            ("occurred_at", ">=", "occurred_from", self.occurred_from),
            ("occurred_at", "<", "occurred_to", self.occurred_to),
        ]
        for column, op, name, bound in ranges:
            if bound is not None:
                clauses.append(
                    sql.SQL("{} {} {}").format(
                        sql.Identifier(column), sql.SQL(op), sql.Placeholder(name)
                    )
                )
                params[name] = bound
        return sql.SQL(" AND ").join(clauses), params


def _values(args: Mapping[str, Sequence[str]], name: str) -> list[str]:
    """Repeated parameters and comma-separated lists both work: ``a=X&a=Y`` or ``a=X,Y``."""
    out: list[str] = []
    for raw in args.get(name, []):
        out.extend(v.strip() for v in raw.split(",") if v.strip())
    return out


def _one(args: Mapping[str, Sequence[str]], name: str, errors: list[FieldError]) -> str | None:
    values = args.get(name, [])
    if len(values) > 1:
        errors.append(FieldError(name, "may be given once"))
        return None
    if not values:
        return None
    if values[0] == "" or len(values[0]) > 256:
        errors.append(FieldError(name, "must be 1 to 256 characters"))
        return None
    if (problem := text_problem(values[0])) is not None:
        errors.append(FieldError(name, problem))
        return None
    return values[0]


def _time(
    args: Mapping[str, Sequence[str]], name: str, errors: list[FieldError]
) -> datetime | None:
    raw = _one(args, name, errors)
    if raw is None:
        return None
    try:
        return parse_time(raw.replace(" ", "+"))  # a '+' in a query string often arrives as a space
    except ValueError as exc:
        errors.append(FieldError(name, str(exc)))
        return None


def whole_number(raw: str) -> int | None:
    """A query parameter's non-negative integer in plain ASCII digits (at most 19 of them),
    else None: ``int()`` alone also takes signs, spaces, ``1_0`` and fullwidth digits, and
    past 4,300 digits raises where a 4xx belongs."""
    if raw.isascii() and raw.isdigit() and len(raw) <= 19:
        return int(raw)
    return None


def parse_filters(args: Mapping[str, Sequence[str]], errors: list[FieldError]) -> EventFilters:
    """Read the filter parameters (a MultiDict as lists); append problems to ``errors``."""
    filters = EventFilters()
    if (raw_user := _one(args, "user_id", errors)) is not None:
        try:
            filters.user_id = uuid.UUID(raw_user)
        except ValueError:
            errors.append(FieldError("user_id", "must be a UUID"))
    filters.session_id = _one(args, "session_id", errors)
    filters.resource_type = _one(args, "resource_type", errors)
    filters.resource_id = _one(args, "resource_id", errors)

    actions = _values(args, "action_type")
    allowed_actions = {a.value for a in ActionType}
    if bad := [a for a in actions if a not in allowed_actions]:
        errors.append(
            FieldError(
                "action_type",
                f"unknown value(s) {', '.join(bad[:5])}; use {', '.join(allowed_actions)}",
            )
        )
    filters.action_types = sorted(set(actions) & allowed_actions)

    severities = _values(args, "severity")
    if bad := [s for s in severities if s not in SEVERITY_ORDER]:
        errors.append(
            FieldError(
                "severity",
                f"unknown value(s) {', '.join(bad[:5])}; use {', '.join(SEVERITY_ORDER)}",
            )
        )
    minimum = _one(args, "min_severity", errors)
    if minimum is not None:
        if minimum not in SEVERITY_ORDER:
            errors.append(FieldError("min_severity", f"must be one of {', '.join(SEVERITY_ORDER)}"))
        else:
            at_least = SEVERITY_ORDER[SEVERITY_ORDER.index(minimum) :]
            severities = [s for s in severities if s in at_least] if severities else at_least
            if not severities:
                errors.append(FieldError("min_severity", "excludes every severity asked for"))
    filters.severities = [s for s in SEVERITY_ORDER if s in set(severities)]
    if len(filters.action_types) > MAX_VALUES:
        errors.append(FieldError("action_type", f"at most {MAX_VALUES} values"))

    if (raw_ip := _one(args, "ip", errors)) is not None:
        try:
            if "%" in raw_ip:
                raise ValueError("zone ids are not addresses")
            filters.ip_network = str(ipaddress.ip_network(raw_ip, strict=False))
        except ValueError:
            errors.append(FieldError("ip", "must be an IP address or a CIDR network"))

    filters.created_from = _time(args, "from", errors)
    filters.created_to = _time(args, "to", errors)
    filters.occurred_from = _time(args, "occurred_from", errors)
    filters.occurred_to = _time(args, "occurred_to", errors)
    for low, high, name in (
        (filters.created_from, filters.created_to, "to"),
        (filters.occurred_from, filters.occurred_to, "occurred_to"),
    ):
        if low is not None and high is not None and high <= low:
            errors.append(FieldError(name, "must be later than the start of the range"))
    return filters
