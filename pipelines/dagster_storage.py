"""Dagster's PostgreSQL event log storage, on psycopg 3.

dagster-postgres still sends ``NOTIFY run_events, :notify_id`` with a bound parameter. That
worked with psycopg2, which interpolates parameters on the client; psycopg 3 binds them on
the server, where NOTIFY accepts no parameters, so every stored event fails. We use
psycopg 3 only (SQLAlchemy 2.1 maps ``postgresql://`` to it), so this module rewrites that
one statement to the equivalent ``SELECT pg_notify(...)``, which does take parameters.
``infra/dagster/dagster.yaml`` names the class below as the event log storage, so every
Dagster process (webserver, daemon, run workers) imports this module before storing events.
"""

from __future__ import annotations

import re
from typing import Any

from dagster_postgres.event_log import PostgresEventLogStorage as _UpstreamEventLogStorage
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


class PostgresEventLogStorage(_UpstreamEventLogStorage):
    """dagster-postgres's event log storage; importing this module installs the fix above."""
