-- Named SQL used by the platform. Each statement follows a "-- name:" header.

-- name: ensure_partitions
SELECT audit_ensure_partitions(%(first_day)s::date, %(last_day)s::date)

-- name: create_staging
CREATE TEMP TABLE audit_staging (
    id            uuid        NOT NULL,
    tenant_id     uuid        NOT NULL,
    created_at    timestamptz NOT NULL,
    occurred_at   timestamptz,
    user_id       uuid,
    session_id    text,
    ip_address    inet,
    user_agent    text,
    action_type   text        NOT NULL,
    resource_type text        NOT NULL,
    resource_id   text        NOT NULL,
    severity      text        NOT NULL,
    before_state  jsonb,
    after_state   jsonb,
    metadata      jsonb
) ON COMMIT DROP;
CREATE TEMP TABLE audit_staging_chain (
    id        uuid   PRIMARY KEY,
    seq       bigint NOT NULL,
    prev_hash bytea  NOT NULL,
    hash      bytea  NOT NULL
) ON COMMIT DROP

-- name: copy_staging
COPY audit_staging (id, tenant_id, created_at, occurred_at, user_id, session_id, ip_address,
                    user_agent, action_type, resource_type, resource_id, severity,
                    before_state, after_state, metadata) FROM STDIN

-- name: create_missing_chain_heads
INSERT INTO tenant_chain_heads (tenant_id, last_seq, last_hash)
SELECT DISTINCT tenant_id, 0, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea
FROM audit_staging
ON CONFLICT (tenant_id) DO NOTHING

-- name: lock_chain_heads
-- Lock every head of the batch in one order, so concurrent drains cannot deadlock.
SELECT tenant_id, last_seq, last_hash
FROM tenant_chain_heads
WHERE tenant_id IN (SELECT tenant_id FROM audit_staging)
ORDER BY tenant_id
FOR UPDATE

-- name: staged_new_events
-- Events of the batch not stored yet (redelivery and duplicates within the batch dropped),
-- in chain order, with the text renderings the hash covers. Runs after the heads are
-- locked, so no concurrent drain can store one of these ids in between.
SELECT DISTINCT ON (s.tenant_id, s.created_at, s.id)
       s.tenant_id, s.id,
       audit_canonical_fields(s.id, s.tenant_id, s.created_at, s.occurred_at, s.user_id,
                              s.session_id, s.ip_address, s.user_agent, s.action_type,
                              s.resource_type, s.resource_id, s.severity, s.before_state,
                              s.after_state, s.metadata)
FROM audit_staging s
WHERE NOT EXISTS (
    SELECT 1 FROM audit_logs a WHERE a.id = s.id AND a.created_at = s.created_at
)
ORDER BY s.tenant_id, s.created_at, s.id

-- name: copy_staging_chain
COPY audit_staging_chain (id, seq, prev_hash, hash) FROM STDIN

-- name: insert_from_staging
INSERT INTO audit_logs (id, tenant_id, seq, created_at, occurred_at, user_id, session_id,
                        ip_address, user_agent, action_type, resource_type, resource_id,
                        severity, before_state, after_state, metadata, prev_hash, hash)
SELECT DISTINCT ON (s.id)
       s.id, s.tenant_id, c.seq, s.created_at, s.occurred_at, s.user_id, s.session_id,
       s.ip_address, s.user_agent, s.action_type, s.resource_type, s.resource_id,
       s.severity, s.before_state, s.after_state, s.metadata, c.prev_hash, c.hash
FROM audit_staging s
JOIN audit_staging_chain c ON c.id = s.id
ORDER BY s.id

-- name: count_new_events
-- Only the events this batch stored (the chain table holds exactly those ids).
INSERT INTO audit_stats_hourly AS h (tenant_id, hour, action_type, severity, resource_type, events)
SELECT s.tenant_id, date_trunc('hour', s.created_at), s.action_type, s.severity, s.resource_type, count(*)
FROM (SELECT DISTINCT ON (id) * FROM audit_staging ORDER BY id) s
JOIN audit_staging_chain c ON c.id = s.id
GROUP BY 1, 2, 3, 4, 5
ON CONFLICT (tenant_id, hour, action_type, severity, resource_type)
DO UPDATE SET events = h.events + EXCLUDED.events

-- name: advance_chain_head
UPDATE tenant_chain_heads
SET last_seq = %(last_seq)s, last_hash = %(last_hash)s, updated_at = now()
WHERE tenant_id = %(tenant_id)s

-- name: notify_committed
-- Delivered to listeners only when the transaction commits.
SELECT pg_notify('audit_events', %(payload)s)

-- name: get_event
-- A UUIDv7's own timestamp bounds created_at, so only the partition holding it is searched;
-- an id of another version (never minted here) is looked up without the bound.
SELECT id, tenant_id, seq, created_at, occurred_at, user_id, session_id,
       host(ip_address) AS ip_address, user_agent, action_type, resource_type, resource_id,
       severity, before_state, after_state, metadata, prev_hash, hash, redacted
FROM audit_logs
WHERE tenant_id = %(tenant_id)s
  AND id = %(id)s
  AND (%(id_time)s::timestamptz IS NULL
       OR created_at BETWEEN %(id_time)s::timestamptz - interval '1 minute'
                         AND %(id_time)s::timestamptz + interval '1 minute')

-- name: chain_rows
SELECT seq, prev_hash, hash, id::text, redacted,
       audit_canonical_fields(id, tenant_id, created_at, occurred_at, user_id, session_id,
                              ip_address, user_agent, action_type, resource_type,
                              resource_id, severity, before_state, after_state, metadata)
FROM audit_logs
WHERE tenant_id = %(tenant_id)s AND seq BETWEEN %(from_seq)s AND %(to_seq)s
ORDER BY seq

-- name: first_retained_seq
SELECT min(seq) FROM audit_logs WHERE tenant_id = %(tenant_id)s AND seq >= %(from_seq)s

-- name: chain_prev_hash
SELECT hash FROM audit_logs WHERE tenant_id = %(tenant_id)s AND seq = %(seq)s

-- name: tenant_status
SELECT status FROM tenants WHERE id = %(id)s

-- name: insert_tenant
INSERT INTO tenants (name, status, retention_days)
VALUES (%(name)s, %(status)s, %(retention_days)s)
RETURNING id, name, status, retention_days, created_at, updated_at

-- name: find_idempotency_key
SELECT request_hash, event_ids, status_code, response
FROM idempotency_keys
WHERE tenant_id = %(tenant_id)s AND key = %(key)s AND created_at > now() - %(ttl)s::interval

-- name: reserve_idempotency_key
-- An expired reservation with the same key is replaced.
INSERT INTO idempotency_keys (tenant_id, key, request_hash, event_ids)
VALUES (%(tenant_id)s, %(key)s, %(request_hash)s, %(event_ids)s)
ON CONFLICT (tenant_id, key) DO UPDATE
    SET request_hash = EXCLUDED.request_hash, event_ids = EXCLUDED.event_ids,
        status_code = NULL, response = NULL, created_at = now()
    WHERE idempotency_keys.created_at <= now() - %(ttl)s::interval
RETURNING key

-- name: complete_idempotency_key
UPDATE idempotency_keys SET status_code = %(status_code)s, response = %(response)s
WHERE tenant_id = %(tenant_id)s AND key = %(key)s

-- name: expire_idempotency_keys
DELETE FROM idempotency_keys WHERE created_at <= now() - %(ttl)s::interval

-- name: list_tenants
SELECT id, name, status, retention_days, created_at, updated_at
FROM tenants
WHERE (%(name)s::text IS NULL OR strpos(lower(name), lower(%(name)s::text)) > 0)
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(after_created)s::timestamptz IS NULL
       OR (created_at, id) > (%(after_created)s::timestamptz, %(after_id)s::uuid))
ORDER BY created_at, id
LIMIT %(limit)s

-- name: get_tenant
SELECT id, name, status, retention_days, created_at, updated_at FROM tenants WHERE id = %(id)s

-- name: get_tenant_for_update
SELECT id, name, status, retention_days, created_at, updated_at FROM tenants WHERE id = %(id)s
FOR UPDATE

-- name: update_tenant
UPDATE tenants
SET name = coalesce(%(name)s, name),
    status = coalesce(%(status)s, status),
    retention_days = coalesce(%(retention_days)s, retention_days),
    updated_at = now()
WHERE id = %(id)s
RETURNING id, name, status, retention_days, created_at, updated_at

-- name: stats_hours_aggregated
SELECT hour, action_type, severity, resource_type, sum(events)::bigint
FROM audit_stats_hourly
WHERE tenant_id = %(tenant_id)s AND hour >= %(start)s AND hour < %(end)s
GROUP BY 1, 2, 3, 4

-- name: stats_hours_raw
-- The partial hours at the edges of a range, counted from the rows themselves.
SELECT date_trunc('hour', created_at), action_type, severity, resource_type, count(*)
FROM audit_logs
WHERE tenant_id = %(tenant_id)s AND created_at >= %(start)s AND created_at < %(end)s
GROUP BY 1, 2, 3, 4

-- name: stats_top_resources
SELECT resource_type, resource_id, count(*) AS events
FROM audit_logs
WHERE tenant_id = %(tenant_id)s AND created_at >= %(start)s AND created_at < %(end)s
GROUP BY 1, 2
ORDER BY 3 DESC, 1, 2
LIMIT %(limit)s

-- name: stats_top_users
SELECT user_id, count(*) AS events
FROM audit_logs
WHERE tenant_id = %(tenant_id)s AND created_at >= %(start)s AND created_at < %(end)s
  AND user_id IS NOT NULL
GROUP BY 1
ORDER BY 2 DESC, 1
LIMIT %(limit)s

-- name: cleanup_boundary
-- The last seq that may go: every event up to it was created before the cut-off (and, when
-- archived days are required, is in its day's archive: an event that reached the database
-- after its day was archived, e.g. a redriven dead letter, has a seq above the archive's
-- last_seq and is not archived until the day is archived again). Deleting a seq prefix
-- keeps the retained chain contiguous, so it verifies from its first retained event.
SELECT coalesce(min(seq) - 1, (SELECT max(seq) FROM audit_logs WHERE tenant_id = %(tenant_id)s))
FROM audit_logs l
WHERE tenant_id = %(tenant_id)s
  AND (created_at >= %(before)s
       OR (%(require_archive)s AND NOT EXISTS (
            SELECT 1 FROM audit_archives a
            WHERE a.tenant_id = l.tenant_id AND a.day = (l.created_at AT TIME ZONE 'UTC')::date
              AND l.seq <= a.last_seq)))

-- name: count_older_than
SELECT count(*) FROM audit_logs WHERE tenant_id = %(tenant_id)s AND created_at < %(before)s

-- name: delete_seq_prefix
-- Also records the deletion for the search index (search_deletions, migration 0009) in the
-- same statement, so no caller can delete events and leave them searchable.
WITH gone AS (
    DELETE FROM audit_logs
    WHERE tenant_id = %(tenant_id)s AND seq <= %(last_seq)s
    RETURNING tenant_id, seq, created_at, action_type, severity, resource_type
), for_search AS (
    INSERT INTO search_deletions (tenant_id, through_seq, created_from, created_before, rows_deleted)
    SELECT tenant_id, max(seq), date_trunc('second', min(created_at)),
           date_trunc('second', max(created_at)) + interval '1 second', count(*)
    FROM gone
    GROUP BY tenant_id
    RETURNING 1
), counted AS (
    SELECT tenant_id, date_trunc('hour', created_at) AS hour, action_type, severity, resource_type,
           count(*) AS events
    FROM gone GROUP BY 1, 2, 3, 4, 5
), adjusted AS (
    UPDATE audit_stats_hourly h SET events = h.events - c.events
    FROM counted c
    WHERE h.tenant_id = c.tenant_id AND h.hour = c.hour AND h.action_type = c.action_type
      AND h.severity = c.severity AND h.resource_type = c.resource_type
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT min(created_at) FROM gone), (SELECT max(created_at) FROM gone)

-- name: redact_event
-- Erase the named fields, keeping each one's digest (computed by the caller from the
-- canonical rendering) in `redacted`.
UPDATE audit_logs
SET user_id      = CASE WHEN 'user_id'      = ANY(%(fields)s) THEN NULL ELSE user_id END,
    session_id   = CASE WHEN 'session_id'   = ANY(%(fields)s) THEN NULL ELSE session_id END,
    ip_address   = CASE WHEN 'ip_address'   = ANY(%(fields)s) THEN NULL ELSE ip_address END,
    user_agent   = CASE WHEN 'user_agent'   = ANY(%(fields)s) THEN NULL ELSE user_agent END,
    before_state = CASE WHEN 'before_state' = ANY(%(fields)s) THEN NULL ELSE before_state END,
    after_state  = CASE WHEN 'after_state'  = ANY(%(fields)s) THEN NULL ELSE after_state END,
    metadata     = CASE WHEN 'metadata'     = ANY(%(fields)s) THEN NULL ELSE metadata END,
    redacted     = coalesce(redacted, '{}'::jsonb) || %(digests)s
WHERE tenant_id = %(tenant_id)s AND id = %(id)s AND created_at = %(created_at)s

-- name: event_for_redaction
SELECT created_at, redacted,
       audit_canonical_fields(id, tenant_id, created_at, occurred_at, user_id, session_id,
                              ip_address, user_agent, action_type, resource_type,
                              resource_id, severity, before_state, after_state, metadata)
FROM audit_logs
WHERE tenant_id = %(tenant_id)s AND id = %(id)s
  AND (%(id_time)s::timestamptz IS NULL
       OR created_at BETWEEN %(id_time)s::timestamptz - interval '1 minute'
                         AND %(id_time)s::timestamptz + interval '1 minute')
FOR UPDATE

-- name: search_lagging_tenants
SELECT h.tenant_id, coalesce(w.last_seq, 0), h.last_seq
FROM tenant_chain_heads h
LEFT JOIN search_watermarks w ON w.tenant_id = h.tenant_id
WHERE h.last_seq > coalesce(w.last_seq, 0)
ORDER BY h.last_seq - coalesce(w.last_seq, 0) DESC

-- name: events_after_seq
SELECT id, tenant_id, seq, created_at, occurred_at, user_id, session_id,
       host(ip_address) AS ip_address, user_agent, action_type, resource_type, resource_id,
       severity, before_state, after_state, metadata, prev_hash, hash, redacted
FROM audit_logs
WHERE tenant_id = %(tenant_id)s AND seq > %(after_seq)s
ORDER BY seq
LIMIT %(limit)s

-- name: advance_search_watermark
INSERT INTO search_watermarks (tenant_id, last_seq) VALUES (%(tenant_id)s, %(last_seq)s)
ON CONFLICT (tenant_id) DO UPDATE
SET last_seq = greatest(search_watermarks.last_seq, EXCLUDED.last_seq), updated_at = now()

-- name: search_watermark_of
SELECT last_seq FROM search_watermarks WHERE tenant_id = %(tenant_id)s

-- name: request_reindex
INSERT INTO search_reindex_requests (tenant_id, id, created_at)
VALUES (%(tenant_id)s, %(id)s, %(created_at)s)
ON CONFLICT (tenant_id, id) DO UPDATE SET requested = now()

-- name: try_search_writer_lock
-- The search index's writers exclude each other (auditlog/indexer.py, SEARCH_WRITER_LOCK):
-- an incremental pass skips while a rebuild holds it ...
SELECT pg_try_advisory_lock(%(key)s)

-- name: wait_search_writer_lock
-- ... and a rebuild waits for the pass in progress.
SELECT pg_advisory_lock(%(key)s)

-- name: release_search_writer_lock
SELECT pg_advisory_unlock(%(key)s)

-- name: take_reindex_requests
DELETE FROM search_reindex_requests
WHERE (tenant_id, id) IN (SELECT tenant_id, id FROM search_reindex_requests ORDER BY requested LIMIT %(limit)s)
RETURNING tenant_id, id, created_at

-- name: events_by_ids
SELECT id, tenant_id, seq, created_at, occurred_at, user_id, session_id,
       host(ip_address) AS ip_address, user_agent, action_type, resource_type, resource_id,
       severity, before_state, after_state, metadata, prev_hash, hash, redacted
FROM audit_logs
WHERE tenant_id = %(tenant_id)s AND id = ANY(%(ids)s)
  AND created_at BETWEEN %(earliest)s AND %(latest)s

-- name: count_events_up_to_seq
SELECT count(*) FROM audit_logs WHERE tenant_id = %(tenant_id)s AND seq <= %(seq)s

-- name: indexed_counts
-- Per tenant: events up to the search watermark (what the index should hold); zero for a
-- tenant whose events were all deleted, whose index must then be empty too.
SELECT w.tenant_id, w.last_seq, count(l.id)
FROM search_watermarks w
LEFT JOIN audit_logs l ON l.tenant_id = w.tenant_id AND l.seq <= w.last_seq
GROUP BY 1, 2

-- name: pending_search_deletions
-- Deletions (search_deletions) the search index has not applied yet, oldest first.
SELECT id, tenant_id, through_seq, created_from, created_before, rows_deleted
FROM search_deletions
ORDER BY id
LIMIT %(limit)s

-- name: finish_search_deletions
-- Applied to the index: the rows go (each is a fixed fact, so no newer deletion is lost).
DELETE FROM search_deletions WHERE id = ANY(%(ids)s)

-- name: events_in_range
SELECT id, tenant_id, seq, created_at, occurred_at, user_id, session_id,
       host(ip_address) AS ip_address, user_agent, action_type, resource_type, resource_id,
       severity, before_state, after_state, metadata, prev_hash, hash, redacted
FROM audit_logs
WHERE created_at >= %(start)s AND created_at < %(end)s
ORDER BY created_at, id

-- name: day_tenant_totals
-- Per tenant: the events of one UTC day [start, end), their seq range, and whether the whole
-- day lies outside the tenant's hot window (retention_days before %(now)s): due for archive.
SELECT l.tenant_id, count(*), min(l.seq), max(l.seq),
       %(end)s::timestamptz <= %(now)s::timestamptz - make_interval(days => t.retention_days)
FROM audit_logs l
JOIN tenants t ON t.id = l.tenant_id
WHERE l.created_at >= %(start)s AND l.created_at < %(end)s
GROUP BY l.tenant_id, t.retention_days
ORDER BY l.tenant_id

-- name: tenant_day_events
-- One tenant's events of one UTC day in chain order (Parquet exports and the archive).
SELECT id, tenant_id, seq, created_at, occurred_at, user_id, session_id,
       host(ip_address) AS ip_address, user_agent, action_type, resource_type, resource_id,
       severity, before_state, after_state, metadata, prev_hash, hash, redacted
FROM audit_logs
WHERE tenant_id = %(tenant_id)s AND created_at >= %(start)s AND created_at < %(end)s
ORDER BY seq

-- name: tenant_day_summary
-- What an archive of one tenant's day must hold: its count, seq range and head hash (the
-- hash of its last seq).
SELECT count(*), min(seq), max(seq),
       (SELECT hash FROM audit_logs h
        WHERE h.tenant_id = %(tenant_id)s AND h.created_at >= %(start)s AND h.created_at < %(end)s
        ORDER BY seq DESC LIMIT 1)
FROM audit_logs
WHERE tenant_id = %(tenant_id)s AND created_at >= %(start)s AND created_at < %(end)s

-- name: archive_ledger_entry
SELECT event_count, first_seq, last_seq, head_hash, s3_key
FROM audit_archives
WHERE tenant_id = %(tenant_id)s AND day = %(day)s

-- name: record_archive
INSERT INTO audit_archives (tenant_id, day, event_count, first_seq, last_seq, head_hash, s3_key)
VALUES (%(tenant_id)s, %(day)s, %(event_count)s, %(first_seq)s, %(last_seq)s, %(head_hash)s,
        %(s3_key)s)
ON CONFLICT (tenant_id, day) DO UPDATE
SET event_count = EXCLUDED.event_count, first_seq = EXCLUDED.first_seq,
    last_seq = EXCLUDED.last_seq, head_hash = EXCLUDED.head_hash, s3_key = EXCLUDED.s3_key,
    archived_at = now()

-- name: archive_due_days
-- UTC days holding events past their tenant's hot window that no archive covers yet, oldest
-- first (what the archive schedule asks for). An event stored after its day was archived
-- has a higher seq than the ledger's last_seq for that day, so its day is due again.
SELECT DISTINCT (l.created_at AT TIME ZONE 'UTC')::date AS day
FROM audit_logs l
JOIN tenants t ON t.id = l.tenant_id
WHERE ((l.created_at AT TIME ZONE 'UTC')::date + 1)::timestamp AT TIME ZONE 'UTC'
      <= %(now)s::timestamptz - make_interval(days => t.retention_days)
  AND NOT EXISTS (SELECT 1 FROM audit_archives a
                  WHERE a.tenant_id = l.tenant_id
                    AND a.day = (l.created_at AT TIME ZONE 'UTC')::date
                    AND l.seq <= a.last_seq)
ORDER BY 1
LIMIT %(limit)s
