-- 11_anomaly_events.sql: anomaly events (issue 20). An engineer reads "the temperature of press 4
-- ran 6 °C high from 14:05 to 15:40", not 95 rows, so consecutive anomalous samples of one series
-- are one event. Events are computed on read from analytics_anomaly (never stored), so they are
-- always exactly what the rows say: re-materialising an hour, resolving a row or a late backfill
-- needs no second bookkeeping. Idempotent; plain SQL for PostgreSQL and TimescaleDB alike.

-- The spacing of the series' samples when the row was judged (seconds; NULL for rows that are
-- intervals themselves: stoppages, baseline deviations). Rows of one series whose windows are at
-- most 3 samples apart (two unflagged samples between them) belong to one event.
ALTER TABLE analytics.analytics_anomaly ADD COLUMN IF NOT EXISTS sample_s double precision;
COMMENT ON COLUMN analytics.analytics_anomaly.method IS
    'deviation, shift, noise, stuck (seasonal statistics), isolation_forest (second opinion), stoppage, baseline';
COMMENT ON COLUMN analytics.analytics_anomaly.sample_s IS
    'Sample spacing of the series (s) when judged; rows up to 3 samples apart form one anomaly event';

-- Events overlapping [p_start, p_end) (rows from one day before p_start are read so an event
-- that began then is whole), optionally of one tenant. event_id is the anomaly_id of the event's
-- first row, so it is stable while that row is: re-materialising keeps rows that are found again.
CREATE OR REPLACE FUNCTION analytics.anomaly_events(
    p_start timestamptz, p_end timestamptz, p_tenant text DEFAULT NULL
) RETURNS TABLE (
    event_id        bigint,
    tenant_id       text,
    factory_id      text,
    machine_id      text,
    sensor_id       text,
    metric          text,
    anomaly_type    text,
    start_time      timestamptz,
    end_time        timestamptz,
    peak_time       timestamptz,
    peak_anomaly_id bigint,
    severity        smallint,
    severity_label  text,
    methods         text[],
    anomalies       integer,
    open_anomalies  integer,
    status          text,
    observed        double precision,
    expected        double precision,
    score           double precision
) LANGUAGE sql STABLE AS $$
WITH picked AS (
    SELECT a.anomaly_id, a.tenant_id, a.factory_id, a.machine_id, a.sensor_id, a.metric, a.anomaly_type,
           a.method, a.severity, a.score, a.observed, a.expected, a.status, a.time,
           coalesce(a.window_start, a.time) AS w_start,
           greatest(coalesce(a.window_end, a.time), a.time) AS w_end,
           make_interval(secs => 3 * coalesce(a.sample_s, 0)) AS reach
    FROM analytics.analytics_anomaly a
    WHERE a.time >= p_start - INTERVAL '1 day' AND a.time < p_end
      AND (p_tenant IS NULL OR a.tenant_id = p_tenant)
), ordered AS (
    SELECT p.*, max(p.w_end) OVER (
               PARTITION BY p.tenant_id, p.factory_id, p.machine_id, p.sensor_id, p.metric
               ORDER BY p.w_start, p.anomaly_id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_end
    FROM picked p
), numbered AS (
    SELECT o.*, sum(CASE WHEN o.prev_end IS NULL OR o.w_start > o.prev_end + o.reach THEN 1 ELSE 0 END) OVER (
               PARTITION BY o.tenant_id, o.factory_id, o.machine_id, o.sensor_id, o.metric
               ORDER BY o.w_start, o.anomaly_id) AS event_no
    FROM ordered o
), peaks AS (
    -- the event's peak: highest severity, then largest score, then earliest
    SELECT DISTINCT ON (n.tenant_id, n.factory_id, n.machine_id, n.sensor_id, n.metric, n.event_no)
           n.tenant_id, n.factory_id, n.machine_id, n.sensor_id, n.metric, n.event_no,
           n.anomaly_id AS peak_anomaly_id, n.time AS peak_time, n.anomaly_type, n.observed, n.expected, n.score
    FROM numbered n
    ORDER BY n.tenant_id, n.factory_id, n.machine_id, n.sensor_id, n.metric, n.event_no,
             n.severity DESC, abs(n.score) DESC NULLS LAST, n.time, n.anomaly_id
), events AS (
    SELECT n.tenant_id, n.factory_id, n.machine_id, n.sensor_id, n.metric, n.event_no,
           (array_agg(n.anomaly_id ORDER BY n.w_start, n.anomaly_id))[1] AS event_id,
           min(n.w_start) AS start_time, max(n.w_end) AS end_time,
           max(n.severity)::smallint AS severity,
           array_agg(DISTINCT n.method ORDER BY n.method) AS methods,
           count(*)::integer AS anomalies,
           (count(*) FILTER (WHERE n.status = 'open'))::integer AS open_anomalies,
           bool_and(n.status = 'not_confirmed') AS not_confirmed
    FROM numbered n
    GROUP BY n.tenant_id, n.factory_id, n.machine_id, n.sensor_id, n.metric, n.event_no
)
SELECT e.event_id, e.tenant_id, e.factory_id, e.machine_id, e.sensor_id, e.metric, p.anomaly_type,
       e.start_time, e.end_time, p.peak_time, p.peak_anomaly_id, e.severity,
       CASE WHEN e.severity >= 3 THEN 'critical' WHEN e.severity = 2 THEN 'warning' ELSE 'info' END,
       e.methods, e.anomalies, e.open_anomalies,
       CASE WHEN e.open_anomalies > 0 THEN 'open' WHEN e.not_confirmed THEN 'not_confirmed' ELSE 'resolved' END,
       p.observed, p.expected, p.score
FROM events e
JOIN peaks p USING (tenant_id, factory_id, machine_id, event_no)
WHERE p.sensor_id IS NOT DISTINCT FROM e.sensor_id AND p.metric IS NOT DISTINCT FROM e.metric
  AND e.end_time >= p_start
$$;

-- Resolve every open row of an event with one note (the API's POST /v1/anomaly-events/{id}/resolve):
-- rows are what re-materialisation keeps, so the resolution survives it like a row's does.
CREATE OR REPLACE FUNCTION analytics.resolve_anomaly_event(
    p_event_id bigint, p_start timestamptz, p_end timestamptz, p_note text, p_by text
) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    resolved integer := 0;
    ev record;
BEGIN
    IF p_note IS NULL OR btrim(p_note) = '' THEN
        RAISE EXCEPTION 'a resolution needs a note saying what was found or done';
    END IF;
    SELECT * INTO ev FROM analytics.anomaly_events(p_start, p_end) e WHERE e.event_id = p_event_id;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    -- the event's rows, exactly as anomaly_events() gathered them (rows before p_end); a row
    -- resolved before keeps its first resolution time, as with resolve_anomaly(). A not_confirmed
    -- row (flagged live, not found by its hour: sql/13) stays so: nobody found anything there
    UPDATE analytics.analytics_anomaly a
       SET status = 'resolved', resolved_at = coalesce(a.resolved_at, now()), resolved_by = p_by,
           resolution_note = p_note
     WHERE a.tenant_id = ev.tenant_id AND a.factory_id = ev.factory_id AND a.machine_id = ev.machine_id
       AND a.sensor_id IS NOT DISTINCT FROM ev.sensor_id AND a.metric IS NOT DISTINCT FROM ev.metric
       AND coalesce(a.window_start, a.time) >= ev.start_time AND a.time <= ev.end_time AND a.time < p_end
       AND a.status <> 'not_confirmed';
    GET DIAGNOSTICS resolved = ROW_COUNT;
    RETURN resolved;
END;
$$;
GRANT EXECUTE ON FUNCTION analytics.anomaly_events(timestamptz, timestamptz, text) TO analytics_resolver;
GRANT EXECUTE ON FUNCTION analytics.resolve_anomaly_event(bigint, timestamptz, timestamptz, text, text)
    TO analytics_resolver;

-- Anomaly profiles: what each series is judged against, newest per series. A 'learning' series
-- has too little history and is not judged yet; the dashboard and API list them as such.
CREATE OR REPLACE VIEW analytics.v_anomaly_profile AS
SELECT DISTINCT ON (tenant_id, factory_id, machine_id, sensor_id, metric)
       tenant_id, factory_id, machine_id, sensor_id, metric, version, trained_from, trained_to, n_samples,
       params->>'stage'                          AS stage,
       (params->>'cadence_s')::double precision  AS cadence_s,
       (params->>'span_hours')::double precision AS span_hours,
       created_at
FROM analytics.analytics_anomaly_model
WHERE method = 'seasonal'
ORDER BY tenant_id, factory_id, machine_id, sensor_id, metric, trained_to DESC, version DESC;
GRANT SELECT ON analytics.v_anomaly_profile TO analytics_ro;
