"""Faults around the API: SQS down at ingest, OpenSearch down, an API worker killed while
requests are in flight. "Down" is a real closed port the app is pointed at (the shared
servers keep running for everyone else); the killed worker is a real gunicorn worker of an
API this test starts. Every case compares the accepted ids with the stored ones: nothing
lost, nothing doubled, every chain verifies."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from flask import Flask
from requests.exceptions import ChunkedEncodingError

from api import create_app
from auditlog.drain import Drainer
from auditlog.indexer import IndexStats, SearchIndexer
from auditlog.queue import EventQueue
from auditlog.search import INDEX_PREFIX, make_client
from auditlog.settings import Settings
from auditlog.store.pool import connect
from infra import run as platform
from tests.reliability.conftest import scaled


def closed_port() -> int:
    """A loopback port nothing listens on: bound once by the OS, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def event(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "action_type": "CREATE",
        "resource_type": "doc",
        "resource_id": str(i),
        "severity": "INFO",
        "metadata": {"i": i, **extra},
    }


def drain_all(settings: Settings, queue: EventQueue) -> None:
    Drainer(queue, settings.database_url).run(time_budget_s=scaled(60), idle_s=3)


@pytest.fixture
def make_app() -> Iterator[Callable[[Settings], Flask]]:
    apps: list[Flask] = []

    def make(settings: Settings) -> Flask:
        apps.append(create_app(settings))
        return apps[-1]

    yield make
    for app in apps:
        app.extensions["auditlog"].close()


def accepted_ids(path: str, body: Any) -> list[str]:
    if path.endswith("/bulk"):
        return [r["id"] for r in body["results"]]
    return [body["id"]]


def test_sqs_down_at_ingest_is_503_and_retries_lose_nothing(
    fault_settings: Settings,
    fault_queue: EventQueue,
    make_app: Callable[[Settings], Flask],
    new_tenant: Callable[..., uuid.UUID],
    token_for: Callable[..., str],
    assert_exactly_once: Callable[..., None],
) -> None:
    tenants = [new_tenant(), new_tenant()]
    down = make_app(
        replace(fault_settings, aws_endpoint_url_sqs=f"http://127.0.0.1:{closed_port()}")
    ).test_client()
    up = make_app(fault_settings).test_client()
    calls: list[tuple[dict[str, str], str, Any]] = []
    for i in range(scaled(6)):
        tenant = tenants[i % 2]
        headers = {"Authorization": f"Bearer {token_for(tenant)}", "Idempotency-Key": f"s-{i}"}
        calls.append((headers, "/api/v1/logs", event(i)))
    for i in range(scaled(2)):
        tenant = tenants[i % 2]
        headers = {"Authorization": f"Bearer {token_for(tenant)}", "Idempotency-Key": f"b-{i}"}
        calls.append((headers, "/api/v1/logs/bulk", [event(1000 + 10 * i + j) for j in range(5)]))

    for headers, path, body in calls:
        refused = down.post(path, json=body, headers=headers)
        assert refused.status_code == 503, refused.get_data(as_text=True)
        assert refused.headers["Retry-After"] == "2"
        assert refused.content_type == "application/problem+json"
        assert refused.get_json()["type"].endswith("/queue-unavailable")
    assert fault_queue.receive(10, 1) == [], "a refused request reached the real queue"

    accepted: list[str] = []
    for headers, path, body in calls:
        retried = up.post(path, json=body, headers=headers)
        assert retried.status_code == 202, retried.get_data(as_text=True)
        accepted += accepted_ids(path, retried.get_json())
        again = up.post(path, json=body, headers=headers)
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert again.get_json() == retried.get_json()
    assert len(accepted) == scaled(6) + 5 * scaled(2)

    drain_all(fault_settings, fault_queue)
    assert_exactly_once([{"id": i} for i in accepted], tenants)
    assert fault_queue.dead_letter_backlog().visible == 0


def test_opensearch_down_only_search_is_503_and_the_index_catches_up(
    fault_settings: Settings,
    fault_queue: EventQueue,
    make_app: Callable[[Settings], Flask],
    db: psycopg.Connection[Any],
    new_tenant: Callable[..., uuid.UUID],
    token_for: Callable[..., str],
    assert_exactly_once: Callable[..., None],
) -> None:
    tenant = new_tenant()
    away_url = f"http://127.0.0.1:{closed_port()}"
    client = make_app(replace(fault_settings, opensearch_url=away_url)).test_client()
    headers = {"Authorization": f"Bearer {token_for(tenant)}"}
    word = f"haystack{uuid.uuid4().hex[:8]}"

    posted = [
        client.post("/api/v1/logs", json=event(i, note=word), headers=headers)
        for i in range(scaled(5))
    ]
    assert [p.status_code for p in posted] == [202] * scaled(5)
    ids = {p.get_json()["id"] for p in posted}
    drain_all(fault_settings, fault_queue)
    assert_exactly_once([{"id": i} for i in ids], [tenant])

    search = client.get(f"/api/v1/logs?q={word}", headers=headers)
    assert search.status_code == 503
    assert search.headers["Retry-After"] == "5"
    assert search.content_type == "application/problem+json"
    assert search.get_json()["type"].endswith("/search-unavailable")
    listed = client.get("/api/v1/logs?limit=1000", headers=headers)
    assert {e["id"] for e in listed.get_json()["data"]} == ids
    for event_id in ids:
        assert client.get(f"/api/v1/logs/{event_id}", headers=headers).status_code == 200
    assert client.get("/api/v1/logs/verify", headers=headers).get_json()["ok"] is True
    assert client.get("/api/v1/logs/stats", headers=headers).get_json()["total_logs"] == len(ids)
    assert client.get("/api/v1/logs/export", headers=headers).status_code == 200

    # The indexer while OpenSearch is away fails and marks nothing as indexed ...
    away = SearchIndexer(make_client(away_url), fault_settings.database_url)
    with connect(fault_settings.database_url) as conn, pytest.raises(Exception, match="onnect"):
        away.catch_up(conn, IndexStats())
    mark = "SELECT last_seq FROM search_watermarks WHERE tenant_id = %s"
    assert db.execute(mark, (tenant,)).fetchone() is None
    # ... and once it is back, catches up: search finds exactly what was accepted.
    search_client = make_client(fault_settings.opensearch_url)
    with connect(fault_settings.database_url) as conn:
        SearchIndexer(search_client, fault_settings.database_url).catch_up(conn, IndexStats())
    search_client.indices.refresh(index=f"{INDEX_PREFIX}*")
    assert db.execute(mark, (tenant,)).fetchone() == (len(ids),)
    back = make_app(fault_settings).test_client()
    found = back.get(f"/api/v1/logs?q={word}&limit=1000", headers=headers)
    assert found.status_code == 200
    assert {e["id"] for e in found.get_json()["data"]} == ids


# -- an API worker killed mid-request ----------------------------------------------------


@dataclass
class LiveApi:
    url: str
    master: platform.Child


@pytest.fixture
def live_api(fault_settings: Settings, tmp_path: Path) -> Iterator[LiveApi]:
    """gunicorn with two workers (gevent_pywsgi, as `make run`) on a port of its own, on
    this session's database and this test's queues."""
    port = closed_port()
    env = {
        **os.environ,
        "DATABASE_URL": fault_settings.database_url,
        "SQS_QUEUE_NAME": fault_settings.sqs_queue_name,
        "SQS_DLQ_NAME": fault_settings.sqs_dlq_name,
        "LOG_LEVEL": "WARNING",
    }
    child = platform.spawn("api", platform.api_command(port, workers=2), env, tmp_path)
    try:
        platform.wait_http(f"http://127.0.0.1:{port}/healthz", 60, child)
        yield LiveApi(f"http://127.0.0.1:{port}", child)
    finally:
        platform.stop_children([child])
        shutil.copytree(tmp_path, Path(".dev/logs/reliability-last"), dirs_exist_ok=True)


def worker_pids(master: int) -> set[int]:
    """The gunicorn master's children (its workers), from /proc."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                pids.add(int(entry.name))
    return pids


def wait_for_workers(master: int, count: int, exclude: set[int], timeout: float = 60) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = worker_pids(master) - exclude
        if len(pids) >= count:
            return pids
        time.sleep(0.1)
    raise AssertionError(f"gunicorn did not have {count} fresh workers within {timeout}s")


@dataclass
class Load:
    """Clients that each send one event per Idempotency-Key and retry that key (same body)
    until it is answered 202, whatever happens to the connection."""

    url: str
    tokens: list[str]
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    accepted: dict[str, str] = field(default_factory=dict)  # key -> event id
    tenant_of: dict[str, int] = field(default_factory=dict)  # key -> index in tokens
    broken: int = 0  # attempts that ended in a connection error (killed mid-request)
    retried_statuses: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def client(self, n: int) -> None:
        session = requests.Session()
        sent = 0
        while not self.stop.is_set():
            key = f"c{n}-{sent}"
            tenant = sent % len(self.tokens)
            body = event(sent, client=n)
            headers = {"Authorization": f"Bearer {self.tokens[tenant]}", "Idempotency-Key": key}
            for _ in range(200):
                try:
                    response = session.post(
                        f"{self.url}/api/v1/logs", json=body, headers=headers, timeout=15
                    )
                except (requests.ConnectionError, requests.Timeout, ChunkedEncodingError):
                    with self.lock:
                        self.broken += 1
                    session = requests.Session()
                    time.sleep(0.05)
                    continue
                if response.status_code == 202:
                    with self.lock:
                        self.accepted[key] = response.json()["id"]
                        self.tenant_of[key] = tenant
                    break
                if response.status_code in (429, 502, 503):
                    with self.lock:
                        self.retried_statuses.append(response.status_code)
                    time.sleep(0.1)
                    continue
                with self.lock:
                    self.errors.append(f"{key}: {response.status_code} {response.text[:200]}")
                return
            else:
                with self.lock:
                    self.errors.append(f"{key}: never accepted")
                return
            sent += 1


def test_worker_killed_mid_request_client_retries_exactly_one_event_per_key(
    live_api: LiveApi,
    fault_settings: Settings,
    fault_queue: EventQueue,
    db: psycopg.Connection[Any],
    new_tenant: Callable[..., uuid.UUID],
    token_for: Callable[..., str],
    assert_exactly_once: Callable[..., None],
) -> None:
    tenants = [new_tenant(), new_tenant()]
    load = Load(live_api.url, [token_for(t, "writer") for t in tenants])
    master = live_api.master.process.pid
    workers = wait_for_workers(master, 2, set())
    clients = [threading.Thread(target=load.client, args=(n,)) for n in range(8)]
    for thread in clients:
        thread.start()
    killed: set[int] = set()
    try:
        # Kill a worker under load, let gunicorn replace it, again: at least kills_wanted
        # times, and until at least one request was cut off mid-flight.
        kills_wanted = scaled(3)
        while len(killed) < kills_wanted or (load.broken == 0 and len(killed) < 10):
            time.sleep(1.0)
            assert not load.errors, load.errors[:5]
            victim = sorted(workers)[len(killed) % 2]
            os.kill(victim, signal.SIGKILL)
            killed.add(victim)
            workers = wait_for_workers(master, 2, killed)
        time.sleep(1.0)
    finally:
        load.stop.set()
        for thread in clients:
            thread.join(timeout=60)
    assert not load.errors, load.errors[:5]
    print(
        f"workers killed: {len(killed)}, attempts cut off: {load.broken}, "
        f"retried on 429/502/503: {len(load.retried_statuses)}, keys accepted: "
        f"{len(load.accepted)}"
    )
    assert load.broken > 0, "no request was in flight when a worker died"
    assert len(load.accepted) > 0

    drain_all(fault_settings, fault_queue)
    assert_exactly_once([{"id": i} for i in load.accepted.values()], tenants)
    # Exactly one event per key, and it is the event the key reserved.
    reserved = dict(
        db.execute(
            "SELECT key, event_ids[1]::text FROM idempotency_keys WHERE tenant_id = ANY(%s)",
            (tenants,),
        ).fetchall()
    )
    assert {k: reserved[k] for k in load.accepted} == load.accepted
    assert fault_queue.dead_letter_backlog().visible == 0
