-- 23_alert_forecast_kind.sql: the `forecast_peak` alert rule kind (issue 25, item 2): the newest
-- forecast of a coming UTC day (analytics.analytics_forecast, sql/21) above a limit, per factory or
-- machine ("forecast peak demand tomorrow above the contracted limit"). Idempotent.
ALTER TABLE analytics.alert_rules DROP CONSTRAINT IF EXISTS alert_rules_kind_check;
ALTER TABLE analytics.alert_rules ADD CONSTRAINT alert_rules_kind_check CHECK (kind IN (
    'anomaly', 'device_offline', 'fail_rate', 'lab_out_of_spec', 'sweep_out_of_spec', 'check_failed', 'run_failed',
    'ingest_reset', 'kpi_threshold', 'trend', 'energy_deviation', 'forecast_peak'));
