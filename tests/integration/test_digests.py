"""Signed integrity digests against real PostgreSQL and S3 (moto's server), materialised
in-process, and the offline verifier run through the CLI on a real NDJSON export (from the
API) and a Parquet file (the dataset writer's format)."""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from dagster import materialize
from flask.testing import FlaskClient
from psycopg.rows import dict_row

from assets.digests import digests_consistent, integrity_digests
from auditlog import cli
from auditlog.digests import GENESIS_DIGEST_HASH, digest_key
from auditlog.drain import Drainer
from auditlog.events import AcceptedEvent, EventIn, canonical_json
from auditlog.export import write_parquet
from auditlog.ids import uuid7_at
from auditlog.offline_verify import jsonb_text
from auditlog.parquet_dataset import make_s3_client
from auditlog.queue import EventQueue, pack_records
from auditlog.reads import EVENT_COLUMNS
from auditlog.settings import Settings
from pipelines.resources import AuditPlatform

TRICKY_JSON: list[Any] = [
    {"b": 1, "aa": 2, "a": 3, "é": 4, "z": 5, "ab": {"y": [], "x": {}}},
    {"floats": [0.1, 1e-07, 1.5e300, 1e16, 123.456, -2.5, 1.0, 0.0, 3.14e-10]},
    {"ints": [0, -1, 2**63, 10**30], "flags": [True, False, None]},
    {"s": 'quote " back \\ slash / nl \n tab \t cr \r bell \x07 del \x7f'},
    {"unicode": "日本語 ✓ 😀 ü", "€": "\u2028\u2029"},
    {"nested": [{"k": [1, [2, [3, {"deep": "x"}]]]}]},
]


@pytest.fixture
def dagster_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> str:
    """The resource reads the environment at run time: point it at this session's database,
    with a signing key of the test's own."""
    key = base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("DIGEST_SIGNING_KEY", key)
    return key


def store_days(
    settings: Settings, queue: EventQueue, tenant: uuid.UUID, days: dict[date, int]
) -> None:
    """Events of the tenant accepted on the given past days (noon UTC onwards), drained."""
    records = []
    for day, count in days.items():
        for i in range(count):
            created = datetime(day.year, day.month, day.day, 12, tzinfo=UTC) + timedelta(seconds=i)
            body = EventIn.model_validate(
                {
                    "action_type": "UPDATE",
                    "resource_type": "doc",
                    "resource_id": f"{day}-{i}",
                    "severity": "INFO",
                    "ip_address": "2001:db8::1" if i % 2 else "198.51.100.7",
                    "metadata": TRICKY_JSON[i % len(TRICKY_JSON)],
                    "before_state": {"n": i, "ratio": i / 7},
                }
            )
            records.append(AcceptedEvent(uuid7_at(created), tenant, created, body).to_record())
    queue.send_bodies(list(pack_records(records, max_bytes=200_000)))
    stats = Drainer(queue, settings.database_url, batch_size=500).run(time_budget_s=20, idle_s=1.5)
    assert stats.stored == len(records)


def materialize_day(day: date, tenant: uuid.UUID) -> Any:
    return materialize(
        [integrity_digests],
        partition_key=day.isoformat(),
        resources={"platform": AuditPlatform()},
        run_config={"ops": {"integrity_digests": {"config": {"tenants": [str(tenant)]}}}},
    )


def digest_rows(db: psycopg.Connection[Any], tenant: uuid.UUID) -> list[dict[str, Any]]:
    with db.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM integrity_digests WHERE tenant_id = %s ORDER BY day", (tenant,)
        ).fetchall()


def download_digests(settings: Settings, tenant: uuid.UUID, days: list[date], to: Path) -> None:
    s3 = make_s3_client(settings)
    for day in days:
        body = s3.get_object(Bucket=settings.s3_bucket, Key=digest_key(tenant, day))["Body"].read()
        target = to / f"tenant={tenant}" / f"date={day}" / "digest.json"
        target.parent.mkdir(parents=True)
        target.write_bytes(body)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = cli.main(argv)
    return code, json.loads(capsys.readouterr().out)


def test_jsonb_text_is_postgresql_jsonb_text(db: psycopg.Connection[Any]) -> None:
    for value in TRICKY_JSON:
        row = db.execute("SELECT %s::jsonb::text", (canonical_json(value),)).fetchone()
        assert row is not None
        assert jsonb_text(json.loads(row[0])) == row[0]


@pytest.fixture
def three_days(
    settings: Settings,
    queue: EventQueue,
    tenant: uuid.UUID,
    db: psycopg.Connection[Any],
    dagster_env: str,
) -> list[date]:
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=n) for n in (4, 3, 2)]
    store_days(settings, queue, tenant, {days[0]: 4, days[1]: 3, days[2]: 5})
    for day in days:
        result = materialize_day(day, tenant)
        assert result.success
    return days


def test_daily_digests_chain_and_are_stored_in_s3_and_the_table(
    settings: Settings,
    tenant: uuid.UUID,
    db: psycopg.Connection[Any],
    three_days: list[date],
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = digest_rows(db, tenant)
    assert [(r["day"], r["from_seq"], r["to_seq"], r["event_count"]) for r in rows] == [
        (three_days[0], 1, 4, 4),
        (three_days[1], 5, 7, 3),
        (three_days[2], 8, 12, 5),
    ]
    assert bytes(rows[0]["prev_digest_hash"]) == GENESIS_DIGEST_HASH
    assert bytes(rows[1]["prev_digest_hash"]) == bytes(rows[0]["digest_hash"])
    assert bytes(rows[2]["prev_digest_hash"]) == bytes(rows[1]["digest_hash"])
    head = db.execute(
        "SELECT hash FROM audit_logs WHERE tenant_id = %s AND seq = 12", (tenant,)
    ).fetchone()
    assert head is not None
    assert bytes(rows[2]["head_hash"]) == bytes(head[0])

    s3 = make_s3_client(settings)
    document = json.loads(
        s3.get_object(Bucket=settings.s3_bucket, Key=rows[1]["s3_key"])["Body"].read()
    )
    assert document["from_seq"] == 5
    assert document["head_hash"] == bytes(rows[1]["head_hash"]).hex()
    assert document["digest_hash"] == bytes(rows[1]["digest_hash"]).hex()
    assert base64.b64decode(document["signature"]) == bytes(rows[1]["signature"])
    public = s3.get_object(
        Bucket=settings.s3_bucket, Key=f"digests/public-keys/{document['key_id']}.pem"
    )["Body"].read()
    assert cli.main(["digest-public-key"]) == 0
    assert public.decode() in capsys.readouterr().out

    # A day already digested is left as it was: evidence is never rewritten.
    again = materialize_day(three_days[1], tenant)
    assert again.success
    assert digest_rows(db, tenant) == rows
    meta = again.asset_materializations_for_node("integrity_digests")[0].metadata
    assert meta["digests_signed"].value == 0

    check = digests_consistent(AuditPlatform())
    assert check.passed, check.metadata


def test_export_verifies_offline_and_tampering_is_named(
    settings: Settings,
    tenant: uuid.UUID,
    client: FlaskClient,
    auth: dict[str, str],
    db: psycopg.Connection[Any],
    three_days: list[date],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    response = client.get("/api/v1/logs/export?format=ndjson", headers=auth)
    assert response.status_code == 200
    export = tmp_path / "export.ndjson"
    export.write_bytes(response.data)
    digests = tmp_path / "digests"
    download_digests(settings, tenant, three_days, digests)
    key = tmp_path / "digest-key.pem"
    assert cli.main(["digest-public-key"]) == 0
    key.write_text(capsys.readouterr().out)
    argv = ["verify-export", "--digests", str(digests), "--public-key", str(key), "--events"]

    code, report = run_cli([*argv, str(export)], capsys)
    assert (code, report["ok"], report["problems"]) == (0, True, [])
    assert report["events_checked"] == 12
    assert report["digests_checked"] == 3
    assert report["digests_fully_covered"] == 3

    # The same events as a Parquet file (the exports/archive datasets' format) verify too.
    parquet = tmp_path / "events.parquet"
    with db.cursor(row_factory=dict_row) as cur:
        stored = cur.execute(
            f"SELECT {EVENT_COLUMNS} FROM audit_logs WHERE tenant_id = %s ORDER BY seq",  # noqa: S608 (constant column list)
            (tenant,),
        ).fetchall()
    parquet.write_bytes(b"".join(write_parquet(stored)))
    code, report = run_cli([*argv, str(parquet)], capsys)
    assert (code, report["problems"], report["digests_fully_covered"]) == (0, [], 3)

    # Tamper with one event of the export and with the middle digest's count.
    lines = export.read_text().rstrip("\n").split("\n")  # (splitlines would split at U+2028)
    victim = json.loads(lines[5])
    victim["resource_id"] = "forged"
    lines[5] = json.dumps(victim)
    export.write_text("\n".join(lines) + "\n")
    middle = digests / f"tenant={tenant}" / f"date={three_days[1]}" / "digest.json"
    document = json.loads(middle.read_text())
    document["count"] = 2
    middle.write_text(json.dumps(document))

    code, report = run_cli([*argv, str(export)], capsys)
    assert code == 1
    problems = report["problems"]
    altered_event = [p for p in problems if p["kind"] == "event"]
    assert altered_event == [
        {
            "kind": "event",
            "tenant_id": str(tenant),
            "reason": "fields do not match the event's hash (the event was altered)",
            "seq": victim["seq"],
            "event_id": victim["id"],
            "file": f"{export}:6",
        }
    ]
    assert {
        "kind": "digest",
        "tenant_id": str(tenant),
        "reason": "signature does not match its fields (the digest was altered)",
        "file": str(middle),
    } in problems

    # A digest dropped from the middle breaks the chain of the one after it.
    middle.unlink()
    export.write_bytes(response.data)
    code, report = run_cli([*argv, str(export)], capsys)
    assert code == 1
    last = digests / f"tenant={tenant}" / f"date={three_days[2]}" / "digest.json"
    assert [(p["kind"], p["file"]) for p in report["problems"]] == [("digest", str(last))]
    assert "missing" in report["problems"][0]["reason"]


def test_an_event_drained_after_its_day_was_digested_falls_into_the_next_digest(
    settings: Settings,
    queue: EventQueue,
    tenant: uuid.UUID,
    db: psycopg.Connection[Any],
    three_days: list[date],
) -> None:
    # Accepted on the first day, but stored only now (an outage held it in the queue).
    store_days(settings, queue, tenant, {three_days[0]: 1})
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    assert materialize_day(yesterday, tenant).success
    rows = digest_rows(db, tenant)
    assert [(r["day"], r["from_seq"], r["to_seq"], r["event_count"]) for r in rows[-2:]] == [
        (three_days[2], 8, 12, 5),
        (yesterday, 13, 13, 1),
    ]
    assert bytes(rows[-1]["prev_digest_hash"]) == bytes(rows[-2]["digest_hash"])
    # The first day, materialised again, is left as it was.
    assert materialize_day(three_days[0], tenant).success
    assert digest_rows(db, tenant) == rows
