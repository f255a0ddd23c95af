-- 19_trends.sql: trend judgements per series and per KPI (issue 24, item 4). Idempotent.
--
-- One row per series and rolling window ending at `window_end` (an hour boundary): the Theil–Sen
-- slope (per hour, in the series' unit), the Mann–Kendall S, its tie-corrected variance, Z and
-- two-sided p-value, and the direction they give (transforms/trends.py). `source` says what the
-- series is: 'metric' = the hourly mean (analytics_agg, window 3600 s) of one sensor's metric;
-- 'kpi' = a machine's hourly KPI (analytics_kpi, period 'hour'; sensor_id ''). The series_trends
-- asset replaces the rows of the window ends it computes, so a re-materialised hour is one copy.
CREATE TABLE IF NOT EXISTS analytics.analytics_trend (
    window_end     timestamptz      NOT NULL,
    window_start   timestamptz      NOT NULL,
    window_hours   integer          NOT NULL CHECK (window_hours > 0),
    tenant_id      text             NOT NULL,
    factory_id     text             NOT NULL,
    machine_id     text             NOT NULL,
    source         text             NOT NULL CHECK (source IN ('metric', 'kpi')),
    sensor_id      text             NOT NULL DEFAULT '',
    name           text             NOT NULL,   -- the metric or the KPI
    unit           text,
    n              integer          NOT NULL,   -- points in the window
    slope_per_hour double precision,            -- NULL when too few points to judge
    intercept      double precision,            -- at window_start
    mk_s           integer          NOT NULL,
    mk_var_s       double precision NOT NULL,
    mk_z           double precision NOT NULL,
    p_value        double precision NOT NULL CHECK (p_value BETWEEN 0 AND 1),
    confidence     double precision NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    direction      text             NOT NULL CHECK (direction IN ('increasing', 'decreasing', 'stable')),
    first_time     timestamptz      NOT NULL,
    last_time      timestamptz      NOT NULL,
    computed_at    timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, factory_id, machine_id, source, sensor_id, name, window_hours, window_end)
);
CREATE INDEX IF NOT EXISTS analytics_trend_time_idx ON analytics.analytics_trend (window_hours, window_end DESC);
SELECT analytics.make_timeseries('analytics.analytics_trend', 'window_end', INTERVAL '30 days',
    'tenant_id, factory_id, machine_id', 'source, name, window_hours, window_end DESC', INTERVAL '30 days', NULL);

GRANT SELECT ON analytics.analytics_trend TO analytics_ro;
GRANT SELECT, INSERT, UPDATE, DELETE ON analytics.analytics_trend TO analytics_rw;
