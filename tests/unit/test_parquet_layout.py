"""The Parquet datasets' layout and schema, as the README documents them."""

import re
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
from dagster import TimeWindow

from assets.exports import days_of
from assets.partitions import DAYS
from auditlog.export import PARQUET_SCHEMA
from auditlog.parquet_dataset import day_bounds, day_prefix, object_key

README = Path(__file__).resolve().parents[2] / "README.md"
TENANT = uuid.UUID("0190c0de-0000-7000-8000-000000000001")


def test_keys_are_hive_style_and_depend_only_on_prefix_tenant_and_day() -> None:
    day = date(2026, 11, 20)
    assert object_key("exports", TENANT, day) == (
        f"exports/tenant={TENANT}/date=2026-11-20/events.parquet"
    )
    assert object_key("/archive/", TENANT, day) == (
        f"archive/tenant={TENANT}/date=2026-11-20/events.parquet"
    )
    assert object_key("exports", TENANT, day).startswith(day_prefix("exports", TENANT, day))


def test_a_day_is_a_half_open_utc_range() -> None:
    start, end = day_bounds(date(2026, 3, 29))  # a DST change in Europe: no matter, UTC
    assert (start, end) == (datetime(2026, 3, 29, tzinfo=UTC), datetime(2026, 3, 30, tzinfo=UTC))


def test_a_backfill_window_covers_each_of_its_days() -> None:
    window = TimeWindow(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 4, tzinfo=UTC))
    assert list(days_of(window)) == [date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)]
    assert DAYS.timezone == "UTC"
    assert DAYS.get_partition_keys()[0] == "2024-01-01"


README_TYPES = {
    pa.string(): "string",
    pa.int64(): "int64",
    pa.timestamp("us", tz="UTC"): "timestamp(us, UTC)",
}


def test_the_readme_schema_table_matches_the_schema() -> None:
    section = README.read_text().split("## Parquet datasets", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, re.MULTILINE)
    assert [(name, kind.strip()) for name, kind in rows] == [
        (f.name, README_TYPES[f.type]) for f in PARQUET_SCHEMA
    ]
