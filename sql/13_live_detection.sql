-- 13_live_detection.sql: streaming detection (issue 22). Rules that need no fitted model (a value
-- outside the catalogue's plausible range or the metric's spec limits) are judged every few
-- seconds on the rows the drains just committed and written to analytics_anomaly at once; the
-- hourly asset stays the authoritative record and confirms each live row (it produces the same
-- key) or closes it as `not_confirmed`. Idempotent; plain SQL for PostgreSQL and TimescaleDB alike.

-- When the live judge wrote the row (NULL: found by the hourly asset first) and when the hourly
-- asset found it (NULL: not judged by an hour yet, or not found: then status is not_confirmed).
ALTER TABLE analytics.analytics_anomaly ADD COLUMN IF NOT EXISTS detected_live_at timestamptz;
ALTER TABLE analytics.analytics_anomaly ADD COLUMN IF NOT EXISTS confirmed_at timestamptz;
COMMENT ON COLUMN analytics.analytics_anomaly.detected_live_at IS
    'When the live judge flagged it (seconds after the reading); NULL when the hourly asset found it first';
COMMENT ON COLUMN analytics.analytics_anomaly.confirmed_at IS
    'When the hourly asset (the authoritative record) found it; NULL while a live flag awaits its hour';

ALTER TABLE analytics.analytics_anomaly DROP CONSTRAINT IF EXISTS analytics_anomaly_status_check;
ALTER TABLE analytics.analytics_anomaly ADD CONSTRAINT analytics_anomaly_status_check
    CHECK (status IN ('open', 'resolved', 'not_confirmed'));
COMMENT ON COLUMN analytics.analytics_anomaly.status IS
    'open, resolved (by an engineer), not_confirmed (flagged live, not found when the hour was judged)';

-- The live judge's position: rows of the raw table ingested after it are judged next. A table (not
-- only the Dagster cursor) so the position moves in the transaction that writes the anomalies.
CREATE TABLE IF NOT EXISTS analytics.live_detection_cursor (
    judge       text        PRIMARY KEY,
    position    timestamptz NOT NULL,
    judged_rows bigint      NOT NULL DEFAULT 0,
    flagged     bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);


-- the live rows (few) for the `analytics_live_anomalies` metric and the not_confirmed count
CREATE INDEX IF NOT EXISTS analytics_anomaly_live_idx
    ON analytics.analytics_anomaly (detected_live_at) WHERE detected_live_at IS NOT NULL;

GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO analytics_ro;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA analytics TO analytics_rw;
