-- 08_metric_catalog.sql: the metrics catalogue is tenant data. Idempotent.
--
-- Which metric names a reading (sensors.device.readings, sensors.sweep.readings) may carry, with
-- the canonical unit and the physically plausible range judged by the value-range data contracts.
-- Tenant '*' holds the platform defaults, seeded from the packaged config/metrics.yaml by
-- `analytics-platform migrate` (entries already present are never overwritten); a tenant's own
-- entry adds a metric for that tenant or overrides a default's unit, range and description.
-- Edited with `analytics-platform metrics ...` or the API (PUT/DELETE /v1/catalog/metrics/...,
-- keys with the `admin` scope); the drain reads the table on every pass, so a change applies
-- within one tick, without a deploy or a restart.

CREATE TABLE IF NOT EXISTS analytics.metric_catalog (
    tenant_id   text             NOT NULL,         -- '*' = every tenant (the defaults)
    metric      text             NOT NULL,
    unit        text,                              -- canonical unit; NULL = any unit
    min_value   double precision,                  -- plausible range; NULL = that side not judged
    max_value   double precision,
    description text             NOT NULL DEFAULT '',
    source      text             NOT NULL DEFAULT 'api' CHECK (source IN ('packaged', 'cli', 'api')),
    updated_at  timestamptz      NOT NULL DEFAULT now(),
    updated_by  text,
    PRIMARY KEY (tenant_id, metric),
    CHECK (length(metric) BETWEEN 1 AND 200 AND length(tenant_id) BETWEEN 1 AND 200),
    CHECK (min_value IS NULL OR max_value IS NULL OR min_value <= max_value),
    CHECK (min_value IS NULL OR min_value = min_value),  -- not NaN
    CHECK (max_value IS NULL OR max_value = max_value)
);

-- What happens to a reading whose metric is in neither the tenant's entries nor the defaults:
-- `reject` (kept in rejected_message as unknown_metric, re-admittable once the metric is added)
-- or `accept` (stored and aggregated, flagged `uncatalogued`, no range check, counted).
-- Tenant '*' is the default for tenants without a row of their own.
CREATE TABLE IF NOT EXISTS analytics.metric_policy (
    tenant_id       text        PRIMARY KEY,
    unknown_metrics text        NOT NULL CHECK (unknown_metrics IN ('reject', 'accept')),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    updated_by      text
);
INSERT INTO analytics.metric_policy (tenant_id, unknown_metrics, updated_by)
VALUES ('*', 'reject', 'migration 08') ON CONFLICT (tenant_id) DO NOTHING;

-- Readings stored under the `accept` policy carry the flag `uncatalogued` (re-deriving a partition
-- re-judges it against the catalogue of that moment): a derived column the sensor and sweep
-- contracts declare, added to older raw tables by the migration runner.

-- The API's writer role may edit the catalogue and the policies (keys with the `admin` scope),
-- besides resolving anomalies; it reads nothing else.
GRANT SELECT, INSERT, UPDATE, DELETE ON analytics.metric_catalog, analytics.metric_policy TO analytics_resolver;

-- API keys gain the `admin` scope: on a tenant key it edits that tenant's catalogue and policy, on
-- an admin key (no tenant) every tenant's and the defaults.
ALTER TABLE analytics.api_keys DROP CONSTRAINT IF EXISTS api_keys_scopes_check;
ALTER TABLE analytics.api_keys ADD CONSTRAINT api_keys_scopes_check
    CHECK (scopes <@ ARRAY['read', 'resolve', 'admin']::text[] AND 'read' = ANY (scopes));

GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO analytics_ro;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA analytics TO analytics_rw;
