"""PostgreSQL access: the connection pool, named SQL, and driver errors as domain errors."""

from auditlog.store.pool import connect, open_pool
from auditlog.store.queries import QUERIES

__all__ = ["QUERIES", "connect", "open_pool"]
