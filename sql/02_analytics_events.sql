-- 02_analytics_events.sql: discrete events (status changes, offline periods, sweep batch verdicts,
-- lab verdicts) and their rollups per window and per day. Idempotent.

CREATE TABLE IF NOT EXISTS analytics.analytics_event (
    time         timestamptz      NOT NULL,
    tenant_id    text             NOT NULL,
    factory_id   text             NOT NULL,
    machine_id   text             NOT NULL,   -- the lab station for lab events
    event_type   text             NOT NULL,   -- e.g. status_change, offline_period, sweep_batch, lab_result
    event_key    text             NOT NULL DEFAULT '',  -- distinguishes events of one type at one instant
    domain       text             NOT NULL,   -- sensor, device, sweep, lab
    level        text,
    value        double precision,
    passed       boolean,
    end_time     timestamptz,                 -- for events that are periods (offline_period)
    duration_s   double precision,
    details      jsonb,
    computed_at  timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, factory_id, machine_id, event_type, event_key, time)
);
CREATE INDEX IF NOT EXISTS analytics_event_time_idx ON analytics.analytics_event (event_type, time DESC);

CREATE TABLE IF NOT EXISTS analytics.analytics_event_rollup (
    bucket_start timestamptz      NOT NULL,
    bucket_end   timestamptz      NOT NULL,
    window_s     integer          NOT NULL CHECK (window_s > 0),   -- 86400 for daily rollups
    tenant_id    text             NOT NULL,
    factory_id   text             NOT NULL,
    machine_id   text             NOT NULL,
    event_type   text             NOT NULL,
    count_n      bigint           NOT NULL,
    pass_n       bigint,
    fail_n       bigint,
    fail_rate    double precision,
    uptime_pct   double precision,
    details      jsonb,
    computed_at  timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, factory_id, machine_id, event_type, window_s, bucket_start)
);
CREATE INDEX IF NOT EXISTS analytics_event_rollup_time_idx
    ON analytics.analytics_event_rollup (window_s, bucket_start DESC);

SELECT analytics.make_timeseries('analytics.analytics_event', 'time', INTERVAL '7 days',
    'tenant_id, factory_id, machine_id', 'event_type, time DESC', INTERVAL '30 days', NULL);
SELECT analytics.make_timeseries('analytics.analytics_event_rollup', 'bucket_start', INTERVAL '30 days',
    'tenant_id, factory_id, machine_id', 'event_type, window_s, bucket_start DESC', INTERVAL '90 days', NULL);

GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO analytics_ro;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA analytics TO analytics_rw;
