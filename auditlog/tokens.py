"""Minting JWTs for development and tests (production tokens come from your identity provider).

Claims the API reads: ``sub`` (who), ``tenant_id`` (whose data; optional for platform
admins), ``role`` (admin | writer | reader | auditor | user), plus ``exp``/``iat``/``nbf``.
"""

from __future__ import annotations

import time
import uuid

import jwt

from auditlog.settings import Settings

ROLES = ("admin", "writer", "reader", "auditor", "user")


def mint_token(
    settings: Settings,
    *,
    tenant_id: uuid.UUID | str | None,
    role: str,
    subject: str = "dev",
    ttl_seconds: int = 24 * 3600,
) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": subject,
        "role": role,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
        "jti": str(uuid.uuid4()),
        "type": "access",
    }
    if tenant_id is not None:
        claims["tenant_id"] = str(tenant_id)
    if settings.jwt_algorithm.startswith("HS"):
        key = settings.jwt_secret
    else:
        if not settings.jwt_private_key:
            raise ValueError("JWT_PRIVATE_KEY is needed to mint RS256 tokens")
        key = settings.jwt_private_key
    return jwt.encode(claims, key, algorithm=settings.jwt_algorithm)
