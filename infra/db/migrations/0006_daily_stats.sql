-- Daily statistics, materialised by the Dagster asset `daily_stats` (assets/stats.py) for
-- closed UTC days, so that GET /api/v1/logs/stats reads a few hundred rows however long its
-- range is. The API uses a day's rows only while they are current: every change to the
-- day's events (the drain's inserts, retention's deletes, a redaction of user_id) bumps the
-- day's `version`, and rows built from an older version are ignored (the API then counts
-- that day from audit_stats_hourly and the raw rows, as for a day never materialised).
-- Correctness therefore never depends on the asset having run.

-- One row per tenant and day that daily_stats has built (or is building).
CREATE TABLE audit_stats_days (
    tenant_id          uuid        NOT NULL,
    day                date        NOT NULL,
    -- Bumped by the triggers below whenever the day's events change.
    version            bigint      NOT NULL DEFAULT 0,
    -- The version the day's rows were built from; NULL while never built.
    built_version      bigint,
    built_at           timestamptz,
    events             bigint      NOT NULL DEFAULT 0,
    -- Events per UTC hour of the day (24 entries): the hourly series without hourly rows.
    hourly             bigint[]    NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, day)
);

-- Per tenant and day: counts by action, severity and resource type.
CREATE TABLE audit_stats_daily (
    tenant_id     uuid   NOT NULL,
    day           date   NOT NULL,
    action_type   text   NOT NULL,
    severity      text   NOT NULL,
    resource_type text   NOT NULL,
    events        bigint NOT NULL CHECK (events > 0),
    PRIMARY KEY (tenant_id, day, action_type, severity, resource_type)
);

-- Per tenant and day: every resource's count, ranked within the day (1 = busiest; ties by
-- type and id). The rank index serves each day's top rows (and the count just below them,
-- a bound for the rest), from which auditlog/stats.py finds an exact top-N over a range;
-- the primary key serves the exact sums of the few candidates.
CREATE TABLE audit_stats_daily_resources (
    tenant_id     uuid    NOT NULL,
    resource_type text    NOT NULL,
    resource_id   text    NOT NULL,
    day           date    NOT NULL,
    events        bigint  NOT NULL CHECK (events > 0),
    day_rank      integer NOT NULL,
    PRIMARY KEY (tenant_id, resource_type, resource_id, day)
);
CREATE INDEX audit_stats_daily_resources_rank_idx
    ON audit_stats_daily_resources (tenant_id, day, day_rank)
    INCLUDE (resource_type, resource_id, events);

-- Per tenant and day: every user's count (events without a user_id are not counted).
CREATE TABLE audit_stats_daily_users (
    tenant_id uuid    NOT NULL,
    user_id   uuid    NOT NULL,
    day       date    NOT NULL,
    events    bigint  NOT NULL CHECK (events > 0),
    day_rank  integer NOT NULL,
    PRIMARY KEY (tenant_id, user_id, day)
);
CREATE INDEX audit_stats_daily_users_rank_idx
    ON audit_stats_daily_users (tenant_id, day, day_rank) INCLUDE (user_id, events);

-- Every statement that changes audit_stats_hourly (the drain's upsert, retention's
-- decrement) changes the events of the days it touches: bump those days' versions. Only
-- days that have a row here are touched, so the drain's usual work (today, never built)
-- costs one small join per statement. One statement-level trigger per event, because a
-- trigger with transition tables may name only one.
CREATE FUNCTION audit_stats_days_bump_hourly() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    UPDATE audit_stats_days d
    SET version = d.version + 1
    FROM (SELECT DISTINCT tenant_id, (hour AT TIME ZONE 'UTC')::date AS day FROM changed) c
    WHERE d.tenant_id = c.tenant_id AND d.day = c.day;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER audit_stats_hourly_inserted AFTER INSERT ON audit_stats_hourly
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION audit_stats_days_bump_hourly();
CREATE TRIGGER audit_stats_hourly_updated AFTER UPDATE ON audit_stats_hourly
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION audit_stats_days_bump_hourly();
CREATE TRIGGER audit_stats_hourly_deleted AFTER DELETE ON audit_stats_hourly
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION audit_stats_days_bump_hourly();

-- A redaction erases user_id, which changes the day's per-user counts but no hourly row
-- (nothing updates the other counted columns today; they are watched all the same).
CREATE FUNCTION audit_stats_days_bump_row() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    UPDATE audit_stats_days
    SET version = version + 1
    WHERE tenant_id = NEW.tenant_id AND day = (NEW.created_at AT TIME ZONE 'UTC')::date;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER audit_logs_counted_columns_changed
    AFTER UPDATE OF user_id, action_type, severity, resource_type, resource_id ON audit_logs
    FOR EACH ROW
    WHEN ((OLD.user_id, OLD.action_type, OLD.severity, OLD.resource_type, OLD.resource_id)
          IS DISTINCT FROM
          (NEW.user_id, NEW.action_type, NEW.severity, NEW.resource_type, NEW.resource_id))
    EXECUTE FUNCTION audit_stats_days_bump_row();

-- The list endpoint's ip filter (a network): a btree serves `ip_address <<= network` as a
-- range, so a network with few events no longer reads the tenant's whole history.
CREATE INDEX audit_logs_tenant_ip_idx ON audit_logs (tenant_id, ip_address);
