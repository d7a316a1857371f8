"""Export formats, written incrementally so an export of millions of rows streams in
constant memory: CSV, NDJSON and Parquet (zstd), with one stable column layout.

JSON columns (before_state, after_state, metadata) are written as JSON text, never as a
language's repr. CSV cells that a spreadsheet would run as a formula are neutralised."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from auditlog.events import format_time

COLUMNS = (
    "id",
    "tenant_id",
    "seq",
    "created_at",
    "occurred_at",
    "user_id",
    "session_id",
    "ip_address",
    "user_agent",
    "action_type",
    "resource_type",
    "resource_id",
    "severity",
    "before_state",
    "after_state",
    "metadata",
    "prev_hash",
    "hash",
)
JSON_COLUMNS = frozenset({"before_state", "after_state", "metadata"})

# The Parquet schema is part of the product's contract (exports, archive): change it only
# by adding columns.
PARQUET_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("tenant_id", pa.string()),
        ("seq", pa.int64()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("occurred_at", pa.timestamp("us", tz="UTC")),
        ("user_id", pa.string()),
        ("session_id", pa.string()),
        ("ip_address", pa.string()),
        ("user_agent", pa.string()),
        ("action_type", pa.string()),
        ("resource_type", pa.string()),
        ("resource_id", pa.string()),
        ("severity", pa.string()),
        ("before_state", pa.string()),
        ("after_state", pa.string()),
        ("metadata", pa.string()),
        ("prev_hash", pa.string()),
        ("hash", pa.string()),
    ]
)

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "ndjson": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}


def flat_row(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row with every value as a plain scalar (JSON columns as JSON text)."""
    out: dict[str, Any] = {}
    for column in COLUMNS:
        value = row[column]
        if value is None:
            out[column] = None
        elif column in JSON_COLUMNS:
            out[column] = json.dumps(
                value, separators=(",", ":"), ensure_ascii=False, sort_keys=True
            )
        elif column in ("prev_hash", "hash"):
            out[column] = bytes(value).hex()
        elif column == "seq":
            out[column] = int(value)
        elif column in ("created_at", "occurred_at"):
            out[column] = value
        else:
            out[column] = str(value)
    return out


def _csv_safe(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def write_csv(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for count, row in enumerate(rows, 1):
        flat = flat_row(row)
        writer.writerow(
            [
                format_time(flat[c])
                if c in ("created_at", "occurred_at") and flat[c]
                else _csv_safe(flat[c])
                for c in COLUMNS
            ]
        )
        if count % 500 == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def write_ndjson(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    chunk: list[str] = []
    for row in rows:
        flat = flat_row(row)
        record = {
            c: json.loads(flat[c])
            if c in JSON_COLUMNS and flat[c] is not None
            else (
                format_time(flat[c]) if c in ("created_at", "occurred_at") and flat[c] else flat[c]
            )
            for c in COLUMNS
        }
        chunk.append(json.dumps(record, separators=(",", ":"), ensure_ascii=False))
        if len(chunk) == 500:
            yield ("\n".join(chunk) + "\n").encode()
            chunk = []
    if chunk:
        yield ("\n".join(chunk) + "\n").encode()


class _Drain(io.RawIOBase):
    """A write-only sink whose bytes the generator hands out as they are produced."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.parts.append(chunk)
        self.position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.position

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def write_parquet(rows: Iterable[dict[str, Any]], row_group_size: int = 50_000) -> Iterator[bytes]:
    sink = _Drain()
    writer = pq.ParquetWriter(pa.PythonFile(sink, mode="w"), PARQUET_SCHEMA, compression="zstd")
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(flat_row(row))
        if len(batch) == row_group_size:
            writer.write_table(pa.Table.from_pylist(batch, schema=PARQUET_SCHEMA))
            batch = []
            yield sink.take()
    if batch:
        writer.write_table(pa.Table.from_pylist(batch, schema=PARQUET_SCHEMA))
    writer.close()
    yield sink.take()


WRITERS = {"csv": write_csv, "ndjson": write_ndjson, "parquet": write_parquet}


def _csv_cell(column: str) -> str:
    """The SQL for one CSV cell, rendered by PostgreSQL exactly as ``write_csv`` renders it
    (times in UTC with a Z, hashes in hex, JSON as JSON text, formula prefixes neutralised)."""
    if column in ("created_at", "occurred_at"):
        return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
    if column in ("prev_hash", "hash"):
        return f"encode({column}, 'hex')"
    if column == "ip_address":
        return "host(ip_address)"
    if column in ("session_id", "user_agent", "resource_type", "resource_id"):
        return (
            f"CASE WHEN left({column}, 1) IN ('=', '+', '-', '@', E'\\t', E'\\r') "
            f"THEN '''' || {column} ELSE {column} END"
        )
    return column


CSV_SELECT_LIST = ", ".join(f"{_csv_cell(c)} AS {c}" for c in COLUMNS)
