-- Signed integrity digests (auditlog/digests.py): per tenant and UTC day, the seq range the
-- day's digest covers, the chain head at its end, and the hash of the tenant's previous
-- digest, signed with Ed25519. The same document is written to S3; this table is the
-- index the pipeline chains from (each digest commits to the one before).
CREATE TABLE integrity_digests (
    tenant_id        uuid        NOT NULL,
    day              date        NOT NULL,
    from_seq         bigint      NOT NULL CHECK (from_seq > 0),
    to_seq           bigint      NOT NULL,
    event_count      bigint      NOT NULL CHECK (event_count > 0),
    head_hash        bytea       NOT NULL CHECK (length(head_hash) = 32),
    prev_digest_hash bytea       NOT NULL CHECK (length(prev_digest_hash) = 32),
    digest_hash      bytea       NOT NULL CHECK (length(digest_hash) = 32),
    key_id           text        NOT NULL,
    signature        bytea       NOT NULL,
    s3_key           text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, day),
    CHECK (to_seq >= from_seq),
    -- A chain, never a fork: each digest has at most one successor.
    UNIQUE (tenant_id, prev_digest_hash)
);
