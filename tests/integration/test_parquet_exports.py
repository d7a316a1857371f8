"""``parquet_exports`` against the real S3 (moto server) and PostgreSQL: a CLI backfill of
three days read back as a Hive-partitioned dataset, tenant isolation, idempotent
re-materialisation, and the row-count check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from dagster import AssetSelection, Definitions, define_asset_job, materialize

from assets.exports import parquet_exports, parquet_rows_match
from auditlog.export import PARQUET_SCHEMA
from auditlog.parquet_dataset import make_s3_client, object_key, open_parquet, upload_stream
from auditlog.settings import Settings
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

ROOT = Path(__file__).resolve().parents[2]
PARTITION_TAG = "dagster/partition"


def run_materialize(partition: str) -> Any:
    return materialize(
        [parquet_exports, parquet_rows_match],
        partition_key=partition,
        resources={"platform": AuditPlatform()},
        raise_on_error=True,
    )


def check_passed(result: Any) -> bool:
    [evaluation] = result.get_asset_check_evaluations()
    return bool(evaluation.passed)


def test_cli_backfill_of_three_days_writes_a_hive_dataset(
    dataset_settings: Settings, new_tenant: Callable[..., uuid.UUID], tmp_path: Path
) -> None:
    settings = dataset_settings
    tenants = [new_tenant(), new_tenant()]
    days = [utc_day(63), utc_day(62), utc_day(61)]
    counts = {
        (t, d): 20 + 15 * i + 7 * j for i, t in enumerate(tenants) for j, d in enumerate(days)
    }
    store(settings, [r for (t, d), n in counts.items() for r in day_records(t, d, n)])
    # A day outside the backfilled range stays unexported.
    store(settings, day_records(tenants[0], utc_day(60), 5))

    # The documented command (README "Parquet datasets"), with a throwaway Dagster instance.
    (tmp_path / "dagster.yaml").write_text("")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    command = [
        sys.executable, "-m", "dagster", "asset", "materialize",
        "-m", "pipelines.definitions",
        "--select", "parquet_exports",
        "--partition-range", f"{days[0]}...{days[-1]}",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # One run for the range; the row-count check ran in it and passed.
    assert "Asset check 'parquet_rows_match' on 'parquet_exports' passed" in done.stderr

    prefix = settings.s3_exports_prefix
    expected_keys = sorted(object_key(prefix, t, d) for t, d in counts)
    assert s3_keys(settings, prefix + "/") == expected_keys

    dataset = hive_dataset(settings, prefix)
    for field in PARQUET_SCHEMA:
        assert dataset.schema.field(field.name).type == field.type
    assert {"tenant", "date"} <= set(dataset.schema.names)
    table = dataset.to_table()
    assert table.num_rows == sum(counts.values())
    rows = table.select(["tenant", "date", "tenant_id", "created_at", "seq"]).to_pylist()
    found = Counter((uuid.UUID(r["tenant"]), date.fromisoformat(str(r["date"]))) for r in rows)
    assert found == counts
    for r in rows:  # every row sits under its own tenant's prefix and its own day
        assert r["tenant_id"] == r["tenant"]
        assert r["created_at"].date().isoformat() == str(r["date"])

    # Per file: zstd, the contract's schema, rows in chain order.
    s3 = make_s3_client(settings)
    for tenant, day in counts:
        parquet = open_parquet(s3, settings.s3_bucket, object_key(prefix, tenant, day))
        assert parquet.schema_arrow.equals(PARQUET_SCHEMA)
        assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
        seqs = parquet.read(columns=["seq"]).column("seq").to_pylist()
        assert seqs == sorted(seqs)
        assert len(seqs) == counts[(tenant, day)]

    # A filter on the partition columns reads one tenant's day only (what Athena/DuckDB do).
    one = dataset.to_table(
        filter=(pa.compute.field("tenant") == str(tenants[1]))
        & (pa.compute.field("date") == pa.scalar(days[1]).cast(dataset.schema.field("date").type))
    )
    assert one.num_rows == counts[(tenants[1], days[1])]
    assert set(one.column("tenant_id").to_pylist()) == {str(tenants[1])}


def test_values_round_trip_as_documented(
    dataset_settings: Settings, new_tenant: Callable[..., uuid.UUID], db: Any
) -> None:
    settings = dataset_settings
    tenant = new_tenant()
    day = utc_day(64)
    store(settings, day_records(tenant, day, 3))
    run_materialize(day.isoformat())

    s3 = make_s3_client(settings)
    key = object_key(settings.s3_exports_prefix, tenant, day)
    exported = open_parquet(s3, settings.s3_bucket, key).read().to_pylist()
    stored = db.execute(
        "SELECT id::text, seq, created_at, host(ip_address), after_state, "
        "encode(prev_hash, 'hex'), encode(hash, 'hex'), before_state IS NULL, occurred_at "
        "FROM audit_logs WHERE tenant_id = %s ORDER BY seq",
        (tenant,),
    ).fetchall()
    assert len(exported) == len(stored) == 3
    for row, (event_id, seq, created, ip, after, prev_hash, digest, no_before, occurred) in zip(
        exported, stored, strict=True
    ):
        # uuids as text, seq int64, times as UTC microsecond timestamps, hashes as hex
        assert (row["id"], row["seq"], row["created_at"]) == (event_id, seq, created)
        assert str(row["created_at"].tzinfo) == "UTC"
        assert row["occurred_at"] == occurred
        assert row["tenant_id"] == str(tenant)
        assert row["ip_address"] == ip
        assert (row["prev_hash"], row["hash"]) == (prev_hash, digest)
        # JSON columns as compact JSON text with sorted keys, non-ASCII kept as is
        assert row["after_state"] == json.dumps(
            after, separators=(",", ":"), sort_keys=True, ensure_ascii=False
        )
        assert "é" in row["after_state"]
        assert (row["before_state"] is None) == no_before


def test_rematerialising_a_day_replaces_its_objects(
    dataset_settings: Settings, new_tenant: Callable[..., uuid.UUID]
) -> None:
    settings = dataset_settings
    tenant, quiet = new_tenant(), new_tenant()
    day = utc_day(66)
    store(settings, day_records(tenant, day, 40))
    store(settings, day_records(quiet, utc_day(65), 3))  # no events on `day`: no object
    prefix = settings.s3_exports_prefix

    first = run_materialize(day.isoformat())
    metadata = first.asset_materializations_for_node("parquet_exports")[0].metadata
    assert (metadata["rows"].value, metadata["files"].value, metadata["tenants"].value) == (
        40,
        1,
        1,
    )
    assert metadata["bytes"].value > 0
    assert check_passed(first)
    assert s3_keys(settings, prefix + "/") == [object_key(prefix, tenant, day)]

    # A late event and an object left under the day by an older layout: a re-run writes the
    # day again under the same key and removes the stray object.
    s3 = make_s3_client(settings)
    stray = f"{prefix}/tenant={tenant}/date={day}/part-0.parquet"
    s3.put_object(Bucket=settings.s3_bucket, Key=stray, Body=b"old")
    store(settings, day_records(tenant, day, 3)[1:2])
    again = run_materialize(day.isoformat())
    assert again.asset_materializations_for_node("parquet_exports")[0].metadata["rows"].value == 41
    assert check_passed(again)
    assert s3_keys(settings, prefix + "/") == [object_key(prefix, tenant, day)]
    parquet = open_parquet(s3, settings.s3_bucket, object_key(prefix, tenant, day))
    assert parquet.metadata.num_rows == 41


def run_check_only(day: date) -> Any:
    """The row-count check alone, for one day, as the UI runs it."""
    job = define_asset_job(
        "check_parquet_rows", selection=AssetSelection.checks(parquet_rows_match)
    )
    defs = Definitions(
        assets=[parquet_exports],
        asset_checks=[parquet_rows_match],
        jobs=[job],
        resources={"platform": AuditPlatform()},
    )
    return defs.resolve_job_def(job.name).execute_in_process(tags={PARTITION_TAG: day.isoformat()})


def test_the_check_compares_each_tenants_rows_with_postgres(
    dataset_settings: Settings, new_tenant: Callable[..., uuid.UUID]
) -> None:
    settings = dataset_settings
    exported, late_one = new_tenant(), new_tenant()
    day = utc_day(67)
    store(settings, day_records(exported, day, 10) + day_records(late_one, day, 4))
    assert check_passed(run_materialize(day.isoformat()))

    store(settings, day_records(late_one, day, 2)[:1])  # arrives after the export
    newcomer = new_tenant()
    store(settings, day_records(newcomer, day, 2))  # a tenant with no object yet
    [evaluation] = run_check_only(day).get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.partition == day.isoformat()
    assert evaluation.metadata["tenant_days_checked"].value == 3
    assert evaluation.metadata["mismatched"].value == 2
    details = evaluation.metadata["details"].value
    assert f"'{late_one}/{day}': {{'postgres': 5, 's3': 4}}" in details
    assert f"'{newcomer}/{day}': {{'postgres': 2, 's3': None}}" in details
    assert str(exported) not in details

    assert check_passed(run_materialize(day.isoformat()))
    [evaluation] = run_check_only(day).get_asset_check_evaluations()
    assert evaluation.passed


def test_large_objects_go_up_in_parts_and_a_failed_upload_leaves_the_old_one(
    dataset_settings: Settings,
) -> None:
    settings = dataset_settings
    s3 = make_s3_client(settings)
    key = f"{settings.s3_exports_prefix}/multipart-probe"
    chunk = os.urandom(1024 * 1024)
    assert upload_stream(s3, settings.s3_bucket, key, [chunk] * 20) == 20 * len(chunk)
    head = s3.head_object(Bucket=settings.s3_bucket, Key=key)
    assert head["ContentLength"] == 20 * len(chunk)
    assert head["ETag"].endswith('-3"')  # 8 + 8 + 4 MiB: a multipart upload of three parts

    def failing() -> Iterator[bytes]:
        yield from [chunk] * 9  # one part sent
        raise RuntimeError("database went away")

    with pytest.raises(RuntimeError, match="went away"):
        upload_stream(s3, settings.s3_bucket, key, failing())
    assert s3.head_object(Bucket=settings.s3_bucket, Key=key)["ETag"] == head["ETag"]
    pending = s3.list_multipart_uploads(Bucket=settings.s3_bucket, Prefix=key)
    assert pending.get("Uploads", []) == []
