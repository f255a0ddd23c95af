-- 15_drain_reports.sql: what a long-lived drain committed, for Dagster to hear (issue 22, item 1).
-- With DRAIN_MODE=service the drain runs outside Dagster (`analytics-platform drain serve`) and never
-- pauses between ticks, so a reading is queryable about DRAIN_LINGER_S after it reaches the broker.
-- Each micro-batch writes one row here IN THE SAME TRANSACTION as its landing rows, raw rows,
-- rejects and offsets: the hours it touched and their quality counts. The domain's drain sensor then
-- only reports: it turns unreported rows into runless materialisations and check results, and
-- deletes a row once the tick that reported it was recorded (the ids ride in the sensor's cursor), so
-- Dagster hears about every committed batch at least once, whatever crashes in between.
-- A pass that found a log changed under its offsets writes a row without a batch (offset_resets).
-- Idempotent; plain SQL for PostgreSQL and TimescaleDB alike.

CREATE TABLE IF NOT EXISTS analytics.drain_reports (
    id           bigserial PRIMARY KEY,
    consumer     text        NOT NULL,
    domain       text        NOT NULL,
    shard        int         NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    report       jsonb       NOT NULL
);
CREATE INDEX IF NOT EXISTS drain_reports_domain_idx ON analytics.drain_reports (domain, id);
COMMENT ON TABLE analytics.drain_reports IS
    'Per micro-batch summaries of the drain service, deleted once a drain sensor tick reported them to Dagster';

GRANT SELECT ON analytics.drain_reports TO analytics_ro;
GRANT SELECT, INSERT, UPDATE, DELETE ON analytics.drain_reports TO analytics_rw;
GRANT USAGE, SELECT ON SEQUENCE analytics.drain_reports_id_seq TO analytics_rw;
