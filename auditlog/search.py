"""Full-text search in OpenSearch: derived data, rebuilt from PostgreSQL at will.

* Shared monthly indices ``<prefix>-YYYY.MM`` (``SEARCH_INDEX_PREFIX``, ``audit-events`` by
  default) from one index template, never an index per tenant; ``_routing`` is the tenant
  id and the document id is the event id, so indexing is idempotent and every search
  touches one shard per month.
* Every query is filtered by tenant (and routed); search only finds ids, and the events
  themselves are read from PostgreSQL, so redactions and tenant scoping apply as in SQL.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from opensearchpy import OpenSearch, helpers
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import RequestError, TransportError

from auditlog.events import format_time
from auditlog.filters import SEVERITY_ORDER, EventFilters

# The default index prefix (setting SEARCH_INDEX_PREFIX). Another prefix (a benchmark's, a
# second deployment's) gives its own template and indices that never overlap these.
DEFAULT_PREFIX = "audit-events"
INDEX_PREFIX = f"{DEFAULT_PREFIX}-"
TEMPLATE_NAME = DEFAULT_PREFIX
TEXT_FIELDS_MAX = 32 * 1024  # characters of searchable text kept per event

INDEX_TEMPLATE: dict[str, Any] = {
    "index_patterns": [f"{INDEX_PREFIX}*"],
    "priority": 100,
    "template": {
        "settings": {
            "number_of_shards": 1,
            "number_of_replicas": 0,
            "refresh_interval": "1s",
            # Segments kept in the listing's order (newest first, then id): a newest-first
            # search (search_ids) stops in each segment after the page's hits instead of
            # visiting every match of the tenant. Applies to indices created from now on;
            # a month's rebuild (search_index_rebuild) recreates older ones so.
            "sort.field": ["created_at", "id"],
            "sort.order": ["desc", "desc"],
        },
        "mappings": {
            "_routing": {"required": True},
            "dynamic": "strict",
            "properties": {
                "id": {"type": "keyword"},
                "tenant_id": {"type": "keyword"},
                "seq": {"type": "long"},
                "created_at": {"type": "date"},
                "occurred_at": {"type": "date"},
                "user_id": {"type": "keyword"},
                "session_id": {"type": "keyword"},
                "ip_address": {"type": "ip"},
                "user_agent": {
                    "type": "text",
                    "fields": {"raw": {"type": "keyword", "ignore_above": 1024}},
                },
                "action_type": {"type": "keyword"},
                "resource_type": {"type": "keyword"},
                "resource_id": {"type": "keyword", "fields": {"text": {"type": "text"}}},
                "severity": {"type": "keyword"},
                "severity_rank": {"type": "byte"},
                "before_state": {"type": "flat_object"},
                "after_state": {"type": "flat_object"},
                "metadata": {"type": "flat_object"},
                "search_text": {"type": "text"},
            },
        },
    },
}


class SearchUnavailable(RuntimeError):
    """OpenSearch could not be reached or failed; nothing was indexed or found."""


class SearchRefused(ValueError):
    """OpenSearch answered 400 to a search: it will not run this query, however often it is
    retried (unlike ``SearchUnavailable``). The message is OpenSearch's reason."""


def _refusal_reason(exc: RequestError) -> str:
    info = exc.info if isinstance(exc.info, dict) else {}
    error = info.get("error")
    causes = error.get("root_cause") if isinstance(error, dict) else None
    if isinstance(causes, list) and causes and isinstance(causes[0], dict):
        return str(causes[0].get("reason", exc.error))[:300]
    return str(exc.error)[:300]


def make_client(url: str) -> OpenSearch:
    return OpenSearch(hosts=[url], timeout=10, max_retries=1, retry_on_timeout=False)


def index_pattern(prefix: str = DEFAULT_PREFIX) -> str:
    """Every monthly index of ``prefix``."""
    return f"{prefix}-*"


def index_template(prefix: str = DEFAULT_PREFIX) -> dict[str, Any]:
    return {**INDEX_TEMPLATE, "index_patterns": [index_pattern(prefix)]}


def index_for(created_at: datetime, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}-{created_at:%Y.%m}"


def ensure_template(client: OpenSearch, prefix: str = DEFAULT_PREFIX) -> None:
    """Install (or update) the index template of ``prefix`` (named after it); idempotent."""
    try:
        client.indices.put_index_template(name=prefix, body=index_template(prefix))
    except (OSConnectionError, TransportError) as exc:
        raise SearchUnavailable(str(exc)) from exc


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


# flat_object indexes every leaf of a JSON field as a keyword term, alone and as
# "path=value"; Lucene refuses a term over 32,766 UTF-8 bytes and with it the whole document
# (which the indexer would retry forever). Metadata may hold strings of up to 64 KiB, so the
# indexed copy keeps at most this many bytes of each value, and of each key (a path is at
# most MAX_JSON_DEPTH keys): 16 x 512 + 16,384 stays under the limit. PostgreSQL keeps the
# whole value, and search_text its words.
KEYWORD_VALUE_MAX_BYTES = 16 * 1024
KEYWORD_KEY_MAX_BYTES = 512


def _cut_utf8(text: str, limit: int) -> str:
    if len(text) * 4 <= limit:  # no character takes more than 4 bytes
        return text
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", "ignore")  # drops a character cut in two


def keyword_safe(value: Any) -> Any:
    """``value`` (a JSON value) with every string and key cut to what a keyword term holds."""
    if isinstance(value, str):
        return _cut_utf8(value, KEYWORD_VALUE_MAX_BYTES)
    if isinstance(value, dict):
        return {_cut_utf8(k, KEYWORD_KEY_MAX_BYTES): keyword_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [keyword_safe(item) for item in value]
    return value


def to_document(row: dict[str, Any]) -> dict[str, Any]:
    """The indexed form of a stored event (a row as ``auditlog.reads`` returns it)."""
    text = " ".join(
        _strings(
            [row["action_type"], row["resource_type"], row["resource_id"], row["user_agent"],
             row["session_id"], row["before_state"], row["after_state"], row["metadata"]]
        )
    )[:TEXT_FIELDS_MAX]  # fmt: skip
    return {
        "id": str(row["id"]),
        "tenant_id": str(row["tenant_id"]),
        "seq": row["seq"],
        "created_at": format_time(row["created_at"]),
        "occurred_at": format_time(row["occurred_at"]) if row["occurred_at"] else None,
        "user_id": str(row["user_id"]) if row["user_id"] else None,
        "session_id": row["session_id"],
        "ip_address": row["ip_address"],
        "user_agent": row["user_agent"],
        "action_type": row["action_type"],
        "resource_type": row["resource_type"],
        "resource_id": row["resource_id"],
        "severity": row["severity"],
        "severity_rank": SEVERITY_ORDER.index(row["severity"]),
        "before_state": keyword_safe(row["before_state"]),
        "after_state": keyword_safe(row["after_state"]),
        "metadata": keyword_safe(row["metadata"]),
        "search_text": text,
    }


def index_events(
    client: OpenSearch, rows: Iterable[dict[str, Any]], prefix: str = DEFAULT_PREFIX
) -> int:
    """Bulk-index events (idempotent by id, routed by tenant); returns how many. Raises
    ``SearchUnavailable`` unless every document was indexed, so a caller advances its
    watermark only past work that is done."""
    actions = (
        {
            "_op_type": "index",
            "_index": index_for(row["created_at"], prefix),
            "_id": str(row["id"]),
            "_routing": str(row["tenant_id"]),
            "_source": to_document(row),
        }
        for row in rows
    )
    try:
        done, errors = helpers.bulk(
            client,
            actions,
            chunk_size=1000,
            max_retries=3,
            initial_backoff=0.5,
            raise_on_error=False,
        )
    except (OSConnectionError, TransportError, helpers.BulkIndexError) as exc:
        raise SearchUnavailable(str(exc)[:500]) from exc
    if errors:
        raise SearchUnavailable(
            f"{len(errors)} document(s) were not indexed: {str(errors[0])[:300]}"
        )
    return int(done)


def refresh(client: OpenSearch, prefix: str = DEFAULT_PREFIX) -> None:
    client.indices.refresh(index=index_pattern(prefix))


def ip_term(network: str) -> dict[str, Any]:
    """The clause for events whose address lies in ``network`` (an address or CIDR).
    OpenSearch keeps an IPv4-mapped IPv6 address (``::ffff:1.2.3.4``) as its IPv4 address
    and refuses CIDR notation on one, so such a network is given in its IPv4 form."""
    parsed = ipaddress.ip_network(network, strict=False)
    mapped = parsed.network_address.ipv4_mapped if parsed.version == 6 else None
    if mapped is not None and parsed.prefixlen >= 96:
        parsed = ipaddress.IPv4Network((mapped, parsed.prefixlen - 96))
    return {"term": {"ip_address": str(parsed)}}


def filters_to_query(tenant_id: uuid.UUID, filters: EventFilters) -> list[dict[str, Any]]:
    """The listing's filters as OpenSearch filter clauses, the tenant first."""
    clauses: list[dict[str, Any]] = [{"term": {"tenant_id": str(tenant_id)}}]
    for field, value in (
        ("user_id", str(filters.user_id) if filters.user_id else None),
        ("session_id", filters.session_id),
        ("resource_type", filters.resource_type),
        ("resource_id", filters.resource_id),
    ):
        if value is not None:
            clauses.append({"term": {field: value}})
    if filters.action_types:
        clauses.append({"terms": {"action_type": filters.action_types}})
    if filters.severities:
        clauses.append({"terms": {"severity": filters.severities}})
    if filters.ip_network:
        clauses.append(ip_term(filters.ip_network))
    for field, low, high in (
        ("created_at", filters.created_from, filters.created_to),
        ("occurred_at", filters.occurred_from, filters.occurred_to),
    ):
        bounds = {}
        if low is not None:
            bounds["gte"] = format_time(low)
        if high is not None:
            bounds["lt"] = format_time(high)
        if bounds:
            clauses.append({"range": {field: bounds}})
    return clauses


def search_ids(
    client: OpenSearch,
    tenant_id: uuid.UUID,
    filters: list[dict[str, Any]],
    text: str | None,
    *,
    size: int,
    newest_first: bool = True,
    search_after: Sequence[Any] | None = None,
    prefix: str = DEFAULT_PREFIX,
) -> list[tuple[str, list[Any]]]:
    """Matching event ids with their sort values, in listing order."""
    order = "desc" if newest_first else "asc"
    query: dict[str, Any] = {"bool": {"filter": filters}}
    if text:
        query["bool"]["must"] = [
            {
                "simple_query_string": {
                    "query": text,
                    "fields": ["search_text", "resource_id.text", "user_agent"],
                    "default_operator": "and",
                    "flags": "AND|OR|NOT|PHRASE|PREFIX|WHITESPACE|ESCAPE|PRECEDENCE",
                }
            }
        ]
    body: dict[str, Any] = {
        "query": query,
        "size": size,
        "sort": [{"created_at": order}, {"id": order}],
        "_source": False,
        "track_total_hits": False,
    }
    if search_after is not None:
        body["search_after"] = list(search_after)
    try:
        answer = client.search(
            index=index_pattern(prefix),
            body=body,
            routing=str(tenant_id),
            ignore_unavailable=True,
        )
    except RequestError as exc:
        raise SearchRefused(_refusal_reason(exc)) from exc
    except (OSConnectionError, TransportError) as exc:
        raise SearchUnavailable(str(exc)[:500]) from exc
    return [(hit["_id"], hit["sort"]) for hit in answer["hits"]["hits"]]
