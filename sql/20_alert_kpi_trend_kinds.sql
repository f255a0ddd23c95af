-- 20_alert_kpi_trend_kinds.sql: alert rules on KPIs, trends and energy deviation (issue 24, item 5).
-- Idempotent.
--
-- kpi_threshold: a KPI of a machine's latest hour / shift / day below or above a threshold (OEE of a
-- shift < 60 %, reject rate > 2 %); trend: a significant Theil–Sen / Mann–Kendall trend of a series
-- (analytics.analytics_trend, sql/19); energy_deviation: energy off its baseline's prediction by more
-- than a percentage (analytics.analytics_baseline_deviation). Same exactly-once, mute and resolve
-- semantics as every kind (analytics_platform/alerts/engine.py). No rule of these kinds is seeded:
-- thresholds are a plant's own decision (docs/alerts.md has examples).
ALTER TABLE analytics.alert_rules DROP CONSTRAINT IF EXISTS alert_rules_kind_check;
ALTER TABLE analytics.alert_rules ADD CONSTRAINT alert_rules_kind_check CHECK (kind IN (
    'anomaly', 'device_offline', 'fail_rate', 'lab_out_of_spec', 'sweep_out_of_spec', 'check_failed', 'run_failed',
    'ingest_reset', 'kpi_threshold', 'trend', 'energy_deviation'));
