-- 21_energy_forecasts.sql: hourly and daily energy and peak-demand forecasts per machine and factory
-- (issue 25, item 2). Idempotent. Written by the daily `energy_forecasts` asset, served by
-- /v1/forecasts, read by alert rules ("forecast peak demand tomorrow above the contracted limit").
--
-- One issue per (tenant, origin): `issued_at` is the UTC midnight the forecast starts from (the end
-- of the daily partition whose KPIs it learned from); re-materialising that partition replaces
-- exactly its rows. A factory's rows have machine_id '*': energy is the sum of its machines', peak
-- demand the sum of their peaks (an upper bound of the factory's coincident peak). `period` 'hour'
-- rows are the hours; 'day' rows the UTC days (energy: the day's sum, peak: its largest hour).
-- `horizon_day` 1 is the day starting at `issued_at`. [lower, upper] is the prediction interval at
-- nominal `level`; `value` lies inside it.
CREATE TABLE IF NOT EXISTS analytics.analytics_forecast (
    issued_at    timestamptz      NOT NULL,
    period       text             NOT NULL CHECK (period IN ('hour', 'day')),
    target_start timestamptz      NOT NULL,
    target_end   timestamptz      NOT NULL,
    horizon_day  smallint         NOT NULL CHECK (horizon_day BETWEEN 1 AND 31),
    tenant_id    text             NOT NULL,
    factory_id   text             NOT NULL,
    machine_id   text             NOT NULL,   -- '*' = the factory
    kpi          text             NOT NULL CHECK (kpi IN ('energy_kwh', 'peak_demand_kw')),
    value        double precision NOT NULL,
    lower        double precision NOT NULL,
    upper        double precision NOT NULL,
    level        double precision NOT NULL CHECK (level > 0 AND level < 1),
    unit         text             NOT NULL,
    model        text             NOT NULL,
    details      jsonb,
    computed_at  timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, factory_id, machine_id, kpi, period, issued_at, target_start),
    CHECK (target_end > target_start),
    CHECK (lower <= value AND value <= upper)
);
-- the latest issue of a tenant's factory, and an alert's "tomorrow" across factories
CREATE INDEX IF NOT EXISTS analytics_forecast_target_idx
    ON analytics.analytics_forecast (tenant_id, kpi, period, target_start, issued_at DESC);
SELECT analytics.make_timeseries('analytics.analytics_forecast', 'issued_at', INTERVAL '30 days',
    'tenant_id, factory_id, machine_id', 'issued_at DESC, target_start', INTERVAL '90 days', NULL);
