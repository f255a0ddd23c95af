-- The raw tables as sql/01_analytics_core.sql created them before contracts declared them (issue 21),
-- then the columns and indexes 04_analytics_energy.sql and 08_metric_catalog.sql added: what a database
-- migrated by the old files holds. Only tests read this file (test_domain_tables.py).

CREATE TABLE IF NOT EXISTS analytics.raw_sensor_readings (
    time            timestamptz      NOT NULL,
    tenant_id       text             NOT NULL,
    factory_id      text             NOT NULL,
    machine_id      text             NOT NULL,
    sensor_id       text             NOT NULL,
    metric          text             NOT NULL,
    value           double precision NOT NULL,
    unit            text,
    payload         jsonb,
    event_id        text,
    schema_version  smallint         NOT NULL,
    dedup_key       text             NOT NULL,
    topic           text             NOT NULL,
    kafka_partition integer          NOT NULL,
    kafka_offset    bigint           NOT NULL,
    ingested_at     timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (time, dedup_key)
);
CREATE INDEX IF NOT EXISTS raw_sensor_readings_key_idx
    ON analytics.raw_sensor_readings (tenant_id, factory_id, machine_id, metric, time DESC);

CREATE TABLE IF NOT EXISTS analytics.raw_device_health (
    time            timestamptz      NOT NULL,
    tenant_id       text             NOT NULL,
    factory_id      text             NOT NULL,
    machine_id      text             NOT NULL,
    status          text,
    level           text,
    health_score    double precision,
    event_id        text,
    schema_version  smallint         NOT NULL,
    dedup_key       text             NOT NULL,
    topic           text             NOT NULL,
    kafka_partition integer          NOT NULL,
    kafka_offset    bigint           NOT NULL,
    ingested_at     timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (time, dedup_key)
);
CREATE INDEX IF NOT EXISTS raw_device_health_key_idx
    ON analytics.raw_device_health (tenant_id, factory_id, machine_id, time DESC);

CREATE TABLE IF NOT EXISTS analytics.raw_sweep_readings (
    time            timestamptz        NOT NULL,
    tenant_id       text               NOT NULL,
    factory_id      text               NOT NULL,
    machine_id      text               NOT NULL,
    metric          text               NOT NULL,
    batch_id        text,
    unit            text,
    n               integer            NOT NULL,
    reading_values  double precision[] NOT NULL,
    event_id        text,
    schema_version  smallint           NOT NULL,
    dedup_key       text               NOT NULL,
    topic           text               NOT NULL,
    kafka_partition integer            NOT NULL,
    kafka_offset    bigint             NOT NULL,
    ingested_at     timestamptz        NOT NULL DEFAULT now(),
    PRIMARY KEY (time, dedup_key)
);
CREATE INDEX IF NOT EXISTS raw_sweep_readings_key_idx
    ON analytics.raw_sweep_readings (tenant_id, factory_id, machine_id, metric, time DESC);

CREATE TABLE IF NOT EXISTS analytics.raw_lab_results (
    time            timestamptz      NOT NULL,
    tenant_id       text             NOT NULL,
    factory_id      text             NOT NULL,
    station_id      text             NOT NULL,
    sample_id       text             NOT NULL,
    analyte         text             NOT NULL,
    value           double precision NOT NULL,
    unit            text,
    machine_id      text,
    event_id        text,
    schema_version  smallint         NOT NULL,
    dedup_key       text             NOT NULL,
    topic           text             NOT NULL,
    kafka_partition integer          NOT NULL,
    kafka_offset    bigint           NOT NULL,
    ingested_at     timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (time, dedup_key)
);
CREATE INDEX IF NOT EXISTS raw_lab_results_key_idx
    ON analytics.raw_lab_results (tenant_id, factory_id, station_id, analyte, time DESC);

SELECT analytics.make_timeseries('analytics.raw_sensor_readings', 'time', INTERVAL '1 day',
    'tenant_id, factory_id, machine_id', 'time DESC', INTERVAL '7 days', INTERVAL '90 days');
SELECT analytics.make_timeseries('analytics.raw_device_health', 'time', INTERVAL '1 day',
    'tenant_id, factory_id, machine_id', 'time DESC', INTERVAL '7 days', INTERVAL '90 days');
SELECT analytics.make_timeseries('analytics.raw_sweep_readings', 'time', INTERVAL '1 day',
    'tenant_id, factory_id, machine_id', 'time DESC', INTERVAL '7 days', INTERVAL '90 days');
SELECT analytics.make_timeseries('analytics.raw_lab_results', 'time', INTERVAL '1 day',
    'tenant_id, factory_id', 'time DESC', INTERVAL '7 days', INTERVAL '90 days');

-- @@ 04_analytics_energy.sql
ALTER TABLE analytics.raw_device_health ADD COLUMN IF NOT EXISTS run_state text;
CREATE INDEX IF NOT EXISTS raw_device_health_run_state_idx
    ON analytics.raw_device_health (tenant_id, factory_id, machine_id, time DESC) WHERE run_state IS NOT NULL;

-- @@ 08_metric_catalog.sql
ALTER TABLE analytics.raw_sensor_readings ADD COLUMN IF NOT EXISTS uncatalogued boolean NOT NULL DEFAULT false;
ALTER TABLE analytics.raw_sweep_readings ADD COLUMN IF NOT EXISTS uncatalogued boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS raw_sensor_readings_uncatalogued_idx
    ON analytics.raw_sensor_readings (tenant_id, metric, time) WHERE uncatalogued;
