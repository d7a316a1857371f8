"""JWT bearer authentication and role checks.

Tokens are verified with exactly one configured algorithm (HS256 with a shared secret by
default, or RS256 with a public key), so ``alg: none`` and HS/RS confusion fail. Every
authentication failure is a 401 problem document; a role that may not act is a 403.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from flask import Flask, Response, g, request
from flask_jwt_extended import JWTManager, get_jwt, verify_jwt_in_request

from api.errors import ApiProblem, problem_response
from auditlog.settings import Settings
from auditlog.tokens import ROLES

P = ParamSpec("P")
R = TypeVar("R")

# Who may do what. Platform admins manage tenants; inside a tenant, writers ingest,
# readers/auditors read, and the seed's "user" does both.
WRITE_ROLES = frozenset({"writer", "user", "admin"})
READ_ROLES = frozenset({"reader", "auditor", "user", "admin"})
ADMIN_ROLES = frozenset({"admin"})

SUPPORTED_ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512")
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash


@dataclass(frozen=True)
class Principal:
    subject: str
    role: str
    tenant_id: uuid.UUID | None


def configure_jwt(app: Flask, settings: Settings) -> None:
    app.config["JWT_TOKEN_LOCATION"] = ["headers"]
    app.config["JWT_ALGORITHM"] = settings.jwt_algorithm
    app.config["JWT_DECODE_ALGORITHMS"] = [settings.jwt_algorithm]
    if settings.jwt_algorithm not in SUPPORTED_ALGORITHMS:
        raise ValueError(f"JWT_ALGORITHM must be one of {', '.join(SUPPORTED_ALGORITHMS)}")
    if settings.jwt_algorithm.startswith("HS"):
        if len(settings.jwt_secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"JWT_SECRET must be set, at least {MIN_SECRET_BYTES} bytes")
        app.config["JWT_SECRET_KEY"] = settings.jwt_secret
    else:
        if not settings.jwt_public_key:
            raise ValueError(f"JWT_PUBLIC_KEY must be set for {settings.jwt_algorithm}")
        app.config["JWT_PUBLIC_KEY"] = settings.jwt_public_key
        app.config["JWT_PRIVATE_KEY"] = settings.jwt_private_key or None
    app.config["JWT_ERROR_MESSAGE_KEY"] = "detail"
    manager = JWTManager(app)

    def unauthorized(detail: str) -> Response:
        return problem_response(
            401, detail, kind="unauthorized", headers={"WWW-Authenticate": "Bearer"}
        )

    manager.unauthorized_loader(
        lambda reason: unauthorized(f"Missing or unusable credentials: {reason}.")
    )
    manager.invalid_token_loader(lambda reason: unauthorized(f"The token is invalid: {reason}."))
    manager.expired_token_loader(lambda _h, _p: unauthorized("The token has expired."))
    manager.needs_fresh_token_loader(lambda _h, _p: unauthorized("A fresh token is required."))
    manager.revoked_token_loader(lambda _h, _p: unauthorized("The token has been revoked."))
    manager.user_lookup_error_loader(lambda _h, _p: unauthorized("The token's subject is unknown."))
    manager.token_verification_failed_loader(
        lambda _h, _p: unauthorized("The token's claims are not valid.")
    )


def _unauthorized(detail: str) -> ApiProblem:
    return ApiProblem(401, detail, kind="unauthorized", headers={"WWW-Authenticate": "Bearer"})


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    role = claims.get("role")
    if role not in ROLES:
        raise _unauthorized("The token has no valid `role` claim.")
    raw_tenant = claims.get("tenant_id")
    tenant: uuid.UUID | None = None
    if raw_tenant is not None:
        try:
            tenant = uuid.UUID(str(raw_tenant))
        except ValueError:
            raise _unauthorized("The token's `tenant_id` claim is not a UUID.") from None
    if tenant is None and role != "admin":
        raise _unauthorized("The token has no `tenant_id` claim.")
    return Principal(subject=str(claims.get("sub", "")), role=str(role), tenant_id=tenant)


class VerifiedTokens:
    """Claims of tokens that passed full verification, keyed by the exact token text.

    Verifying an HS256 token through PyJWT costs about a fifth of a single-event ingest
    request, and a client sends the same token thousands of times. The same bytes verify
    the same way under the same key, so a hit only re-checks time: an entry is used until
    the token's ``exp`` (and never longer than ``ttl``). Failures are never cached.
    """

    def __init__(self, max_entries: int = 10_000, ttl: float = 300.0) -> None:
        self._max_entries = max_entries
        self._ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, dict[str, Any]]] = {}

    def get(self, token: str) -> dict[str, Any] | None:
        hit = self._entries.get(token)
        if hit is None:
            return None
        valid_until, claims = hit
        if time.time() >= valid_until:
            with self._lock:
                self._entries.pop(token, None)
            return None
        return claims

    def put(self, token: str, claims: dict[str, Any]) -> None:
        valid_until = time.time() + self._ttl
        exp = claims.get("exp")
        if isinstance(exp, int | float):
            valid_until = min(valid_until, float(exp))
        with self._lock:
            if len(self._entries) >= self._max_entries:
                # Oldest first: dicts keep insertion order.
                self._entries.pop(next(iter(self._entries)))
            self._entries[token] = (valid_until, claims)


_VERIFIED = VerifiedTokens()
_BEARER = "Bearer "


def _bearer_token(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header in its plain form only;
    anything else goes through flask-jwt-extended's own parsing (and its errors)."""
    if not header.startswith(_BEARER):
        return None
    token = header[len(_BEARER) :]
    return token if token and " " not in token and "," not in token else None


def verified_principal(authorization: str) -> Principal | None:
    """The principal of a plain bearer token this process has fully verified before and
    that is still valid; None for any other header (``authenticate`` deals with it)."""
    token = _bearer_token(authorization)
    claims = _VERIFIED.get(token) if token is not None else None
    if claims is None:
        return None
    try:
        return principal_from_claims(claims)
    except ApiProblem:
        return None


def authenticate() -> Principal:
    token = _bearer_token(request.headers.get("Authorization", ""))
    claims = _VERIFIED.get(token) if token is not None else None
    if claims is None:
        verify_jwt_in_request()
        claims = get_jwt()
        if token is not None:
            _VERIFIED.put(token, claims)
    principal = principal_from_claims(claims)
    g.principal = principal
    return principal


def require_roles(
    roles: frozenset[str], *, tenant: bool = True, platform: bool = False
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Authenticate, then require one of ``roles``, and a tenant in the token if ``tenant``,
    or no tenant in it if ``platform``: an admin token that names a tenant is that tenant's
    admin (cleanup, redaction) and must not manage other tenants."""

    def decorator(view: Callable[P, R]) -> Callable[P, R]:
        @wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            principal = authenticate()
            if principal.role not in roles:
                raise ApiProblem(
                    403, f"The role `{principal.role}` may not do this.", kind="forbidden"
                )
            if platform and principal.tenant_id is not None:
                raise ApiProblem(
                    403,
                    "Managing tenants needs a platform admin token (role `admin` without a "
                    "`tenant_id` claim); this token acts inside one tenant.",
                    kind="forbidden",
                )
            if tenant and principal.tenant_id is None:
                raise ApiProblem(
                    403,
                    "This endpoint acts inside a tenant; the token names none.",
                    kind="forbidden",
                )
            return view(*args, **kwargs)

        return wrapper

    return decorator


def current_principal() -> Principal:
    principal: Principal = g.principal
    return principal


def current_tenant() -> uuid.UUID:
    tenant = current_principal().tenant_id
    assert tenant is not None  # require_roles(tenant=True) guarantees it
    return tenant
