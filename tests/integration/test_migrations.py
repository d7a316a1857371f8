"""Migrations on a real PostgreSQL: an empty database migrates, and a second run changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from auditlog.settings import Settings
from auditlog.store.migrate import discover, migrate

SCHEMA_QUERY = """
SELECT c.relname, c.relkind, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY 1, 3
"""


@pytest.fixture
def empty_database(base_settings: Settings) -> Iterator[str]:
    name = f"auditlog_migrate_{uuid.uuid4().hex[:10]}"
    admin = base_settings.database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield base_settings.database_url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_empty_database_migrates_and_a_second_run_changes_nothing(empty_database: str) -> None:
    applied = migrate(empty_database)
    assert applied == [m.version for m in discover()]
    with psycopg.connect(empty_database) as conn:
        before = conn.execute(SCHEMA_QUERY).fetchall()
        tables = {r[0] for r in before}
        assert {"tenants", "audit_logs", "tenant_chain_heads", "schema_migrations"} <= tables
        # audit_logs is range-partitioned (no TimescaleDB here) with daily partitions ahead.
        kind = conn.execute("SELECT relkind FROM pg_class WHERE relname = 'audit_logs'").fetchone()
        assert kind == ("p",)
        partitions = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'audit_logs'::regclass"
        ).fetchone()
        assert partitions is not None
        assert partitions[0] >= 8

    assert migrate(empty_database) == []
    with psycopg.connect(empty_database) as conn:
        assert conn.execute(SCHEMA_QUERY).fetchall() == before


def test_partitions_are_created_on_demand_and_idempotently(empty_database: str) -> None:
    migrate(empty_database)
    with psycopg.connect(empty_database) as conn:
        created = conn.execute(
            "SELECT audit_ensure_partitions('2020-01-01', '2020-01-03')"
        ).fetchone()
        again = conn.execute(
            "SELECT audit_ensure_partitions('2020-01-01', '2020-01-03')"
        ).fetchone()
        assert (created, again) == ((3,), (0,))
        bound = conn.execute(
            "SELECT pg_get_expr(relpartbound, oid) FROM pg_class "
            "WHERE relname = 'audit_logs_p20200102'"
        ).fetchone()
        assert bound == (
            "FOR VALUES FROM ('2020-01-02 00:00:00+00') TO ('2020-01-03 00:00:00+00')",
        )


def test_a_changed_applied_migration_is_refused(empty_database: str, tmp_path: object) -> None:
    from pathlib import Path

    from auditlog.store.migrate import MigrationError

    directory = Path(str(tmp_path))
    (directory / "0001_first.sql").write_text("CREATE TABLE t1 (id int);")
    assert migrate(empty_database, directory) == ["0001"]
    (directory / "0001_first.sql").write_text("CREATE TABLE t1 (id bigint);")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(empty_database, directory)


def test_maintenance_jobs_run_against_the_database(
    settings: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.definitions import defs

    monkeypatch.setenv("DATABASE_URL", settings.database_url)  # type: ignore[attr-defined]
    for name in ("maintain_partitions", "expire_keys"):
        result = defs.resolve_job_def(name).execute_in_process()
        assert result.success, name
