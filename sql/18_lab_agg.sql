-- 18_lab_agg.sql: lab analytes as time series (issue 24, item 3). Idempotent.
--
-- Window aggregates of lab result values per tenant, factory, station and analyte, with the columns
-- and conventions of analytics_agg (count, sum, avg, min, max, sample stddev, first, last, p50, p95
-- of epoch-aligned buckets), written by the hourly `lab_window_aggregates` asset and served by
-- GET /v1/lab/agg. A table of its own rather than analytics_agg with a domain column: analytics_agg's
-- key is a machine's sensor and metric, and everything that reads it (the provisional buckets and
-- ETags of /v1/agg, agg_daily and its continuous aggregate, the anomaly detectors, the KPIs'
-- averages) would have to learn to skip lab rows; a station and an analyte are not a machine's
-- sensor, and lab results are a few a day where sensors send thousands, so their own table keeps
-- both sides simple and neither slows the other.
CREATE TABLE IF NOT EXISTS analytics.analytics_lab_agg (
    bucket_start timestamptz      NOT NULL,
    bucket_end   timestamptz      NOT NULL,
    window_s     integer          NOT NULL CHECK (window_s > 0),
    tenant_id    text             NOT NULL,
    factory_id   text             NOT NULL,
    station_id   text             NOT NULL,
    analyte      text             NOT NULL,
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
    PRIMARY KEY (tenant_id, factory_id, station_id, analyte, window_s, bucket_start)
);
-- the asset replaces a range of buckets by window and time, whatever the series
CREATE INDEX IF NOT EXISTS analytics_lab_agg_time_idx ON analytics.analytics_lab_agg (window_s, bucket_start DESC);

-- TimescaleDB: a hypertable compressed after 30 days like analytics_agg (a no-op on plain PostgreSQL)
SELECT analytics.make_timeseries('analytics.analytics_lab_agg', 'bucket_start', INTERVAL '30 days',
    'tenant_id, factory_id', 'station_id, analyte, window_s, bucket_start DESC', INTERVAL '30 days', NULL);

GRANT SELECT ON analytics.analytics_lab_agg TO analytics_ro;
GRANT SELECT, INSERT, UPDATE, DELETE ON analytics.analytics_lab_agg TO analytics_rw;
