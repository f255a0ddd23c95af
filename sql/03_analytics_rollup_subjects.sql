-- 03_analytics_rollup_subjects.sql: rollups of one event type can be split by a subject (the lab
-- analyte, the sweep metric), and carry their pass rate. Idempotent.

ALTER TABLE analytics.analytics_event_rollup ADD COLUMN IF NOT EXISTS subject text NOT NULL DEFAULT '';
ALTER TABLE analytics.analytics_event_rollup ADD COLUMN IF NOT EXISTS pass_rate double precision;

-- the subject joins the natural key (a lab station has one pass rate per analyte per bucket)
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint c JOIN pg_attribute a
            ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey) AND a.attname = 'subject'
        WHERE c.conrelid = 'analytics.analytics_event_rollup'::regclass AND c.contype = 'p'
    ) THEN
        ALTER TABLE analytics.analytics_event_rollup DROP CONSTRAINT IF EXISTS analytics_event_rollup_pkey;
        ALTER TABLE analytics.analytics_event_rollup
            ADD CONSTRAINT analytics_event_rollup_pkey
            PRIMARY KEY (tenant_id, factory_id, machine_id, event_type, subject, window_s, bucket_start);
    END IF;
END $$;

-- lab and sweep results are looked up by their subject
CREATE INDEX IF NOT EXISTS analytics_event_rollup_subject_idx
    ON analytics.analytics_event_rollup (event_type, subject, window_s, bucket_start DESC);
