"""The live tail (``WS /api/v1/logs/stream``) against real gunicorn processes (gevent
worker), real PostgreSQL LISTEN/NOTIFY and events committed by the real drain.

Two API processes serve the same database, so fan-out across processes is exercised; a
third one has a tiny per-socket buffer for the slow-consumer case. Clients are the
``websockets`` library's synchronous client."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
import psycopg
import pytest
import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from auditlog.drain import Drainer
from auditlog.events import AcceptedEvent, EventIn
from auditlog.ids import new_event_id
from auditlog.queue import EventQueue, pack_records
from auditlog.settings import Settings
from infra import run as platform

HEARTBEAT_S = 2
SLOW_BUFFER = 20
PATH = "/api/v1/logs/stream"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Api:
    port: int

    def ws_url(self, **params: Any) -> str:
        query = urlencode(params, doseq=True)
        return f"ws://127.0.0.1:{self.port}{PATH}" + (f"?{query}" if query else "")


def _spawn(
    settings: Settings, logs: Path, name: str, extra: dict[str, str]
) -> tuple[platform.Child, int]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "SQS_QUEUE_NAME": settings.sqs_queue_name,
        "SQS_DLQ_NAME": settings.sqs_dlq_name,
        "LOG_LEVEL": "WARNING",
        "STREAM_HEARTBEAT_SECONDS": str(HEARTBEAT_S),
        **extra,
    }
    return platform.spawn(name, platform.api_command(port, workers=1), env, logs), port


@pytest.fixture(scope="module")
def apis(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Api, Api, Api]]:
    """Two ordinary API processes and one whose sockets buffer only SLOW_BUFFER events."""
    logs = tmp_path_factory.mktemp("stream_logs")
    spawned = [
        _spawn(settings, logs, "api-1", {}),
        _spawn(settings, logs, "api-2", {}),
        _spawn(
            settings,
            logs,
            "api-slow",
            # A long heartbeat: the send deadline (two heartbeats) must outlast the commits
            # of the slow-consumer test, so the close frame is sent rather than dropped.
            {"STREAM_BUFFER_EVENTS": str(SLOW_BUFFER), "STREAM_HEARTBEAT_SECONDS": "15"},
        ),
    ]
    try:
        for child, port in spawned:
            platform.wait_http(f"http://127.0.0.1:{port}/healthz", 60, child)
        yield Api(spawned[0][1]), Api(spawned[1][1]), Api(spawned[2][1])
    finally:
        platform.stop_children([child for child, _ in spawned])


# -- helpers -----------------------------------------------------------------------------

BASE = {"action_type": "CREATE", "resource_type": "doc", "resource_id": "1", "severity": "INFO"}


def records(tenant: uuid.UUID, n: int, **fields: Any) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        event_id, created_at = new_event_id()
        body = EventIn.model_validate({**BASE, "resource_id": str(i), **fields})
        out.append(AcceptedEvent(event_id, tenant, created_at, body).to_record())
    return out


def commit(settings: Settings, queue: EventQueue, batch: list[dict[str, Any]]) -> None:
    """Queue ``batch`` and drain it with the real drain until every event is committed."""
    queue.send_bodies(list(pack_records(batch)))
    drainer = Drainer(queue, settings.database_url)
    stored, deadline = 0, time.monotonic() + 30
    try:
        while stored < len(batch) and time.monotonic() < deadline:
            stored += drainer.process(drainer.collect(1)).stored
    finally:
        drainer.close()
    assert stored == len(batch)


def open_stream(url: str, token: str | None = None, **kwargs: Any) -> ClientConnection:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return connect(url, additional_headers=headers, open_timeout=10, **kwargs)


def receive(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    message = json.loads(ws.recv(timeout=timeout))
    assert isinstance(message, dict)
    return message


def ready(ws: ClientConnection) -> dict[str, Any]:
    message = receive(ws)
    assert message["type"] == "ready", message
    return message


def events(ws: ClientConnection, count: int, timeout: float = 15) -> list[dict[str, Any]]:
    """The next ``count`` event messages (heartbeats skipped)."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        message = receive(ws, timeout=max(0.1, deadline - time.monotonic()))
        if message["type"] == "event":
            out.append(message)
    return out


def no_more_events(ws: ClientConnection, wait: float = 1.0) -> None:
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = receive(ws, timeout=left)
        except TimeoutError:
            return
        assert message["type"] == "heartbeat", f"unexpected message {message}"


def closed_with(ws: ClientConnection, timeout: float = 10) -> tuple[int, str]:
    """Read until the server closes; the close code and reason it sent."""
    deadline = time.monotonic() + timeout
    with pytest.raises(ConnectionClosed) as info:  # noqa: PT012 (read until it closes)
        while time.monotonic() < deadline:
            ws.recv(timeout=max(0.1, deadline - time.monotonic()))
    assert info.value.rcvd is not None, "closed without a close frame"
    return info.value.rcvd.code, info.value.rcvd.reason


# -- authentication and parameters -----------------------------------------------------


def test_plain_http_get_is_authenticated_then_told_to_use_a_websocket(
    apis: tuple[Api, Api, Api], tenant: uuid.UUID, token_for: Callable[..., str]
) -> None:
    url = f"http://127.0.0.1:{apis[0].port}{PATH}"
    assert requests.get(url, timeout=10).status_code == 401
    writer = {"Authorization": f"Bearer {token_for(tenant, role='writer')}"}
    assert requests.get(url, headers=writer, timeout=10).status_code == 403
    reader = {"Authorization": f"Bearer {token_for(tenant, role='reader')}"}
    response = requests.get(url, headers=reader, timeout=10)
    assert response.status_code == 426
    assert response.headers["Content-Type"] == "application/problem+json"
    assert "WebSocket" in response.json()["detail"]


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("none", "authentication required"),
        ("garbage", "the token is invalid"),
        ("wrong-secret", "the token is invalid"),
        ("expired", "the token has expired"),
        ("not-bearer", "must be `Bearer <token>`"),
        ("both", "send the token once"),
        ("writer-role", "the role `writer` may not read events"),
        ("no-tenant", "the token names no tenant"),
        ("bad-role", "no valid `role` claim"),
        ("tenant-id-param", "tenant_id is not accepted"),
    ],
)
def test_every_auth_failure_is_closed_with_1008_and_a_reason(
    apis: tuple[Api, Api, Api],
    settings: Settings,
    tenant: uuid.UUID,
    token_for: Callable[..., str],
    how: str,
    reason: str,
) -> None:
    good = token_for(tenant)
    url, headers = apis[0].ws_url(), {}
    if how == "garbage":
        headers = {"Authorization": "Bearer not.a.jwt"}
    elif how == "wrong-secret":
        claims = jwt.decode(good, options={"verify_signature": False})
        forged = jwt.encode(claims, "x" * 40, algorithm="HS256")
        url = apis[0].ws_url(token=forged)
    elif how == "expired":
        headers = {"Authorization": f"Bearer {token_for(tenant, ttl_seconds=-10)}"}
    elif how == "not-bearer":
        headers = {"Authorization": f"Basic {good}"}
    elif how == "both":
        headers = {"Authorization": f"Bearer {good}"}
        url = apis[0].ws_url(token=good)
    elif how == "writer-role":
        url = apis[0].ws_url(token=token_for(tenant, role="writer"))
    elif how == "no-tenant":
        url = apis[0].ws_url(token=token_for(None, role="admin"))
    elif how == "bad-role":
        claims = jwt.decode(good, options={"verify_signature": False})
        url = apis[0].ws_url(
            token=jwt.encode({**claims, "role": "root"}, settings.jwt_secret, algorithm="HS256")
        )
    elif how == "tenant-id-param":
        # The seed's unauthenticated form, even next to a valid token, is refused.
        url = apis[0].ws_url(tenant_id=str(tenant), token=good)
    with connect(url, additional_headers=headers or None, open_timeout=10) as ws:
        code, text = closed_with(ws)
    assert code == 1008
    assert reason in text


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since_seq": "-1"}, "since_seq"),
        ({"since_seq": "ten"}, "since_seq"),
        ({"since_seq": str(2**64)}, "since_seq"),
        ({"min_severity": "LOUD"}, "min_severity"),
        ({"severity": "INFO,LOUD"}, "severity"),
        ({"action_type": "EXPLODE"}, "action_type"),
        ({"resource_type": ""}, "resource_type"),
        ({"user_id": "x"}, "user_id"),
    ],
)
def test_bad_parameters_close_with_4400_naming_the_parameter(
    apis: tuple[Api, Api, Api],
    tenant: uuid.UUID,
    token_for: Callable[..., str],
    params: dict[str, str],
    field: str,
) -> None:
    with open_stream(apis[0].ws_url(**params), token_for(tenant)) as ws:
        code, text = closed_with(ws)
    assert code == 4400
    assert text.startswith(f"{field}: ")


# -- delivery ----------------------------------------------------------------------------


def test_events_reach_every_socket_of_the_tenant_once_in_order_across_processes(
    apis: tuple[Api, Api, Api],
    settings: Settings,
    queue: EventQueue,
    new_tenant: Callable[..., uuid.UUID],
    token_for: Callable[..., str],
) -> None:
    tenant_a, tenant_b = new_tenant(), new_tenant()
    token_a, token_b = token_for(tenant_a, role="reader"), token_for(tenant_b, role="auditor")
    with (
        open_stream(apis[0].ws_url(), token_a) as a1,
        open_stream(apis[1].ws_url(token=token_a)) as a2,  # the browser form, other process
        open_stream(apis[1].ws_url(), token_b) as b,
        open_stream(
            apis[0].ws_url(min_severity="ERROR", action_type="DELETE,UPDATE"), token_a
        ) as filtered,
        open_stream(apis[1].ws_url(resource_type="invoice"), token_a) as by_resource,
    ):
        for ws in (a1, a2, b, filtered, by_resource):
            assert ready(ws)["head_seq"] == 0
        batch_a = (
            records(tenant_a, 5)
            + records(tenant_a, 3, action_type="DELETE", severity="CRITICAL")
            + records(tenant_a, 2, action_type="DELETE", severity="WARNING")
            + records(tenant_a, 2, action_type="UPDATE", severity="ERROR", resource_type="invoice")
        )
        batch_b = records(tenant_b, 4, action_type="VIEW")
        commit(settings, queue, batch_a + batch_b)

        for ws in (a1, a2):
            got = events(ws, 12)
            assert [e["seq"] for e in got] == list(range(1, 13))
            assert {e["id"] for e in got} == {r["id"] for r in batch_a}
            assert {e["tenant_id"] for e in got} == {str(tenant_a)}
            no_more_events(ws)
        got_b = events(b, 4)
        assert [e["seq"] for e in got_b] == [1, 2, 3, 4]
        assert {e["id"] for e in got_b} == {r["id"] for r in batch_b}
        no_more_events(b)  # B never receives A's events

        picked = events(filtered, 5)
        assert all(e["severity"] in ("ERROR", "CRITICAL") for e in picked)
        assert all(e["action_type"] in ("DELETE", "UPDATE") for e in picked)
        assert [e["seq"] for e in picked] == sorted(e["seq"] for e in picked)
        no_more_events(filtered)
        invoices = events(by_resource, 2)
        assert {e["resource_type"] for e in invoices} == {"invoice"}
        no_more_events(by_resource)


def test_event_messages_are_the_api_event_json(
    apis: tuple[Api, Api, Api],
    settings: Settings,
    queue: EventQueue,
    tenant: uuid.UUID,
    token_for: Callable[..., str],
) -> None:
    token = token_for(tenant)
    with open_stream(apis[0].ws_url(), token) as ws:
        # The client offers per-message deflate (browsers do); the server declines it.
        assert ws.protocol.extensions == []
        ready(ws)
        commit(settings, queue, records(tenant, 1, metadata={"k": "é"}, before_state={"a": 1}))
        (message,) = events(ws, 1)
    stored = requests.get(
        f"http://127.0.0.1:{apis[0].port}/api/v1/logs/{message['id']}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert stored.status_code == 200
    assert {**stored.json(), "type": "event"} == message


def test_since_seq_sends_the_backlog_then_live_without_gap_or_duplicate(
    apis: tuple[Api, Api, Api],
    settings: Settings,
    queue: EventQueue,
    tenant: uuid.UUID,
    token_for: Callable[..., str],
) -> None:
    commit(settings, queue, records(tenant, 30))
    with (
        open_stream(apis[0].ws_url(since_seq=10), token_for(tenant)) as ws,
        open_stream(
            apis[1].ws_url(since_seq=0, action_type="DELETE"), token_for(tenant)
        ) as deletes,
    ):
        hello = ready(ws)
        assert (hello["since_seq"], hello["head_seq"]) == (10, 30)
        assert [e["seq"] for e in events(ws, 20)] == list(range(11, 31))
        ready(deletes)
        commit(settings, queue, records(tenant, 10) + records(tenant, 2, action_type="DELETE"))
        assert [e["seq"] for e in events(ws, 12)] == list(range(31, 43))
        no_more_events(ws)
        assert [e["action_type"] for e in events(deletes, 2)] == ["DELETE", "DELETE"]
        no_more_events(deletes)


def test_resume_across_reconnects_during_load_misses_and_repeats_nothing(
    apis: tuple[Api, Api, Api],
    settings: Settings,
    queue: EventQueue,
    tenant: uuid.UUID,
    token_for: Callable[..., str],
) -> None:
    """A producer commits 20 batches while the client disconnects after every few events
    and resumes from the last seq it saw, alternating between the two API processes."""
    token = token_for(tenant)
    batches, per_batch = 20, 15
    total = batches * per_batch
    done = threading.Event()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            for _ in range(batches):
                commit(settings, queue, records(tenant, per_batch))
        except Exception as exc:  # noqa: BLE001 (reported by the test thread)
            failure.append(exc)
        finally:
            done.set()

    producer = threading.Thread(target=produce)
    seen: list[int] = []
    reconnects = 0
    producer.start()
    try:
        while len(seen) < total:
            api = apis[reconnects % 2]
            since = seen[-1] if seen else 0
            with open_stream(api.ws_url(since_seq=since), token) as ws:
                assert ready(ws)["since_seq"] == since
                # Read a few events, then drop the connection in the middle of the load.
                for _ in range(min(37, total - len(seen))):
                    seen.append(events(ws, 1, timeout=30)[0]["seq"])
            reconnects += 1
    finally:
        producer.join(60)
    assert not failure, failure
    assert done.is_set()
    assert seen == list(range(1, total + 1))
    assert reconnects >= 8


def test_sockets_survive_the_listener_losing_its_database_connection(
    apis: tuple[Api, Api, Api],
    settings: Settings,
    queue: EventQueue,
    db: psycopg.Connection[Any],
    tenant: uuid.UUID,
    token_for: Callable[..., str],
) -> None:
    """PostgreSQL ends the API processes' LISTEN connections; notifications sent meanwhile
    are lost, so after reconnecting the listener reads what was committed since its
    watermark. The open socket sees every event once, in order, and is never closed."""
    with open_stream(apis[0].ws_url(), token_for(tenant)) as ws:
        ready(ws)
        commit(settings, queue, records(tenant, 3))
        assert [e["seq"] for e in events(ws, 3)] == [1, 2, 3]
        ended = db.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query = 'LISTEN audit_events'"
        ).fetchone()
        assert ended is not None
        assert ended[0] >= 1  # this socket's process; a listener starts with its first socket
        commit(settings, queue, records(tenant, 4))
        assert [e["seq"] for e in events(ws, 4)] == [4, 5, 6, 7]
        no_more_events(ws)


def test_heartbeats_carry_the_last_seq_also_for_filtered_streams(
    apis: tuple[Api, Api, Api],
    settings: Settings,
    queue: EventQueue,
    tenant: uuid.UUID,
    token_for: Callable[..., str],
) -> None:
    with open_stream(apis[0].ws_url(action_type="DELETE"), token_for(tenant)) as ws:
        ready(ws)
        commit(settings, queue, records(tenant, 3))  # none of them match
        deadline = time.monotonic() + 5 * HEARTBEAT_S
        beat: dict[str, Any] = {}
        while time.monotonic() < deadline:
            beat = receive(ws, timeout=3 * HEARTBEAT_S)
            assert beat["type"] == "heartbeat"
            if beat["last_seq"] == 3:
                break
        assert beat["last_seq"] == 3


def test_a_client_that_never_answers_pings_is_disconnected(
    apis: tuple[Api, Api, Api], tenant: uuid.UUID, token_for: Callable[..., str]
) -> None:
    """A raw socket that does the handshake and then never reads or answers: the server's
    pings go unanswered and it ends the connection within two heartbeat intervals."""
    raw = socket.create_connection(("127.0.0.1", apis[0].port), timeout=10)
    request = (
        f"GET {PATH}?token={token_for(tenant)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    raw.sendall(request.encode())
    started = time.monotonic()
    received = b""
    try:
        while chunk := raw.recv(65536):
            received += chunk
    finally:
        raw.close()
    assert b" 101 " in received.split(b"\r\n", 1)[0]
    assert b"Ping/Pong timeout" in received  # the close frame's reason
    assert time.monotonic() - started <= 5 * HEARTBEAT_S  # two intervals, and slack


def test_a_burst_larger_than_the_buffer_comes_from_postgresql_without_a_close(
    apis: tuple[Api, Api, Api],
    settings: Settings,
    queue: EventQueue,
    tenant: uuid.UUID,
    token_for: Callable[..., str],
) -> None:
    """One commit of 3 x SLOW_BUFFER events overflows the socket's buffer at once; the
    session sends what the buffer dropped from PostgreSQL and rejoins the live feed."""
    with open_stream(apis[2].ws_url(), token_for(tenant)) as ws:
        ready(ws)
        commit(settings, queue, records(tenant, 3 * SLOW_BUFFER))
        assert [e["seq"] for e in events(ws, 3 * SLOW_BUFFER)] == list(
            range(1, 3 * SLOW_BUFFER + 1)
        )
        commit(settings, queue, records(tenant, 2))
        assert [e["seq"] for e in events(ws, 2)] == [61, 62]
        no_more_events(ws)


def test_a_client_slower_than_its_events_is_closed_as_a_slow_consumer(
    apis: tuple[Api, Api, Api],
    settings: Settings,
    queue: EventQueue,
    tenant: uuid.UUID,
    token_for: Callable[..., str],
) -> None:
    """Events of ~48 KB keep being committed while the client reads three a second: its
    buffer overflows, and overflows again while the session sends the dropped events from
    PostgreSQL, so the session closes it with 4429 and the seq to resume from. Everything
    the client got before the close is in order without a gap."""
    padding = {f"k{i}": os.urandom(8000).hex() for i in range(3)}  # incompressible
    stop = threading.Event()

    def produce() -> None:
        for _ in range(40):
            if stop.is_set():
                return
            commit(settings, queue, records(tenant, 15, metadata=padding))

    producer = threading.Thread(target=produce, daemon=True)
    # Little buffering on the client's side (the server bounds its own send buffer).
    raw = socket.create_connection(("127.0.0.1", apis[2].port))
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    seqs: list[int] = []
    try:
        with open_stream(
            apis[2].ws_url(), token_for(tenant), compression=None, sock=raw, max_queue=2
        ) as ws:
            ready(ws)
            producer.start()
            with pytest.raises(ConnectionClosed) as info:  # noqa: PT012 (read until closed)
                while True:
                    message = receive(ws, timeout=30)
                    if message["type"] == "event":
                        seqs.append(message["seq"])
                    time.sleep(0.3)
    finally:
        stop.set()
        producer.join(60)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 4429
    assert info.value.rcvd.reason.startswith("slow consumer")
    assert info.value.rcvd.reason.endswith(f"since_seq={seqs[-1]}")
    assert seqs == list(range(1, len(seqs) + 1))
