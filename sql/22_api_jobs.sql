-- 22_api_jobs.sql: training and detection on demand from the API (issue 25, item 1). Idempotent.
--
-- * analytics.api_jobs: one row per POST /v1/baselines/train or /v1/anomalies/detect, bound to the
--   caller's tenant: what was asked (the request as validated), the Dagster run that does it, and a
--   cache of the run's status and result, so GET /v1/jobs/{id} answers from one row once the run has
--   ended and the Dagster instance is asked only while it has not.
-- * At most one open (submitting, queued or running) job per tenant, kind and request: a duplicate
--   POST while one runs gets the running job back instead of a second run racing it for the next
--   model version. The unique index is what makes that hold under concurrent requests.
-- * Keys with the scopes 'train' (POST /v1/baselines/train) and 'detect' (POST /v1/anomalies/detect):
--   a read key cannot start runs, which cost the plant's two cores.
-- * The API's write role (analytics_resolver) records jobs; the read role reads them like every table.

CREATE TABLE IF NOT EXISTS analytics.api_jobs (
    job_id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    text        NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('baseline_training', 'anomaly_detection')),
    request      jsonb       NOT NULL,               -- the validated request, as the run's config carries it
    request_key  text        NOT NULL,               -- SHA-256 of kind and the canonical request: equal asks, equal keys
    run_id       text,                               -- the Dagster run; NULL while submitting
    status       text        NOT NULL DEFAULT 'submitting'
                 CHECK (status IN ('submitting', 'queued', 'running', 'success', 'failure', 'canceled')),
    result       jsonb,                              -- what the run produced, once it succeeded
    error        text,                               -- why it failed or could not be submitted
    requested_by text        NOT NULL,               -- the API key id
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX IF NOT EXISTS api_jobs_one_open_idx
    ON analytics.api_jobs (tenant_id, kind, request_key) WHERE status IN ('submitting', 'queued', 'running');
CREATE INDEX IF NOT EXISTS api_jobs_tenant_idx ON analytics.api_jobs (tenant_id, job_id);

GRANT SELECT ON analytics.api_jobs TO analytics_ro;
GRANT SELECT, INSERT, UPDATE ON analytics.api_jobs TO analytics_resolver;

ALTER TABLE analytics.api_keys DROP CONSTRAINT IF EXISTS api_keys_scopes_check;
ALTER TABLE analytics.api_keys ADD CONSTRAINT api_keys_scopes_check
    CHECK (scopes <@ ARRAY['read', 'resolve', 'admin', 'train', 'detect']::text[] AND 'read' = ANY (scopes));
