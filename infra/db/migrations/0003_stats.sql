-- Hourly counts per tenant, kept by the drain in the same transaction that stores the events
-- (so they are exact and exactly-once), for fast stats at any table size.
CREATE TABLE audit_stats_hourly (
    tenant_id     uuid        NOT NULL,
    hour          timestamptz NOT NULL,
    action_type   text        NOT NULL,
    severity      text        NOT NULL,
    resource_type text        NOT NULL,
    events        bigint      NOT NULL CHECK (events >= 0),
    PRIMARY KEY (tenant_id, hour, action_type, severity, resource_type)
);

-- Events stored before this migration.
INSERT INTO audit_stats_hourly (tenant_id, hour, action_type, severity, resource_type, events)
SELECT tenant_id, date_trunc('hour', created_at), action_type, severity, resource_type, count(*)
FROM audit_logs
GROUP BY 1, 2, 3, 4, 5;
