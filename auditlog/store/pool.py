"""Connections with the session settings the platform relies on.

Every connection runs in UTC with ISO dates, because the hash chain is defined over
PostgreSQL's text rendering of stored values (see ``auditlog.chain``).
"""

from __future__ import annotations

import psycopg
from psycopg_pool import ConnectionPool

# jit=off: the JIT compiles per partition and cost far more than it saved on the API's
# short queries (bench/results/query.md: an IP filter 440 ms with JIT, 12 ms without).
SESSION_OPTIONS = "-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=iso_8601 -c jit=off"


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url, options=SESSION_OPTIONS, autocommit=autocommit)


def open_pool(
    url: str, *, min_size: int = 1, max_size: int = 8, name: str = "auditlog"
) -> ConnectionPool:
    """A pool that is open and has proved it can connect (``wait``) before returning."""
    pool = ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"options": SESSION_OPTIONS},
        name=name,
        open=False,
        timeout=5,  # a request waits at most this long for a connection, then 503
        # A connection is checked as it leaves the pool, so a database restart costs the
        # requests in flight at that moment, not every pooled connection afterwards.
        check=ConnectionPool.check_connection,
    )
    pool.open(wait=True, timeout=30)
    return pool
