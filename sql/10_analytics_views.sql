-- 10_analytics_views.sql: convenience views for operators and dashboards. Idempotent
-- (CREATE OR REPLACE); plain SQL that runs the same on PostgreSQL and TimescaleDB.

-- The newest bucket of every series and window.
CREATE OR REPLACE VIEW analytics.v_agg_latest AS
SELECT DISTINCT ON (tenant_id, factory_id, machine_id, sensor_id, metric, window_s)
       tenant_id, factory_id, machine_id, sensor_id, metric, window_s,
       bucket_start, bucket_end, count_n, sum_v, avg_v, min_v, max_v, stddev_v,
       first_v, last_v, p50_v, p95_v, updated_at
FROM analytics.analytics_agg
ORDER BY tenant_id, factory_id, machine_id, sensor_id, metric, window_s, bucket_start DESC;

-- Anomalies of the last 7 days, newest first, open ones with their age. The columns are listed,
-- not a.*: a column added to the table later (11: sample_s) would otherwise make re-applying this
-- file fail ("cannot change name of view column"); the list is what a.* was when the view was made.
CREATE OR REPLACE VIEW analytics.v_anomaly_recent AS
SELECT a.anomaly_id, a.time, a.tenant_id, a.factory_id, a.machine_id, a.sensor_id, a.metric, a.anomaly_type,
       a.method, a.score, a.severity, a.severity_label, a.confidence, a.observed, a.expected, a.details,
       a.status, a.resolved_at, a.resolved_by, a.resolution_note, a.created_at, a.window_start, a.window_end,
       a.model_version, CASE WHEN a.status = 'open' THEN now() - a.time END AS open_for
FROM analytics.analytics_anomaly a
WHERE a.time >= now() - INTERVAL '7 days'
ORDER BY a.time DESC;

-- The newest value of every KPI per machine and period kind.
CREATE OR REPLACE VIEW analytics.v_kpi_latest AS
SELECT DISTINCT ON (tenant_id, factory_id, machine_id, period, kpi)
       tenant_id, factory_id, machine_id, period, kpi, period_start, period_end,
       value, unit, null_reason, details, computed_at
FROM analytics.analytics_kpi
ORDER BY tenant_id, factory_id, machine_id, period, kpi, period_start DESC;

-- Events per machine, type and UTC day.
CREATE OR REPLACE VIEW analytics.v_event_daily AS
SELECT date_bin(INTERVAL '1 day', time, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS day,
       tenant_id, factory_id, machine_id, event_type,
       count(*)                                   AS count_n,
       count(*) FILTER (WHERE passed)             AS pass_n,
       count(*) FILTER (WHERE passed IS FALSE)    AS fail_n,
       sum(duration_s)                            AS duration_s
FROM analytics.analytics_event
GROUP BY 1, 2, 3, 4, 5;

-- Rejected messages per topic and reason: what operators look at first when data goes missing.
CREATE OR REPLACE VIEW analytics.v_rejects_summary AS
SELECT topic, reason, count(*) AS rejected, min(rejected_at) AS first_at, max(rejected_at) AS last_at
FROM analytics.rejected_message
GROUP BY topic, reason;

-- Where each drain stands: stored next offset, how long ago it moved, and which log it belongs to
-- (the broker's topic id; log_epoch counts the resets the drain detected, sql/09).
CREATE OR REPLACE VIEW analytics.v_ingest_progress AS
SELECT consumer, topic, kafka_partition, next_offset, updated_at, now() - updated_at AS since_update,
       topic_id, log_epoch
FROM analytics.worker_checkpoints;

GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO analytics_ro;
