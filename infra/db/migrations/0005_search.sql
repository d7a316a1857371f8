-- How far each tenant's events are in the search index (OpenSearch), by seq: the chain
-- makes seq gapless per tenant, so "everything up to last_seq" is exact.
CREATE TABLE search_watermarks (
    tenant_id  uuid        PRIMARY KEY,
    last_seq   bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Events whose indexed copy must be refreshed (a redaction erased fields).
CREATE TABLE search_reindex_requests (
    tenant_id  uuid        NOT NULL,
    id         uuid        NOT NULL,
    created_at timestamptz NOT NULL,
    requested  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
