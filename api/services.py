"""The long-lived objects a request uses, created once per app in ``create_app``."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

from flask import current_app
from opensearchpy import OpenSearch
from psycopg_pool import ConnectionPool

from api import metrics
from auditlog.idempotency import IdempotencyStore
from auditlog.producer import BatchingProducer
from auditlog.queue import EventQueue
from auditlog.ratelimit import RateLimiter
from auditlog.search import make_client as make_search_client
from auditlog.settings import Settings
from auditlog.store.pool import open_pool
from auditlog.tenants import tenant_status


class TenantStatusCache:
    """Tenant status for the ingest check, cached briefly so ingest does not hit the
    database on every request. A suspension takes effect within ``ttl`` seconds (and at
    once in the process that made the change)."""

    def __init__(self, pool: ConnectionPool, ttl: float = 5.0) -> None:
        self._pool = pool
        self._ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[uuid.UUID, tuple[float, str | None]] = {}

    def status(self, tenant_id: uuid.UUID) -> str | None:
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(tenant_id)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        with self._pool.connection() as conn:
            status = tenant_status(conn, tenant_id)
        with self._lock:
            self._entries[tenant_id] = (now, status)
        return status

    def forget(self, tenant_id: uuid.UUID) -> None:
        with self._lock:
            self._entries.pop(tenant_id, None)


@dataclass
class Services:
    settings: Settings
    pool: ConnectionPool
    queue: EventQueue
    tenants: TenantStatusCache = field(init=False)
    producer: BatchingProducer = field(init=False)
    idempotency: IdempotencyStore = field(init=False)
    rate_limiter: RateLimiter = field(init=False)
    search: OpenSearch = field(init=False)
    export_pool: ConnectionPool = field(init=False)

    def __post_init__(self) -> None:
        # Apart from ``pool``: an export holds its connection while the client reads, and
        # slow readers must not leave ingest and reads without connections.
        self.export_pool = open_pool(
            self.settings.database_url,
            min_size=0,
            max_size=self.settings.db_export_pool_max,
            name="api-exports",
        )
        self.tenants = TenantStatusCache(self.pool)
        self.producer = BatchingProducer(
            self.queue,
            linger_s=self.settings.producer_linger_ms / 1000,
            senders=self.settings.producer_senders,
            on_error=lambda _exc: metrics.SQS_ERRORS.inc(),
        )
        self.idempotency = IdempotencyStore(self.pool)
        # Connects lazily: OpenSearch being down affects search requests only.
        self.search = make_search_client(self.settings.opensearch_url)
        self.rate_limiter = RateLimiter(
            self.settings.rate_limit_events_per_second, self.settings.rate_limit_burst
        )

    def close(self) -> None:
        self.producer.close()
        self.search.close()
        self.export_pool.close()
        self.pool.close()


def services() -> Services:
    found: Services = current_app.extensions["auditlog"]
    return found
