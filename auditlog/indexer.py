"""Keeping the search index in step with PostgreSQL, from per-tenant seq watermarks.

A pass indexes, for every tenant whose chain head is ahead of its watermark, the events
after the watermark (in seq order, in bulk), and only then advances the watermark; a failed
pass leaves it where it was, so an OpenSearch outage is caught up afterwards by itself.
Redacted events are re-indexed from their redacted rows. Events deleted from PostgreSQL
(cleanup, retention) are deleted from the index first, from the ranges recorded in
``search_deletions`` (``auditlog.search_deletions``), which likewise stay until applied."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
from opensearchpy import OpenSearch
from psycopg.rows import dict_row

from auditlog.search import DEFAULT_PREFIX, SearchUnavailable, ensure_template, index_events
from auditlog.search_deletions import apply_deletions
from auditlog.store.pool import connect
from auditlog.store.queries import QUERIES

log = logging.getLogger(__name__)
BATCH = 2000


@dataclass
class IndexStats:
    passes: int = 0
    indexed: int = 0
    reindexed: int = 0
    deletions_applied: int = 0  # search_deletions requests (ranges of events)
    documents_deleted: int = 0
    failures: int = 0
    tenants: set[uuid.UUID] = field(default_factory=set)


class SearchIndexer:
    def __init__(
        self, client: OpenSearch, database_url: str, index_prefix: str = DEFAULT_PREFIX
    ) -> None:
        self.client = client
        self.database_url = database_url
        self.index_prefix = index_prefix
        self._template_ready = False

    def catch_up(
        self, conn: psycopg.Connection[Any], stats: IndexStats, max_rounds: int = 50
    ) -> int:
        """Delete what was deleted, then index what is behind; returns how much this call
        did (documents indexed, deletion requests applied)."""
        if not self._template_ready:
            ensure_template(self.client, self.index_prefix)
            self._template_ready = True
        # Deletions first: a document indexed from a row read before its delete committed is
        # always written before this step sees the request, so it is never left behind.
        deleted = apply_deletions(self.client, conn, self.index_prefix)
        stats.deletions_applied += deleted.requests
        stats.documents_deleted += deleted.documents
        done = deleted.requests + self._reindex_requested(conn, stats)
        for _ in range(max_rounds):
            lagging = conn.execute(QUERIES["search_lagging_tenants"]).fetchall()
            conn.commit()
            if not lagging:
                break
            for tenant_id, watermark, head in lagging:
                with conn.cursor(row_factory=dict_row) as cur:
                    rows = cur.execute(
                        QUERIES["events_after_seq"],
                        {"tenant_id": tenant_id, "after_seq": watermark, "limit": BATCH},
                    ).fetchall()
                if not rows:
                    # Every event after the watermark was deleted before it was indexed (the
                    # head commits with its events): there is nothing to index up to the head.
                    conn.execute(
                        QUERIES["advance_search_watermark"],
                        {"tenant_id": tenant_id, "last_seq": head},
                    )
                    conn.commit()
                    continue
                index_events(self.client, rows, self.index_prefix)
                conn.execute(
                    QUERIES["advance_search_watermark"],
                    {"tenant_id": tenant_id, "last_seq": rows[-1]["seq"]},
                )
                conn.commit()
                done += len(rows)
                stats.indexed += len(rows)
                stats.tenants.add(tenant_id)
        return done

    def _reindex_requested(self, conn: psycopg.Connection[Any], stats: IndexStats) -> int:
        with conn.transaction():
            taken = conn.execute(QUERIES["take_reindex_requests"], {"limit": BATCH}).fetchall()
            by_tenant: dict[uuid.UUID, list[tuple[uuid.UUID, Any]]] = {}
            for tenant_id, event_id, created_at in taken:
                by_tenant.setdefault(tenant_id, []).append((event_id, created_at))
            count = 0
            for tenant_id, items in by_tenant.items():
                times = [t for _, t in items]
                with conn.cursor(row_factory=dict_row) as cur:
                    rows = cur.execute(
                        QUERIES["events_by_ids"],
                        {
                            "tenant_id": tenant_id,
                            "ids": [i for i, _ in items],
                            "earliest": min(times) - timedelta(seconds=1),
                            "latest": max(times) + timedelta(seconds=1),
                        },
                    ).fetchall()
                # Inside the transaction: if indexing fails the requests are not consumed.
                count += index_events(self.client, rows, self.index_prefix)
            stats.reindexed += count
        return count

    def run(
        self,
        time_budget_s: float,
        idle_s: float,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> IndexStats:
        """Index as events are committed (woken by the drain's NOTIFY, or every second) until
        the time budget is spent or nothing arrived for ``idle_s``."""
        stats = IndexStats()
        started = time.monotonic()
        last_work = started
        with (
            connect(self.database_url) as conn,
            connect(self.database_url, autocommit=True) as listener,
        ):
            listener.execute("LISTEN audit_events")
            while not should_stop() and time.monotonic() - started < time_budget_s:
                try:
                    if self.catch_up(conn, stats):
                        last_work = time.monotonic()
                except SearchUnavailable as exc:
                    stats.failures += 1
                    conn.rollback()
                    log.warning("indexer.search_unavailable", extra={"error": str(exc)[:300]})
                    self._template_ready = False
                    time.sleep(min(2.0 * stats.failures, 10.0))
                    continue
                stats.passes += 1
                if time.monotonic() - last_work >= idle_s:
                    break
                for _ in listener.notifies(timeout=1.0, stop_after=1):
                    pass
        return stats
