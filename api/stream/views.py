"""``WS /api/v1/logs/stream``: one session per socket.

Under gunicorn's gevent worker a socket is a greenlet (plus simple-websocket's reader
greenlet), not a request thread, so a thousand idle sockets cost memory, not threads, and
ordinary requests keep being served. A plain HTTP GET of the same path answers 426.

Refusals come as close frames (code + reason) after the upgrade rather than as an HTTP
status before it: a browser's WebSocket API never shows a failed handshake's status, but it
does show a close code and reason.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

import jwt
import psycopg
from flask import Blueprint, Response, current_app, g, request
from flask_jwt_extended import decode_token
from flask_jwt_extended.exceptions import JWTExtendedException
from flask_sock import Sock
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout
from simple_websocket import ConnectionClosed, Server
from wsproto.events import TextMessage
from wsproto.utilities import LocalProtocolError

from api.auth import READ_ROLES, Principal, principal_from_claims, require_roles
from api.errors import ApiProblem, problem_response
from api.logs.service import event_json
from api.services import services
from api.stream.hub import HubUnavailable, StreamHub, Subscriber
from api.stream.protocol import (
    CloseCode,
    StreamRefused,
    StreamRequest,
    close_reason,
    event_message,
    heartbeat_message,
    matches,
    parse_request,
    ready_message,
)
from auditlog.settings import Settings

log = logging.getLogger(__name__)

HUB_EXTENSION = "auditlog.stream"
BACKLOG_PAGE = 200  # events per backlog read: at most 200 x 256 KiB
WRITE_CHUNK_BYTES = 256 * 1024  # backlog events per socket write, about
POLL_S = 5.0  # how often an idle session looks at its socket (closed by the peer?)
BEARER = "Bearer "
SEND_BUFFER_BYTES = 256 * 1024  # per socket (Linux doubles it for bookkeeping)

# The backlog: the tenant's events after a seq, filtered, in seq order (the tenant + seq
# index serves it). ``{where}`` is EventFilters.where(): fixed fragments, named parameters.
BACKLOG_SQL = """
SELECT id, tenant_id, seq, created_at, occurred_at, user_id, session_id,
       host(ip_address) AS ip_address, user_agent, action_type, resource_type, resource_id,
       severity, before_state, after_state, metadata, prev_hash, hash, redacted
FROM audit_logs
WHERE {where} AND seq > %(after_seq)s
ORDER BY seq
LIMIT %(limit)s
"""

bp = Blueprint("stream", __name__, url_prefix="/api/v1/logs")
sock = Sock()


def stream_hub() -> StreamHub:
    hub: StreamHub = current_app.extensions[HUB_EXTENSION]
    return hub


class SerialSocket:
    """The connection's socket as simple-websocket sees it, with whole-frame writes.

    simple-websocket writes with ``socket.send``, which may write part of a frame when the
    peer's buffers are full (a slow consumer), and its reader greenlet writes pongs and
    pings while a session may be blocked mid-frame. Here every write is one ``sendall``
    under a lock, with a deadline, so a client that stops reading is dropped instead of
    holding the session forever."""

    def __init__(self, raw: socket.socket, send_timeout_s: float) -> None:
        self._raw = raw
        self._lock = threading.Lock()
        # Reads only happen after a select() says data is there (simple-websocket's ping
        # loop), so this timeout only bounds writes.
        raw.settimeout(send_timeout_s)
        # Events go out as soon as they are committed: no Nagle delay behind an
        # unacknowledged earlier frame (asyncio's and most WebSocket servers' default).
        with contextlib.suppress(OSError):  # not a TCP socket (a Unix socket behind a proxy)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Bound the kernel's memory for a client that stops reading too (Linux would grow a
        # send buffer to net.ipv4.tcp_wmem's maximum, 4 MiB by default, per socket).
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)

    def send(self, data: bytes) -> int:
        with self._lock:
            self._raw.sendall(data)
        return len(data)

    sendall = send

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def send_frames(ws: Server, frames: list[bytes]) -> None:
    """Write whole frames in one socket write: a drain commit arrives as a burst of
    events, and one write (one syscall, one wake-up of the client) per burst instead of
    per event is what keeps many sockets per process cheap."""
    if not frames:
        return
    if not ws.connected:
        raise ConnectionClosed(ws.close_reason, ws.close_message)
    ws.sock.send(b"".join(frames))


def send_messages(ws: Server, texts: list[str]) -> None:
    """``texts`` as text frames built by the connection's own wsproto state (as
    ``ws.send`` builds them), in one write. A client that has left, or started to close,
    ends the session as ``ConnectionClosed``: wsproto refuses to build frames then."""
    if not ws.connected:
        raise ConnectionClosed(ws.close_reason, ws.close_message)
    try:
        frames = [ws.ws.send(TextMessage(data=text)) for text in texts]
    except LocalProtocolError:
        raise ConnectionClosed(ws.close_reason, ws.close_message) from None
    send_frames(ws, frames)


# -- authentication ----------------------------------------------------------------------


def _refuse(reason: str) -> StreamRefused:
    return StreamRefused(CloseCode.POLICY, close_reason(reason))


def _token() -> str:
    header = request.headers.get("Authorization")
    query = request.args.getlist("token")
    if header is not None and query:
        raise _refuse("send the token once: in the Authorization header or the token parameter")
    if header is not None:
        token = header[len(BEARER) :] if header.startswith(BEARER) else ""
        if not token or " " in token:
            raise _refuse("the Authorization header must be `Bearer <token>`")
        return token
    if len(query) > 1 or (query and not query[0]):
        raise _refuse("token: give one token")
    if not query:
        raise _refuse("authentication required: an Authorization: Bearer header or ?token=")
    return query[0]


def authenticate_stream() -> tuple[Principal, float | None]:
    """The socket's principal and its token's expiry (the stream ends then), from the same
    JWT checks as every other endpoint; a ``StreamRefused`` (1008) naming the failure."""
    token = _token()
    try:
        claims = decode_token(token)
    except jwt.ExpiredSignatureError:
        raise _refuse("the token has expired") from None
    except (jwt.InvalidTokenError, JWTExtendedException) as exc:
        raise _refuse(f"the token is invalid: {exc}") from None
    try:
        principal = principal_from_claims(claims)
    except ApiProblem as exc:
        raise _refuse(exc.detail) from None
    if principal.role not in READ_ROLES:
        raise _refuse(f"the role `{principal.role}` may not read events")
    if principal.tenant_id is None:
        raise _refuse("the token names no tenant")
    g.principal = principal
    exp = claims.get("exp")
    return principal, float(exp) if isinstance(exp, int | float) else None


# -- the session -------------------------------------------------------------------------


class StreamSession:
    """One socket: subscribe, send the backlog from PostgreSQL, then live events, each
    exactly once in seq order (``last_seq`` dedupes), with heartbeats."""

    def __init__(
        self,
        ws: Server,
        pool: ConnectionPool,
        tenant_id: uuid.UUID,
        wanted: StreamRequest,
        settings: Settings,
        expires_at: float | None,
    ) -> None:
        self.ws = ws
        self.pool = pool
        self.tenant_id = tenant_id
        self.wanted = wanted
        self.heartbeat_s = settings.stream_heartbeat_seconds
        self.max_buffered = settings.stream_buffer_events
        self.expires_at = expires_at
        self.last_seq = 0
        self.sent = 0

    def run(self, hub: StreamHub) -> None:
        subscriber, head = hub.subscribe(self.tenant_id, self.max_buffered)
        try:
            self._serve(subscriber, head)
        finally:
            hub.unsubscribe(subscriber)

    def _serve(self, subscriber: Subscriber, head: int) -> None:
        since = self.wanted.since_seq
        self.last_seq = head if since is None else since
        self.ws.send(ready_message(self.tenant_id, self.last_seq, head))
        if since is not None:
            self._catch_up()
            # Everything up to the head was committed before we subscribed: read above.
            self.last_seq = max(self.last_seq, head)
        # A resume from far back may take long; the live buffer overflowing meanwhile only
        # means reading PostgreSQL once more for what it dropped.
        while subscriber.resume_after_lag():
            self._catch_up()
        next_heartbeat = time.monotonic() + self.heartbeat_s
        while True:
            self._check_socket()
            wait = min(POLL_S, max(0.0, next_heartbeat - time.monotonic()))
            events = subscriber.take(wait)
            if subscriber.lagging:
                self._recover(subscriber)
                continue
            frames = []
            for event in events:
                if event.seq <= self.last_seq:
                    continue  # already sent from PostgreSQL
                self.last_seq = event.seq
                if matches(
                    self.wanted.filters, event.action_type, event.severity, event.resource_type
                ):
                    frames.append(event.frame)
            send_frames(self.ws, frames)
            self.sent += len(frames)
            if time.monotonic() >= next_heartbeat:
                self.ws.send(heartbeat_message(self.last_seq))
                next_heartbeat = time.monotonic() + self.heartbeat_s

    def _recover(self, subscriber: Subscriber) -> None:
        """The live buffer overflowed: a burst larger than the buffer, or a client that
        reads too slowly. Buffer again from now on and send what was dropped from
        PostgreSQL, at the pace the client reads. If the buffer overflows again before
        that is done, the client is slower than the tenant's events: close it."""
        subscriber.resume_after_lag()
        self._catch_up(recovering=subscriber)
        if subscriber.lagging:
            raise self._slow_consumer()

    def _slow_consumer(self) -> StreamRefused:
        return StreamRefused(
            CloseCode.SLOW_CONSUMER,
            f"slow consumer: over {self.max_buffered} events arrived while this socket "
            f"caught up; reconnect with since_seq={self.last_seq}",
        )

    def _check_socket(self) -> None:
        if not self.ws.connected:
            raise ConnectionClosed(self.ws.close_reason, self.ws.close_message)
        # Nothing is expected from the client; drop what it sent so it cannot pile up.
        while self.ws.receive(timeout=0) is not None:
            pass
        if self.expires_at is not None and time.time() >= self.expires_at:
            raise _refuse("the token has expired")

    def _catch_up(self, recovering: Subscriber | None = None) -> None:
        """Send the events after ``last_seq`` from PostgreSQL, filtered, until there are
        none. Written in chunks of about WRITE_CHUNK_BYTES, so a slow client holds a
        write (and a recovering socket its overflow check) for a short while only."""
        where, params = self.wanted.filters.where(self.tenant_id)
        query = sql.SQL(BACKLOG_SQL).format(where=where)
        while True:
            with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                rows = cur.execute(
                    query, {**params, "after_seq": self.last_seq, "limit": BACKLOG_PAGE}
                ).fetchall()
            chunk: list[str] = []
            chunk_bytes = 0
            for number, row in enumerate(rows, 1):
                text = event_message(event_json(row))
                chunk.append(text)
                chunk_bytes += len(text)
                if chunk_bytes >= WRITE_CHUNK_BYTES or number == len(rows):
                    send_messages(self.ws, chunk)
                    self.sent += len(chunk)
                    self.last_seq = row["seq"]
                    chunk, chunk_bytes = [], 0
                    if recovering is not None and recovering.lagging:
                        raise self._slow_consumer()
            if len(rows) < BACKLOG_PAGE:
                return
            self._check_socket()


@bp.before_request
def _without_compression() -> None:
    """Per-message deflate is not negotiated: its compression context is per socket, so
    every event would be compressed once per socket (the bulk of the CPU per delivery),
    whereas uncompressed, one rendered text serves every socket. (flask-sock accepts the
    extension whenever the client offers it; this hides the offer.)"""
    request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)


def _close(ws: Server, code: int, reason: str) -> None:
    with contextlib.suppress(ConnectionClosed, OSError):
        ws.close(code, close_reason(reason))


def _stream(ws: Server) -> None:
    svc = services()
    ws.sock = SerialSocket(ws.sock, send_timeout_s=2 * svc.settings.stream_heartbeat_seconds)
    session: StreamSession | None = None
    outcome = "closed by client"
    try:
        principal, expires_at = authenticate_stream()
        wanted = parse_request({key: request.args.getlist(key) for key in request.args})
        assert principal.tenant_id is not None  # authenticate_stream refuses tokens without
        session = StreamSession(ws, svc.pool, principal.tenant_id, wanted, svc.settings, expires_at)
        session.run(stream_hub())
    except StreamRefused as refused:
        outcome = f"{int(refused.code)} {refused.reason}"
        _close(ws, refused.code, refused.reason)
    except (HubUnavailable, PoolTimeout, psycopg.OperationalError) as exc:
        log.warning("stream.database_unavailable", extra={"error": str(exc)[:300]})
        resume = f"; reconnect with since_seq={session.last_seq}" if session else ""
        outcome = "database unavailable"
        _close(ws, CloseCode.TRY_AGAIN_LATER, f"the database is unavailable{resume}")
    except ConnectionClosed:
        pass
    except OSError as exc:  # the send deadline passed, or the peer reset the connection
        outcome = f"socket error: {type(exc).__name__}"
        ws.connected = False  # a close frame could not be written either
    except Exception:  # logged; the socket is upgraded, no HTTP 500 can follow
        log.exception("stream.failed")
        outcome = "internal error"
        _close(ws, CloseCode.INTERNAL_ERROR, "internal error; reconnect with since_seq")
    finally:
        log.info(
            "stream.closed",
            extra={"outcome": outcome, "events_sent": session.sent if session else 0},
        )


# flask-sock's decorator is untyped; the view it wraps takes the simple-websocket Server.
_route = cast(Callable[[Callable[[Server], None]], object], sock.route("/stream", bp=bp))
_route(_stream)


@bp.get("/stream")
@require_roles(READ_ROLES)
def stream_over_http() -> Response:
    """The same path without an upgrade: authenticated like every other read (401/403, so
    a client learns about its token here too), then told to use a WebSocket."""
    return problem_response(
        426,
        "This is a WebSocket endpoint: connect with a WebSocket client (ws:// or wss://).",
        kind="websocket-required",
    )
