-- Named SQL of scheduled retention (auditlog/retention_policy.py). Statements with a
-- {partition} placeholder take one partition's name through psycopg.sql.Identifier.

-- name: retention_tenants
SELECT id, retention_days FROM tenants ORDER BY id

-- name: audit_logs_is_partitioned
-- Native declarative partitioning (not a TimescaleDB hypertable, whose chunks it manages).
SELECT relkind = 'p' FROM pg_class WHERE oid = 'audit_logs'::regclass

-- name: daily_partitions
SELECT c.relname
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'audit_logs'::regclass
ORDER BY c.relname

-- name: partition_tenants
SELECT tenant_id, count(*), max(seq) FROM {partition} GROUP BY tenant_id

-- name: deletable_span
-- The created_at span of the tenant's events up to the boundary, and how many there are.
SELECT count(*), min(created_at), max(created_at), min(seq)
FROM audit_logs
WHERE tenant_id = %(tenant_id)s AND seq <= %(last_seq)s

-- name: archived_days_between
SELECT day FROM audit_archives
WHERE tenant_id = %(tenant_id)s AND day BETWEEN %(first_day)s AND %(last_day)s
ORDER BY day

-- name: first_seq_of_tenant
SELECT min(seq) FROM audit_logs WHERE tenant_id = %(tenant_id)s

-- name: subtract_partition_stats
-- What delete_seq_prefix does to the hourly statistics, for a whole partition at once.
WITH counted AS (
    SELECT tenant_id, date_trunc('hour', created_at) AS hour, action_type, severity,
           resource_type, count(*) AS events
    FROM {partition} GROUP BY 1, 2, 3, 4, 5
)
UPDATE audit_stats_hourly h SET events = h.events - c.events
FROM counted c
WHERE h.tenant_id = c.tenant_id AND h.hour = c.hour AND h.action_type = c.action_type
  AND h.severity = c.severity AND h.resource_type = c.resource_type

-- name: detach_partition
ALTER TABLE audit_logs DETACH PARTITION {partition}

-- name: record_partition_search_deletions
-- Between detach and drop (no row can reach the partition any more): per tenant, every event
-- of the partition's UTC day [day_start, day_end) is gone; the search index drops its copies
-- (search_deletions, migration 0009). Only that day: a lower seq may live on another day.
INSERT INTO search_deletions (tenant_id, through_seq, created_from, created_before, rows_deleted)
SELECT tenant_id, max(seq), %(day_start)s, %(day_end)s, count(*)
FROM {partition}
GROUP BY tenant_id

-- name: drop_partition
DROP TABLE {partition}
