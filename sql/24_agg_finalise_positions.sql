-- 24_agg_finalise_positions.sql: where the incremental finaliser of window aggregates stands in an
-- hour (issue 22, item 2). A run of the hourly asset by the drain service's finaliser rewrites only
-- the buckets that closed since its last run and those readings ingested since then touched; this
-- row says which readings the stored buckets of the hour already hold, and moves in the transaction
-- that writes them (a crash re-does a run, never skips one). Written by every run of the hour, full
-- or incremental; a run finds no row, another version of the hour, other windows or a position older
-- than the hour and recomputes the whole hour instead (results/aggregates.py). An incremental run sets
-- the hour's agg_materialised_hours.as_of (sql/12) to the later of it and min(the bucket end it
-- finalised, the new position): every bucket ending by then holds every reading committed before it,
-- which is what /v1/agg's `provisional: false` promises. Idempotent; plain SQL for PostgreSQL and
-- TimescaleDB alike.

CREATE TABLE IF NOT EXISTS analytics.agg_finalise_positions (
    hour_start   timestamptz PRIMARY KEY,
    -- every raw reading with ingested_at before it is in the stored buckets of the hour
    position     timestamptz NOT NULL,
    -- every bucket overlapping the hour that ends by it was computed after it closed
    closed_until timestamptz NOT NULL,
    -- the windows the buckets were computed for: other windows configured mean a full run
    windows      integer[]   NOT NULL,
    -- agg_materialised_hours.version written with it: another writer of the hour means a full run
    version      bigint      NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE analytics.agg_finalise_positions IS
    'Per hour: readings ingested before position are in its stored window aggregates (incremental finaliser)';

GRANT SELECT ON analytics.agg_finalise_positions TO analytics_ro;
GRANT SELECT, INSERT, UPDATE, DELETE ON analytics.agg_finalise_positions TO analytics_rw;
