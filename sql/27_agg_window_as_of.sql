-- 27_agg_window_as_of.sql: a window's buckets final ahead of the hour's mark (issue 22, item 2).
-- The hour's `as_of` (sql/12) speaks for every window, so the smallest window's bucket that closes
-- with a larger one (10:05 closes a 60 s and a 300 s bucket) could only be marked final once the
-- larger one, five minutes of readings, was rewritten too: at 5,000 msg/s two minutes in five of the
-- 60 s buckets were final 16-17 s after they closed instead of 8-9 s. The finaliser now writes the
-- smallest window's buckets first, in a transaction of their own, and records here, for that window
-- alone, the moment its buckets of the hour are final up to (the same promise as `as_of`: every
-- bucket ending by then holds every reading committed before it). /v1/agg takes the later of `as_of`
-- and the window's entry. A full run of the hour writes every window as of its own read, so it
-- empties the map (results/aggregates.py MARK_MATERIALISED). Keys: window seconds as text; values:
-- timestamps as JSON strings. Idempotent; plain SQL for PostgreSQL and TimescaleDB alike.

ALTER TABLE analytics.agg_materialised_hours
    ADD COLUMN IF NOT EXISTS window_as_of jsonb NOT NULL DEFAULT '{}'::jsonb;
COMMENT ON COLUMN analytics.agg_materialised_hours.window_as_of IS
    'Per window (seconds, as text): its buckets of the hour ending by this moment are final, when later than as_of';
