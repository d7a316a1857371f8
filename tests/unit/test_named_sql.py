import pytest

from auditlog.store.migrate import discover
from auditlog.store.queries import QUERIES, parse_named_sql


def test_named_sql_parses_each_statement() -> None:
    parsed = parse_named_sql("-- name: a\nSELECT 1\n\n-- name: b\nSELECT 2;\n")
    assert parsed == {"a": "SELECT 1", "b": "SELECT 2;"}


def test_duplicate_names_are_an_error() -> None:
    with pytest.raises(ValueError, match="twice"):
        parse_named_sql("-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n")


def test_the_shipped_queries_load() -> None:
    assert "FROM audit_logs" in QUERIES["get_event"]
    assert "FOR UPDATE" in QUERIES["lock_chain_heads"]


def test_migrations_are_numbered_in_order() -> None:
    versions = [m.version for m in discover()]
    assert versions == sorted(versions)
    assert versions[0] == "0001"
