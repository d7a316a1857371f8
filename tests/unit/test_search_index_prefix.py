"""SEARCH_INDEX_PREFIX: index names, pattern and template follow the prefix; the default
keeps the historical names."""

from datetime import UTC, datetime

from auditlog.search import (
    INDEX_PREFIX,
    INDEX_TEMPLATE,
    TEMPLATE_NAME,
    index_for,
    index_pattern,
    index_template,
)
from auditlog.settings import Settings

WHEN = datetime(2026, 3, 9, 12, 0, tzinfo=UTC)


def test_default_prefix_keeps_the_historical_names() -> None:
    assert Settings.from_env({}).search_index_prefix == "audit-events"
    assert index_for(WHEN) == "audit-events-2026.03" == f"{INDEX_PREFIX}2026.03"
    assert index_pattern() == "audit-events-*"
    assert TEMPLATE_NAME == "audit-events"
    assert index_template()["index_patterns"] == ["audit-events-*"]


def test_another_prefix_gets_its_own_indices_and_template_pattern() -> None:
    assert index_for(WHEN, "bench-search") == "bench-search-2026.03"
    assert index_pattern("bench-search") == "bench-search-*"
    template = index_template("bench-search")
    assert template["index_patterns"] == ["bench-search-*"]
    # Same settings and mappings as the production template; the shared one is untouched.
    assert template["template"] == INDEX_TEMPLATE["template"]
    assert INDEX_TEMPLATE["index_patterns"] == ["audit-events-*"]
