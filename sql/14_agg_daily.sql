-- 14_agg_daily.sql: whole days of the hourly window, kept by the pipeline, and the versions the
-- API's ETags are keyed by (issue 23, item 1).
-- A year of /v1/agg at 86400 s rolled up per request reads 8760 hourly rows per series; from here it
-- reads 365. The window-aggregates asset rewrites the days its hours touch in the same transaction
-- as the hours (results/aggregates.py, refresh_days), so a day is always exactly the rollup of the
-- hours stored: n, Σx, min, max, first, last and Σx² (rebuilt from each hour's count, mean and
-- sample stddev, so the day's stddev is exact, as in the continuous aggregate of 06). Percentiles
-- do not combine and are not kept. `agg_daily_days` lists the days the pipeline has rolled up: the
-- API reads those from here and rolls up the others (hours written by anything but the asset) from
-- the hours. On TimescaleDB the API keeps reading the continuous aggregate of 06. Plain SQL for
-- PostgreSQL and TimescaleDB alike; idempotent.

-- x², or 0 where it would underflow: PostgreSQL raises "value out of range: underflow" on a float8
-- product that rounds to zero, so one finite reading of 1e-300 would fail an hour's rollup. Below
-- sqrt(smallest normal double) the square is < 2.3e-308, nothing a sum of larger terms can hold.
CREATE OR REPLACE FUNCTION analytics.sq(x double precision) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS
$$ SELECT CASE WHEN abs(x) < 1.4916681462400413e-154 THEN 0::double precision ELSE x * x END $$;

CREATE TABLE IF NOT EXISTS analytics.agg_daily (
    bucket_start timestamptz      NOT NULL,
    tenant_id    text             NOT NULL,
    factory_id   text             NOT NULL,
    machine_id   text             NOT NULL,
    sensor_id    text             NOT NULL,
    metric       text             NOT NULL,
    count_n      bigint           NOT NULL,
    sum_v        double precision,
    min_v        double precision,
    max_v        double precision,
    sumsq_v      double precision,
    first_v      double precision,
    last_v       double precision,
    PRIMARY KEY (tenant_id, factory_id, machine_id, metric, bucket_start, sensor_id)
);
CREATE INDEX IF NOT EXISTS agg_daily_time_idx ON analytics.agg_daily (bucket_start);
COMMENT ON TABLE analytics.agg_daily IS
    'Days of analytics_agg window 3600, rewritten with their hours by sensor_window_aggregates';

CREATE TABLE IF NOT EXISTS analytics.agg_daily_days (
    day_start timestamptz PRIMARY KEY,
    rolled_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE analytics.agg_daily_days IS
    'Days whose agg_daily rows are the rollup of their stored hours (written in the same transaction)';

GRANT SELECT ON analytics.agg_daily, analytics.agg_daily_days TO analytics_ro;
GRANT SELECT, INSERT, UPDATE, DELETE ON analytics.agg_daily, analytics.agg_daily_days TO analytics_rw;

-- A version per materialised hour, from one sequence, set each time the asset (re)writes the hour.
-- Writers of analytics_agg hold one advisory lock to their commit (results/frames.py lock_results) and
-- draw the number under it, so numbers follow commit order: the highest version of a range's hours
-- rises whenever any of them is rewritten. /v1/agg's ETag of a final range is keyed by it (with the
-- count of hours): exact, and one index range read where summing the hours' stamps cost 7 ms a year.
CREATE SEQUENCE IF NOT EXISTS analytics.agg_materialised_version;
ALTER TABLE analytics.agg_materialised_hours
    ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT nextval('analytics.agg_materialised_version');
GRANT USAGE ON SEQUENCE analytics.agg_materialised_version TO analytics_rw;

-- The same for KPIs: a version per (period kind, period start), drawn each time the KPI assets
-- rewrite the period (results/kpis.py replace_kpis, under the analytics_kpi writers' lock, in the
-- same transaction). /v1/kpi's ETag is keyed by the count and highest version of the periods of a
-- range, and a matching If-None-Match is answered before the rows are read.
CREATE SEQUENCE IF NOT EXISTS analytics.kpi_materialised_version;
CREATE TABLE IF NOT EXISTS analytics.kpi_materialised_periods (
    period       text        NOT NULL,
    period_start timestamptz NOT NULL,
    version      bigint      NOT NULL DEFAULT nextval('analytics.kpi_materialised_version'),
    PRIMARY KEY (period, period_start)
);
COMMENT ON TABLE analytics.kpi_materialised_periods IS
    'Periods of analytics_kpi written by the KPI assets; version rises (in commit order) at each rewrite';
GRANT SELECT ON analytics.kpi_materialised_periods TO analytics_ro;
GRANT SELECT, INSERT, UPDATE, DELETE ON analytics.kpi_materialised_periods TO analytics_rw;
GRANT USAGE ON SEQUENCE analytics.kpi_materialised_version TO analytics_rw;
