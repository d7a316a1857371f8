"""Fan-out of committed events to the live-tail sockets of one API process.

One listener per process (a greenlet under gunicorn's gevent worker, a thread otherwise)
holds a ``LISTEN audit_events`` connection. A notification carries only
``<tenant>:<last_seq>``; for a tenant that has sockets here, the hub reads the rows after
its per-tenant watermark once (one query, whatever the number of sockets), renders each
event's JSON once and offers it to every subscriber of that tenant. Each subscriber has a
bounded buffer, so a slow socket costs at most ``max_buffered`` references to shared
messages, never an unbounded backlog.

The watermark gives the resume guarantee: every event with a seq above the watermark at
the moment a subscriber is added will be offered to it later, and every event at or below
it was committed before the subscriber was added, so a PostgreSQL read made after
``subscribe`` returns covers it. Fetch, publish and watermark update happen under one lock,
which ``subscribe`` and ``unsubscribe`` also take.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from wsproto.frame_protocol import FrameProtocol

from api.logs.service import event_json
from api.stream.protocol import event_message
from auditlog.store.pool import connect
from auditlog.store.queries import QUERIES

log = logging.getLogger(__name__)

# The chain head is committed with the rows, so it is the highest committed seq.
CHAIN_HEAD = "SELECT last_seq FROM tenant_chain_heads WHERE tenant_id = %(tenant_id)s"
FETCH_PAGE = 1000
YIELD_EVERY = 50  # events rendered between two chances for other greenlets to run
LISTEN_WAIT_S = 1.0  # how often the listener looks up from its connection (to stop)
MAX_BACKOFF_S = 5.0


class HubUnavailable(Exception):
    """The listener is not connected to PostgreSQL."""


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """One committed event as the hub offers it: what the filters look at, and the whole
    WebSocket text frame, built once and written as it is to every socket (a server's
    frames are unmasked and, without compression, the same for every connection)."""

    tenant_id: uuid.UUID
    seq: int
    action_type: str
    severity: str
    resource_type: str
    frame: bytes

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> LiveEvent:
        return cls(
            tenant_id=row["tenant_id"],
            seq=row["seq"],
            action_type=row["action_type"],
            severity=row["severity"],
            resource_type=row["resource_type"],
            frame=bytes(_FRAMER.send_data(event_message(event_json(row)), fin=True)),
        )


# Builds complete server-side text frames; holds no state between whole messages.
_FRAMER = FrameProtocol(client=False, extensions=[])


class Subscriber:
    """One socket's buffer of live events, at most ``max_buffered`` of them.

    An overflow drops the buffer and sets ``lagging``; nothing more is buffered until the
    session calls ``resume_after_lag``. The dropped events are in PostgreSQL, so the
    session reads them from there (at the pace its client reads) and then rejoins the
    live feed; what it does when that happens too often is its policy, not the buffer's.
    """

    def __init__(self, tenant_id: uuid.UUID, max_buffered: int) -> None:
        self.tenant_id = tenant_id
        self.max_buffered = max_buffered
        self.lagging = False
        self._items: deque[LiveEvent] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()

    def offer(self, event: LiveEvent) -> None:
        """Called by the hub; never blocks."""
        if event.tenant_id != self.tenant_id:  # the hub keys by tenant; never cross over
            return
        with self._lock:
            if self.lagging:
                return
            if len(self._items) >= self.max_buffered:
                self._items.clear()
                self.lagging = True
            else:
                self._items.append(event)
        self._wake.set()

    def take(self, timeout: float) -> list[LiveEvent]:
        """Everything buffered, waiting up to ``timeout`` seconds for something."""
        if not self._items and not self.lagging:
            self._wake.wait(timeout)
        with self._lock:
            self._wake.clear()
            items = list(self._items)
            self._items.clear()
        return items

    def resume_after_lag(self) -> bool:
        """If the buffer overflowed: buffer again from now on and return True (the caller
        must then read PostgreSQL for what was dropped before it uses the buffer)."""
        with self._lock:
            if not self.lagging:
                return False
            self.lagging = False
            return True

    @property
    def buffered(self) -> int:
        return len(self._items)


class StreamHub:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._lock = threading.Lock()
        self._subscribers: dict[uuid.UUID, set[Subscriber]] = {}
        self._watermarks: dict[uuid.UUID, int] = {}
        self._listening = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._fetch_conn: psycopg.Connection[Any] | None = None
        self._start_lock = threading.Lock()

    # -- subscribers -------------------------------------------------------------------

    def subscribe(
        self, tenant_id: uuid.UUID, max_buffered: int, wait_s: float = 10.0
    ) -> tuple[Subscriber, int]:
        """Add a subscriber; return it and the tenant's watermark (every event above it
        will be offered to the subscriber, every event at or below it is committed)."""
        self._ensure_started()
        if not self._listening.wait(wait_s):
            raise HubUnavailable("the live-tail listener is not connected to PostgreSQL")
        subscriber = Subscriber(tenant_id, max_buffered)
        with self._lock:
            watermark = self._watermarks.get(tenant_id)
            if watermark is None:
                # Read under the lock, after LISTEN is in place: a notification the
                # listener already skipped (no watermark yet) is for an event at or below
                # this head; any later one waits for the lock and then sees the watermark.
                watermark = self._chain_head(tenant_id)
                self._watermarks[tenant_id] = watermark
            self._subscribers.setdefault(tenant_id, set()).add(subscriber)
        return subscriber, watermark

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            group = self._subscribers.get(subscriber.tenant_id)
            if group is None:
                return
            group.discard(subscriber)
            if not group:
                del self._subscribers[subscriber.tenant_id]
                del self._watermarks[subscriber.tenant_id]

    # -- listener ----------------------------------------------------------------------

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._stopping.clear()
                self._thread = threading.Thread(
                    target=self._run, name="stream-hub-listener", daemon=True
                )
                self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(LISTEN_WAIT_S * 3)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                with (
                    connect(self.database_url, autocommit=True) as listener,
                    connect(self.database_url, autocommit=True) as fetcher,
                ):
                    listener.execute("LISTEN audit_events")
                    self._fetch_conn = fetcher
                    with self._lock:
                        # After a reconnect: what was committed while we were away.
                        for tenant_id in list(self._watermarks):
                            self._publish_after_watermark(tenant_id)
                    self._listening.set()
                    log.info("stream.listening")
                    backoff = 0.5
                    while not self._stopping.is_set():
                        for notify in listener.notifies(timeout=LISTEN_WAIT_S):
                            self._on_notify(notify.payload)
            except psycopg.Error as exc:
                log.warning("stream.listener_failed", extra={"error": str(exc)[:300]})
            except Exception:  # logged; a bug must not end every socket's live feed
                log.exception("stream.listener_crashed")
            finally:
                self._listening.clear()
                self._fetch_conn = None
            if not self._stopping.is_set():
                time.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _on_notify(self, payload: str) -> None:
        try:
            raw_tenant, raw_seq = payload.split(":", 1)
            tenant_id, last_seq = uuid.UUID(raw_tenant), int(raw_seq)
        except ValueError:
            log.warning("stream.bad_notification", extra={"payload": payload[:100]})
            return
        with self._lock:
            watermark = self._watermarks.get(tenant_id)
            if watermark is not None and last_seq > watermark:
                self._publish_after_watermark(tenant_id)

    def _publish_after_watermark(self, tenant_id: uuid.UUID) -> None:
        """Offer every committed event above the tenant's watermark, then raise it.
        Called with ``_lock`` held."""
        conn = self._fetch_conn
        assert conn is not None  # only called while connected
        while True:
            with conn.cursor(row_factory=dict_row) as cur:
                rows = cur.execute(
                    QUERIES["events_after_seq"],
                    {
                        "tenant_id": tenant_id,
                        "after_seq": self._watermarks[tenant_id],
                        "limit": FETCH_PAGE,
                    },
                ).fetchall()
            subscribers = list(self._subscribers.get(tenant_id, ()))
            for number, row in enumerate(rows, 1):
                event = LiveEvent.from_row(row)
                for subscriber in subscribers:
                    subscriber.offer(event)
                if number % YIELD_EVERY == 0:
                    # A big commit (bulk ingest) is thousands of events to render: let the
                    # process serve its requests and sockets in between (under gevent a
                    # zero sleep is a switch to the other greenlets).
                    time.sleep(0)
            if rows:
                self._watermarks[tenant_id] = rows[-1]["seq"]
            if len(rows) < FETCH_PAGE:
                return

    def _chain_head(self, tenant_id: uuid.UUID) -> int:
        conn = self._fetch_conn
        if conn is None:
            raise HubUnavailable("the live-tail listener is not connected to PostgreSQL")
        row = conn.execute(CHAIN_HEAD, {"tenant_id": tenant_id}).fetchone()
        return int(row[0]) if row is not None else 0
