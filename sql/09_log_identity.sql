-- 09_log_identity.sql: a stored Kafka offset is only valid for the log it was read from. Idempotent.
--
-- A broker replaced (the in-memory embedded broker restarted, a cluster migrated) or a topic
-- deleted and re-created starts its log again at offset 0 while the stored offset is, say, 25,000:
-- once the new log is longer than that, a drain resuming at 25,000 would never read 0..24,999.
-- Each checkpoint therefore also records which log it belongs to -- the broker's topic id where it
-- reports one, and a fingerprint (Kafka timestamp and a digest of key and value) of the last
-- message it consumed -- and the drain checks both before it resumes (analytics_platform.ingest.drain).
-- A log that changed is read again from its beginning (dedup makes that safe) and the reset is
-- recorded in analytics.ingest_resets: Dagster sensor metadata, a Prometheus counter and the
-- `ingest_reset` alert rule all read it (the view analytics.v_ingest_progress shows the log of
-- each position: sql/10).

ALTER TABLE analytics.worker_checkpoints ADD COLUMN IF NOT EXISTS topic_id text;
ALTER TABLE analytics.worker_checkpoints ADD COLUMN IF NOT EXISTS last_kafka_ts timestamptz;
ALTER TABLE analytics.worker_checkpoints ADD COLUMN IF NOT EXISTS last_digest bytea;
ALTER TABLE analytics.worker_checkpoints ADD COLUMN IF NOT EXISTS log_epoch integer NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS analytics.ingest_resets (
    reset_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer          text        NOT NULL,
    topic             text        NOT NULL,
    kafka_partition   integer     NOT NULL,
    reason            text        NOT NULL CHECK (reason IN (
                          'topic_id_changed',      -- the broker reports another topic id: a new log
                          'fingerprint_mismatch',  -- the message at the stored position is another one
                          'log_end_before_offset', -- the log ends before the stored position
                          'log_start_after_offset' -- retention removed messages nobody had drained
                      )),
    detail            text        NOT NULL,
    stored_offset     bigint      NOT NULL,
    resumed_at        bigint      NOT NULL,        -- the offset the drain reads from now
    skipped           bigint      NOT NULL DEFAULT 0, -- messages expired unread (log_start_after_offset)
    old_topic_id      text,
    new_topic_id      text,
    detected_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ingest_resets_detected_idx ON analytics.ingest_resets (detected_at DESC);

-- The `ingest_reset` alert rule kind; deployments that already have rules get the packaged rule
-- (an empty table is seeded from config/alerts.yaml, which has it, by the devstack or `alerts load`).
ALTER TABLE analytics.alert_rules DROP CONSTRAINT IF EXISTS alert_rules_kind_check;
ALTER TABLE analytics.alert_rules ADD CONSTRAINT alert_rules_kind_check CHECK (kind IN (
    'anomaly', 'device_offline', 'fail_rate', 'lab_out_of_spec', 'check_failed', 'run_failed', 'ingest_reset'));
INSERT INTO analytics.alert_rules (rule_name, kind, params, channels, notify_resolve, description)
SELECT 'ingest-reset', 'ingest_reset', '{}', ARRAY['ops-slack', 'ops-webhook'], false,
       'A Kafka log changed under a drain''s stored offset (broker replaced, topic re-created, retention).'
WHERE EXISTS (SELECT 1 FROM analytics.alert_rules)
ON CONFLICT (rule_name) DO NOTHING;

GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO analytics_ro;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA analytics TO analytics_rw;
