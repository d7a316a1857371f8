-- Statistics: the daily aggregates (migrations 0006, 0010) and the reads that combine them
-- with audit_stats_hourly and raw rows (auditlog/stats.py, auditlog/daily_stats.py).
-- Fragments whose names end in _part are joined with UNION ALL into the statements marked
-- {parts} (or another name in braces); {start}/{end} are the placeholders of one time span
-- and {sign} is 1 for a span counted, -1 for a span subtracted (Coverage.minus).

-- name: built_days
-- The tenant's days whose daily rows are current (built from the day's latest version), with
-- the hourly totals of the days the range only partly covers.
SELECT day, events, CASE WHEN day = ANY(%(edge_days)s::date[]) THEN hourly END
FROM audit_stats_days
WHERE tenant_id = %(tenant_id)s AND day >= %(first_day)s AND day < %(end_day)s
  AND built_version = version

-- name: breakdown
-- Everything of a range but its tops, in one statement. kind 1: by action, 2: by severity,
-- 3: by resource type (name, events); 4: the series (bucket start as the API writes it,
-- events); 5: last_7_days (events of the week's spans not served by built days). src holds
-- the hourly and raw counts of the spans not in built days (negative for the parts of
-- built days outside the range); the built days' counts and hourly totals are read in this
-- same statement, so all are of one build.
WITH src (hour, action_type, severity, resource_type, events) AS (
    {parts}
), series (bucket, events) AS (
    SELECT date_trunc(%(bucket)s, hour AT TIME ZONE 'UTC'), events FROM src
    UNION ALL
    SELECT d.day, d.events
    FROM audit_stats_days d
    WHERE %(bucket)s = 'day' AND d.tenant_id = %(tenant_id)s AND d.day = ANY(%(days)s::date[])
    UNION ALL
    SELECT d.day + (h.i - 1) * interval '1 hour', h.n
    FROM audit_stats_days d, unnest(d.hourly) WITH ORDINALITY h (n, i)
    WHERE %(bucket)s = 'hour' AND d.tenant_id = %(tenant_id)s AND d.day = ANY(%(days)s::date[])
      AND h.n > 0
)
SELECT kind, name, sum(events)::bigint
FROM (
    SELECT CASE GROUPING(action_type, severity, resource_type) WHEN 3 THEN 1 WHEN 5 THEN 2 ELSE 3 END,
           coalesce(action_type, severity, resource_type), sum(events)
    FROM src
    GROUP BY GROUPING SETS ((action_type), (severity), (resource_type))
    UNION ALL
    SELECT kind, name, events
    FROM audit_stats_daily_counts
    WHERE tenant_id = %(tenant_id)s AND day = ANY(%(days)s::date[])
) counts (kind, name, events)
GROUP BY 1, 2
UNION ALL
SELECT 4, to_char(bucket, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), sum(events)::bigint
FROM series
GROUP BY bucket
HAVING sum(events) > 0
UNION ALL
SELECT 5, NULL, ({week_total})

-- name: total
-- The events of a range's spans not in built days (breakdown's last_7_days).
SELECT coalesce(sum(n), 0)::bigint FROM ({parts}) src (n)

-- name: breakdown_none_part
SELECT NULL::timestamptz, NULL::text, NULL::text, NULL::text, NULL::bigint WHERE false

-- name: breakdown_hourly_part
SELECT hour, action_type, severity, resource_type, {sign} * events
FROM audit_stats_hourly
WHERE tenant_id = %(tenant_id)s AND hour >= {start} AND hour < {end}

-- name: breakdown_raw_part
SELECT date_trunc('hour', created_at, 'UTC'), action_type, severity, resource_type, {sign} * count(*)
FROM audit_logs
WHERE tenant_id = %(tenant_id)s AND created_at >= {start} AND created_at < {end}
GROUP BY 1, 2, 3, 4

-- name: total_hourly_part
SELECT {sign} * sum(events) FROM audit_stats_hourly
WHERE tenant_id = %(tenant_id)s AND hour >= {start} AND hour < {end}

-- name: total_raw_part
SELECT {sign} * count(*) FROM audit_logs
WHERE tenant_id = %(tenant_id)s AND created_at >= {start} AND created_at < {end}

-- name: total_none_part
SELECT 0::bigint

-- name: top
-- Exact top-N resources (kind 1) and users (kind 2) over built days plus raw spans, reading
-- only each day's top %(listed)s rows. A key's raw count is signed: rows of the range outside
-- the built days count +1, rows of a built day outside the range -1 (see Coverage). For a
-- key, low = its raw count + its counts on the days that list it; high = low + the
-- (listed+1)-th count of each day that does not list it. Only keys whose high reaches the
-- N-th largest low (threshold) can be in the top N, so only their exact sums are read. A key
-- listed on no day has high = its raw count + `rest` (the sum of the days' bounds); one below
-- `floor` (the N-th largest listed sum plus the lowest raw count if negative: at most the
-- threshold) cannot be in the top N, so of the many rare keys of the raw rows none is
-- joined or sorted. The caller checks that no key listed on no day and absent from the raw
-- rows (at most `rest`) could reach `threshold`; else it runs the exact sum
-- (top_resources_exact, top_users_exact).
-- Counts are bigint throughout (sum() of bigint would be numeric).
WITH r_ranked AS (
    SELECT day, resource_type, resource_id, events, day_rank
    FROM audit_stats_daily_resources
    WHERE tenant_id = %(tenant_id)s AND day = ANY(%(days)s::date[]) AND day_rank <= %(listed)s + 1
), r_bounds AS (
    SELECT day, events AS rest FROM r_ranked WHERE day_rank = %(listed)s + 1
), r_rest AS (
    SELECT coalesce(sum(rest), 0)::bigint AS rest FROM r_bounds
), r_listed AS (
    SELECT r.resource_type, r.resource_id, sum(r.events)::bigint AS events,
           coalesce(sum(b.rest), 0)::bigint AS rest_listed
    FROM r_ranked r LEFT JOIN r_bounds b USING (day)
    WHERE r.day_rank <= %(listed)s
    GROUP BY 1, 2
), r_raw AS (
    SELECT resource_type, resource_id, sum(sign)::bigint AS events
    FROM ({resource_parts}) raw (resource_type, resource_id, sign)
    GROUP BY 1, 2
), r_floor AS (
    SELECT coalesce((SELECT events FROM r_listed ORDER BY events DESC OFFSET %(n)s - 1 LIMIT 1), 0)
           + least((SELECT min(events) FROM r_raw), 0) AS low
), r_edge AS (
    SELECT resource_type, resource_id, events FROM r_raw
    WHERE events + (SELECT rest FROM r_rest) >= (SELECT low FROM r_floor)
       OR (resource_type, resource_id) IN (SELECT resource_type, resource_id FROM r_listed)
), r_known AS (
    SELECT resource_type, resource_id, coalesce(e.events, 0) AS edge_events,
           coalesce(e.events, 0) + coalesce(l.events, 0) AS low,
           coalesce(e.events, 0) + coalesce(l.events, 0)
             + (SELECT rest FROM r_rest) - coalesce(l.rest_listed, 0) AS high
    FROM r_edge e FULL JOIN r_listed l USING (resource_type, resource_id)
), r_threshold AS (
    SELECT coalesce((SELECT low FROM r_known ORDER BY low DESC OFFSET %(n)s - 1 LIMIT 1), 0) AS low
), r_top AS (
    SELECT * FROM (
        SELECT k.resource_type, k.resource_id,
               k.edge_events + coalesce((
                   SELECT sum(d.events) FROM audit_stats_daily_resources d
                   WHERE d.tenant_id = %(tenant_id)s AND d.resource_type = k.resource_type
                     AND d.resource_id = k.resource_id AND d.day = ANY(%(days)s::date[])), 0)::bigint AS events
        FROM r_known k
        WHERE k.high >= (SELECT low FROM r_threshold)
    ) candidates
    WHERE events > 0  -- a key only in a subtracted part of a day counts 0 in the range
    ORDER BY 3 DESC, 1, 2
    LIMIT %(n)s
), u_ranked AS (
    SELECT day, user_id, events, day_rank
    FROM audit_stats_daily_users
    WHERE tenant_id = %(tenant_id)s AND day = ANY(%(days)s::date[]) AND day_rank <= %(listed)s + 1
), u_bounds AS (
    SELECT day, events AS rest FROM u_ranked WHERE day_rank = %(listed)s + 1
), u_rest AS (
    SELECT coalesce(sum(rest), 0)::bigint AS rest FROM u_bounds
), u_listed AS (
    SELECT r.user_id, sum(r.events)::bigint AS events, coalesce(sum(b.rest), 0)::bigint AS rest_listed
    FROM u_ranked r LEFT JOIN u_bounds b USING (day)
    WHERE r.day_rank <= %(listed)s
    GROUP BY 1
), u_raw AS (
    SELECT user_id, sum(sign)::bigint AS events
    FROM ({user_parts}) raw (user_id, sign)
    GROUP BY 1
), u_floor AS (
    SELECT coalesce((SELECT events FROM u_listed ORDER BY events DESC OFFSET %(n)s - 1 LIMIT 1), 0)
           + least((SELECT min(events) FROM u_raw), 0) AS low
), u_edge AS (
    SELECT user_id, events FROM u_raw
    WHERE events + (SELECT rest FROM u_rest) >= (SELECT low FROM u_floor)
       OR user_id IN (SELECT user_id FROM u_listed)
), u_known AS (
    SELECT user_id, coalesce(e.events, 0) AS edge_events,
           coalesce(e.events, 0) + coalesce(l.events, 0) AS low,
           coalesce(e.events, 0) + coalesce(l.events, 0)
             + (SELECT rest FROM u_rest) - coalesce(l.rest_listed, 0) AS high
    FROM u_edge e FULL JOIN u_listed l USING (user_id)
), u_threshold AS (
    SELECT coalesce((SELECT low FROM u_known ORDER BY low DESC OFFSET %(n)s - 1 LIMIT 1), 0) AS low
), u_top AS (
    SELECT * FROM (
        SELECT k.user_id,
               k.edge_events + coalesce((
                   SELECT sum(d.events) FROM audit_stats_daily_users d
                   WHERE d.tenant_id = %(tenant_id)s AND d.user_id = k.user_id
                     AND d.day = ANY(%(days)s::date[])), 0)::bigint AS events
        FROM u_known k
        WHERE k.high >= (SELECT low FROM u_threshold)
    ) candidates
    WHERE events > 0
    ORDER BY 2 DESC, 1
    LIMIT %(n)s
)
SELECT 1, resource_type, resource_id, NULL::uuid, events,
       (SELECT low FROM r_threshold), (SELECT rest FROM r_rest)
FROM r_top
UNION ALL
SELECT 2, NULL, NULL, user_id, events, (SELECT low FROM u_threshold), (SELECT rest FROM u_rest)
FROM u_top

-- name: top_resources_raw_part
SELECT resource_type, resource_id, {sign} FROM audit_logs
WHERE tenant_id = %(tenant_id)s AND created_at >= {start} AND created_at < {end}

-- name: top_resources_exact
-- The plain sum over every daily row, for when the bound of `top` cannot decide.
SELECT resource_type, resource_id, sum(events)::bigint
FROM (
    SELECT resource_type, resource_id, sign AS events
    FROM ({parts}) raw (resource_type, resource_id, sign)
    UNION ALL
    SELECT resource_type, resource_id, events FROM audit_stats_daily_resources
    WHERE tenant_id = %(tenant_id)s AND day = ANY(%(days)s::date[])
) counted
GROUP BY 1, 2
HAVING sum(events) > 0  -- a key only in a subtracted part of a day counts 0 in the range
ORDER BY 3 DESC, 1, 2
LIMIT %(n)s

-- name: top_users_raw_part
SELECT user_id, {sign} FROM audit_logs
WHERE tenant_id = %(tenant_id)s AND created_at >= {start} AND created_at < {end}
  AND user_id IS NOT NULL

-- name: top_users_exact
SELECT user_id, sum(events)::bigint
FROM (
    SELECT user_id, sign AS events FROM ({parts}) raw (user_id, sign)
    UNION ALL
    SELECT user_id, events FROM audit_stats_daily_users
    WHERE tenant_id = %(tenant_id)s AND day = ANY(%(days)s::date[])
) counted
GROUP BY 1
HAVING sum(events) > 0
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
), c AS (
    DELETE FROM audit_stats_daily_counts WHERE tenant_id = ANY(%(tenants)s::uuid[]) AND day = %(day)s
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
), daily_counts AS (
    INSERT INTO audit_stats_daily_counts (tenant_id, day, kind, name, events)
    SELECT c.tenant_id, %(day)s, v.kind, v.name, sum(c.events)
    FROM counted c,
         LATERAL (VALUES (1::smallint, c.action_type), (2::smallint, c.severity),
                         (3::smallint, c.resource_type)) v (kind, name)
    WHERE c.grp = 7
    GROUP BY 1, 3, 4
    ORDER BY 1, 3, 4
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
SELECT NULL::text, NULL::text, 0 WHERE false

-- name: top_users_none_part
SELECT NULL::uuid, 0 WHERE false

-- name: stale_days
-- Days built before their events last changed (or registered and never built), oldest
-- first, with a fingerprint of their versions; today is the schedule's, not stale.
SELECT day, sum(version)::bigint
FROM audit_stats_days
WHERE built_version IS DISTINCT FROM version AND day < (now() AT TIME ZONE 'UTC')::date
GROUP BY day
ORDER BY day
LIMIT 31
