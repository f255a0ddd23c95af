-- 28_agg_materialised_days.sql: the hours' versions summed up per day, so /v1/agg's tag of a long range
-- reads a row a day, not a row an hour (issue 23, item 1).
-- The ETag of a final /v1/agg answer is keyed by the count and the highest version of the hours it reads
-- (sql/14); for a year that was count(*) and max(version) over 8,760 rows of agg_materialised_hours,
-- ~1 ms of PostgreSQL per request and most of a cached year's cost. Here each day keeps the count of its
-- hours and the highest version any of them has had, kept by triggers on agg_materialised_hours in the
-- writer's own statement and transaction: whoever writes an hour (the asset, the finaliser, a backfill,
-- a hand-run UPDATE) moves its day with it, so the tag can never lag what was materialised.
-- Why increments rather than recounting the day's hours: two writers of the same day each add their own
-- rows' counts under the day row's lock (ON CONFLICT DO UPDATE sees the latest committed row), where a
-- recount would read its own snapshot and could miss the other's hours. The version kept is the highest
-- ever seen (versions come from one sequence in commit order, sql/14): any write of an hour raises it, a
-- deleted hour lowers the count, so (hours, version) changes with every change of the day's hours.
-- Days are UTC days (date_bin from the epoch), as agg_daily's. Idempotent; PostgreSQL and TimescaleDB alike.

CREATE TABLE IF NOT EXISTS analytics.agg_materialised_days (
    day_start timestamptz PRIMARY KEY,
    hours     integer     NOT NULL,
    version   bigint      NOT NULL
);
COMMENT ON TABLE analytics.agg_materialised_days IS
    'Per UTC day: how many hours agg_materialised_hours holds and the highest version they have had (triggers)';
GRANT SELECT ON analytics.agg_materialised_days TO analytics_ro;
GRANT SELECT, INSERT, UPDATE, DELETE ON analytics.agg_materialised_days TO analytics_rw;

-- One statement-level trigger per operation, with the statement's rows (a day's 24 hours are one upsert,
-- not 24). Days are upserted in day order, so two writers never lock two days in opposite orders.
CREATE OR REPLACE FUNCTION analytics.agg_materialised_days_follow() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO analytics.agg_materialised_days AS d (day_start, hours, version)
        SELECT date_bin(INTERVAL '1 day', hour_start, TIMESTAMPTZ '1970-01-01 00:00:00+00'), -count(*), 0
        FROM old_hours GROUP BY 1 ORDER BY 1
        ON CONFLICT (day_start) DO UPDATE SET hours = d.hours + excluded.hours;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO analytics.agg_materialised_days AS d (day_start, hours, version)
        SELECT date_bin(INTERVAL '1 day', hour_start, TIMESTAMPTZ '1970-01-01 00:00:00+00'), count(*), max(version)
        FROM new_hours GROUP BY 1 ORDER BY 1
        ON CONFLICT (day_start) DO UPDATE
        SET hours = d.hours + excluded.hours, version = greatest(d.version, excluded.version);
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION analytics.agg_materialised_days_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE analytics.agg_materialised_days SET hours = 0;
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER agg_materialised_days_insert
    AFTER INSERT ON analytics.agg_materialised_hours REFERENCING NEW TABLE AS new_hours
    FOR EACH STATEMENT EXECUTE FUNCTION analytics.agg_materialised_days_follow();
CREATE OR REPLACE TRIGGER agg_materialised_days_update
    AFTER UPDATE ON analytics.agg_materialised_hours REFERENCING OLD TABLE AS old_hours NEW TABLE AS new_hours
    FOR EACH STATEMENT EXECUTE FUNCTION analytics.agg_materialised_days_follow();
CREATE OR REPLACE TRIGGER agg_materialised_days_delete
    AFTER DELETE ON analytics.agg_materialised_hours REFERENCING OLD TABLE AS old_hours
    FOR EACH STATEMENT EXECUTE FUNCTION analytics.agg_materialised_days_follow();
CREATE OR REPLACE TRIGGER agg_materialised_days_truncate
    AFTER TRUNCATE ON analytics.agg_materialised_hours
    FOR EACH STATEMENT EXECUTE FUNCTION analytics.agg_materialised_days_truncated();

-- The days of the hours already there, counted afresh (writers wait for the lock meanwhile); a version
-- only ever goes up, so a tag handed out before this ran is never handed out again for other hours.
LOCK TABLE analytics.agg_materialised_hours IN SHARE ROW EXCLUSIVE MODE;
UPDATE analytics.agg_materialised_days AS d SET hours = 0
WHERE NOT EXISTS (SELECT 1 FROM analytics.agg_materialised_hours h
                  WHERE h.hour_start >= d.day_start AND h.hour_start < d.day_start + INTERVAL '1 day');
INSERT INTO analytics.agg_materialised_days AS d (day_start, hours, version)
SELECT date_bin(INTERVAL '1 day', hour_start, TIMESTAMPTZ '1970-01-01 00:00:00+00'), count(*), max(version)
FROM analytics.agg_materialised_hours GROUP BY 1 ORDER BY 1
ON CONFLICT (day_start) DO UPDATE SET hours = excluded.hours, version = greatest(d.version, excluded.version);

-- analytics.sq (sql/14) was STRICT, which keeps PostgreSQL from inlining it (its CASE is not strict), so
-- every use was a call of a SQL function: ~1 us a row, half of the database's time for a year's 365 daily
-- buckets. Without STRICT a NULL still gives NULL (abs(NULL) < c is NULL, so NULL * NULL) and the planner
-- inlines it into the very same float arithmetic, bit for bit.
ALTER FUNCTION analytics.sq(double precision) CALLED ON NULL INPUT;
