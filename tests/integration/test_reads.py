"""The read API over a known data set: listing with every filter and keyset pagination,
export in three formats, stats, verify, and the tenant-isolation matrix."""

from __future__ import annotations

import csv
import io
import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow.parquet as pq
import pytest
from flask.testing import FlaskClient

from auditlog.drain import Drainer
from auditlog.events import AcceptedEvent, EventIn
from auditlog.ids import uuid7_at
from auditlog.queue import EventQueue, pack_records
from auditlog.settings import Settings
from auditlog.store.pool import connect
from auditlog.tenants import create_tenant
from auditlog.tokens import mint_token
from tests.integration.conftest import make_sqs_client

NOW = datetime.now(UTC).replace(microsecond=0)
ACTIONS = ["CREATE", "UPDATE", "DELETE", "VIEW"]
SEVERITIES = ["INFO", "WARNING", "ERROR", "CRITICAL"]
USERS = [str(uuid.UUID(int=i + 1)) for i in range(3)]


@dataclass
class DataSet:
    tenant: uuid.UUID
    other: uuid.UUID
    records: list[dict[str, Any]]  # tenant's events, as accepted
    other_records: list[dict[str, Any]]
    headers: dict[str, str]
    other_headers: dict[str, str]


def _records(tenant: uuid.UUID, n: int, rng: random.Random, tag: str) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        created = NOW - timedelta(
            hours=rng.randint(1, 72), minutes=rng.randint(0, 59), seconds=i % 60
        )
        body = EventIn.model_validate(
            {
                "action_type": ACTIONS[i % 4],
                "severity": SEVERITIES[(i // 4) % 4],
                "resource_type": ["invoice", "user", "project"][i % 3],
                "resource_id": f"{tag}-{i % 7}",
                "user_id": USERS[i % 3],
                "session_id": f"s{i % 5}",
                "ip_address": f"10.0.{i % 2}.{i % 250 + 1}",
                "occurred_at": (created - timedelta(minutes=5)).isoformat(),
                "metadata": {"i": i, "tag": tag, "formula": "=HYPERLINK(1)"},
                "user_agent": "-evil" if i == 0 else "pytest",
            }
        )
        event_id = uuid7_at(created)
        out.append(
            AcceptedEvent(
                event_id,
                tenant,
                created.replace(microsecond=(created.microsecond // 1000) * 1000),
                body,
            ).to_record()
        )
    return out


@pytest.fixture(scope="module")
def data(settings: Settings) -> DataSet:
    rng = random.Random(7)
    with connect(settings.database_url) as conn:
        tenant = uuid.UUID(str(create_tenant(conn, name="reads-a")["id"]))
        other = uuid.UUID(str(create_tenant(conn, name="reads-b")["id"]))
        conn.commit()
    records, other_records = _records(tenant, 120, rng, "a"), _records(other, 40, rng, "a")
    queue = EventQueue(make_sqs_client(settings), settings.sqs_queue_name, settings.sqs_dlq_name)
    queue.send_bodies(list(pack_records(records + other_records)))
    Drainer(queue, settings.database_url).run(time_budget_s=30, idle_s=1.5)

    def headers(t: uuid.UUID) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(settings, tenant_id=t, role='auditor')}"}

    return DataSet(tenant, other, records, other_records, headers(tenant), headers(other))


def newest_first(records: list[dict[str, Any]]) -> list[str]:
    return [
        r["id"] for r in sorted(records, key=lambda r: (r["created_at"], r["id"]), reverse=True)
    ]


def all_pages(client: FlaskClient, url: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    sep = "&" if "?" in url else "?"
    page = client.get(url, headers=headers).get_json()
    rows += page["data"]
    while page["next_cursor"]:
        page = client.get(f"{url}{sep}cursor={page['next_cursor']}", headers=headers).get_json()
        rows += page["data"]
    return rows


def test_listing_is_newest_first_and_pages_cover_everything_once(
    client: FlaskClient, data: DataSet
) -> None:
    rows = all_pages(client, "/api/v1/logs?limit=17", data.headers)
    assert [r["id"] for r in rows] == newest_first(data.records)
    first = client.get("/api/v1/logs", headers=data.headers).get_json()
    assert len(first["data"]) == 100
    oldest = all_pages(client, "/api/v1/logs/?order=asc&limit=50", data.headers)
    assert [r["id"] for r in oldest] == list(reversed(newest_first(data.records)))
    by_id = {r["id"]: r for r in data.records}
    sample = rows[5]
    assert {k: sample[k] for k in by_id[sample["id"]]} == by_id[sample["id"]]


@pytest.mark.parametrize(
    ("query", "keep"),
    [
        ("user_id=" + USERS[1], lambda r: r["user_id"] == USERS[1]),
        ("session_id=s3", lambda r: r["session_id"] == "s3"),
        ("action_type=DELETE", lambda r: r["action_type"] == "DELETE"),
        ("action_type=DELETE,VIEW", lambda r: r["action_type"] in ("DELETE", "VIEW")),
        ("action_type=CREATE&action_type=VIEW", lambda r: r["action_type"] in ("CREATE", "VIEW")),
        (
            "resource_type=invoice&resource_id=a-3",
            lambda r: (r["resource_type"], r["resource_id"]) == ("invoice", "a-3"),
        ),
        ("severity=ERROR", lambda r: r["severity"] == "ERROR"),
        ("min_severity=ERROR", lambda r: r["severity"] in ("ERROR", "CRITICAL")),
        ("ip=10.0.1.0/24", lambda r: r["ip_address"].startswith("10.0.1.")),
        ("ip=10.0.0.5", lambda r: r["ip_address"] == "10.0.0.5"),
        (
            "from=" + (NOW - timedelta(hours=24)).isoformat().replace("+00:00", "Z"),
            lambda r: (
                r["created_at"] >= (NOW - timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            ),
        ),
        (
            "to=" + (NOW - timedelta(hours=48)).isoformat().replace("+00:00", "Z"),
            lambda r: (
                r["created_at"] < (NOW - timedelta(hours=48)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            ),
        ),
        (
            "occurred_from="
            + (NOW - timedelta(hours=30)).isoformat().replace("+00:00", "Z")
            + "&action_type=UPDATE",
            lambda r: (
                r["occurred_at"] >= (NOW - timedelta(hours=30)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                and r["action_type"] == "UPDATE"
            ),
        ),
    ],
)
def test_each_filter_narrows_exactly(
    client: FlaskClient, data: DataSet, query: str, keep: Callable[[dict[str, Any]], bool]
) -> None:
    rows = all_pages(client, f"/api/v1/logs?{query}&limit=25", data.headers)
    expected = newest_first([r for r in data.records if keep(r)])
    assert expected, "the data set should match something"
    assert [r["id"] for r in rows] == expected


def test_bad_parameters_are_named(client: FlaskClient, data: DataSet) -> None:
    response = client.get(
        "/api/v1/logs?limit=5000&action_type=ERASE&severity=LOUD&ip=nope&from=yesterday&user_id=x&cursor=zzz&colour=red",
        headers=data.headers,
    )
    assert response.status_code == 422
    fields = {e["field"] for e in response.get_json()["errors"]}
    assert fields == {
        "limit",
        "action_type",
        "severity",
        "ip",
        "from",
        "user_id",
        "cursor",
        "colour",
    }
    search = client.get("/api/v1/logs?q=colour:red", headers=data.headers)
    assert search.status_code == 422
    assert search.get_json()["errors"][0]["field"] == "q"
    desc = client.get("/api/v1/logs?limit=2", headers=data.headers).get_json()["next_cursor"]
    assert (
        client.get(f"/api/v1/logs?order=asc&cursor={desc}", headers=data.headers).status_code == 422
    )


def test_export_formats_stream_every_matching_row(client: FlaskClient, data: DataSet) -> None:
    expected = sorted(data.records, key=lambda r: (r["created_at"], r["id"]))
    csv_response = client.get("/api/v1/logs/export?format=csv", headers=data.headers)
    assert csv_response.status_code == 200
    assert csv_response.headers["Content-Type"] == "text/csv; charset=utf-8"  # one charset
    assert csv_response.headers["Content-Disposition"].startswith(
        'attachment; filename="audit-logs-'
    )
    rows = list(csv.DictReader(io.StringIO(csv_response.get_data(as_text=True))))
    assert [r["id"] for r in rows] == [r["id"] for r in expected]
    assert json.loads(rows[0]["metadata"]) == expected[0]["metadata"]  # JSON, not a repr
    first = next(r for r in rows if r["id"] == data.records[0]["id"])
    assert first["user_agent"] == "'-evil"  # no formula in a spreadsheet
    assert json.loads(first["metadata"])["formula"] == "=HYPERLINK(1)"  # inside JSON it stays data

    nd = client.get("/api/v1/logs/export?format=ndjson&action_type=CREATE", headers=data.headers)
    lines = [json.loads(x) for x in nd.get_data(as_text=True).splitlines()]
    assert [x["id"] for x in lines] == [r["id"] for r in expected if r["action_type"] == "CREATE"]
    assert (
        lines[0]["metadata"]
        == next(r for r in expected if r["action_type"] == "CREATE")["metadata"]
    )

    pq_response = client.get("/api/v1/logs/export?format=parquet", headers=data.headers)
    table = pq.read_table(io.BytesIO(pq_response.get_data()))
    assert table.column("id").to_pylist() == [r["id"] for r in expected]
    assert table.schema.field("created_at").type.tz == "UTC"
    empty = client.get(
        "/api/v1/logs/export?format=ndjson&resource_id=nothing", headers=data.headers
    )
    assert (empty.status_code, empty.get_data()) == (200, b"")
    bad = client.get("/api/v1/logs/export?format=xlsx", headers=data.headers)
    assert bad.status_code == 422


def test_stats_count_exactly(client: FlaskClient, data: DataSet) -> None:
    start = (NOW - timedelta(hours=50, minutes=17)).isoformat().replace("+00:00", "Z")
    response = client.get(f"/api/v1/logs/stats?from={start}&bucket=hour", headers=data.headers)
    assert response.status_code == 200
    body = response.get_json()
    bound = (NOW - timedelta(hours=50, minutes=17)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    in_range = [r for r in data.records if r["created_at"] >= bound]
    assert body["total_logs"] == len(in_range)
    for action in ACTIONS:
        assert body["by_action"][action] == sum(1 for r in in_range if r["action_type"] == action)
    for severity in SEVERITIES:
        assert body["by_severity"][severity] == sum(
            1 for r in in_range if r["severity"] == severity
        )
    assert sum(p["count"] for p in body["series"]) == len(in_range)
    assert body["last_7_days"] == len(data.records)
    top = body["top_resources"][0]
    assert top["count"] == max(
        sum(1 for r in in_range if (r["resource_type"], r["resource_id"]) == (t, i))
        for t, i in {(r["resource_type"], r["resource_id"]) for r in in_range}
    )
    assert {u["user_id"] for u in body["top_users"]} == {r["user_id"] for r in in_range}
    whole = client.get("/api/v1/logs/stats", headers=data.headers).get_json()
    assert whole["total_logs"] == len(data.records)
    assert client.get("/api/v1/logs/stats?bucket=week", headers=data.headers).status_code == 422


def test_verify_reports_the_chain(client: FlaskClient, data: DataSet) -> None:
    body = client.get("/api/v1/logs/verify", headers=data.headers).get_json()
    assert body["ok"] is True
    assert body["events_checked"] == len(data.records)
    part = client.get("/api/v1/logs/verify?from_seq=10&to_seq=20", headers=data.headers).get_json()
    assert (part["ok"], part["events_checked"], part["from_seq"], part["to_seq"]) == (
        True,
        11,
        10,
        20,
    )
    assert client.get("/api/v1/logs/verify?from_seq=0", headers=data.headers).status_code == 422


def test_tenant_isolation_matrix(client: FlaskClient, data: DataSet) -> None:
    """Tenant B's token against tenant A's data yields nothing, through every read path,
    even where B's own events would match the same filters."""
    a_ids = {r["id"] for r in data.records}
    b_ids = {r["id"] for r in data.other_records}
    as_b = data.other_headers
    for event_id in list(a_ids)[:5]:
        assert client.get(f"/api/v1/logs/{event_id}", headers=as_b).status_code == 404
    listed = {r["id"] for r in all_pages(client, "/api/v1/logs?resource_id=a-3&limit=1000", as_b)}
    assert listed
    assert listed <= b_ids
    for fmt in ("csv", "ndjson"):
        text = client.get(f"/api/v1/logs/export?format={fmt}", headers=as_b).get_data(as_text=True)
        assert not any(i in text for i in a_ids)
        assert all(i in text for i in b_ids)
    table = pq.read_table(
        io.BytesIO(client.get("/api/v1/logs/export?format=parquet", headers=as_b).get_data())
    )
    assert set(table.column("id").to_pylist()) == b_ids
    stats = client.get("/api/v1/logs/stats", headers=as_b).get_json()
    assert stats["total_logs"] == len(b_ids)
    verify = client.get("/api/v1/logs/verify", headers=as_b).get_json()
    assert verify["events_checked"] == len(b_ids)
    forged = client.get(f"/api/v1/logs?tenant_id={data.tenant}", headers=as_b)
    assert forged.status_code == 422  # no tenant parameter exists to be abused


def test_hostile_parameters_are_422_never_500(client: FlaskClient, data: DataSet) -> None:
    import base64

    crafted = (
        base64.urlsafe_b64encode(b'{"c":"2024-01-01T00:00:00+00:00","i":5,"o":"desc"}')
        .decode()
        .rstrip("=")
    )
    cases = {
        "session_id=a%00": "session_id",
        "resource_type=a%00": "resource_type",
        "ip=fe80::1%25eth0": "ip",
        f"cursor={crafted}": "cursor",
        "from=0001-01-01T00:00:00%2B01:00": "from",
    }
    for query, field in cases.items():
        response = client.get(f"/api/v1/logs?{query}", headers=data.headers)
        assert response.status_code == 422, query
        assert field in {e["field"] for e in response.get_json()["errors"]}, query
    export = client.get("/api/v1/logs/export?resource_id=a%00", headers=data.headers)
    assert export.status_code == 422
    assert export.content_type == "application/problem+json"
    stats = client.get("/api/v1/logs/stats?to=9999-12-31T23:59:59-01:00", headers=data.headers)
    assert stats.status_code == 422
    old = client.get(
        "/api/v1/logs/stats?from=1950-01-01T00:00:00Z&to=1951-01-01T00:00:00Z", headers=data.headers
    )
    assert old.status_code == 200
    assert old.get_json()["from"] == "1950-01-01T00:00:00.000000Z"


def test_listing_json_rendered_by_postgresql_equals_event_json(
    client: FlaskClient, settings: Settings
) -> None:
    """The listing and search pages take each event's JSON text from PostgreSQL
    (auditlog.reads.EVENT_JSON); it must say exactly what event_json says of the stored row,
    for nulls, non-ASCII text, nested and numeric JSON, and a redacted event."""
    with connect(settings.database_url) as conn:
        tenant = uuid.UUID(str(create_tenant(conn, name="reads-json")["id"]))
        conn.commit()
    bodies: list[dict[str, Any]] = [
        {"action_type": "VIEW", "resource_type": "doc", "resource_id": "d1", "severity": "INFO"},
        {
            "action_type": "UPDATE",
            "resource_type": "réservation",
            "resource_id": "ü-\u2603-\U0001f600",
            "severity": "CRITICAL",
            "user_id": USERS[0],
            "session_id": 'quote " and \\ backslash',
            "ip_address": "2001:db8::1",
            "user_agent": "tab\there",
            "occurred_at": "2026-01-02T03:04:05.678901+05:30",
            "before_state": {"z": [1, 2.5, None, True], "a": {"deep": {"er": "ÿ"}}},
            "after_state": {"big": 12345678901234567890, "neg": -1, "empty": {}},
            "metadata": {"k" * 40: "long key", "": "empty key", "list": []},
        },
        {
            "action_type": "DELETE",
            "resource_type": "user",
            "resource_id": "u1",
            "severity": "ERROR",
            "user_id": USERS[1],
            "ip_address": "192.0.2.7",
            "user_agent": "to be erased",
            "metadata": {"n": 1},
        },
    ]
    records = []
    for i, body in enumerate(bodies):
        created = NOW - timedelta(minutes=10 - i)
        records.append(
            AcceptedEvent(
                uuid7_at(created), tenant, created, EventIn.model_validate(body)
            ).to_record()
        )
    queue = EventQueue(make_sqs_client(settings), settings.sqs_queue_name, settings.sqs_dlq_name)
    queue.send_bodies(list(pack_records(records)))
    Drainer(queue, settings.database_url).run(time_budget_s=30, idle_s=1.5)
    admin = {"Authorization": f"Bearer {mint_token(settings, tenant_id=tenant, role='admin')}"}
    erased = client.delete(
        f"/api/v1/logs/cleanup/{records[2]['id']}?fields=user_agent,ip_address", headers=admin
    )
    assert erased.status_code == 200, erased.get_json()

    from api.logs.service import event_json
    from auditlog.filters import EventFilters
    from auditlog.reads import events_by_ids, list_events

    with connect(settings.database_url) as conn:
        stored = list_events(conn, tenant, EventFilters(), limit=10)
        rendered = list_events(conn, tenant, EventFilters(), limit=10, rendered=True)
        ids = [row["id"] for row in stored]
        by_ids = events_by_ids(conn, tenant, ids, rendered=True)
    expected = [event_json(row) for row in stored]
    assert len(expected) == 3
    assert expected[0]["redacted"] == ["ip_address", "user_agent"]
    assert [json.loads(row["json"]) for row in rendered] == expected
    assert {row["id"]: json.loads(row["json"]) for row in by_ids} == {
        uuid.UUID(e["id"]): e for e in expected
    }
    page = client.get("/api/v1/logs", headers=admin).get_json()
    assert page["data"] == expected
