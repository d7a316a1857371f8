"""Keeping the search index in step with PostgreSQL, from per-tenant seq watermarks.

A pass indexes, for every tenant whose chain head is ahead of its watermark, the events
after the watermark (in seq order, in bulk), and only then advances the watermark; a failed
pass leaves it where it was, so an OpenSearch outage is caught up afterwards by itself.
Redacted events are re-indexed from their redacted rows. Events deleted from PostgreSQL
(cleanup, retention) are deleted from the index first, from the ranges recorded in
``search_deletions`` (``auditlog.search_deletions``), which likewise stay until applied.

``SearchIndexer.rebuild`` drops one month's index and writes it again from PostgreSQL; see
``SEARCH_WRITER_LOCK`` for why it cannot bring back redacted or deleted data."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from opensearchpy import OpenSearch
from psycopg.rows import dict_row

from auditlog.search import (
    DEFAULT_PREFIX,
    SearchUnavailable,
    ensure_template,
    index_events,
    index_for,
)
from auditlog.search_deletions import apply_deletions
from auditlog.store.pool import connect
from auditlog.store.queries import QUERIES

log = logging.getLogger(__name__)
BATCH = 2000
REBUILD_BATCH = 5000
# Rounds of "apply the pending deletions and reindex requests" a rebuild does before it lets
# the incremental indexer run again; whatever is left then is applied by the indexer's next
# pass (still after the rebuild's writes, so still correct; see below).
REBUILD_APPLY_ROUNDS = 20

# The PostgreSQL advisory lock (session level, per database) held by whoever writes the
# search index from PostgreSQL: an incremental pass (``catch_up``) for its duration, a month
# rebuild (``rebuild``) from before it drops the index until it has applied the pending
# deletions and reindex requests. Passes skip while a rebuild holds it; a rebuild waits for
# the pass in progress.
#
# Why: a rebuild writes documents read from one snapshot, over minutes. A redaction or a
# deletion committed after that snapshot leaves a request (search_reindex_requests,
# search_deletions) in its own transaction; if an incremental pass consumed the request
# before the rebuild wrote its stale copy, nothing would ever correct that copy again, and
# erased personal data (or a deleted event) would be searchable for good. Under the lock:
# * a request consumed before the rebuild took the lock was consumed after its redaction or
#   delete committed, so before the rebuild's snapshot (taken after the lock), which then
#   already has the redacted row or lacks the deleted one;
# * a request created after the snapshot cannot be consumed until the rebuild releases the
#   lock, and the rebuild applies the pending requests only after its last write (its own
#   writes and deletes are sequential: each bulk/delete_by_query returns once applied, and
#   apply_deletions refreshes first, so a stale copy is never written after its correction);
#   what it leaves pending stays pending (requests go only once applied) for the next pass;
# * a rebuild that fails half way leaves the requests pending as well.
# The lock also keeps a pass from indexing an event into the month between the rebuild's
# drop and its snapshot, where the rebuild would have lost it. Advisory locks belong to a
# database, so one per database is one per deployment (and per test database).
SEARCH_WRITER_LOCK = 0x5EA2C4_1D0C


@dataclass
class IndexStats:
    passes: int = 0
    indexed: int = 0
    reindexed: int = 0
    deletions_applied: int = 0  # search_deletions requests (ranges of events)
    documents_deleted: int = 0
    failures: int = 0
    skipped_for_rebuild: int = 0  # passes not run: a rebuild held SEARCH_WRITER_LOCK
    tenants: set[uuid.UUID] = field(default_factory=set)


@dataclass
class RebuildStats:
    index: str
    documents: int = 0
    applied: IndexStats = field(default_factory=IndexStats)  # requests applied afterwards


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
        did (documents indexed, deletion requests applied). Does nothing (returns 0) while a
        rebuild runs (``SEARCH_WRITER_LOCK``). ``conn`` is not in autocommit."""
        locked = conn.execute(QUERIES["try_search_writer_lock"], {"key": SEARCH_WRITER_LOCK})
        if not _first(locked.fetchone()):
            conn.commit()
            stats.skipped_for_rebuild += 1
            return 0
        try:
            return self._catch_up(conn, stats, max_rounds)
        finally:
            _release(conn)

    def _catch_up(self, conn: psycopg.Connection[Any], stats: IndexStats, max_rounds: int) -> int:
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

    def rebuild(
        self, start: datetime, end: datetime, after_snapshot: Callable[[], None] = lambda: None
    ) -> RebuildStats:
        """Drop the index of the month starting at ``start`` and index every event created
        in [start, end) again, then apply the pending deletions and reindex requests, all
        under ``SEARCH_WRITER_LOCK`` (which says why in this order). ``after_snapshot`` runs
        once the snapshot is read from, before the first write (tests use it to commit a
        redaction or a delete in between)."""
        result = RebuildStats(index_for(start, self.index_prefix))
        with connect(self.database_url) as conn:
            conn.execute(QUERIES["wait_search_writer_lock"], {"key": SEARCH_WRITER_LOCK})
            conn.commit()
            try:
                ensure_template(self.client, self.index_prefix)
                self._template_ready = True
                self.client.indices.delete(index=result.index, ignore_unavailable=True)
                with (
                    conn.transaction(),
                    conn.cursor(name="rebuild", row_factory=dict_row) as cur,
                ):
                    cur.itersize = REBUILD_BATCH
                    cur.execute(QUERIES["events_in_range"], {"start": start, "end": end})
                    batch = cur.fetchmany(REBUILD_BATCH)
                    after_snapshot()
                    while batch:
                        result.documents += index_events(self.client, batch, self.index_prefix)
                        batch = cur.fetchmany(REBUILD_BATCH)
                # Every stale write is done: now (and not before) the requests of what
                # changed since the snapshot can be applied.
                for _ in range(REBUILD_APPLY_ROUNDS):
                    deleted = apply_deletions(self.client, conn, self.index_prefix)
                    result.applied.deletions_applied += deleted.requests
                    result.applied.documents_deleted += deleted.documents
                    if not deleted.requests + self._reindex_requested(conn, result.applied):
                        break
            finally:
                _release(conn)
        return result

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


def _first(row: tuple[Any, ...] | None) -> Any:
    assert row is not None
    return row[0]


def _release(conn: psycopg.Connection[Any]) -> None:
    """Release ``SEARCH_WRITER_LOCK`` (held by this session); a closed connection already
    did. Everything worth keeping is committed by then: what is left open is reads, or a
    failed statement."""
    if conn.closed:
        return
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.rollback()
    conn.execute(QUERIES["release_search_writer_lock"], {"key": SEARCH_WRITER_LOCK})
    conn.commit()
