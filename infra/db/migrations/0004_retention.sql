-- Redaction of personal data, and the archive ledger that retention consults.

-- A redacted event keeps, for each erased field, the SHA-256 digest of its original text:
-- the hash chain commits to fields through these digests (docs/integrity.md), so the chain
-- still verifies after the value is gone.
ALTER TABLE audit_logs ADD COLUMN redacted jsonb;

-- One row per tenant and UTC day archived to S3 and verified (row count, head hash).
-- Cleanup and retention delete only days recorded here, unless told archive=false.
CREATE TABLE audit_archives (
    tenant_id   uuid        NOT NULL,
    day         date        NOT NULL,
    event_count bigint      NOT NULL,
    first_seq   bigint,
    last_seq    bigint,
    head_hash   bytea,
    s3_key      text        NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, day)
);
