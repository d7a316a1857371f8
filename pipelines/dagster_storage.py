"""Dagster's PostgreSQL storages (dagster-postgres), made to work on psycopg 3.

We install psycopg 3 only (SQLAlchemy 2.1 maps ``postgresql://`` to it); dagster-postgres
was written against psycopg2, and two of its habits break on psycopg 3:

* The event log sends ``NOTIFY run_events, :notify_id`` with a bound parameter. psycopg2
  interpolated parameters on the client; psycopg 3 binds them on the server, where NOTIFY
  takes none, so every stored event failed. A statement hook rewrites exactly that
  statement to the equivalent ``SELECT pg_notify(...)``.
* In the webserver each storage sets ``statement_timeout`` in a ``with conn:`` block, which
  commits on psycopg2 but *closes* the connection on psycopg 3: every UI request failed.
  ``optimize_for_webserver`` below sets the timeout as a connection option instead.

Upstream's ``from_config_value`` builds its own class by name, so each subclass builds
itself. ``infra/dagster/dagster.yaml`` names these classes; every Dagster process
(webserver, daemon, run workers) therefore imports this module before touching storage.
"""

from __future__ import annotations

import re
from typing import Any, Self

from dagster._serdes import ConfigurableClassData
from dagster_postgres.event_log import PostgresEventLogStorage as _EventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage as _RunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage as _ScheduleStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)
from sqlalchemy import event
from sqlalchemy.engine import Engine

_NOTIFY = re.compile(r"^\s*NOTIFY\s+(\w+)\s*,\s*(%\(\w+\)s)\s*;?\s*$")


def _notify_with_bound_payload(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> tuple[str, Any]:
    match = _NOTIFY.match(statement)
    if match is None:
        return statement, parameters
    channel, placeholder = match.groups()
    return f"SELECT pg_notify('{channel}', {placeholder})", parameters


if not event.contains(Engine, "before_cursor_execute", _notify_with_bound_payload):
    event.listen(Engine, "before_cursor_execute", _notify_with_bound_payload, retval=True)


class _Psycopg3Storage:
    """What the three storages share: building the subclass, and the webserver engine."""

    _engine: Engine
    postgres_url: str
    _token_provider: Any

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Any) -> Self:
        return cls(  # type: ignore[call-arg]
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )

    def optimize_for_webserver(
        self, statement_timeout: int, pool_recycle: int, max_overflow: int
    ) -> None:
        # Same pool as upstream (hold one connection open); the timeout goes in as a
        # connection option rather than a statement in a block that would close it.
        existing = self._engine.url.query.get("options") or ()
        parts = [existing] if isinstance(existing, str) else list(existing)
        options = " ".join([*parts, f"-c statement_timeout={int(statement_timeout)}"])
        self._engine = create_pg_engine(
            self.postgres_url,
            self._token_provider,
            isolation_level="AUTOCOMMIT",
            pool_size=1,
            pool_recycle=pool_recycle,
            max_overflow=max_overflow,
            connect_args={"options": options},
        )


class PostgresRunStorage(_Psycopg3Storage, _RunStorage):
    pass


class PostgresEventLogStorage(_Psycopg3Storage, _EventLogStorage):
    pass


class PostgresScheduleStorage(_Psycopg3Storage, _ScheduleStorage):
    pass
