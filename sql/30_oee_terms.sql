-- 30_oee_terms.sql: OEE is the textbook good x ideal cycle time / planned busy time. A period of planned
-- production time in which nothing was made scores 0 (it was NULL, "quality: no units produced", so an
-- idle shift vanished from OEE averages and alerts), and a longer range adds the terms up:
-- sum(good x ideal) / sum(planned busy time) over the periods where OEE is known (transforms/kpi_catalog.OEE).
--
-- The KPI assets now store both terms in OEE's details. Rows written before carry neither, so a week or a
-- month over them would leave them out; this fills them from the same period's performance row (its ideal
-- cycle time) and availability row (its planned busy time, known only where the period had run states: the
-- run_time_s KPI is NULL otherwise), and gives the rows the new rule makes known their value, with the
-- assets' own arithmetic (good x ideal / busy, left to right, double precision: the same bits). The periods
-- touched draw a new version, so the API's ETags of answers made from them change.
--
-- Idempotent: only OEE rows without the planned_busy_s key are read; a re-run finds none. PostgreSQL and
-- TimescaleDB alike (an UPDATE of compressed chunks is supported there).
WITH terms AS (
    -- the same period's other rows, one join: performance's ideal cycle time, availability's planned busy
    -- time (where run_time_s says the period had run states), the good count
    SELECT o.tenant_id, o.factory_id, o.machine_id, o.period, o.kpi, o.period_start,
           max((k.details ->> 'ideal_cycle_time_s')::double precision) FILTER (WHERE k.kpi = 'performance') AS ideal,
           CASE WHEN bool_or(k.kpi = 'run_time_s' AND k.value IS NOT NULL)
                THEN max((k.details ->> 'planned_busy_s')::double precision) FILTER (WHERE k.kpi = 'availability')
           END AS busy,
           max(k.value) FILTER (WHERE k.kpi = 'good_count') AS good
    FROM analytics.analytics_kpi o
    LEFT JOIN analytics.analytics_kpi k
        ON (k.tenant_id, k.factory_id, k.machine_id, k.period, k.period_start)
         = (o.tenant_id, o.factory_id, o.machine_id, o.period, o.period_start)
        AND k.kpi IN ('availability', 'performance', 'run_time_s', 'good_count')
    WHERE o.kpi = 'oee' AND NOT (COALESCE(o.details, '{}'::jsonb) ? 'planned_busy_s')
    GROUP BY o.tenant_id, o.factory_id, o.machine_id, o.period, o.kpi, o.period_start
), filled AS (
    UPDATE analytics.analytics_kpi o
    SET details = COALESCE(o.details, '{}'::jsonb)
                  || jsonb_build_object('ideal_cycle_time_s', t.ideal, 'planned_busy_s', t.busy),
        value = CASE WHEN o.value IS NULL AND t.busy > 0 AND t.ideal IS NOT NULL AND t.good IS NOT NULL
                     THEN t.good * t.ideal / t.busy ELSE o.value END,
        null_reason = CASE WHEN o.value IS NULL AND t.busy > 0 AND t.ideal IS NOT NULL AND t.good IS NOT NULL
                           THEN NULL ELSE o.null_reason END
    FROM terms t
    WHERE (o.tenant_id, o.factory_id, o.machine_id, o.period, o.kpi, o.period_start)
        = (t.tenant_id, t.factory_id, t.machine_id, t.period, t.kpi, t.period_start)
    RETURNING o.period, o.period_start
)
UPDATE analytics.kpi_materialised_periods m
SET version = nextval('analytics.kpi_materialised_version')
FROM (SELECT DISTINCT period, period_start FROM filled) f
WHERE (m.period, m.period_start) = (f.period, f.period_start);
