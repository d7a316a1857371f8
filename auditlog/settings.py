"""Settings, read once from the environment into one typed object.

Defaults point at the embedded local stack (``infra/stack.py``), so a fresh checkout runs
without configuration; every endpoint can be pointed at AWS or other servers by environment.
Nothing reads the environment at import time: call ``Settings.from_env()`` where the process
starts, and build ``Settings(...)`` directly in tests.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, get_type_hints

# One place for every variable and its default. README's table is generated from the same
# names (tests/unit/test_settings.py keeps the two in step).
DEFAULTS: dict[str, str] = {
    "DATABASE_URL": "postgresql://auditlog@127.0.0.1:55432/auditlog",
    "DAGSTER_PG_URL": "postgresql://auditlog@127.0.0.1:55432/dagster",
    "AWS_REGION": "us-east-1",
    "AWS_ENDPOINT_URL_SQS": "http://127.0.0.1:9324",
    "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000",
    "SQS_QUEUE_NAME": "audit-events",
    "SQS_DLQ_NAME": "audit-events-dlq",
    "SQS_MAX_RECEIVE_COUNT": "5",
    "S3_BUCKET": "audit-archive",
    "S3_EXPORTS_PREFIX": "exports",
    "S3_ARCHIVE_PREFIX": "archive",
    "OPENSEARCH_URL": "http://127.0.0.1:9200",
    # Search indices are <prefix>-YYYY.MM (template <prefix>); benchmarks use their own.
    "SEARCH_INDEX_PREFIX": "audit-events",
    "JWT_ALGORITHM": "HS256",
    # No default secret: `make run`/`make test` generate one per checkout in .dev/jwt-secret.
    "JWT_SECRET": "",
    "JWT_PUBLIC_KEY": "",
    "JWT_PRIVATE_KEY": "",
    # Ed25519 key that signs integrity digests (base64 of the 32-byte seed, or PKCS#8 PEM).
    # No default: `make run`/`make test` generate one per checkout in .dev/digest-signing-key.
    "DIGEST_SIGNING_KEY": "",
    # Where the run-failure sensor POSTs a JSON alert (empty: the structured log line only).
    "ALERT_WEBHOOK_URL": "",
    "API_MAX_BODY_BYTES": str(6 * 1024 * 1024),
    "API_MAX_BULK_BYTES": str(5 * 1024 * 1024),
    "API_MAX_BULK_EVENTS": "1000",
    # 1: plain single-event POSTs skip Flask's request machinery (api/logs/lane.py); 0: off.
    "API_INGEST_LANE": "1",
    "RATE_LIMIT_EVENTS_PER_SECOND": "5000",
    "RATE_LIMIT_BURST": "10000",
    "PRODUCER_LINGER_MS": "3",
    "PRODUCER_SENDERS": "2",
    "DB_POOL_MIN": "1",
    "DB_POOL_MAX": "8",
    # Exports hold a connection for as long as the client takes to read them: they get a
    # pool of their own, so slow readers cannot take every connection the API has.
    "DB_EXPORT_POOL_MAX": "3",
    "DRAIN_BATCH_SIZE": "500",
    "DRAIN_BATCH_EVENTS": "10000",
    "DRAIN_TIME_BUDGET_SECONDS": "120",
    "DRAIN_IDLE_SECONDS": "15",
    "DRAIN_MAX_CONCURRENT_RUNS": "1",
    # Live tail: heartbeat (and ping) interval, and how many live events one socket may
    # buffer (beyond that it catches up from PostgreSQL; overflowing again meanwhile
    # closes it as a slow consumer).
    "STREAM_HEARTBEAT_SECONDS": "15",
    "STREAM_BUFFER_EVENTS": "1000",
    # Bearer token /metrics requires (its counters are labelled by tenant id). Empty: open,
    # for a port that only loopback or the scraper's network can reach.
    "METRICS_TOKEN": "",
    "LOG_LEVEL": "INFO",
}


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULTS["DATABASE_URL"]
    dagster_pg_url: str = DEFAULTS["DAGSTER_PG_URL"]
    aws_region: str = DEFAULTS["AWS_REGION"]
    aws_endpoint_url_sqs: str = DEFAULTS["AWS_ENDPOINT_URL_SQS"]
    aws_endpoint_url_s3: str = DEFAULTS["AWS_ENDPOINT_URL_S3"]
    sqs_queue_name: str = DEFAULTS["SQS_QUEUE_NAME"]
    sqs_dlq_name: str = DEFAULTS["SQS_DLQ_NAME"]
    sqs_max_receive_count: int = int(DEFAULTS["SQS_MAX_RECEIVE_COUNT"])
    s3_bucket: str = DEFAULTS["S3_BUCKET"]
    s3_exports_prefix: str = DEFAULTS["S3_EXPORTS_PREFIX"]
    s3_archive_prefix: str = DEFAULTS["S3_ARCHIVE_PREFIX"]
    opensearch_url: str = DEFAULTS["OPENSEARCH_URL"]
    search_index_prefix: str = DEFAULTS["SEARCH_INDEX_PREFIX"]
    jwt_algorithm: str = DEFAULTS["JWT_ALGORITHM"]
    jwt_secret: str = DEFAULTS["JWT_SECRET"]
    jwt_public_key: str = DEFAULTS["JWT_PUBLIC_KEY"]
    jwt_private_key: str = DEFAULTS["JWT_PRIVATE_KEY"]
    digest_signing_key: str = DEFAULTS["DIGEST_SIGNING_KEY"]
    alert_webhook_url: str = DEFAULTS["ALERT_WEBHOOK_URL"]
    api_max_body_bytes: int = int(DEFAULTS["API_MAX_BODY_BYTES"])
    api_max_bulk_bytes: int = int(DEFAULTS["API_MAX_BULK_BYTES"])
    api_max_bulk_events: int = int(DEFAULTS["API_MAX_BULK_EVENTS"])
    api_ingest_lane: int = int(DEFAULTS["API_INGEST_LANE"])
    rate_limit_events_per_second: float = float(DEFAULTS["RATE_LIMIT_EVENTS_PER_SECOND"])
    rate_limit_burst: float = float(DEFAULTS["RATE_LIMIT_BURST"])
    producer_linger_ms: float = float(DEFAULTS["PRODUCER_LINGER_MS"])
    producer_senders: int = int(DEFAULTS["PRODUCER_SENDERS"])
    db_pool_min: int = int(DEFAULTS["DB_POOL_MIN"])
    db_pool_max: int = int(DEFAULTS["DB_POOL_MAX"])
    db_export_pool_max: int = int(DEFAULTS["DB_EXPORT_POOL_MAX"])
    drain_batch_size: int = int(DEFAULTS["DRAIN_BATCH_SIZE"])
    drain_batch_events: int = int(DEFAULTS["DRAIN_BATCH_EVENTS"])
    drain_time_budget_seconds: float = float(DEFAULTS["DRAIN_TIME_BUDGET_SECONDS"])
    drain_idle_seconds: float = float(DEFAULTS["DRAIN_IDLE_SECONDS"])
    drain_max_concurrent_runs: int = int(DEFAULTS["DRAIN_MAX_CONCURRENT_RUNS"])
    stream_heartbeat_seconds: float = float(DEFAULTS["STREAM_HEARTBEAT_SECONDS"])
    stream_buffer_events: int = int(DEFAULTS["STREAM_BUFFER_EVENTS"])
    metrics_token: str = DEFAULTS["METRICS_TOKEN"]
    log_level: str = DEFAULTS["LOG_LEVEL"]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``), converting types.

        An empty variable counts as unset, so ``FOO= make run`` falls back to the default.
        """
        env = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = env.get(field.name.upper(), "")
            if raw == "":
                continue
            kind = hints[field.name]
            try:
                values[field.name] = kind(raw)
            except ValueError as exc:
                raise ValueError(
                    f"{field.name.upper()}={raw!r} is not a valid {kind.__name__}"
                ) from exc
        return cls(**values)
