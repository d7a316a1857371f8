-- Statistics: the daily aggregates (migration 0006) and the reads that combine them with
-- audit_stats_hourly and raw rows (auditlog/stats.py, auditlog/daily_stats.py).
-- Fragments whose names end in _part are joined with UNION ALL into the statements marked
-- {parts}; {start}/{end} are the placeholders of one time span.

-- name: built_days
-- The tenant's days whose daily rows are current (built from the day's latest version).
SELECT day, events, hourly
FROM audit_stats_days
WHERE tenant_id = %(tenant_id)s AND day >= %(first_day)s AND day < %(end_day)s
  AND built_version = version

-- name: breakdown
-- Counts by action, severity, resource type and (for spans not served by whole days) hour,
-- in one pass over the sources. kind: 1 action, 2 severity, 3 resource type, 4 hour.
SELECT CASE GROUPING(action_type, severity, resource_type, hour)
           WHEN 7 THEN 1 WHEN 11 THEN 2 WHEN 13 THEN 3 ELSE 4 END AS kind,
       coalesce(action_type, severity, resource_type) AS name, hour, sum(events)::bigint
FROM ({parts}) src (hour, action_type, severity, resource_type, events)
GROUP BY GROUPING SETS ((action_type), (severity), (resource_type), (hour))

-- name: breakdown_daily_part
SELECT NULL::timestamptz, action_type, severity, resource_type, sum(events)
FROM audit_stats_daily
WHERE tenant_id = %(tenant_id)s AND day = ANY(%(days)s::date[])
GROUP BY 2, 3, 4

-- name: breakdown_hourly_part
SELECT hour, action_type, severity, resource_type, events
FROM audit_stats_hourly
WHERE tenant_id = %(tenant_id)s AND hour >= {start} AND hour < {end}

-- name: breakdown_raw_part
SELECT date_trunc('hour', created_at, 'UTC'), action_type, severity, resource_type, count(*)
FROM audit_logs
WHERE tenant_id = %(tenant_id)s AND created_at >= {start} AND created_at < {end}
GROUP BY 1, 2, 3, 4

-- name: total
SELECT coalesce(sum(n), 0)::bigint FROM ({parts}) src (n)

-- name: total_hourly_part
SELECT sum(events) FROM audit_stats_hourly
WHERE tenant_id = %(tenant_id)s AND hour >= {start} AND hour < {end}

-- name: total_raw_part
SELECT count(*) FROM audit_logs
WHERE tenant_id = %(tenant_id)s AND created_at >= {start} AND created_at < {end}

-- name: top_resources
-- Exact top-N resources over built days plus raw spans, reading only each day's top
-- %(listed)s rows. For a resource, low = its raw count + its counts on the days that list
-- it; high = low + the (listed+1)-th count of each day that does not list it. Only
-- resources whose high reaches the N-th largest low can be in the top N, so only their
-- exact sums are read. The caller checks that no resource listed on no day (at most
-- `rest`, the sum of the days' bounds) could reach `threshold`; else it runs the exact sum.
WITH edge AS (
    SELECT resource_type, resource_id, count(*) AS events
    FROM ({parts}) raw (resource_type, resource_id)
    GROUP BY 1, 2
), ranked AS (
    SELECT day, resource_type, resource_id, events, day_rank
    FROM audit_stats_daily_resources
    WHERE tenant_id = %(tenant_id)s AND day = ANY(%(days)s::date[]) AND day_rank <= %(listed)s + 1
), bounds AS (
    SELECT day, events AS rest FROM ranked WHERE day_rank = %(listed)s + 1
), listed AS (
    SELECT r.resource_type, r.resource_id, sum(r.events) AS events,
           coalesce(sum(b.rest), 0) AS rest_listed
    FROM ranked r LEFT JOIN bounds b USING (day)
    WHERE r.day_rank <= %(listed)s
    GROUP BY 1, 2
), known AS (
    SELECT resource_type, resource_id, coalesce(e.events, 0) AS edge_events,
           coalesce(e.events, 0) + coalesce(l.events, 0) AS low,
           coalesce(e.events, 0) + coalesce(l.events, 0)
             + (SELECT coalesce(sum(rest), 0) FROM bounds) - coalesce(l.rest_listed, 0) AS high
    FROM edge e FULL JOIN listed l USING (resource_type, resource_id)
), threshold AS (
    SELECT coalesce((SELECT low FROM known ORDER BY low DESC OFFSET %(n)s - 1 LIMIT 1), 0) AS low
)
SELECT k.resource_type, k.resource_id,
       k.edge_events + coalesce((
           SELECT sum(d.events) FROM audit_stats_daily_resources d
           WHERE d.tenant_id = %(tenant_id)s AND d.resource_type = k.resource_type
             AND d.resource_id = k.resource_id AND d.day = ANY(%(days)s::date[])), 0)::bigint AS events,
       (SELECT low FROM threshold)::bigint AS threshold,
       (SELECT coalesce(sum(rest), 0) FROM bounds)::bigint AS rest
FROM known k
WHERE k.high >= (SELECT low FROM threshold)
ORDER BY 3 DESC, 1, 2
LIMIT %(n)s

-- name: top_resources_raw_part
SELECT resource_type, resource_id FROM audit_logs
WHERE tenant_id = %(tenant_id)s AND created_at >= {start} AND created_at < {end}

-- name: top_resources_exact
-- The plain sum over every daily row, for when the bound of top_resources cannot decide.
SELECT resource_type, resource_id, sum(events)::bigint
FROM (
    SELECT resource_type, resource_id, 1 AS events FROM ({parts}) raw (resource_type, resource_id)
    UNION ALL
    SELECT resource_type, resource_id, events FROM audit_stats_daily_resources
    WHERE tenant_id = %(tenant_id)s AND day = ANY(%(days)s::date[])
) counted
GROUP BY 1, 2
ORDER BY 3 DESC, 1, 2
LIMIT %(n)s

-- name: top_users
-- As top_resources, for users (events without a user_id do not count).
WITH edge AS (
    SELECT user_id, count(*) AS events
    FROM ({parts}) raw (user_id)
    GROUP BY 1
), ranked AS (
    SELECT day, user_id, events, day_rank
    FROM audit_stats_daily_users
    WHERE tenant_id = %(tenant_id)s AND day = ANY(%(days)s::date[]) AND day_rank <= %(listed)s + 1
), bounds AS (
    SELECT day, events AS rest FROM ranked WHERE day_rank = %(listed)s + 1
), listed AS (
    SELECT r.user_id, sum(r.events) AS events, coalesce(sum(b.rest), 0) AS rest_listed
    FROM ranked r LEFT JOIN bounds b USING (day)
    WHERE r.day_rank <= %(listed)s
    GROUP BY 1
), known AS (
    SELECT user_id, coalesce(e.events, 0) AS edge_events,
           coalesce(e.events, 0) + coalesce(l.events, 0) AS low,
           coalesce(e.events, 0) + coalesce(l.events, 0)
             + (SELECT coalesce(sum(rest), 0) FROM bounds) - coalesce(l.rest_listed, 0) AS high
    FROM edge e FULL JOIN listed l USING (user_id)
), threshold AS (
    SELECT coalesce((SELECT low FROM known ORDER BY low DESC OFFSET %(n)s - 1 LIMIT 1), 0) AS low
)
SELECT k.user_id,
       k.edge_events + coalesce((
           SELECT sum(d.events) FROM audit_stats_daily_users d
           WHERE d.tenant_id = %(tenant_id)s AND d.user_id = k.user_id
             AND d.day = ANY(%(days)s::date[])), 0)::bigint AS events,
       (SELECT low FROM threshold)::bigint AS threshold,
       (SELECT coalesce(sum(rest), 0) FROM bounds)::bigint AS rest
FROM known k
WHERE k.high >= (SELECT low FROM threshold)
ORDER BY 2 DESC, 1
LIMIT %(n)s

-- name: top_users_raw_part
SELECT user_id FROM audit_logs
WHERE tenant_id = %(tenant_id)s AND created_at >= {start} AND created_at < {end}
  AND user_id IS NOT NULL

-- name: top_users_exact
SELECT user_id, sum(events)::bigint
FROM (
    SELECT user_id, 1 AS events FROM ({parts}) raw (user_id)
    UNION ALL
    SELECT user_id, events FROM audit_stats_daily_users
    WHERE tenant_id = %(tenant_id)s AND day = ANY(%(days)s::date[])
) counted
GROUP BY 1
ORDER BY 2 DESC, 1
LIMIT %(n)s

-- name: daily_register
-- daily_stats, step 1: a row for each tenant with events on the day (or a row already), so
-- that from now on every change to the day's events bumps its version.
INSERT INTO audit_stats_days (tenant_id, day)
SELECT DISTINCT tenant_id, %(day)s::date
FROM audit_stats_hourly
WHERE hour >= %(start)s AND hour < %(end)s AND events > 0
ON CONFLICT (tenant_id, day) DO NOTHING

-- name: daily_barrier
-- daily_stats, step 2: wait for the transactions that changed events before step 1 was
-- visible (their version bump found no row), so that the build below sees their rows.
LOCK TABLE audit_stats_hourly, audit_logs IN SHARE MODE

-- name: daily_lock
-- One build of a day at a time (a backfill and the schedule may overlap).
SELECT pg_advisory_xact_lock(1935766371, %(day_number)s)

-- name: daily_versions
-- Read before the events are counted: a change after this read bumps the version past it,
-- so rows built here are then ignored (and rebuilt by the next run), never wrong.
SELECT tenant_id, version FROM audit_stats_days WHERE day = %(day)s ORDER BY tenant_id

-- name: daily_delete_rows
WITH a AS (
    DELETE FROM audit_stats_daily WHERE tenant_id = ANY(%(tenants)s::uuid[]) AND day = %(day)s
), r AS (
    DELETE FROM audit_stats_daily_resources WHERE tenant_id = ANY(%(tenants)s::uuid[]) AND day = %(day)s
)
DELETE FROM audit_stats_daily_users WHERE tenant_id = ANY(%(tenants)s::uuid[]) AND day = %(day)s

-- name: daily_build
-- daily_stats, step 3: one pass over the day's rows (one partition) for all the tenants.
WITH src AS (
    SELECT tenant_id, action_type, severity, resource_type, resource_id, user_id,
           extract(hour FROM created_at AT TIME ZONE 'UTC')::integer AS hour
    FROM audit_logs
    WHERE tenant_id = ANY(%(tenants)s::uuid[]) AND created_at >= %(start)s AND created_at < %(end)s
), counted AS MATERIALIZED (
    SELECT tenant_id, action_type, severity, resource_type, resource_id, user_id, hour,
           GROUPING(action_type, resource_id, user_id, hour) AS grp, count(*) AS events
    FROM src
    GROUP BY GROUPING SETS ((tenant_id, action_type, severity, resource_type),
                            (tenant_id, resource_type, resource_id),
                            (tenant_id, user_id),
                            (tenant_id, hour))
), daily AS (
    INSERT INTO audit_stats_daily (tenant_id, day, action_type, severity, resource_type, events)
    SELECT tenant_id, %(day)s, action_type, severity, resource_type, events
    FROM counted WHERE grp = 7
    ORDER BY tenant_id  -- a tenant's rows of the day together: few pages per read
), resources AS (
    INSERT INTO audit_stats_daily_resources
        (tenant_id, resource_type, resource_id, day, events, day_rank)
    SELECT tenant_id, resource_type, resource_id, %(day)s, events,
           row_number() OVER (PARTITION BY tenant_id
                              ORDER BY events DESC, resource_type, resource_id)
    FROM counted WHERE grp = 11
    ORDER BY tenant_id, events DESC
), users AS (
    INSERT INTO audit_stats_daily_users (tenant_id, user_id, day, events, day_rank)
    SELECT tenant_id, user_id, %(day)s, events,
           row_number() OVER (PARTITION BY tenant_id ORDER BY events DESC, user_id)
    FROM counted WHERE grp = 13 AND user_id IS NOT NULL
    ORDER BY tenant_id, events DESC
), built AS (
    SELECT b.tenant_id, b.version, coalesce(sum(c.events), 0) AS events,
           array_agg(coalesce(c.events, 0) ORDER BY h.hour) AS hourly
    FROM unnest(%(tenants)s::uuid[], %(versions)s::bigint[]) b (tenant_id, version)
    CROSS JOIN generate_series(0, 23) h (hour)
    LEFT JOIN counted c ON c.grp = 14 AND c.tenant_id = b.tenant_id AND c.hour = h.hour
    GROUP BY b.tenant_id, b.version
)
UPDATE audit_stats_days d
SET built_version = b.version, built_at = now(), events = b.events, hourly = b.hourly
FROM built b
WHERE d.tenant_id = b.tenant_id AND d.day = %(day)s
RETURNING d.tenant_id, d.events

-- name: top_resources_none_part
SELECT NULL::text, NULL::text WHERE false

-- name: top_users_none_part
SELECT NULL::uuid WHERE false

-- name: stale_days
-- Days built before their events last changed (or registered and never built), oldest
-- first, with a fingerprint of their versions; today is the schedule's, not stale.
SELECT day, sum(version)::bigint
FROM audit_stats_days
WHERE built_version IS DISTINCT FROM version AND day < (now() AT TIME ZONE 'UTC')::date
GROUP BY day
ORDER BY day
LIMIT 31
