-- 04_analytics_energy.sql: energy and production intelligence. Machine run state on device.health,
-- plant metadata as data (tenants' timezone / emission factor / time-of-use tariff / shifts, machines'
-- ideal cycle time), energy baselines (ISO 50001 EnB) and their deviations, persisted anomaly
-- models, and anomaly windows and resolution. Idempotent.

-- The run_state column of raw_device_health (running | idle | planned_stop | maintenance | fault,
-- reported beside or instead of the status) and its index are declared by the device contract
-- (analytics_platform/contracts/device.py); the migration runner adds them to older tables.

-- ---------------------------------------------------------------------------------------------
-- Plant metadata: data, not code (seeded from analytics_platform/config/plant.yaml). A row for
-- tenant '*' is the default of every tenant without its own.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS analytics.plant_tenants (
    tenant_id                text             PRIMARY KEY,
    timezone                 text             NOT NULL DEFAULT 'UTC',  -- tariffs and shifts are local times
    currency                 text             NOT NULL DEFAULT 'USD',
    emission_factor_kg_per_kwh double precision CHECK (emission_factor_kg_per_kwh >= 0),
    updated_at               timestamptz      NOT NULL DEFAULT now()
);

-- Time-of-use bands: local minute of day [start, end); end below start wraps midnight.
CREATE TABLE IF NOT EXISTS analytics.plant_tariff_bands (
    tenant_id    text             NOT NULL,
    band         text             NOT NULL,
    start_minute integer          NOT NULL CHECK (start_minute BETWEEN 0 AND 1439),
    end_minute   integer          NOT NULL CHECK (end_minute BETWEEN 0 AND 1440),
    price        double precision NOT NULL CHECK (price >= 0),  -- per kWh, in the tenant's currency
    updated_at   timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, band, start_minute)
);

-- The planned schedule: production shifts in local time; time outside every shift is not planned
-- production time (it does not count against availability). No shifts = planned around the clock.
CREATE TABLE IF NOT EXISTS analytics.plant_shifts (
    tenant_id    text        NOT NULL,
    shift        text        NOT NULL,
    start_minute integer     NOT NULL CHECK (start_minute BETWEEN 0 AND 1439),
    end_minute   integer     NOT NULL CHECK (end_minute BETWEEN 0 AND 1440),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, shift)
);

-- Per machine; '*' for factory or machine = the default (the most specific row wins).
CREATE TABLE IF NOT EXISTS analytics.machine_metadata (
    tenant_id           text             NOT NULL,
    factory_id          text             NOT NULL DEFAULT '*',
    machine_id          text             NOT NULL DEFAULT '*',
    ideal_cycle_time_s  double precision CHECK (ideal_cycle_time_s > 0),
    rated_power_kw      double precision CHECK (rated_power_kw > 0),
    description         text,
    updated_at          timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, factory_id, machine_id)
);

-- ---------------------------------------------------------------------------------------------
-- Energy baselines (EnB): one row per fitted model version; exactly one active per machine.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS analytics.analytics_baseline (
    baseline_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id      text             NOT NULL,
    factory_id     text             NOT NULL,
    machine_id     text             NOT NULL,
    version        integer          NOT NULL CHECK (version > 0),
    target         text             NOT NULL,
    drivers        text[]           NOT NULL,
    coefficients   jsonb            NOT NULL,  -- {"intercept": ..., "<driver>": ...}
    p_values       jsonb            NOT NULL,
    std_errors     jsonb            NOT NULL,
    r2             double precision NOT NULL,
    adj_r2         double precision NOT NULL,
    rmse           double precision NOT NULL,
    mae            double precision NOT NULL,
    n              integer          NOT NULL,
    excluded       integer          NOT NULL,  -- hours left out (maintenance, fault, missing values)
    trained_from   timestamptz      NOT NULL,
    trained_to     timestamptz      NOT NULL,
    accepted       boolean          NOT NULL,  -- R² met the acceptance threshold
    warning        text,                       -- why it was not accepted (stored anyway, flagged)
    active         boolean          NOT NULL DEFAULT true,
    created_at     timestamptz      NOT NULL DEFAULT now(),
    deactivated_at timestamptz,
    UNIQUE (tenant_id, factory_id, machine_id, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS analytics_baseline_one_active
    ON analytics.analytics_baseline (tenant_id, factory_id, machine_id) WHERE active;

-- Actual vs. predicted energy per machine and hour / day, against the model active when computed.
CREATE TABLE IF NOT EXISTS analytics.analytics_baseline_deviation (
    period_start     timestamptz      NOT NULL,
    period_end       timestamptz      NOT NULL,
    period           text             NOT NULL CHECK (period IN ('hour', 'day')),
    tenant_id        text             NOT NULL,
    factory_id       text             NOT NULL,
    machine_id       text             NOT NULL,
    baseline_version integer          NOT NULL,
    actual_kwh       double precision NOT NULL,
    predicted_kwh    double precision NOT NULL,
    deviation_kwh    double precision NOT NULL,
    deviation_pct    double precision,           -- NULL when the prediction is not positive
    z                double precision,
    severity         text             NOT NULL CHECK (severity IN ('normal', 'warning', 'critical')),
    computed_at      timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, factory_id, machine_id, period, period_start)
);
CREATE INDEX IF NOT EXISTS analytics_baseline_deviation_time_idx
    ON analytics.analytics_baseline_deviation (period, period_start DESC);
SELECT analytics.make_timeseries('analytics.analytics_baseline_deviation', 'period_start', INTERVAL '30 days',
    'tenant_id, factory_id, machine_id', 'period, period_start DESC', INTERVAL '90 days', NULL);

-- ---------------------------------------------------------------------------------------------
-- Anomalies: persisted, versioned models; the window an anomaly covers; resolution.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS analytics.analytics_anomaly_model (
    model_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id      text             NOT NULL,
    factory_id     text             NOT NULL,
    machine_id     text             NOT NULL,
    sensor_id      text             NOT NULL,
    metric         text             NOT NULL,
    method         text             NOT NULL DEFAULT 'isolation_forest',
    version        integer          NOT NULL CHECK (version > 0),
    trained_from   timestamptz      NOT NULL,
    trained_to     timestamptz      NOT NULL,
    n_samples      integer          NOT NULL,
    contamination  double precision NOT NULL,
    params         jsonb,
    library        text             NOT NULL,  -- e.g. scikit-learn 1.7.2: a model pickled by another is refitted
    model          bytea,                      -- the pickled estimator; NULL once pruned (newest 3 kept)
    active         boolean          NOT NULL DEFAULT true,
    created_at     timestamptz      NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, factory_id, machine_id, sensor_id, metric, method, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS analytics_anomaly_model_one_active
    ON analytics.analytics_anomaly_model (tenant_id, factory_id, machine_id, sensor_id, metric, method) WHERE active;

ALTER TABLE analytics.analytics_anomaly ADD COLUMN IF NOT EXISTS window_start timestamptz;
ALTER TABLE analytics.analytics_anomaly ADD COLUMN IF NOT EXISTS window_end timestamptz;
ALTER TABLE analytics.analytics_anomaly ADD COLUMN IF NOT EXISTS model_version integer;
CREATE INDEX IF NOT EXISTS analytics_anomaly_time_idx ON analytics.analytics_anomaly (time);

-- Resolve an open anomaly with a note; returns false when there is no such anomaly. Resolving
-- again replaces the note (a correction), keeping the first resolution time.
CREATE OR REPLACE FUNCTION analytics.resolve_anomaly(p_anomaly_id bigint, p_note text, p_by text)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF p_note IS NULL OR btrim(p_note) = '' THEN
        RAISE EXCEPTION 'a resolution needs a note saying what was found or done';
    END IF;
    UPDATE analytics.analytics_anomaly
       SET status = 'resolved',
           resolved_at = coalesce(resolved_at, now()),
           resolved_by = p_by,
           resolution_note = p_note
     WHERE anomaly_id = p_anomaly_id;
    RETURN FOUND;
END $$;

GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO analytics_ro;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA analytics TO analytics_rw;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA analytics TO analytics_rw;
GRANT EXECUTE ON FUNCTION analytics.resolve_anomaly(bigint, text, text) TO analytics_rw;
