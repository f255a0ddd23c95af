-- 01_analytics_core.sql: schema, roles, ingest tables (landing, rejects, checkpoints) and the
-- core result tables. Idempotent: every statement can run again on a database that has it.
--
-- TimescaleDB first, plain PostgreSQL works: when the `timescaledb` extension is available (and
-- preloaded) the time-series tables become hypertables with compression after 7 days and retention;
-- otherwise they stay plain tables with the same columns and indexes. The session setting
-- `analytics.timescale` (auto | on | off, set by the migration runner) decides.

CREATE SCHEMA IF NOT EXISTS analytics;

DO $$
DECLARE
    mode text := coalesce(nullif(current_setting('analytics.timescale', true), ''), 'auto');
    available boolean := EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb');
    preloaded boolean := coalesce(current_setting('shared_preload_libraries', true), '') LIKE '%timescaledb%';
BEGIN
    IF mode = 'off' THEN
        RETURN;
    END IF;
    IF available AND preloaded THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
    ELSIF mode = 'on' THEN
        RAISE EXCEPTION 'analytics.timescale=on but timescaledb is not %',
            CASE WHEN available THEN 'in shared_preload_libraries' ELSE 'installed' END;
    END IF;
END $$;

-- Roles: analytics_rw for the pipeline, analytics_ro for the API and alerts. Both are NOLOGIN
-- groups; deployments create login users IN ROLE one of them (the devstack does).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'analytics_rw') THEN
        CREATE ROLE analytics_rw NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'analytics_ro') THEN
        CREATE ROLE analytics_ro NOLOGIN;
    END IF;
END $$;

GRANT USAGE ON SCHEMA analytics TO analytics_ro, analytics_rw;
ALTER DEFAULT PRIVILEGES IN SCHEMA analytics GRANT SELECT ON TABLES TO analytics_ro;
ALTER DEFAULT PRIVILEGES IN SCHEMA analytics GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO analytics_rw;
ALTER DEFAULT PRIVILEGES IN SCHEMA analytics GRANT USAGE, SELECT ON SEQUENCES TO analytics_rw;

-- True when this database runs the TimescaleDB extension.
CREATE OR REPLACE FUNCTION analytics.timescale_enabled() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
$$;

-- Turn a table into a hypertable with compression and retention when TimescaleDB is here;
-- a no-op on plain PostgreSQL. Safe to call again.
CREATE OR REPLACE FUNCTION analytics.make_timeseries(
    tbl regclass,
    time_column name,
    chunk interval,
    segment_by text,
    order_by text,
    compress_after interval,
    retain interval
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT analytics.timescale_enabled() THEN
        RETURN;
    END IF;
    -- no default time index: every table declares its own indexes, identical on both paths
    PERFORM create_hypertable(tbl, by_range(time_column, chunk), create_default_indexes => false,
                              if_not_exists => true, migrate_data => true);
    IF compress_after IS NOT NULL THEN
        EXECUTE format(
            'ALTER TABLE %s SET (timescaledb.compress, timescaledb.compress_segmentby = %L, '
            'timescaledb.compress_orderby = %L)', tbl, segment_by, order_by);
        PERFORM add_compression_policy(tbl, compress_after, if_not_exists => true);
    END IF;
    IF retain IS NOT NULL THEN
        PERFORM add_retention_policy(tbl, retain, if_not_exists => true);
    END IF;
END $$;

-- ---------------------------------------------------------------------------------------------
-- Ingest
-- ---------------------------------------------------------------------------------------------

-- Every Kafka message exactly as it arrived: the replayable source of truth for raw partitions.
-- The key includes kafka_ts so a broker that lost its log and reuses offsets cannot shadow data.
CREATE TABLE IF NOT EXISTS analytics.kafka_landing (
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    kafka_ts        timestamptz NOT NULL,
    kafka_key       bytea,
    value_text      text,              -- the message when it is UTF-8 text without NUL (nearly always)
    value_bytes     bytea,             -- otherwise the exact bytes
    event_time      timestamptz,       -- the reading's own time, when the contract could read it
    landed_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition, kafka_offset, kafka_ts),
    CHECK (value_text IS NULL OR value_bytes IS NULL)
);
-- BRIN: landing is appended in arrival order and event time mostly follows it; a block-range
-- index costs almost nothing to maintain and still narrows an hour's re-derivation to a few blocks.
CREATE INDEX IF NOT EXISTS kafka_landing_event_time_brin ON analytics.kafka_landing USING brin (event_time);

-- The raw table of each domain (raw_sensor_readings, raw_device_health, ...) is not here: its
-- contract declares it (analytics_platform/contracts/storage.py) and the migration runner creates
-- and evolves it right after this file, with the same make_timeseries as the tables below.

-- Messages that broke their contract: never dropped, kept with the reason and coordinates.
CREATE TABLE IF NOT EXISTS analytics.rejected_message (
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    kafka_ts        timestamptz NOT NULL,
    kafka_key       bytea,
    event_time      timestamptz,
    reason          text        NOT NULL,
    detail          text        NOT NULL,
    value_text      text,
    value_bytes     bytea,
    rejected_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, kafka_partition, kafka_offset, kafka_ts)
);
CREATE INDEX IF NOT EXISTS rejected_message_reason_idx ON analytics.rejected_message (topic, reason, rejected_at);
CREATE INDEX IF NOT EXISTS rejected_message_event_time_idx ON analytics.rejected_message (topic, event_time);

-- Kafka positions of each drain, written in the same transaction as the rows they carried.
CREATE TABLE IF NOT EXISTS analytics.worker_checkpoints (
    consumer        text        NOT NULL,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    next_offset     bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, kafka_partition)
);

SELECT analytics.make_timeseries('analytics.kafka_landing', 'kafka_ts', INTERVAL '1 day',
    'topic', 'kafka_partition, kafka_offset', INTERVAL '7 days', INTERVAL '90 days');

-- ---------------------------------------------------------------------------------------------
-- Results
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS analytics.analytics_agg (
    bucket_start timestamptz      NOT NULL,
    bucket_end   timestamptz      NOT NULL,
    window_s     integer          NOT NULL CHECK (window_s > 0),
    tenant_id    text             NOT NULL,
    factory_id   text             NOT NULL,
    machine_id   text             NOT NULL,
    sensor_id    text             NOT NULL,
    metric       text             NOT NULL,
    count_n      bigint           NOT NULL,
    sum_v        double precision,
    avg_v        double precision,
    min_v        double precision,
    max_v        double precision,
    stddev_v     double precision,
    first_v      double precision,
    last_v       double precision,
    p50_v        double precision,
    p95_v        double precision,
    updated_at   timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, factory_id, machine_id, sensor_id, metric, window_s, bucket_start)
);
CREATE INDEX IF NOT EXISTS analytics_agg_time_idx ON analytics.analytics_agg (window_s, bucket_start DESC);

CREATE TABLE IF NOT EXISTS analytics.analytics_anomaly (
    anomaly_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time            timestamptz      NOT NULL,
    tenant_id       text             NOT NULL,
    factory_id      text             NOT NULL,
    machine_id      text             NOT NULL,
    sensor_id       text,
    metric          text,
    anomaly_type    text             NOT NULL,  -- power, temperature, pressure, baseline_deviation, production
    method          text             NOT NULL,  -- isolation_forest, zscore, sudden_change, stoppage
    score           double precision,
    severity        smallint         NOT NULL CHECK (severity BETWEEN 1 AND 5),
    severity_label  text             NOT NULL CHECK (severity_label IN ('info', 'warning', 'critical')),
    confidence      double precision CHECK (confidence BETWEEN 0 AND 1),
    observed        double precision,
    expected        double precision,
    details         jsonb,
    status          text             NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    resolved_at     timestamptz,
    resolved_by     text,
    resolution_note text,
    created_at      timestamptz      NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (tenant_id, factory_id, machine_id, method, anomaly_type, time, sensor_id, metric)
);
CREATE INDEX IF NOT EXISTS analytics_anomaly_machine_idx
    ON analytics.analytics_anomaly (tenant_id, factory_id, machine_id, time DESC);
CREATE INDEX IF NOT EXISTS analytics_anomaly_open_idx
    ON analytics.analytics_anomaly (status, severity) WHERE status = 'open';

CREATE TABLE IF NOT EXISTS analytics.analytics_kpi (
    period_start timestamptz      NOT NULL,
    period_end   timestamptz      NOT NULL,
    period       text             NOT NULL CHECK (period IN ('hour', 'shift', 'day')),
    tenant_id    text             NOT NULL,
    factory_id   text             NOT NULL,
    machine_id   text             NOT NULL,
    kpi          text             NOT NULL,
    value        double precision,
    unit         text,
    null_reason  text,            -- why value is NULL (no production, empty period, ...)
    details      jsonb,
    computed_at  timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, factory_id, machine_id, period, kpi, period_start),
    CHECK (value IS NOT NULL OR null_reason IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS analytics_kpi_time_idx ON analytics.analytics_kpi (period, period_start DESC);

CREATE TABLE IF NOT EXISTS analytics.analytics_spec_limits (
    tenant_id   text             NOT NULL,
    factory_id  text             NOT NULL DEFAULT '*',   -- '*' = every factory of the tenant
    scope       text             NOT NULL CHECK (scope IN ('analyte', 'metric')),
    name        text             NOT NULL,
    lower_limit double precision,
    upper_limit double precision,
    target      double precision,
    unit        text,
    valid_from  timestamptz      NOT NULL DEFAULT '-infinity',
    updated_at  timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, factory_id, scope, name, valid_from),
    CHECK (lower_limit IS NULL OR upper_limit IS NULL OR lower_limit <= upper_limit)
);

SELECT analytics.make_timeseries('analytics.analytics_agg', 'bucket_start', INTERVAL '7 days',
    'tenant_id, factory_id, machine_id', 'window_s, bucket_start DESC', INTERVAL '30 days', NULL);
SELECT analytics.make_timeseries('analytics.analytics_kpi', 'period_start', INTERVAL '30 days',
    'tenant_id, factory_id, machine_id', 'period, kpi, period_start DESC', INTERVAL '90 days', NULL);

GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO analytics_ro;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA analytics TO analytics_rw;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA analytics TO analytics_ro, analytics_rw;
