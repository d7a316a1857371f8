"""Moving events from SQS into PostgreSQL with an exactly-once effect.

One batch, in one transaction: COPY the events into a staging table, lock the chain heads
of the batch's tenants, drop ids that are already stored, assign each tenant's next ``seq``
values and hash chain links, INSERT, advance the heads, NOTIFY, COMMIT. Only after the
commit are the messages deleted from SQS. A crash anywhere before the delete means the
messages come back and the batch is redone; the id check makes that harmless.

A message that cannot be parsed or validated is left undeleted: SQS moves it to the
dead-letter queue after ``maxReceiveCount`` receives, and the rest of the batch goes on.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import psycopg

from auditlog.chain import link_hash
from auditlog.events import RECORD_FIELDS, ActionType, Severity, canonical_json, json_bytes
from auditlog.queue import BadEnvelope, EventQueue, ReceivedMessage, decode_envelope
from auditlog.store.pool import connect
from auditlog.store.queries import QUERIES

log = logging.getLogger(__name__)


@dataclass
class ParsedMessage:
    message: ReceivedMessage
    records: list[dict[str, Any]]


@dataclass
class BatchResult:
    messages: int = 0
    events_received: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected_messages: int = 0
    oldest_message_age_s: float = 0.0
    db_seconds: float = 0.0


@dataclass
class DrainStats:
    batches: int = 0
    messages: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected_messages: int = 0
    max_lag_s: float = 0.0
    batch_seconds: list[float] = field(default_factory=list)

    def add(self, result: BatchResult) -> None:
        self.batches += 1
        self.messages += result.messages
        self.stored += result.stored
        self.duplicates += result.duplicates
        self.rejected_messages += result.rejected_messages
        self.max_lag_s = max(self.max_lag_s, result.oldest_message_age_s)
        self.batch_seconds.append(result.db_seconds)


_RECORD_KEYS = frozenset(RECORD_FIELDS)
# The API writes UUIDs in their canonical lowercase form; nothing else is a queued record.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ACTIONS = frozenset(a.value for a in ActionType)
_SEVERITIES = frozenset(s.value for s in Severity)


def _check_uuid(value: Any, name: str) -> None:
    if not isinstance(value, str) or _CANONICAL_UUID.fullmatch(value) is None:
        raise ValueError(f"{name} must be a UUID in canonical lowercase form")


def validate_record(record: dict[str, Any]) -> None:
    """Check a queued record's shape before it is staged, so one bad record cannot fail a
    batch. The API validated the event in full; this is the cheap structural check the hot
    path can afford (a value the database still refuses is isolated message by message)."""
    if record.keys() != _RECORD_KEYS:
        raise ValueError("record fields differ from the stored event fields")
    _check_uuid(record["id"], "id")
    _check_uuid(record["tenant_id"], "tenant_id")
    datetime.fromisoformat(record["created_at"])
    if record["action_type"] not in _ACTIONS or record["severity"] not in _SEVERITIES:
        raise ValueError("unknown action_type or severity")
    for name in ("resource_type", "resource_id"):
        if not isinstance(record[name], str) or not record[name]:
            raise ValueError(f"{name} must be a non-empty string")
    for name in ("session_id", "user_agent", "ip_address"):
        if record[name] is not None and not isinstance(record[name], str):
            raise ValueError(f"{name} must be a string")
    if record["user_id"] is not None:
        _check_uuid(record["user_id"], "user_id")
    if record["occurred_at"] is not None:
        datetime.fromisoformat(record["occurred_at"])
    for name in ("before_state", "after_state", "metadata"):
        if record[name] is not None and not isinstance(record[name], dict):
            raise ValueError(f"{name} must be a JSON object")


def parse_messages(
    messages: Sequence[ReceivedMessage],
) -> tuple[list[ParsedMessage], list[ReceivedMessage]]:
    good: list[ParsedMessage] = []
    bad: list[ReceivedMessage] = []
    for message in messages:
        try:
            records = decode_envelope(message.body)
            for record in records:
                validate_record(record)
        except (BadEnvelope, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning(
                "drain.bad_message",
                extra={
                    "message_id": message.message_id,
                    "receive_count": message.receive_count,
                    "error": str(exc)[:300],
                },
            )
            bad.append(message)
            continue
        good.append(ParsedMessage(message, records))
    return good, bad


_JSON_COLUMNS = frozenset({"before_state", "after_state", "metadata"})


def _json_text(value: Any) -> str:
    # jsonb keeps its own key order, so any valid spelling will do: the C encoder's, or
    # the stdlib's for what it refuses (integers beyond 64 bits).
    fast = json_bytes(value)
    return fast.decode("utf-8") if fast is not None else canonical_json(value)


def _copy_row(record: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(
        _json_text(record[name])
        if name in _JSON_COLUMNS and record[name] is not None
        else record[name]
        for name in RECORD_FIELDS
    )


class PartitionCache:
    """Days whose partition this process has already made sure of."""

    def __init__(self) -> None:
        self._known: set[date] = set()

    def ensure(self, conn: psycopg.Connection[Any], days: set[date]) -> None:
        missing = days - self._known
        # One call per run of consecutive days: a batch mixing a years-old backfilled event
        # with today's must not create every partition in between (thousands of tables,
        # and queries over all of them run out of lock slots).
        for first_day, last_day in _day_runs(sorted(missing)):
            conn.execute(
                QUERIES["ensure_partitions"], {"first_day": first_day, "last_day": last_day}
            )
        self._known |= missing


def _day_runs(days: Sequence[date]) -> list[tuple[date, date]]:
    runs: list[tuple[date, date]] = []
    for day in days:
        if runs and (day - runs[-1][1]).days == 1:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def store_batch(
    conn: psycopg.Connection[Any], parsed: Sequence[ParsedMessage], partitions: PartitionCache
) -> tuple[int, int]:
    """Store the events of ``parsed`` in one transaction; return (stored, duplicates)."""
    records = [r for p in parsed for r in p.records]
    days = {datetime.fromisoformat(r["created_at"]).astimezone(UTC).date() for r in records}
    with conn.transaction():
        partitions.ensure(conn, days)
        conn.execute(QUERIES["create_staging"])
        with conn.cursor().copy(QUERIES["copy_staging"]) as copy:
            for record in records:
                copy.write_row(_copy_row(record))
        conn.execute(QUERIES["create_missing_chain_heads"])
        heads = {
            tenant: (last_seq, bytes(last_hash))
            for tenant, last_seq, last_hash in conn.execute(QUERIES["lock_chain_heads"]).fetchall()
        }
        new_events = conn.execute(QUERIES["staged_new_events"]).fetchall()
        advanced: dict[uuid.UUID, tuple[int, bytes]] = {}
        with conn.cursor().copy(QUERIES["copy_staging_chain"]) as copy:
            for tenant, event_id, rendered in new_events:
                seq, prev = advanced.get(tenant, heads[tenant])
                seq += 1
                digest = link_hash(prev, rendered, seq)
                copy.write_row((event_id, seq, prev, digest))
                advanced[tenant] = (seq, digest)
        if new_events:
            conn.execute(QUERIES["insert_from_staging"])
            conn.execute(QUERIES["count_new_events"])
        for tenant, (last_seq, last_hash) in advanced.items():
            conn.execute(
                QUERIES["advance_chain_head"],
                {"tenant_id": tenant, "last_seq": last_seq, "last_hash": last_hash},
            )
            conn.execute(QUERIES["notify_committed"], {"payload": f"{tenant}:{last_seq}"})
    stored = len(new_events)
    return stored, len(records) - stored


class Drainer:
    """Drains the queue into PostgreSQL; one instance per drain run."""

    def __init__(
        self,
        queue: EventQueue,
        database_url: str,
        batch_size: int = 500,
        batch_events: int = 10_000,
    ) -> None:
        self.queue = queue
        self.database_url = database_url
        self.batch_size = batch_size
        # Events per transaction (at message granularity): a receive of compressed messages
        # can bring 100,000 events; stored in slices, the next slice is parsed while one
        # is written.
        self.batch_events = batch_events
        self.partitions = PartitionCache()
        self._conn: psycopg.Connection[Any] | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connect(self.database_url)
        return self._conn

    def collect(self, wait_seconds: int) -> list[ReceivedMessage]:
        """Long-poll for a first message, then top up quickly to about ``batch_size`` events."""
        messages = self.queue.receive(10, wait_seconds)
        if not messages:
            return messages
        deadline = time.monotonic() + 0.2
        while len(messages) < self.batch_size and time.monotonic() < deadline:
            more = self.queue.receive(10, 0)
            if not more:
                break
            messages.extend(more)
        return messages

    def process(self, messages: Sequence[ReceivedMessage]) -> BatchResult:
        return self.process_parsed(messages, *parse_messages(messages))

    def process_parsed(
        self,
        messages: Sequence[ReceivedMessage],
        good: list[ParsedMessage],
        bad: list[ReceivedMessage],
    ) -> BatchResult:
        """Store a parsed batch, then delete its stored messages from SQS."""
        result = BatchResult(messages=len(messages))
        if not messages:
            return result
        now = time.time()
        result.oldest_message_age_s = max(0.0, now - min(m.sent_at for m in messages))
        result.rejected_messages = len(bad)
        result.events_received = sum(len(p.records) for p in good)
        started = time.monotonic()
        stored_ok = self._store(good, result)
        result.db_seconds = time.monotonic() - started
        # Only now, after COMMIT, may the messages go.
        failed = self.queue.delete([p.message.receipt_handle for p in stored_ok])
        if failed:
            log.warning("drain.delete_failed", extra={"count": failed})
        return result

    def _store(self, good: list[ParsedMessage], result: BatchResult) -> list[ParsedMessage]:
        if not good:
            return []
        conn = self._connection()
        try:
            stored, dups = store_batch(conn, good, self.partitions)
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            # Something in the batch is unacceptable to the database: find it by storing
            # message by message, so the healthy ones go through and the bad one is
            # left to reach the dead-letter queue.
            log.warning("drain.batch_rejected_isolating", extra={"error": str(exc)[:300]})
            return self._store_one_by_one(good, result)
        result.stored += stored
        result.duplicates += dups
        return good

    def _store_one_by_one(
        self, good: list[ParsedMessage], result: BatchResult
    ) -> list[ParsedMessage]:
        conn = self._connection()
        ok = []
        for parsed in good:
            try:
                stored, dups = store_batch(conn, [parsed], self.partitions)
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                log.warning(
                    "drain.message_rejected",
                    extra={"message_id": parsed.message.message_id, "error": str(exc)[:300]},
                )
                result.rejected_messages += 1
                continue
            result.stored += stored
            result.duplicates += dups
            ok.append(parsed)
        return ok

    def _wait_for_database(
        self, started: float, time_budget_s: float, should_stop: Callable[[], bool]
    ) -> bool:
        """Probe until PostgreSQL answers (True) or the run must end (False)."""
        backoff = 0.5
        while not should_stop() and time.monotonic() - started < time_budget_s:
            time.sleep(backoff)
            try:
                conn = self._connection()
                conn.execute("SELECT 1")
                conn.rollback()
                log.info("drain.database_back")
                return True
            except psycopg.OperationalError:
                self.close()
                backoff = min(backoff * 2, 5.0)
        return False

    def run(
        self,
        time_budget_s: float,
        idle_s: float,
        on_batch: Callable[[BatchResult], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> DrainStats:
        """Drain until the time budget is spent, the queue stayed empty for ``idle_s``, or
        ``should_stop()``. Database outages are waited out: messages stay on the queue.

        A fetcher thread receives and parses the next batch while this thread stores the
        current one: parsing is Python work and storing mostly waits on PostgreSQL, so the
        two overlap on two cores. At most one parsed batch waits ahead."""
        stats = DrainStats()
        started = time.monotonic()
        fetcher = _Fetcher(self, wait_seconds=int(max(1, min(5, idle_s))))
        fetcher.start()
        last_activity = started
        try:
            while not should_stop():
                now = time.monotonic()
                # Idle means nothing arrived: a batch the fetcher is still parsing counts.
                quiet_since = now if fetcher.parsing else max(last_activity, fetcher.last_received)
                if now - started >= time_budget_s or now - quiet_since >= idle_s:
                    break
                batch = fetcher.next(timeout=min(0.5, idle_s))
                if batch is None:
                    continue
                last_activity = time.monotonic()
                try:
                    result = self.process_parsed(*batch)
                except psycopg.OperationalError as exc:
                    # The database is away. Nothing was deleted, so these messages return
                    # after their visibility timeout. Receive nothing more until the
                    # database answers again: every receive counts towards
                    # maxReceiveCount, and healthy events must not be dead-lettered
                    # because of an outage.
                    log.warning("drain.database_unavailable", extra={"error": str(exc)[:300]})
                    fetcher.pause()
                    self.close()
                    if not self._wait_for_database(started, time_budget_s, should_stop):
                        break
                    fetcher.resume()
                    last_activity = time.monotonic()
                    continue
                # Idle time counts from the end of the work, not from the receive: a long
                # batch must not end the run while a backlog remains.
                last_activity = time.monotonic()
                stats.add(result)
                if on_batch is not None:
                    on_batch(result)
        finally:
            fetcher.stop()
            self.close()
        return stats


_Batch = tuple[list[ReceivedMessage], list[ParsedMessage], list[ReceivedMessage]]


class _Fetcher:
    """Receives and parses batches ahead of the storing thread (one batch ahead at most).

    On stop, a batch received but not stored is made visible again at once, so the next
    drain run gets it without waiting out the visibility timeout."""

    def __init__(self, drainer: Drainer, wait_seconds: int) -> None:
        self._drainer = drainer
        self._wait_seconds = wait_seconds
        self._ready: queue.Queue[_Batch | BaseException] = queue.Queue(maxsize=1)
        self._stopping = threading.Event()
        self._running = threading.Event()
        self._running.set()
        # When messages last arrived (monotonic), and whether a batch is being parsed: read
        # by the storing thread's idle check.
        self.last_received = 0.0
        self.parsing = False
        self._thread = threading.Thread(target=self._loop, name="drain-fetcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def next(self, timeout: float) -> _Batch | None:
        try:
            item = self._ready.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def stop(self) -> None:
        self._stopping.set()
        self._running.set()
        self._thread.join(timeout=self._wait_seconds + 10)
        while True:
            try:
                item = self._ready.get_nowait()
            except queue.Empty:
                return
            if not isinstance(item, BaseException):
                self._release(item[0])

    def _release(self, messages: Sequence[ReceivedMessage]) -> None:
        try:
            self._drainer.queue.release([m.receipt_handle for m in messages])
        except Exception as exc:  # noqa: BLE001 (they come back after the visibility timeout)
            log.warning("drain.release_failed", extra={"error": str(exc)[:300]})

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._running.wait()
            if self._stopping.is_set():
                return
            try:
                messages = self._drainer.collect(self._wait_seconds)
                if not messages:
                    continue
                self.parsing = True
                try:
                    self._hand_over_in_slices(messages)
                finally:
                    self.last_received = time.monotonic()
                    self.parsing = False
            except _Stopped:
                return
            except Exception as exc:  # noqa: BLE001 (handed to the storing thread)
                self._ready.put(exc)
                return

    def _hand_over_in_slices(self, messages: list[ReceivedMessage]) -> None:
        """Parse message by message; hand over a slice whenever it holds enough events."""
        limit = self._drainer.batch_events
        taken: list[ReceivedMessage] = []
        good: list[ParsedMessage] = []
        bad: list[ReceivedMessage] = []
        events = 0
        for index, message in enumerate(messages):
            one_good, one_bad = parse_messages([message])
            taken.append(message)
            good += one_good
            bad += one_bad
            events += sum(len(p.records) for p in one_good)
            if events >= limit or index == len(messages) - 1:
                self._put((taken, good, bad), rest=messages[index + 1 :])
                taken, good, bad, events = [], [], [], 0

    def _put(self, batch: _Batch, rest: list[ReceivedMessage]) -> None:
        while True:
            if self._stopping.is_set():
                self._release([*batch[0], *rest])
                raise _Stopped
            try:
                self._ready.put(batch, timeout=0.2)
                return
            except queue.Full:
                continue


class _Stopped(Exception):
    """The run is ending; the fetcher has released what it held."""
