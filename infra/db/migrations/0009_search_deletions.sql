-- Events deleted from audit_logs that the search index (OpenSearch) may still hold.
--
-- Each row is written in the transaction that deletes the events, and states a fact that
-- stays true: the tenant has no event with seq <= through_seq AND created_from <= created_at
-- < created_before, and never will again (a later event, even one with an old created_at,
-- gets a seq above the chain head, so above through_seq). The indexer deletes the indexed
-- documents matching exactly that (auditlog/search_deletions.py) and only then removes the
-- row, so the index never keeps an event PostgreSQL no longer has and never loses one it
-- still has. A row covers a range (a cleanup, a retention batch, a dropped daily partition),
-- never one event.
--
-- * A seq-prefix delete (cleanup, retention's batches): no event of the tenant has
--   seq <= through_seq at all; the created_at span (of the deleted rows, widened to whole
--   seconds) only narrows the search to the monthly indices concerned.
-- * A dropped partition: every event of the tenant in that UTC day is gone, but events with a
--   lower seq may live on other days until retention's batches take them, so the day's exact
--   bounds are part of the fact.
CREATE TABLE search_deletions (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id      uuid        NOT NULL,
    through_seq    bigint      NOT NULL CHECK (through_seq > 0),
    created_from   timestamptz NOT NULL,
    created_before timestamptz NOT NULL,
    rows_deleted   bigint      NOT NULL CHECK (rows_deleted > 0),
    requested      timestamptz NOT NULL DEFAULT now(),
    CHECK (created_before > created_from)
);
CREATE INDEX search_deletions_tenant_idx ON search_deletions (tenant_id, id);
