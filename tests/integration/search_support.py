"""A database and a search-index prefix of a test module's own, for the search tests whose
checks look at every tenant of a database or every index of a prefix."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import replace

import psycopg

from auditlog.search import make_client
from auditlog.settings import Settings
from auditlog.store.migrate import migrate


@contextlib.contextmanager
def own_search_settings(settings: Settings, label: str) -> Iterator[Settings]:
    """``settings`` pointed at a fresh migrated database and a fresh index prefix, both
    removed afterwards (indices, template and database)."""
    name = f"auditlog_test_{label}_{uuid.uuid4().hex[:8]}"
    admin = settings.database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # our own name, not input
    url = settings.database_url.rsplit("/", 1)[0] + f"/{name}"
    migrate(url)
    prefix = f"test-{label}-{uuid.uuid4().hex[:8]}"
    yield replace(settings, database_url=url, search_index_prefix=prefix)
    client = make_client(settings.opensearch_url)
    client.indices.delete(index=f"{prefix}-*", ignore_unavailable=True)
    client.indices.delete_index_template(name=prefix, ignore=[404])
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
