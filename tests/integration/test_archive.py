"""The ``archive`` asset against the real S3 (moto server) and PostgreSQL: only days past each
tenant's hot window go, every object is read back and verified before the ledger records
it, re-runs are idempotent, and an archive whose day retention already thinned is kept."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from dagster import AssetKey, build_schedule_context, materialize

from assets.archive import archive
from auditlog.archive import DaySummary, due_days, summarize, verify_object
from auditlog.export import PARQUET_SCHEMA
from auditlog.parquet_dataset import make_s3_client, object_key, open_parquet
from auditlog.retention import cleanup_before
from auditlog.settings import Settings
from pipelines.datasets import archive_schedule
from pipelines.definitions import defs
from pipelines.resources import AuditPlatform
from tests.integration.datasets_support import (
    dataset_settings,
    day_records,
    hive_dataset,
    s3_keys,
    store,
    utc_day,
)

__all__ = ["dataset_settings"]  # the fixture, imported to be found by pytest


def run_archive(day: date) -> dict[str, Any]:
    result = materialize(
        [archive], partition_key=day.isoformat(), resources={"platform": AuditPlatform()}
    )
    [event] = result.asset_materializations_for_node("archive")
    return {name: value.value for name, value in event.metadata.items()}


def ledger(db: Any, tenant: uuid.UUID) -> dict[date, tuple[Any, ...]]:
    rows = db.execute(
        "SELECT day, event_count, first_seq, last_seq, head_hash, s3_key, archived_at "
        "FROM audit_archives WHERE tenant_id = %s",
        (tenant,),
    ).fetchall()
    return {row[0]: tuple(row[1:]) for row in rows}


def hash_at(db: Any, tenant: uuid.UUID, seq: int) -> bytes:
    row = db.execute(
        "SELECT hash FROM audit_logs WHERE tenant_id = %s AND seq = %s", (tenant, seq)
    ).fetchone()
    return bytes(row[0])


def scheduled_days() -> set[date]:
    """The days tonight's archive_schedule tick asks runs for."""
    context = build_schedule_context(
        resources={"platform": AuditPlatform()}, scheduled_execution_time=datetime.now(UTC)
    )
    requests = archive_schedule(context)
    assert isinstance(requests, list)
    return {date.fromisoformat(str(r.partition_key)) for r in requests}


def test_the_archive_lineage_runs_from_audit_events() -> None:
    graph = defs.resolve_asset_graph()
    assert graph.get(AssetKey("archive")).parent_keys == {AssetKey("audit_events")}
    assert defs.resolve_assets_def(AssetKey("archive")).partitions_def is not None


def test_days_past_the_hot_window_are_archived_verified_and_recorded(
    dataset_settings: Settings, new_tenant: Callable[..., uuid.UUID], db: Any
) -> None:
    settings = dataset_settings
    short, long = new_tenant(), new_tenant()
    db.execute("UPDATE tenants SET retention_days = 1 WHERE id = %s", (short,))
    db.execute("UPDATE tenants SET retention_days = 42 WHERE id = %s", (long,))
    d1, d2, d3 = utc_day(43), utc_day(42), utc_day(41)
    store(
        settings,
        day_records(short, d1, 25)
        + day_records(short, d2, 15)
        + day_records(short, d3, 10)
        + day_records(long, d1, 30)
        + day_records(long, d2, 20),
    )
    # A late event of d1, stored after d3's: d1's seqs are not contiguous (1..25, 51).
    store(settings, day_records(short, d1, 3)[1:2])
    assert {d1, d2, d3} <= scheduled_days()

    # d1 is past both windows (1 and 42 days).
    first = run_archive(d1)
    assert [first[k] for k in ("tenant_days_archived", "rows", "files", "tenants")] == [2, 56, 2, 2]
    assert first["bytes"] > 0
    assert ledger(db, short)[d1][:4] == (26, 1, 51, hash_at(db, short, 51))
    assert ledger(db, long)[d1][:4] == (30, 1, 30, hash_at(db, long, 30))
    key = object_key(settings.s3_archive_prefix, short, d1)
    assert ledger(db, short)[d1][4] == key
    s3 = make_s3_client(settings)
    seqs = open_parquet(s3, settings.s3_bucket, key).read(columns=["seq"]).column("seq")
    assert seqs.to_pylist() == [*range(1, 26), 51]

    # d2 is inside the 42-day window: only the 1-day tenant's d2 goes.
    second = run_archive(d2)
    assert (second["tenant_days_archived"], second["tenant_days_not_due"]) == (1, 1)
    assert d2 in ledger(db, short)
    assert d2 not in ledger(db, long)
    assert d3 in scheduled_days()
    assert not {d1, d2} & scheduled_days()

    # Again: nothing new is written, the ledger keeps its entries as they were.
    before = ledger(db, long)[d1]
    again = run_archive(d1)
    assert (again["tenant_days_archived"], again["tenant_days_already_archived"]) == (0, 2)
    assert ledger(db, long)[d1] == before

    # A late arrival on an archived day: the day is archived again, with it.
    store(settings, day_records(long, d1, 3)[1:2])
    assert d1 in scheduled_days()
    late = run_archive(d1)
    assert (late["tenant_days_archived"], late["tenant_days_already_archived"]) == (1, 1)
    assert ledger(db, long)[d1][:3] == (31, 1, 51)
    assert d1 not in scheduled_days()

    # The archive reads back as a Hive-partitioned dataset, each tenant under its own prefix.
    table = hive_dataset(settings, settings.s3_archive_prefix).to_table()
    assert table.num_rows == 26 + 31 + 15
    for row in table.select(["tenant", "tenant_id"]).to_pylist():
        assert row["tenant"] == row["tenant_id"]
    assert s3_keys(settings, settings.s3_archive_prefix + "/") == sorted(
        [key, object_key(settings.s3_archive_prefix, long, d1),
         object_key(settings.s3_archive_prefix, short, d2)]
    )  # fmt: skip


def test_retention_removes_archived_days_and_their_archive_is_never_thinned(
    dataset_settings: Settings, new_tenant: Callable[..., uuid.UUID], db: Any
) -> None:
    settings = dataset_settings
    tenant = new_tenant()
    db.execute("UPDATE tenants SET retention_days = 1 WHERE id = %s", (tenant,))
    d1, d2, d3 = utc_day(46), utc_day(45), utc_day(44)
    store(settings, day_records(tenant, d1, 12) + day_records(tenant, d2, 8))
    store(settings, day_records(tenant, d3, 5))
    store(settings, day_records(tenant, d1, 3)[1:2])  # late: seq 26 on d1
    for day in (d1, d2):
        assert run_archive(day)["tenant_days_archived"] == 1

    # Retention deletes the archived seq prefix (d1's first 12, d2): d1's late event stays.
    d3_start = datetime.combine(d3, datetime.min.time(), tzinfo=UTC)
    with db.transaction():
        removed = cleanup_before(db, tenant, d3_start, require_archive=True)
    assert (removed["deleted"], removed["through_seq"]) == (20, 20)

    # Archiving d1 again would write 1 event over the archive of 13: it refuses.
    key = object_key(settings.s3_archive_prefix, tenant, d1)
    refused = run_archive(d1)
    assert (refused["tenant_days_refused"], refused["tenant_days_archived"]) == (1, 0)
    assert open_parquet(make_s3_client(settings), settings.s3_bucket, key).metadata.num_rows == 13
    assert ledger(db, tenant)[d1][:3] == (13, 1, 26)
    # d2 is gone from PostgreSQL entirely: nothing to do, its archive and ledger entry stay.
    assert run_archive(d2)["tenant_days_archived"] == 0
    assert d2 in ledger(db, tenant)


def rewrite_object(
    settings: Settings, key: str, change: Callable[[list[dict[str, Any]]], None]
) -> None:
    s3 = make_s3_client(settings)
    rows = open_parquet(s3, settings.s3_bucket, key).read().to_pylist()
    change(rows)
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=PARQUET_SCHEMA), sink, compression="zstd")
    s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=sink.getvalue())


def test_verification_reads_the_object_back_and_a_rerun_repairs_it(
    dataset_settings: Settings, new_tenant: Callable[..., uuid.UUID], db: Any
) -> None:
    settings = dataset_settings
    tenant, other = new_tenant(), new_tenant()
    db.execute("UPDATE tenants SET retention_days = 1 WHERE id = ANY(%s)", ([tenant, other],))
    day = utc_day(47)
    store(settings, day_records(tenant, day, 10) + day_records(other, day, 10))
    assert run_archive(day)["tenant_days_archived"] == 2
    key = object_key(settings.s3_archive_prefix, tenant, day)
    s3 = make_s3_client(settings)
    with db.transaction():
        expected = summarize(db, tenant, day)
    assert verify_object(s3, settings.s3_bucket, key, tenant, expected) is None

    wrong_count = DaySummary(11, expected.first_seq, expected.last_seq, expected.head_hash)
    assert verify_object(s3, settings.s3_bucket, key, tenant, wrong_count) == "10 rows, expected 11"
    wrong_head = DaySummary(10, 1, 10, bytes(32))
    assert "head hash" in (verify_object(s3, settings.s3_bucket, key, tenant, wrong_head) or "")
    other_key = object_key(settings.s3_archive_prefix, other, day)
    assert (verify_object(s3, settings.s3_bucket, other_key, tenant, expected) or "").startswith(
        f"row of tenant {other}"
    )

    def break_link(rows: list[dict[str, Any]]) -> None:
        rows[4]["prev_hash"] = "00" * 32

    rewrite_object(settings, key, break_link)
    assert verify_object(s3, settings.s3_bucket, key, tenant, expected) == (
        "seq 5 does not link to seq 4"
    )
    # The ledger matches PostgreSQL but the object no longer verifies: a re-run rewrites it.
    repaired = run_archive(day)
    assert (repaired["tenant_days_archived"], repaired["tenant_days_already_archived"]) == (1, 1)
    assert verify_object(s3, settings.s3_bucket, key, tenant, expected) is None

    # Gone, or not Parquet at all: the same.
    s3.delete_object(Bucket=settings.s3_bucket, Key=key)
    assert (verify_object(s3, settings.s3_bucket, key, tenant, expected) or "").startswith(
        "cannot read"
    )
    assert run_archive(day)["tenant_days_archived"] == 1
    assert verify_object(s3, settings.s3_bucket, key, tenant, expected) is None
    s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=b"not parquet")
    assert (verify_object(s3, settings.s3_bucket, key, tenant, expected) or "").startswith(
        "cannot read"
    )
    assert run_archive(day)["tenant_days_archived"] == 1
    assert verify_object(s3, settings.s3_bucket, key, tenant, expected) is None


def test_a_day_inside_every_window_is_not_archived(
    dataset_settings: Settings, new_tenant: Callable[..., uuid.UUID], db: Any
) -> None:
    tenant = new_tenant()  # retention_days defaults to 365
    day = utc_day(48)
    store(dataset_settings, day_records(tenant, day, 4))
    result = run_archive(day)
    assert (result["tenant_days_archived"], result["tenant_days_not_due"]) == (0, 1)
    assert ledger(db, tenant) == {}
    assert s3_keys(dataset_settings, dataset_settings.s3_archive_prefix + "/") == []
    assert day not in due_days(db, datetime.now(UTC))
    assert day in due_days(db, datetime.now(UTC) + timedelta(days=365))
