"""The platform's own audit trail: changes made by platform admins (tenants, retention) are
events of the platform tenant, queued, stored and chained like any other."""

from __future__ import annotations

import uuid
from typing import Any

from auditlog.events import AcceptedEvent, ActionType, EventIn, Severity
from auditlog.ids import new_event_id

PLATFORM_TENANT_ID = uuid.UUID("00000000-0000-0000-0000-000000000000")


def platform_event(
    *,
    actor: str,
    action: ActionType,
    resource_type: str,
    resource_id: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    request_id: str | None = None,
    ip_address: str | None = None,
    severity: Severity = Severity.INFO,
) -> dict[str, Any]:
    """The queue record of one platform event (``actor`` is the token's ``sub``)."""
    body = EventIn(
        action_type=action,
        resource_type=resource_type,
        resource_id=resource_id,
        severity=severity,
        before_state=before,
        after_state=after,
        ip_address=ip_address,
        metadata={"actor": actor, "request_id": request_id},
    )
    event_id, created_at = new_event_id()
    return AcceptedEvent(
        id=event_id, tenant_id=PLATFORM_TENANT_ID, created_at=created_at, body=body
    ).to_record()
