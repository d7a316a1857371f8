-- Idempotent ingest, and the platform's own tenant for its audit trail.

-- An Idempotency-Key reserves the event ids of its request before anything is queued. A
-- retry with the same key and the same request re-sends the same ids (the drain stores an id
-- once), so a request retried after a crash or a timeout yields exactly one event each.
CREATE TABLE idempotency_keys (
    tenant_id    uuid        NOT NULL,
    key          text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash bytea       NOT NULL,
    event_ids    uuid[]      NOT NULL,   -- by item index; NULL for a rejected bulk item
    status_code  integer,                -- set once the request completed
    response     jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

-- Changes to tenants are recorded as events of this tenant (resource_type 'tenant').
INSERT INTO tenants (id, name, status, retention_days)
VALUES ('00000000-0000-0000-0000-000000000000', 'platform', 'active', 3650)
ON CONFLICT (id) DO NOTHING;
