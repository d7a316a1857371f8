"""The ``q`` search syntax: free text plus qualifiers, turned into OpenSearch clauses.

    invoice overdue                 every word must match (text of the event, its resource
                                    id, user agent, and the values and keys of its JSON)
    "credit note"                   a phrase;  -draft  excludes a word;  inv*  a prefix
    action:DELETE  action:CREATE,UPDATE
    severity:ERROR  severity>=WARNING  (also >, <=, <)
    resource:invoices               resource type or resource id equal to the value
    resource_type:invoice  resource_id:inv-42
    user:<uuid>  session:<id>  ip:10.0.0.0/8
    created>=2024-05-01  created<2024-06-01T12:00:00Z  occurred:2024-05-03   (a date alone
                                    is the whole UTC day)
    metadata.request.path:/login    a value inside the JSON (also before.<key>, after.<key>)

A value with spaces or colons is quoted: ``resource_id:"a b"``. Anything else with a
``name:`` in front is an error naming the qualifier, never silently ignored.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from auditlog.events import ActionType, format_time, parse_time
from auditlog.filters import SEVERITY_ORDER
from auditlog.search import ip_term

MAX_QUERY_LENGTH = 1000
_TOKEN = re.compile(
    r"""(?P<name>[A-Za-z_]+(?:\.[\w-]+)*)(?P<op>>=|<=|:|>|<)(?P<value>"[^"]*"|[^\s"]+)"""
    r"""|(?P<word>-?"[^"]*"|[^\s]+)"""
)
_RANGE_OPS = {">=": "gte", ">": "gt", "<=": "lte", "<": "lt"}
_JSON_ROOTS = {"metadata": "metadata", "before": "before_state", "after": "after_state"}


class QuerySyntaxError(ValueError):
    """What is wrong with a ``q`` value, in words for the client."""


@dataclass
class ParsedQuery:
    text: str = ""
    clauses: list[dict[str, Any]] = field(default_factory=list)


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def _time_bounds(value: str) -> tuple[datetime, datetime]:
    """A date is its whole UTC day; a date-time is an instant."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        start = parse_time(f"{value}T00:00:00+00:00")  # its checks, years included
        return start, start + timedelta(days=1)
    instant = parse_time(value)
    return instant, instant


def _range_clause(field_name: str, op: str, value: str) -> dict[str, Any]:
    """``created>2024-05-01`` means after that whole day, ``created<=2024-05-01`` up to its
    end; with a date-time each operator means what it says."""
    try:
        start, end = _time_bounds(value)
    except ValueError as exc:
        raise QuerySyntaxError(f"{field_name}: {value!r} {exc}") from None
    if start == end:  # an instant
        bounds = {":": {"gte": start, "lte": start}}.get(op) or {_RANGE_OPS[op]: start}
    else:  # a whole day
        bounds = {
            ":": {"gte": start, "lt": end},
            ">=": {"gte": start},
            ">": {"gte": end},
            "<=": {"lt": end},
            "<": {"lt": start},
        }[op]
    return {"range": {field_name: {k: format_time(v) for k, v in bounds.items()}}}


def _qualifier(name: str, op: str, raw: str) -> dict[str, Any]:
    value = _unquote(raw)
    if not value:
        raise QuerySyntaxError(f"{name}: needs a value")
    root = name.split(".", 1)[0]
    if op != ":" and name not in ("severity", "created", "occurred"):
        raise QuerySyntaxError(
            f"{name}: only takes ':' (comparisons work for severity, created, occurred)"
        )
    if name == "action":
        values = [v.upper() for v in value.split(",")]
        allowed = {a.value for a in ActionType}
        if bad := [v for v in values if v not in allowed]:
            raise QuerySyntaxError(
                f"action: unknown {', '.join(bad)}; use {', '.join(sorted(allowed))}"
            )
        return {"terms": {"action_type": values}}
    if name == "severity":
        level = value.upper()
        if level not in SEVERITY_ORDER:
            raise QuerySyntaxError(f"severity: unknown {value}; use {', '.join(SEVERITY_ORDER)}")
        if op == ":":
            return {"term": {"severity": level}}
        return {"range": {"severity_rank": {_RANGE_OPS[op]: SEVERITY_ORDER.index(level)}}}
    if name == "resource":
        either = [{"term": {"resource_type": value}}, {"term": {"resource_id": value}}]
        return {"bool": {"should": either, "minimum_should_match": 1}}
    if name in ("resource_type", "resource_id"):
        return {"term": {name: value}}
    if name == "user":
        try:
            return {"term": {"user_id": str(uuid.UUID(value))}}
        except ValueError:
            raise QuerySyntaxError(f"user: {value!r} is not a UUID") from None
    if name == "session":
        return {"term": {"session_id": value}}
    if name == "ip":
        try:
            return ip_term(value)
        except ValueError:
            raise QuerySyntaxError(f"ip: {value!r} is not an address or CIDR network") from None
    if name in ("created", "occurred"):
        return _range_clause(f"{name}_at", op, value)
    if root in _JSON_ROOTS and "." in name:
        path = _JSON_ROOTS[root] + name[len(root) :]
        return {"term": {path: value}}
    raise QuerySyntaxError(
        f"unknown qualifier {name!r}; use action, severity, resource, resource_type, resource_id, "
        "user, session, ip, created, occurred, metadata.<key>, before.<key>, after.<key> "
        "(quote a value that contains ':')"
    )


def parse_query(q: str) -> ParsedQuery:
    if len(q) > MAX_QUERY_LENGTH:
        raise QuerySyntaxError(f"is longer than {MAX_QUERY_LENGTH} characters")
    if "\x00" in q:
        raise QuerySyntaxError("must not contain the NUL character")
    if q.count('"') % 2:
        raise QuerySyntaxError("has an unbalanced double quote")
    parsed = ParsedQuery()
    words: list[str] = []
    for match in _TOKEN.finditer(q):
        if match["name"] is not None:
            parsed.clauses.append(_qualifier(match["name"], match["op"], match["value"]))
        else:
            words.append(match["word"])
    parsed.text = " ".join(words)
    return parsed
