-- Per tenant and day, the counts by action, by severity and by resource type each on their
-- own (about 20 rows a day), for GET /api/v1/logs/stats: summing them over a range reads
-- far fewer rows than audit_stats_daily's combinations (about 150 a day). Built by the
-- `daily_stats` asset with the day's other rows (auditlog/store/stats.sql, daily_build),
-- so the day's version (migration 0006) says whether they are current, as for the others.
-- (INCLUDE events: a range's sum is an index-only scan.)
CREATE TABLE audit_stats_daily_counts (
    tenant_id uuid     NOT NULL,
    day       date     NOT NULL,
    kind      smallint NOT NULL CHECK (kind IN (1, 2, 3)),  -- 1 action, 2 severity, 3 resource type
    name      text     NOT NULL,
    events    bigint   NOT NULL CHECK (events > 0),
    PRIMARY KEY (tenant_id, day, kind, name) INCLUDE (events)
);

-- The days built before this migration: from their combinations, which are of the same build.
INSERT INTO audit_stats_daily_counts (tenant_id, day, kind, name, events)
SELECT d.tenant_id, d.day, v.kind, v.name, sum(d.events)
FROM audit_stats_daily d,
     LATERAL (VALUES (1::smallint, d.action_type), (2::smallint, d.severity),
                     (3::smallint, d.resource_type)) v (kind, name)
GROUP BY 1, 2, 3, 4
ORDER BY 1, 2, 3, 4;
