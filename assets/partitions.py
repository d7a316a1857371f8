"""The one daily partitioning (UTC days) of the day-based assets: stats, exports, digests,
so a day means the same thing to each of them and to their backfills."""

from __future__ import annotations

from dagster import DailyPartitionsDefinition

DAYS = DailyPartitionsDefinition(start_date="2024-01-01", timezone="UTC")
