-- 05_analytics_alerts.sql: alert rules, mute windows, the state of every alert condition and the
-- log of every notification. Idempotent.
--
-- A condition (one fingerprint: rule + what it is about) is opened once, stays open while the
-- rule still sees it, and is resolved when the rule stops seeing it; notifications are written
-- to alert_log in the same transaction as the transition (an outbox) and delivered afterwards,
-- so a receiver that is down delays a notification but never loses or doubles it.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'analytics_alerts') THEN
        -- reads everything, writes only the alert tables
        CREATE ROLE analytics_alerts NOLOGIN IN ROLE analytics_ro;
    END IF;
END $$;

CREATE TABLE IF NOT EXISTS analytics.alert_rules (
    rule_name       text        PRIMARY KEY,
    tenant_id       text        NOT NULL DEFAULT '*',   -- '*' = every tenant
    kind            text        NOT NULL CHECK (kind IN ('anomaly', 'device_offline', 'fail_rate',
                                                          'lab_out_of_spec', 'check_failed', 'run_failed')),
    params          jsonb       NOT NULL DEFAULT '{}',
    channels        text[]      NOT NULL DEFAULT '{}',
    notify_resolve  boolean     NOT NULL DEFAULT true,
    enabled         boolean     NOT NULL DEFAULT true,
    description     text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS analytics.alert_mutes (
    mute_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule_name   text        NOT NULL DEFAULT '*',   -- '*' = every rule
    tenant_id   text        NOT NULL DEFAULT '*',
    factory_id  text        NOT NULL DEFAULT '*',
    machine_id  text        NOT NULL DEFAULT '*',
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    reason      text        NOT NULL,
    created_by  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at),
    UNIQUE (rule_name, tenant_id, factory_id, machine_id, starts_at)
);
CREATE INDEX IF NOT EXISTS alert_mutes_active_idx ON analytics.alert_mutes (ends_at);

CREATE TABLE IF NOT EXISTS analytics.alert_conditions (
    fingerprint     text        PRIMARY KEY,   -- rule_name + ':' + the subject
    rule_name       text        NOT NULL,
    state           text        NOT NULL CHECK (state IN ('open', 'resolved')),
    tenant_id       text,
    factory_id      text,
    machine_id      text,
    severity        text        NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    summary         text        NOT NULL,
    details         jsonb,
    link            text,
    observed_at     timestamptz,               -- when the subject itself happened (anomaly time, ...)
    opened_at       timestamptz NOT NULL,
    last_seen_at    timestamptz NOT NULL,
    resolved_at     timestamptz,
    times_opened    integer     NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS alert_conditions_rule_idx ON analytics.alert_conditions (rule_name, state);

CREATE TABLE IF NOT EXISTS analytics.alert_log (
    log_id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at       timestamptz NOT NULL,
    rule_name        text        NOT NULL,
    fingerprint      text        NOT NULL,
    transition       text        NOT NULL CHECK (transition IN ('open', 'reopen', 'resolve')),
    channel          text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'muted', 'unconfigured', 'gave_up')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    last_attempt_at  timestamptz,
    sent_at          timestamptz,
    error            text,
    mute_id          bigint,
    tenant_id        text,
    factory_id       text,
    machine_id       text,
    severity         text        NOT NULL,
    title            text        NOT NULL,
    body             text        NOT NULL,
    link             text
);
CREATE INDEX IF NOT EXISTS alert_log_due_idx
    ON analytics.alert_log (next_attempt_at) WHERE status IN ('pending', 'failed');
CREATE INDEX IF NOT EXISTS alert_log_fingerprint_idx ON analytics.alert_log (fingerprint, created_at);

GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO analytics_ro;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA analytics TO analytics_rw;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA analytics TO analytics_rw;
GRANT INSERT, UPDATE ON analytics.alert_conditions, analytics.alert_log TO analytics_alerts;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA analytics TO analytics_alerts;
