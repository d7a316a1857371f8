-- Tenants, the audit log itself (time-partitioned on created_at), and per-tenant chain heads.
--
-- audit_logs is a TimescaleDB hypertable when the extension is installed, otherwise a
-- native declaratively range-partitioned table with one partition per UTC day, created
-- ahead by audit_ensure_partitions() (called here, by the drain before it writes a day it
-- has not seen, and by a schedule).

CREATE TABLE tenants (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name           text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status         text        NOT NULL DEFAULT 'active'
                               CHECK (status IN ('active', 'inactive', 'suspended')),
    retention_days integer     NOT NULL DEFAULT 365 CHECK (retention_days BETWEEN 1 AND 36500),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenants_name_idx ON tenants (lower(name));

-- The head of each tenant's hash chain. The drain locks a tenant's row (SELECT ... FOR
-- UPDATE) in the transaction that appends events, so concurrent drains keep every chain
-- linear and every seq gapless.
CREATE TABLE tenant_chain_heads (
    tenant_id  uuid        PRIMARY KEY,
    last_seq   bigint      NOT NULL CHECK (last_seq >= 0),
    last_hash  bytea       NOT NULL CHECK (length(last_hash) = 32),
    updated_at timestamptz NOT NULL DEFAULT now()
);

DO $migration$
DECLARE
    columns text := $cols$
        id            uuid        NOT NULL,
        tenant_id     uuid        NOT NULL,
        seq           bigint      NOT NULL CHECK (seq > 0),
        created_at    timestamptz NOT NULL,
        occurred_at   timestamptz,
        user_id       uuid,
        session_id    text,
        ip_address    inet,
        user_agent    text,
        action_type   text        NOT NULL CHECK (action_type IN ('CREATE', 'UPDATE', 'DELETE', 'VIEW')),
        resource_type text        NOT NULL,
        resource_id   text        NOT NULL,
        severity      text        NOT NULL CHECK (severity IN ('INFO', 'WARNING', 'ERROR', 'CRITICAL')),
        before_state  jsonb,
        after_state   jsonb,
        metadata      jsonb,
        prev_hash     bytea       NOT NULL CHECK (length(prev_hash) = 32),
        hash          bytea       NOT NULL CHECK (length(hash) = 32),
        stored_at     timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (id, created_at)
    $cols$;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        EXECUTE format('CREATE TABLE audit_logs (%s)', columns);
        PERFORM create_hypertable('audit_logs', by_range('created_at', INTERVAL '1 day'));
    ELSE
        EXECUTE format('CREATE TABLE audit_logs (%s) PARTITION BY RANGE (created_at)', columns);
    END IF;
END
$migration$;

-- Listing newest first within a tenant, with keyset pagination on (created_at, id).
CREATE INDEX audit_logs_tenant_time_idx ON audit_logs (tenant_id, created_at DESC, id DESC);
-- Chain verification and stream resume walk a tenant's seq.
CREATE INDEX audit_logs_tenant_seq_idx ON audit_logs (tenant_id, seq);
-- The seed's filters.
CREATE INDEX audit_logs_tenant_resource_idx
    ON audit_logs (tenant_id, resource_type, resource_id, created_at DESC);
CREATE INDEX audit_logs_tenant_user_idx ON audit_logs (tenant_id, user_id, created_at DESC);

-- Create the daily partitions covering [first_day, last_day] that do not exist yet.
-- Returns how many were created. A no-op under TimescaleDB, which makes its own chunks.
CREATE FUNCTION audit_ensure_partitions(first_day date, last_day date) RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    day date := first_day;
    created integer := 0;
    part_name text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN 0;
    END IF;
    WHILE day <= last_day LOOP
        part_name := 'audit_logs_p' || to_char(day, 'YYYYMMDD');
        IF to_regclass(part_name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF audit_logs FOR VALUES FROM (%L) TO (%L)',
                part_name,
                (day::timestamp AT TIME ZONE 'UTC'),
                ((day + 1)::timestamp AT TIME ZONE 'UTC')
            );
            created := created + 1;
        END IF;
        day := day + 1;
    END LOOP;
    RETURN created;
END
$fn$;

SELECT audit_ensure_partitions(
    (now() AT TIME ZONE 'UTC')::date - 1,
    (now() AT TIME ZONE 'UTC')::date + 7
);

-- The text of each hashed field, in the order auditlog.chain.CANONICAL_FIELDS names them.
-- The hash chain is defined over these renderings (documented in docs/integrity.md), so the
-- drain (on staged rows) and verification (on stored rows) both call this one function.
-- NULL stays NULL. jsonb renders in PostgreSQL's canonical jsonb text form.
CREATE FUNCTION audit_canonical_fields(
    id uuid, tenant_id uuid, created_at timestamptz, occurred_at timestamptz,
    user_id uuid, session_id text, ip_address inet, user_agent text,
    action_type text, resource_type text, resource_id text, severity text,
    before_state jsonb, after_state jsonb, metadata jsonb
) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT ARRAY[
        id::text,
        tenant_id::text,
        to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        user_id::text,
        session_id,
        host(ip_address),
        user_agent,
        action_type,
        resource_type,
        resource_id,
        severity,
        before_state::text,
        after_state::text,
        metadata::text
    ]
$fn$;
