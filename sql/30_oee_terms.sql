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
    SELECT o.tenant_id, o.factory_id, o.machine_id, o.period, o.kpi, o.period_start,
           (p.details ->> 'ideal_cycle_time_s')::double precision AS ideal,
           CASE WHEN r.value IS NOT NULL THEN (a.details ->> 'planned_busy_s')::double precision END AS busy,
           g.value AS good
    FROM analytics.analytics_kpi o
    LEFT JOIN analytics.analytics_kpi a
        ON (a.tenant_id, a.factory_id, a.machine_id, a.period, a.period_start, a.kpi)
         = (o.tenant_id, o.factory_id, o.machine_id, o.period, o.period_start, 'availability')
    LEFT JOIN analytics.analytics_kpi p
        ON (p.tenant_id, p.factory_id, p.machine_id, p.period, p.period_start, p.kpi)
         = (o.tenant_id, o.factory_id, o.machine_id, o.period, o.period_start, 'performance')
    LEFT JOIN analytics.analytics_kpi r
        ON (r.tenant_id, r.factory_id, r.machine_id, r.period, r.period_start, r.kpi)
         = (o.tenant_id, o.factory_id, o.machine_id, o.period, o.period_start, 'run_time_s')
    LEFT JOIN analytics.analytics_kpi g
        ON (g.tenant_id, g.factory_id, g.machine_id, g.period, g.period_start, g.kpi)
         = (o.tenant_id, o.factory_id, o.machine_id, o.period, o.period_start, 'good_count')
    WHERE o.kpi = 'oee' AND NOT (COALESCE(o.details, '{}'::jsonb) ? 'planned_busy_s')
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
