-- 26_pipeline_sees_writers.sql: the pipeline's role reads every session's transaction start.
-- The live judges and the aggregates' finaliser read "raw rows ingested since a position" and stop
-- at the start of the oldest transaction that may still write raw rows (ingest/store.py
-- OLDEST_WRITER, from pg_stat_activity). PostgreSQL shows a session's xact_start only to members of
-- its role and of pg_read_all_stats, so a writer logged in as another user of analytics_rw (another
-- drain service, a backfill under its own login) would be invisible and its rows could land behind
-- a position, never to be read by them. Granting pg_read_all_stats (PostgreSQL 10+) makes every
-- writer visible. It needs a superuser or the grant option on pg_read_all_stats: where the
-- migrating role has neither (a managed database), say so and go on -- give every pipeline login
-- the same user, or have an administrator run this GRANT. Idempotent; PostgreSQL and TimescaleDB alike.

DO $$
BEGIN
    GRANT pg_read_all_stats TO analytics_rw;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'analytics_rw was not granted pg_read_all_stats (%): the live judges and the finaliser see '
                 'only their own login''s writers; run GRANT pg_read_all_stats TO analytics_rw as a superuser',
                 SQLERRM;
END $$;
