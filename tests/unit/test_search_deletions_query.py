"""The OpenSearch query of recorded deletions: always within one tenant, and each range is a
seq bound *and* a created_at span (never a time alone, which would take a late event)."""

import uuid
from datetime import UTC, datetime

import pytest

from auditlog.search_deletions import (
    RANGES_PER_QUERY,
    DeletedRange,
    _chunks,
    deleted_documents_query,
)

TENANT = uuid.UUID("0190a000-0000-7000-8000-000000000001")


def deleted(through: int, tenant: uuid.UUID = TENANT) -> DeletedRange:
    return DeletedRange(
        id=through,
        tenant_id=tenant,
        through_seq=through,
        created_from=datetime(2026, 1, 2, tzinfo=UTC),
        created_before=datetime(2026, 1, 3, tzinfo=UTC),
        rows_deleted=1,
    )


def test_each_range_is_a_seq_bound_and_a_span_within_the_tenant() -> None:
    query = deleted_documents_query(TENANT, [deleted(7), deleted(9)])["bool"]
    assert query["filter"] == [{"term": {"tenant_id": str(TENANT)}}]
    assert query["minimum_should_match"] == 1
    assert query["should"][0] == {
        "bool": {
            "filter": [
                {"range": {"seq": {"lte": 7}}},
                {
                    "range": {
                        "created_at": {
                            "gte": "2026-01-02T00:00:00.000000Z",
                            "lt": "2026-01-03T00:00:00.000000Z",
                        }
                    }
                },
            ]
        }
    }
    assert query["should"][1]["bool"]["filter"][0] == {"range": {"seq": {"lte": 9}}}


def test_another_tenants_range_is_refused() -> None:
    with pytest.raises(ValueError, match="tenant"):
        deleted_documents_query(TENANT, [deleted(1, uuid.uuid4())])


def test_many_ranges_go_in_several_queries() -> None:
    ranges = [deleted(n) for n in range(1, 2 * RANGES_PER_QUERY + 2)]
    sizes = [len(chunk) for chunk in _chunks(ranges)]
    assert sizes == [RANGES_PER_QUERY, RANGES_PER_QUERY, 1]
