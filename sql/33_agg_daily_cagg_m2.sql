-- 33_agg_daily_cagg_m2.sql: the TimescaleDB daily continuous aggregate keeps a day's spread without the
-- one-pass cancellation (plain PostgreSQL's agg_daily got m2_v in 31).
-- Its days had Σx² only, and the API took the day's stddev as sqrt((Σx² - (Σx)²/n) / (n - 1)): a sensor
-- reading 10000000.1 .. 10000000.3 (NIST StRD's NumAcc data) has Σx² ≈ 1.8e15 against a spread of 0.12, below
-- a double's resolution there, and the day came out 0 where the certified figure is 0.084.
-- A continuous aggregate cannot see the day's mean while it sums the hours, so the day's m2 is split as
--   m2 = Σ (n_h - 1)·s_h²  (each hour about its own mean: no cancellation)  +  (n·Σ n_h·mean_h² - (Σ n_h·mean_h)²) / n
-- and the second term's sums are kept in numeric, from each hour mean's shortest exact decimal (float8 -> text
-- -> numeric; float8 -> numeric rounds to 15 digits), where nothing cancels. sumsq_v stays (older readers).
-- A continuous aggregate cannot gain columns: it is dropped and made again when it lacks them, WITH NO DATA;
-- real-time aggregation (materialized_only = false) serves every day from the hours until its policy's next
-- refresh (15 minutes) materialises them again, so no answer changes meanwhile but the spread's digits.
DO $$
BEGIN
    IF NOT analytics.timescale_enabled() THEN
        RETURN;
    END IF;
    IF EXISTS (
        SELECT 1 FROM information_schema.columns
        WHERE table_schema = 'analytics' AND table_name = 'analytics_agg_daily' AND column_name = 'mean_sq_n'
    ) THEN
        RETURN;
    END IF;
    EXECUTE 'DROP MATERIALIZED VIEW IF EXISTS analytics.analytics_agg_daily';
    EXECUTE $view$
        CREATE MATERIALIZED VIEW analytics.analytics_agg_daily
        WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
        SELECT time_bucket(INTERVAL '1 day', bucket_start) AS bucket_start,
               tenant_id, factory_id, machine_id, sensor_id, metric,
               sum(count_n)::bigint                                              AS count_n,
               sum(sum_v)                                                        AS sum_v,
               min(min_v)                                                        AS min_v,
               max(max_v)                                                        AS max_v,
               sum((count_n - 1) * CASE WHEN coalesce(stddev_v, 0) < 1.4916681462400413e-154 THEN 0
                                        ELSE stddev_v * stddev_v END
                   + count_n * CASE WHEN abs(avg_v) < 1.4916681462400413e-154 THEN 0
                                    ELSE avg_v * avg_v END)                    AS sumsq_v,
               sum((count_n - 1) * CASE WHEN coalesce(stddev_v, 0) < 1.4916681462400413e-154 THEN 0
                                        ELSE stddev_v * stddev_v END)          AS m2_within_v,
               sum(count_n * avg_v::text::numeric)                               AS mean_sum_n,
               sum(count_n * avg_v::text::numeric * avg_v::text::numeric)        AS mean_sq_n,
               first(first_v, bucket_start)                                      AS first_v,
               last(last_v, bucket_start)                                        AS last_v
        FROM analytics.analytics_agg
        WHERE window_s = 3600
        GROUP BY 1, 2, 3, 4, 5, 6
        WITH NO DATA
    $view$;
    PERFORM add_continuous_aggregate_policy('analytics.analytics_agg_daily',
        start_offset => NULL, end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '15 minutes');
    EXECUTE 'GRANT SELECT ON analytics.analytics_agg_daily TO analytics_ro';  -- as 06 granted it
    EXECUTE 'GRANT SELECT, INSERT, UPDATE, DELETE ON analytics.analytics_agg_daily TO analytics_rw';
    EXECUTE 'CREATE INDEX IF NOT EXISTS analytics_agg_daily_key_idx ON analytics.analytics_agg_daily '
            '(tenant_id, factory_id, machine_id, metric, bucket_start)';
END $$;
