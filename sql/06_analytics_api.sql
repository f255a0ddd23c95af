-- 06_analytics_api.sql: what the REST API needs beyond read access. Idempotent.
--
-- * API keys: only a SHA-256 of each key is stored (keys are 256-bit random secrets, so a slow
--   password hash would add latency to every request without adding safety); each key is bound to
--   one tenant, or to none for an admin key.
-- * analytics_resolver: the API's one write (resolving an anomaly with a note) runs as a role that
--   may update those four columns of analytics_anomaly and nothing else.
-- * On TimescaleDB, a continuous aggregate of the hourly window per UTC day, so a year of a series
--   is 365 materialised rows instead of 8760 rolled up per request.

CREATE TABLE IF NOT EXISTS analytics.api_keys (
    key_id        text        PRIMARY KEY,           -- the public part of the key, safe to show and log
    secret_sha256 bytea       NOT NULL,              -- SHA-256 of the whole key; the key is never stored
    tenant_id     text,                              -- NULL = admin key (every tenant)
    scopes        text[]      NOT NULL DEFAULT '{read}',
    name          text        NOT NULL,              -- who or what holds it
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    CHECK (scopes <@ ARRAY['read', 'resolve']::text[] AND 'read' = ANY (scopes)),
    CHECK (length(secret_sha256) = 32)
);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'analytics_resolver') THEN
        CREATE ROLE analytics_resolver NOLOGIN;
    END IF;
END $$;
GRANT USAGE ON SCHEMA analytics TO analytics_resolver;
GRANT SELECT ON analytics.analytics_anomaly TO analytics_resolver;
GRANT UPDATE (status, resolved_at, resolved_by, resolution_note) ON analytics.analytics_anomaly TO analytics_resolver;
GRANT EXECUTE ON FUNCTION analytics.resolve_anomaly(bigint, text, text) TO analytics_resolver;

-- Indexes for the API's listings: one series of a machine (any sensor) by time, a machine's KPIs
-- of every name by time, and the factory-wide listings by time.
CREATE INDEX IF NOT EXISTS analytics_agg_series_idx
    ON analytics.analytics_agg (tenant_id, factory_id, machine_id, metric, window_s, bucket_start);
CREATE INDEX IF NOT EXISTS analytics_kpi_machine_time_idx
    ON analytics.analytics_kpi (tenant_id, factory_id, machine_id, period, period_start);
CREATE INDEX IF NOT EXISTS analytics_kpi_factory_time_idx
    ON analytics.analytics_kpi (tenant_id, factory_id, period, period_start);
CREATE INDEX IF NOT EXISTS analytics_event_rollup_machine_time_idx
    ON analytics.analytics_event_rollup (tenant_id, factory_id, machine_id, window_s, bucket_start);
CREATE INDEX IF NOT EXISTS analytics_event_rollup_factory_time_idx
    ON analytics.analytics_event_rollup (tenant_id, factory_id, window_s, bucket_start);
CREATE INDEX IF NOT EXISTS analytics_baseline_deviation_factory_time_idx
    ON analytics.analytics_baseline_deviation (tenant_id, factory_id, period, period_start);
CREATE INDEX IF NOT EXISTS analytics_anomaly_tenant_time_idx
    ON analytics.analytics_anomaly (tenant_id, time DESC, anomaly_id DESC);

-- Daily rollup of the hourly window (TimescaleDB only; plain PostgreSQL rolls up per request).
-- sumsq_v = Σ x² over the day's readings, rebuilt from each hour's count, mean and sample stddev,
-- so the day's stddev is exact: sqrt((sumsq - n·mean²) / (n - 1)). Percentiles cannot be combined
-- and are not kept. Real-time aggregation (materialized_only = false) adds the hours not yet
-- materialised, so a fresh hour is served at once. A square below sqrt(smallest normal double)
-- counts as 0: PostgreSQL raises on a float8 product that underflows (as analytics.sq in 14 does).
DO $$
BEGIN
    IF NOT analytics.timescale_enabled() THEN
        RETURN;
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM timescaledb_information.continuous_aggregates
        WHERE view_schema = 'analytics' AND view_name = 'analytics_agg_daily'
    ) THEN
        EXECUTE $view$
            CREATE MATERIALIZED VIEW analytics.analytics_agg_daily
            WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
            SELECT time_bucket(INTERVAL '1 day', bucket_start) AS bucket_start,
                   tenant_id, factory_id, machine_id, sensor_id, metric,
                   sum(count_n)::bigint                                              AS count_n,
                   sum(sum_v)                                                        AS sum_v,
                   min(min_v)                                                        AS min_v,
                   max(max_v)                                                        AS max_v,
                   sum((count_n - 1) * CASE WHEN coalesce(stddev_v, 0) < 1.4916681462400413e-154 THEN 0
                                            ELSE stddev_v * stddev_v END
                       + count_n * CASE WHEN abs(avg_v) < 1.4916681462400413e-154 THEN 0
                                        ELSE avg_v * avg_v END)                    AS sumsq_v,
                   first(first_v, bucket_start)                                      AS first_v,
                   last(last_v, bucket_start)                                        AS last_v
            FROM analytics.analytics_agg
            WHERE window_s = 3600
            GROUP BY 1, 2, 3, 4, 5, 6
            WITH NO DATA
        $view$;
        PERFORM add_continuous_aggregate_policy('analytics.analytics_agg_daily',
            start_offset => NULL, end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '15 minutes');
    END IF;
    EXECUTE 'GRANT SELECT ON analytics.analytics_agg_daily TO analytics_ro';
    EXECUTE 'CREATE INDEX IF NOT EXISTS analytics_agg_daily_key_idx ON analytics.analytics_agg_daily '
            '(tenant_id, factory_id, machine_id, metric, bucket_start)';
END $$;

GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO analytics_ro;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA analytics TO analytics_rw;
