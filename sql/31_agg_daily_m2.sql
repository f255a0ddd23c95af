-- 31_agg_daily_m2.sql: a day's spread as Σ (x - the day's mean)², not as Σx².
-- A day's sample stddev was sqrt((Σx² - (Σx)²/n) / (n - 1)): for a sensor whose mean is large against its
-- spread (10000000.1 .. 10000000.3, NIST StRD's NumAcc data) Σx² is 1.8e15 where the spread is 0.12, below a
-- double's resolution there, and the day came out 0 (or any number) instead of the certified 0.084. m2_v is
-- the day's sum of squared deviations from its own mean, built from each hour's count, mean and stddev
-- (Chan et al.: Σ (n_h - 1)·s_h² + n_h·(mean_h - mean_day)²), with nothing large to cancel; rollups combine it
-- the same way (api/routes/agg.py). sumsq_v stays as it was (readers of older releases use it).
--
-- Days stored before: m2_v from their hours where those are still kept, else from sumsq_v as before.
-- Idempotent: only rows without m2_v are filled.
ALTER TABLE analytics.agg_daily ADD COLUMN IF NOT EXISTS m2_v double precision;

UPDATE analytics.agg_daily AS d
SET m2_v = coalesce(
        (SELECT sum((a.count_n - 1) * analytics.sq(coalesce(a.stddev_v, 0))
                    + a.count_n * analytics.sq(a.sum_v / a.count_n - d.sum_v / d.count_n))
         FROM analytics.analytics_agg AS a
         WHERE a.window_s = 3600 AND a.bucket_start >= d.bucket_start AND a.bucket_start < d.bucket_start + INTERVAL '1 day'
           AND (a.tenant_id, a.factory_id, a.machine_id, a.sensor_id, a.metric)
             = (d.tenant_id, d.factory_id, d.machine_id, d.sensor_id, d.metric)
         HAVING sum(a.count_n) = d.count_n),
        greatest(d.sumsq_v - analytics.sq(d.sum_v) / d.count_n, 0))
WHERE d.m2_v IS NULL AND d.count_n > 0;
