-- 12_agg_materialised_hours.sql: which hours of window aggregates are final (issue 22, item 2).
-- The window-aggregates asset writes one row per hour it recomputes, in the same transaction as the
-- hour's buckets: `as_of` is the moment its read of raw readings began, so every reading committed
-- before it is in the stored buckets. GET /v1/agg serves a stored bucket as final when every hour it
-- overlaps has as_of at or after the bucket's end, and computes the others (the open bucket, closed
-- buckets not yet materialised) on read from raw readings with the same transform, marked
-- provisional. A late reading committed after as_of is picked up when the automation re-materialises
-- its hour, which moves as_of on. Idempotent; plain SQL for PostgreSQL and TimescaleDB alike.

CREATE TABLE IF NOT EXISTS analytics.agg_materialised_hours (
    hour_start      timestamptz PRIMARY KEY,
    as_of           timestamptz NOT NULL,
    materialised_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE analytics.agg_materialised_hours IS
    'Hours of analytics_agg written by sensor_window_aggregates; as_of = when the run began reading raw readings';

GRANT SELECT ON analytics.agg_materialised_hours TO analytics_ro;
GRANT SELECT, INSERT, UPDATE, DELETE ON analytics.agg_materialised_hours TO analytics_rw;
