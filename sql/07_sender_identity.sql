-- 07_sender_identity.sql: a raw row's identity is its sender's scope plus the sender's event id.
-- Idempotent: a second run finds every key already rewritten and changes nothing.
--
-- Before this migration the `dedup_key` of a row with an `event_id` was the id alone (sensor
-- readings: id + metric). Sender-chosen ids are unique only within their sender, so tenant B
-- sending `e-1` at the same time as tenant A replaced A's row. Now every key is
--
--     part(scope_1) US part(scope_2) ... US ('e' || part(event_id) | 'n')
--
-- where part(x) = '<bytes of x in UTF-8>:<x>' ('~' for NULL) and US is the unit separator E'\x1f':
-- length-prefixed, so no id, whatever its characters, can make two scopes spell one key. The same
-- function in Python is `Contract.identity_expr` (analytics_platform/contracts/base.py); a test
-- checks the two agree on every domain.
--
-- Existing rows are rewritten in place. On TimescaleDB a compressed chunk cannot have a key column
-- updated, so each compressed chunk holding old keys is decompressed, rewritten and compressed
-- again inside this migration (one pass over the compressed history: plan the upgrade's time).
-- Rows already lost to a collision cannot be rebuilt from raw: every hour that holds a row with an
-- event id (the only kind that could collide) is queued in analytics.raw_rederivations, and
-- `analytics-platform migrate` then re-derives those hours from kafka_landing, which still holds
-- every message. Natural keys always carried the whole scope, so their hours are not queued.

CREATE OR REPLACE FUNCTION analytics.identity_part(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN value IS NULL THEN '~'
                ELSE octet_length(convert_to(value, 'UTF8'))::text || ':' || value END
$$;

CREATE OR REPLACE FUNCTION analytics.identity_key(scope text[], event_id text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_to_string(
               ARRAY(SELECT analytics.identity_part(p) FROM unnest(scope) WITH ORDINALITY AS u(p, i) ORDER BY i),
               E'\x1f')
           || E'\x1f'
           || CASE WHEN event_id IS NULL THEN 'n' ELSE 'e' || analytics.identity_part(event_id) END
$$;

-- Raw hours to re-derive from landing, and what became of them. `requested_at`: queued (by this
-- migration, `rejects readmit`, an operator); `done_at`: re-derived; `reported_at`: told to Dagster
-- (the `raw_rederivations` sensor reports the partition, so downstream assets recompute it).
CREATE TABLE IF NOT EXISTS analytics.raw_rederivations (
    raw_table    text        NOT NULL,
    hour         timestamptz NOT NULL,
    reason       text        NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    done_at      timestamptz,
    reported_at  timestamptz,
    rows_before  bigint,
    rows_after   bigint,
    PRIMARY KEY (raw_table, hour, requested_at),
    CHECK (hour = date_trunc('hour', hour, 'UTC'))
);
CREATE INDEX IF NOT EXISTS raw_rederivations_pending_idx
    ON analytics.raw_rederivations (requested_at) WHERE done_at IS NULL;
CREATE INDEX IF NOT EXISTS raw_rederivations_unreported_idx
    ON analytics.raw_rederivations (done_at) WHERE done_at IS NOT NULL AND reported_at IS NULL;

-- Rewrite one raw table's keys; queue the hours that hold rows with an event id whose key changed.
-- A new key can only equal some other row's *old* key if that old key happens to spell the new
-- format; should it ever happen, the keys are moved aside first (a prefix no new key has).
CREATE OR REPLACE FUNCTION analytics.rewrite_identity(tbl text, scope_sql text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    changed bigint;
    new_key text := format('analytics.identity_key(%s, event_id)', scope_sql);
    chunk regclass;
    low timestamptz;
    high timestamptz;
    stale boolean;
    recompress regclass[] := '{}';
BEGIN
    EXECUTE format(
        'INSERT INTO analytics.raw_rederivations (raw_table, hour, reason)
         SELECT DISTINCT %L, date_trunc(''hour'', time, ''UTC''), ''sender identity (migration 07)''
         FROM analytics.%I WHERE event_id IS NOT NULL AND dedup_key IS DISTINCT FROM %s
         ON CONFLICT DO NOTHING', tbl, tbl, new_key);
    -- TimescaleDB cannot update a unique-key column inside a compressed chunk: decompress the
    -- chunks that hold old keys, rewrite, compress them again
    IF analytics.timescale_enabled() THEN
        FOR chunk, low, high IN
            SELECT format('%I.%I', c.chunk_schema, c.chunk_name)::regclass, c.range_start, c.range_end
            FROM timescaledb_information.chunks c
            WHERE c.hypertable_schema = 'analytics' AND c.hypertable_name = tbl AND c.is_compressed
        LOOP
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM analytics.%I WHERE time >= $1 AND time < $2 '
                           'AND dedup_key IS DISTINCT FROM %s)', tbl, new_key)
                INTO stale USING low, high;
            IF stale THEN
                PERFORM decompress_chunk(chunk);
                recompress := recompress || chunk;
            END IF;
        END LOOP;
    END IF;
    BEGIN
        EXECUTE format('UPDATE analytics.%I SET dedup_key = %s WHERE dedup_key IS DISTINCT FROM %s',
                       tbl, new_key, new_key);
        GET DIAGNOSTICS changed = ROW_COUNT;
    EXCEPTION WHEN unique_violation THEN
        EXECUTE format('UPDATE analytics.%I SET dedup_key = E''\x01'' || dedup_key WHERE dedup_key IS DISTINCT FROM %s',
                       tbl, new_key);
        EXECUTE format('UPDATE analytics.%I SET dedup_key = %s WHERE dedup_key IS DISTINCT FROM %s',
                       tbl, new_key, new_key);
        GET DIAGNOSTICS changed = ROW_COUNT;
    END;
    FOREACH chunk IN ARRAY recompress LOOP
        PERFORM compress_chunk(chunk, if_not_compressed => true);
    END LOOP;
    RETURN changed;
END $$;

SELECT analytics.rewrite_identity('raw_sensor_readings',
    'ARRAY[tenant_id, factory_id, machine_id, sensor_id, metric]');
SELECT analytics.rewrite_identity('raw_device_health',
    'ARRAY[tenant_id, factory_id, machine_id, CASE WHEN status IS NOT NULL THEN ''status'' '
    'WHEN health_score IS NOT NULL THEN ''score'' ELSE ''run'' END]');
SELECT analytics.rewrite_identity('raw_sweep_readings',
    'ARRAY[tenant_id, factory_id, machine_id, metric, batch_id]');
SELECT analytics.rewrite_identity('raw_lab_results',
    'ARRAY[tenant_id, factory_id, station_id, sample_id, analyte]');

GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO analytics_ro;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA analytics TO analytics_rw;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA analytics TO analytics_ro, analytics_rw;
