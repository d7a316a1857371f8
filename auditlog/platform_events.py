"""The platform's own audit trail: changes made by admins (tenants, cleanup, redaction) are
events too, queued, stored and chained like any other."""

from __future__ import annotations

import uuid
from typing import Any

from auditlog.events import AcceptedEvent, ActionType, EventIn, Severity
from auditlog.ids import new_event_id

PLATFORM_TENANT_ID = uuid.UUID("00000000-0000-0000-0000-000000000000")


def platform_event(
    *,
    actor: str,
    tenant_id: uuid.UUID = PLATFORM_TENANT_ID,
    action: ActionType,
    resource_type: str,
    resource_id: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    request_id: str | None = None,
    ip_address: str | None = None,
    severity: Severity = Severity.INFO,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The queue record of one event the platform itself records (``actor`` is the token's
    ``sub``): in the platform tenant's log by default, or in a tenant's own log for actions
    taken on that tenant's events (cleanup, redaction)."""
    body = EventIn(
        action_type=action,
        resource_type=resource_type,
        resource_id=resource_id,
        severity=severity,
        before_state=before,
        after_state=after,
        ip_address=ip_address,
        metadata={"actor": actor, "request_id": request_id, **(extra or {})},
    )
    event_id, created_at = new_event_id()
    return AcceptedEvent(
        id=event_id, tenant_id=tenant_id, created_at=created_at, body=body
    ).to_record()
