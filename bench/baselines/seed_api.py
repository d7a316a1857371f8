"""The seed prototype's write path, as a baseline: per request, verify the JWT, INSERT the
event into PostgreSQL (autocommit), send it to SQS with SendMessage, and index it into
OpenSearch (a per-tenant index, as the seed did), all before answering 201.

It is deliberately minimal (a few required-field checks, no idempotency, no hash chain) and
runs under the same gunicorn worker class and worker count as the platform, on the same
servers, so the comparison is of the design: synchronous writes in the request versus a
validated, batched hand-off to SQS. gunicorn loads it as ``bench.baselines.seed_api:create_app()``.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import boto3
import jwt
from flask import Flask, Response, jsonify, request
from opensearchpy import OpenSearch
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_logs (
    id uuid DEFAULT gen_random_uuid() PRIMARY KEY,
    tenant_id uuid NOT NULL,
    user_id uuid,
    session_id text,
    ip_address inet,
    user_agent text,
    action_type text NOT NULL CHECK (action_type IN ('CREATE', 'UPDATE', 'DELETE', 'VIEW')),
    resource_type text NOT NULL,
    resource_id text NOT NULL,
    severity text NOT NULL CHECK (severity IN ('INFO', 'WARNING', 'ERROR', 'CRITICAL')),
    before_state jsonb,
    after_state jsonb,
    metadata jsonb,
    created_at timestamptz DEFAULT current_timestamp
);
CREATE INDEX IF NOT EXISTS idx_audit_tenant ON audit_logs (tenant_id);
CREATE INDEX IF NOT EXISTS idx_audit_created ON audit_logs (created_at);
"""

REQUIRED = ("action_type", "resource_type", "resource_id", "severity")
COLUMNS = (
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
)
JSON_COLUMNS = frozenset({"before_state", "after_state", "metadata"})
# Built from the constant column list above, never from input.
INSERT = (
    f"INSERT INTO audit_logs (tenant_id, {', '.join(COLUMNS)}) "  # noqa: S608
    f"VALUES (%s, {', '.join(['%s'] * len(COLUMNS))}) RETURNING id, created_at"
)


def index_name(prefix: str, tenant: str) -> str:
    return f"{prefix}-{tenant}"


def create_app() -> Flask:
    env = os.environ
    app = Flask(__name__)
    pool = ConnectionPool(env["DATABASE_URL"], min_size=2, max_size=16, open=True)
    sqs = boto3.client("sqs", endpoint_url=env["AWS_ENDPOINT_URL_SQS"])
    queue_url = env["BASELINE_QUEUE_URL"]
    search = OpenSearch(env["OPENSEARCH_URL"], timeout=10)
    secret = env["JWT_SECRET"]
    prefix = env["BASELINE_INDEX_PREFIX"]

    def problem(status: int, detail: str) -> Response:
        response = jsonify({"status": status, "detail": detail})
        response.status_code = status
        return response

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok"})

    @app.post("/api/v1/logs")
    def create_log() -> Response:
        try:
            token = request.headers.get("Authorization", "").removeprefix("Bearer ")
            claims = jwt.decode(token, secret, algorithms=["HS256"])
            tenant = str(uuid.UUID(str(claims["tenant_id"])))
        except (jwt.PyJWTError, KeyError, ValueError):
            return problem(401, "bad token")
        body: Any = request.get_json(silent=True)
        if not isinstance(body, dict) or any(name not in body for name in REQUIRED):
            return problem(422, "missing fields")
        values = [
            Jsonb(body.get(c))
            if c.endswith(("_state", "metadata")) and body.get(c)
            else body.get(c)
            for c in COLUMNS
        ]
        with pool.connection() as conn:
            row = conn.execute(INSERT, [tenant, *values]).fetchone()
        assert row is not None
        event = {"id": str(row[0]), "tenant_id": tenant, **body, "created_at": row[1].isoformat()}
        sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(event))
        search.index(index=index_name(prefix, tenant), id=event["id"], body=event)
        response = jsonify({"id": event["id"], "created_at": event["created_at"]})
        response.status_code = 201
        return response

    return app
