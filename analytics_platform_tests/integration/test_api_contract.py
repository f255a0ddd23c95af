"""Contract test of the REST API: schemathesis generates requests for every operation of the app's
OpenAPI document and checks each response against it.

Responses are serialised with orjson straight from the rows (respond.py), bypassing pydantic, so the
response models are only a promise; this test holds the app to it. The real app runs under uvicorn
on a loopback port (its lifespan opens the pools of the read-only and the resolver role) on a fresh
database holding a small, realistic data set of tenant t1 (and a little of t2); every request
carries a t1 key with the read and resolve scopes. Checks on every response: no 5xx, the status
code documented, the content type documented, the body (JSON) and the documented headers
conforming to the schema of that status.

* `test_api_contract`: the cases schemathesis makes itself, from the schema's examples, its
  boundary values (coverage) and Hypothesis (fuzzing, valid and invalid input).
* `test_api_contract_aimed`: generated values seldom name rows that exist, so here each fuzzed case
  is laid over values of the data set (known ids, series, time ranges; sometimes as CSV, sometimes
  without a key) so that the item schemas are checked on real rows.
* `test_api_contract_reached_rows`: every operation answered 200 and every listing answered rows
  at least once over the run.
* Below them, inputs the generator cannot make (lone surrogates from JSON's \\u escapes).

Generation is deterministic (a fixed seed, derandomised Hypothesis), so CI sees the same cases.
One fresh database and app serve the module (resolving changes anomalies; nothing here depends on
their status). The schema is taken at import from an app
that opens nothing (`create_app(...).openapi()`; a test checks the live app serves the same
document) and the cases go over HTTP: the app needs this test's database, and loading the schema
from a fixture (`schemathesis.pytest.from_fixture`) fails on pytest 9.2 with schemathesis 4.32
(`'Function' object has no attribute '_nodeid'`). On pytest 9.2 the per-operation items also share
one node id; `-k "contract and kpi"` selects an operation.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import socket
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import hypothesis
import psycopg
import pytest
import requests
import schemathesis
import uvicorn
from fastapi import FastAPI
from hypothesis import strategies as st
from psycopg import sql
from schemathesis import Case, Response
from schemathesis.transport.requests import ManagedCookiesSession

from analytics_platform.api.app import create_app
from analytics_platform.api.keys import create_key
from analytics_platform.devstack.stack import with_credentials
from analytics_platform.migrations import apply_migrations
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.stack import role_password

# Fixed, so CI runs the same cases; set API_CONTRACT_SEED (and API_CONTRACT_EXAMPLES) to explore others.
SEED = int(os.environ.get("API_CONTRACT_SEED", "20250820"))
MAX_EXAMPLES = int(os.environ.get("API_CONTRACT_EXAMPLES", "30"))  # fuzzed cases per operation and test
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)


def config(*, fuzzing_only: bool = False) -> schemathesis.Config:
    settings: dict = {
        "seed": SEED,
        "request-timeout": 30,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
    }
    if fuzzing_only:
        settings["phases"] = {"examples": {"enabled": False}, "coverage": {"enabled": False}}
    return schemathesis.Config.from_dict(settings)


# Building the app opens nothing (the pools open with the lifespan); only its OpenAPI document is used.
OPENAPI = create_app(PlatformSettings(database_url="postgresql://unused@127.0.0.1:1/unused")).openapi()
schema = schemathesis.openapi.from_dict(OPENAPI, config=config())
# see `aim`; health and metrics take no parameters to aim
aimed_schema = schemathesis.openapi.from_dict(OPENAPI, config=config(fuzzing_only=True)).exclude(
    path=["/v1/health", "/v1/metrics"]
)
# The live app's pool threads draw from `random` (connection expiry jitter) while Hypothesis generates
# the next case in this thread; Hypothesis takes that for a strategy using `random`.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies:hypothesis.errors.HypothesisDeprecationWarning"
)
HYPOTHESIS = hypothesis.settings(deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow])

# ------------------------------------------------------------------------------------------------
# the data set: tenant t1, factory f1, machines m1 and m2, 2025-08-20 (UTC); a little of tenant t2
# ------------------------------------------------------------------------------------------------
DAY = "2025-08-20"
SEED_SQL = f"""
INSERT INTO analytics.raw_sensor_readings (time, tenant_id, factory_id, machine_id, sensor_id, metric, value, unit,
    payload, event_id, schema_version, dedup_key, topic, kafka_partition, kafka_offset)
SELECT TIMESTAMPTZ '{DAY} 03:00:00+00' + make_interval(secs => i * 7.5), 't1', 'f1', 'm1', 's' || (1 + i % 2), 'temp',
       64 + (i % 5) * 0.5, 'degC', CASE WHEN i % 3 = 0 THEN jsonb_build_object('raw', 640 + i, 'q', 'good') END,
       CASE WHEN i % 2 = 0 THEN 'e-' || i END, 1, 't1|f1|m1|s' || (1 + i % 2) || '|temp', 'sensors.device.readings',
       0, i
FROM generate_series(0, 39) AS i;
INSERT INTO analytics.raw_sensor_readings (time, tenant_id, factory_id, machine_id, sensor_id, metric, value, unit,
    payload, event_id, schema_version, dedup_key, topic, kafka_partition, kafka_offset)
VALUES (TIMESTAMPTZ '{DAY} 03:00:00+00', 't2', 'f1', 'm1', 's1', 'temp', 99, 'degC', NULL, NULL, 1,
        't2|f1|m1|s1|temp', 'sensors.device.readings', 0, 100);

-- window aggregates: minutes 03:00-03:09 (60 s), 5-minute buckets 03:00-03:55, every hour of the day
INSERT INTO analytics.analytics_agg (bucket_start, bucket_end, window_s, tenant_id, factory_id, machine_id, sensor_id,
    metric, count_n, sum_v, avg_v, min_v, max_v, stddev_v, first_v, last_v, p50_v, p95_v)
SELECT b, b + make_interval(secs => w), w, 't1', 'f1', 'm1', s, 'temp', n, n * 65.0, 65.0, 63.5, 66.5,
       CASE WHEN n > 1 THEN 0.4 END, 64.8, 65.2, 65.0, 66.1
FROM (
    SELECT TIMESTAMPTZ '{DAY} 03:00:00+00' + make_interval(mins => i) AS b, 60 AS w, 60 AS n
    FROM generate_series(0, 9) AS i
    UNION ALL
    SELECT TIMESTAMPTZ '{DAY} 03:00:00+00' + make_interval(mins => 5 * i), 300, 300 FROM generate_series(0, 11) AS i
    UNION ALL
    SELECT TIMESTAMPTZ '{DAY} 00:00:00+00' + make_interval(hours => i), 3600, CASE WHEN i = 5 THEN 1 ELSE 3600 END
    FROM generate_series(0, 23) AS i
) AS buckets
CROSS JOIN (VALUES ('s1'), ('s2')) AS sensors (s);

INSERT INTO analytics.analytics_kpi (period_start, period_end, period, tenant_id, factory_id, machine_id, kpi, value,
    unit, null_reason, details)
SELECT TIMESTAMPTZ '{DAY} 00:00:00+00' + make_interval(hours => h), TIMESTAMPTZ '{DAY} 01:00:00+00'
       + make_interval(hours => h), 'hour', 't1', 'f1', m, k, CASE WHEN k = 'sec_kwh_per_unit' AND h = 2 THEN NULL
       ELSE 0.5 + h / 100.0 END, CASE k WHEN 'energy_kwh' THEN 'kWh' WHEN 'sec_kwh_per_unit' THEN 'kWh/unit' END,
       CASE WHEN k = 'sec_kwh_per_unit' AND h = 2 THEN 'no production' END,
       CASE WHEN k = 'oee' THEN jsonb_build_object('availability', 0.9, 'performance', 0.8) END
FROM generate_series(0, 5) AS h, (VALUES ('m1'), ('m2')) AS ms (m),
     (VALUES ('oee'), ('energy_kwh'), ('sec_kwh_per_unit')) AS ks (k);
INSERT INTO analytics.analytics_kpi (period_start, period_end, period, tenant_id, factory_id, machine_id, kpi, value,
    unit)
VALUES (TIMESTAMPTZ '{DAY} 00:00:00+00', TIMESTAMPTZ '{DAY} 08:00:00+00', 'shift', 't1', 'f1', 'm1', 'oee', 0.71, NULL),
       (TIMESTAMPTZ '{DAY} 00:00:00+00', TIMESTAMPTZ '2025-08-21 00:00:00+00', 'day', 't1', 'f1', 'm1', 'energy_kwh',
        812.5, 'kWh');

INSERT INTO analytics.analytics_event_rollup (bucket_start, bucket_end, window_s, tenant_id, factory_id, machine_id,
    event_type, subject, count_n, pass_n, fail_n, pass_rate, fail_rate, uptime_pct, details)
VALUES (TIMESTAMPTZ '{DAY} 03:00:00+00', TIMESTAMPTZ '{DAY} 04:00:00+00', 3600, 't1', 'f1', 'm1', 'device_health', '',
        12, NULL, NULL, NULL, NULL, 97.5, '{{"statuses": {{"online": 11, "degraded": 1}}}}'),
       (TIMESTAMPTZ '{DAY} 03:00:00+00', TIMESTAMPTZ '{DAY} 04:00:00+00', 3600, 't1', 'f1', 'lab1', 'lab_result',
        'Moisture', 4, 3, 1, 0.75, 0.25, NULL, NULL),
       (TIMESTAMPTZ '{DAY} 03:00:00+00', TIMESTAMPTZ '{DAY} 03:01:00+00', 60, 't1', 'f1', 'm1', 'status_change', '',
        2, NULL, NULL, NULL, NULL, NULL, '[1, "two"]'),
       (TIMESTAMPTZ '{DAY} 00:00:00+00', TIMESTAMPTZ '2025-08-21 00:00:00+00', 86400, 't1', 'f1', 'm1',
        'sweep_batch', 'temp', 20, 18, 2, 0.9, 0.1, NULL, '"note"');

-- anomalies 1-3 (t1; 1 open and recent, so the default listing of the last 7 days has it) and 4 (t2)
INSERT INTO analytics.analytics_anomaly (time, window_start, window_end, tenant_id, factory_id, machine_id, sensor_id,
    metric, anomaly_type, method, score, severity, severity_label, confidence, observed, expected, model_version,
    details, status, resolved_at, resolved_by, resolution_note)
VALUES (date_trunc('minute', now()) - INTERVAL '1 hour', NULL, NULL, 't1', 'f1', 'm1', 's1', 'temp', 'temperature',
        'zscore', 4.2, 4, 'critical', 0.97, 71.5, 65.0, NULL, '{{"z": 4.2}}', 'open', NULL, NULL, NULL),
       (TIMESTAMPTZ '{DAY} 03:05:00+00', TIMESTAMPTZ '{DAY} 03:00:00+00', TIMESTAMPTZ '{DAY} 04:00:00+00', 't1', 'f1',
        'm1', NULL, NULL, 'power', 'isolation_forest', -0.31, 2, 'warning', NULL, NULL, NULL, 3, NULL, 'resolved',
        TIMESTAMPTZ '{DAY} 05:00:00+00', 'ops', 'filter replaced'),
       (TIMESTAMPTZ '{DAY} 04:00:00+00', NULL, NULL, 't1', 'f1', 'm2', NULL, NULL, 'production', 'stoppage', NULL, 1,
        'info', NULL, 0, 120, NULL, '[]', 'open', NULL, NULL, NULL),
       (TIMESTAMPTZ '{DAY} 03:05:00+00', NULL, NULL, 't2', 'f1', 'm1', 's1', 'temp', 'temperature', 'zscore', 3.1, 3,
        'warning', 0.9, 70.0, 65.0, NULL, NULL, 'open', NULL, NULL, NULL);

-- seasonal anomaly profiles (GET /v1/anomaly-profiles): t1 m1 judged daily, t1 m2 still learning, t2 m1
INSERT INTO analytics.analytics_anomaly_model (tenant_id, factory_id, machine_id, sensor_id, metric, method, version,
    trained_from, trained_to, n_samples, contamination, params, library)
VALUES ('t1', 'f1', 'm1', 's1', 'temp', 'seasonal', 1, TIMESTAMPTZ '2025-08-18 00:00:00+00',
        TIMESTAMPTZ '{DAY} 00:00:00+00', 2880, 0, '{{"stage": "daily", "cadence_s": 60, "span_hours": 48}}',
        'seasonal'),
       ('t1', 'f1', 'm2', 's1', 'temp', 'seasonal', 1, TIMESTAMPTZ '{DAY} 03:00:00+00',
        TIMESTAMPTZ '{DAY} 03:30:00+00', 30, 0, '{{"stage": "learning", "cadence_s": 60, "span_hours": 0.5}}',
        'seasonal'),
       ('t2', 'f1', 'm1', 's1', 'temp', 'seasonal', 1, TIMESTAMPTZ '{DAY} 00:00:00+00',
        TIMESTAMPTZ '{DAY} 06:00:00+00', 360, 0, '{{"stage": "flat", "cadence_s": 60, "span_hours": 6}}', 'seasonal');

-- baselines 1 (t1 m1, superseded), 2 (t1 m1, active), 3 (t2)
INSERT INTO analytics.analytics_baseline (tenant_id, factory_id, machine_id, version, target, drivers, coefficients,
    p_values, std_errors, r2, adj_r2, rmse, mae, n, excluded, trained_from, trained_to, accepted, warning, active,
    deactivated_at)
SELECT t, 'f1', 'm1', v, 'energy_kwh', ARRAY['production_count', 'avg_outdoor_temp', 'avg_outdoor_pressure'],
       '{{"intercept": 12.5, "production_count": 0.42, "avg_outdoor_temp": 0.8, "avg_outdoor_pressure": -0.01}}',
       '{{"intercept": 0.001, "production_count": 0.0, "avg_outdoor_temp": 0.02, "avg_outdoor_pressure": null}}',
       '{{"intercept": 1.1, "production_count": 0.01, "avg_outdoor_temp": 0.1, "avg_outdoor_pressure": 0.02}}',
       r2, r2 - 0.01, 3.2, 2.5, 2100, 12, TIMESTAMPTZ '2025-05-20 00:00:00+00', TIMESTAMPTZ '{DAY} 00:00:00+00',
       r2 >= 0.8, CASE WHEN r2 < 0.8 THEN 'R² below 0.80' END, active,
       CASE WHEN NOT active THEN TIMESTAMPTZ '{DAY} 00:00:00+00' END
FROM (VALUES ('t1', 1, 0.74, false), ('t1', 2, 0.91, true), ('t2', 1, 0.88, true)) AS b (t, v, r2, active);

INSERT INTO analytics.analytics_baseline_deviation (period_start, period_end, period, tenant_id, factory_id,
    machine_id, baseline_version, actual_kwh, predicted_kwh, deviation_kwh, deviation_pct, z, severity)
SELECT TIMESTAMPTZ '{DAY} 00:00:00+00' + make_interval(hours => h), TIMESTAMPTZ '{DAY} 01:00:00+00'
       + make_interval(hours => h), 'hour', 't1', 'f1', 'm1', 2, 40 + h, 41.5, h - 1.5,
       CASE WHEN h = 3 THEN NULL ELSE (h - 1.5) / 41.5 * 100 END, (h - 1.5) / 3.2,
       CASE WHEN h >= 11 THEN 'critical' WHEN h >= 8 THEN 'warning' ELSE 'normal' END
FROM generate_series(0, 11) AS h;
INSERT INTO analytics.analytics_baseline_deviation (period_start, period_end, period, tenant_id, factory_id,
    machine_id, baseline_version, actual_kwh, predicted_kwh, deviation_kwh, deviation_pct, z, severity)
VALUES (TIMESTAMPTZ '{DAY} 00:00:00+00', TIMESTAMPTZ '2025-08-21 00:00:00+00', 'day', 't1', 'f1', 'm1', 2, 1010, 996,
        14, 1.4, 0.9, 'normal');

-- trend judgements: m1's temperature per window end (hourly) and window length; one stable KPI; one of t2
INSERT INTO analytics.analytics_trend (window_end, window_start, window_hours, tenant_id, factory_id, machine_id,
    source, sensor_id, name, unit, n, slope_per_hour, intercept, mk_s, mk_var_s, mk_z, p_value, confidence,
    direction, first_time, last_time)
SELECT e, e - make_interval(hours => w), w, 't1', 'f1', 'm1', 'metric', 's1', 'temp', NULL, w, 0.25, 64.0, 15,
       28.333, 2.63, 0.0085, 0.9915, 'increasing', e - make_interval(hours => w), e - INTERVAL '1 hour'
FROM generate_series(TIMESTAMPTZ '{DAY} 06:00:00+00', TIMESTAMPTZ '{DAY} 12:00:00+00', INTERVAL '1 hour') AS e,
     (VALUES (6), (24)) AS windows (w);
VALUES (TIMESTAMPTZ '{DAY} 06:00:00+00', TIMESTAMPTZ '{DAY} 00:00:00+00', 6, 't1', 'f1', 'm1', 'kpi', '', 'oee',
        'ratio', 3, NULL, NULL, 0, 0, 0, 1, 0, 'stable', TIMESTAMPTZ '{DAY} 00:00:00+00',
        TIMESTAMPTZ '{DAY} 02:00:00+00'),
       (TIMESTAMPTZ '{DAY} 06:00:00+00', TIMESTAMPTZ '{DAY} 00:00:00+00', 6, 't2', 'f1', 'm1', 'metric', 's1', 'temp',
        NULL, 6, -0.5, 99, -15, 28.333, -2.63, 0.0085, 0.9915, 'decreasing', TIMESTAMPTZ '{DAY} 00:00:00+00',
        TIMESTAMPTZ '{DAY} 05:00:00+00');
-- lab analytes as time series: Moisture of two stations per hour (one lone result: no stddev), t2's apart
INSERT INTO analytics.analytics_lab_agg (bucket_start, bucket_end, window_s, tenant_id, factory_id, station_id,
    analyte, count_n, sum_v, avg_v, min_v, max_v, stddev_v, first_v, last_v, p50_v, p95_v)
SELECT TIMESTAMPTZ '{DAY} 00:00:00+00' + make_interval(hours => i),
       TIMESTAMPTZ '{DAY} 01:00:00+00' + make_interval(hours => i), 3600, t, 'f1', st, 'Moisture',
       CASE WHEN i = 5 THEN 1 ELSE 4 END, CASE WHEN i = 5 THEN 12.5 ELSE 50.0 END, 12.5, 11.0, 14.0,
       CASE WHEN i = 5 THEN NULL ELSE 1.29 END, 12.0, 11.0, 12.5, 13.85
FROM generate_series(0, 23) AS i
CROSS JOIN (VALUES ('t1', 'lab-01'), ('t1', 'lab-02'), ('t2', 'lab-01')) AS stations (t, st);

INSERT INTO analytics.analytics_spec_limits (tenant_id, factory_id, scope, name, lower_limit, upper_limit, target,
    unit, valid_from)
VALUES ('t1', '*', 'analyte', 'Moisture', 11.5, 13.5, 12.5, '%', '-infinity'),
       ('t1', '*', 'analyte', 'Moisture', 11.0, 13.0, 12.0, '%', TIMESTAMPTZ '{DAY} 00:00:00+00'),
       ('t1', 'f1', 'metric', 'temp', 63.0, 67.0, 65.0, 'degC', '-infinity'),
       ('t1', 'f1', 'metric', 'pressure', NULL, 8.5, NULL, NULL, '-infinity'),
       ('t2', '*', 'analyte', 'pH', 6.4, 7.2, 6.8, 'pH', '-infinity');

-- the dashboard's tables. GET /v1/fleet looks back from now(): a reading and device health of m1 a
-- minute ago, m2 reported offline two hours ago. A lab result per hour of 2025-08-20 is above; a sweep
-- result per hour here. Rejected messages, the alert log (t1's rows and a platform-wide one) and a
-- failing asset check (only an admin key sees those two).
INSERT INTO analytics.raw_sensor_readings (time, tenant_id, factory_id, machine_id, sensor_id, metric, value, unit,
    payload, event_id, schema_version, dedup_key, topic, kafka_partition, kafka_offset)
VALUES (now() - INTERVAL '1 minute', 't1', 'f1', 'm1', 's1', 'temp', 65, 'degC', NULL, NULL, 1, 't1|f1|m1|s1|temp',
        'sensors.device.readings', 1, 0);
INSERT INTO analytics.raw_device_health (time, tenant_id, factory_id, machine_id, status, level, health_score,
    run_state, event_id, schema_version, dedup_key, topic, kafka_partition, kafka_offset)
VALUES (now() - INTERVAL '1 minute', 't1', 'f1', 'm1', 'online', 'info', 0.93, 'running', NULL, 1, 't1|f1|m1|h',
        'device.health', 0, 0),
       (now() - INTERVAL '2 hours', 't1', 'f1', 'm2', 'offline', NULL, NULL, NULL, NULL, 1, 't1|f1|m2|h',
        'device.health', 0, 1);
INSERT INTO analytics.analytics_event_rollup (bucket_start, bucket_end, window_s, tenant_id, factory_id, machine_id,
    event_type, subject, count_n, pass_n, fail_n, pass_rate, fail_rate, uptime_pct, details)
VALUES (TIMESTAMPTZ '{DAY} 03:00:00+00', TIMESTAMPTZ '{DAY} 04:00:00+00', 3600, 't1', 'f1', 'm1', 'sweep_batch',
        'temp', 10, 9, 1, 0.9, 0.1, NULL, NULL);
INSERT INTO analytics.rejected_message (topic, kafka_partition, kafka_offset, kafka_ts, reason, detail, value_text,
    rejected_at)
VALUES ('sensors.device.readings', 0, 7, TIMESTAMPTZ '{DAY} 03:00:00+00', 'schema_violation', 'value: not a number',
        '{{}}', TIMESTAMPTZ '{DAY} 03:00:01+00'),
       ('sensors.device.readings', 1, 9, TIMESTAMPTZ '{DAY} 03:05:00+00', 'bad_json', 'Expecting value', 'x',
        TIMESTAMPTZ '{DAY} 03:05:01+00'),
       ('lab.results', 0, 3, now() - INTERVAL '1 hour', 'schema_violation', 'analyte: missing', '{{}}',
        now() - INTERVAL '1 hour');
INSERT INTO analytics.alert_log (created_at, rule_name, fingerprint, transition, channel, status, attempts, sent_at,
    error, tenant_id, factory_id, machine_id, severity, title, body, link)
VALUES (TIMESTAMPTZ '{DAY} 03:10:00+00', 'anomaly_high', 'anomaly_high:2', 'open', 'slack', 'sent', 1,
        TIMESTAMPTZ '{DAY} 03:10:01+00', NULL, 't1', 'f1', 'm1', 'critical', 'anomaly on m1', 'temp 71.5', 'http://ui/a/2'),
       (TIMESTAMPTZ '{DAY} 05:00:00+00', 'anomaly_high', 'anomaly_high:2', 'resolve', 'email', 'failed', 3, NULL,
        'HTTP 502', 't1', 'f1', 'm1', 'critical', 'anomaly on m1 resolved', 'resolved', NULL),
       (now() - INTERVAL '2 hours', 'device_offline', 'device_offline:t1|f1|m2', 'open', 'slack', 'pending', 0, NULL,
        NULL, 't1', 'f1', 'm2', 'warning', 'm2 offline', 'no data for 2 h', NULL),
       (now() - INTERVAL '1 hour', 'asset_checks', 'asset_checks:raw_sensor_readings', 'open', 'slack', 'unconfigured',
        0, NULL, NULL, NULL, NULL, NULL, 'warning', 'a check failed', 'no_future_times', NULL);
INSERT INTO analytics.alert_rules (rule_name, kind) VALUES ('asset_checks', 'check_failed');
INSERT INTO analytics.alert_conditions (fingerprint, rule_name, state, severity, summary, details, link, opened_at,
    last_seen_at)
VALUES ('asset_checks:raw_sensor_readings', 'asset_checks', 'open', 'warning', 'raw_sensor_readings: a check failed',
        '{{"asset": "raw_sensor_readings", "check": "no_future_times", "partition": "{DAY}"}}',
        'http://dagster/assets/raw_sensor_readings', now() - INTERVAL '1 hour', now());

-- on-demand jobs: 1 (t1) ended with a model, 2 (t2) ended refused; answered from their rows
INSERT INTO analytics.api_jobs (tenant_id, kind, request, request_key, run_id, status, result, error, requested_by)
VALUES ('t1', 'baseline_training', '{{"machine_id": "m1", "drivers": ["oee"]}}', 'k1', 'run-1', 'success',
        '{{"version": 1, "r2": 0.93, "accepted": true, "refused": false, "message": "accepted"}}', NULL, 'key1'),
       ('t2', 'baseline_training', '{{"machine_id": "m1", "drivers": ["oee"]}}', 'k2', 'run-2', 'success',
        '{{"version": null, "r2": null, "accepted": false, "refused": true, "message": "refused: too few"}}', NULL,
        'key2');
-- energy forecasts (issue 25): the issue of {DAY} for m1 and the factory, its hours and days
INSERT INTO analytics.analytics_forecast (issued_at, period, target_start, target_end, horizon_day, tenant_id,
    factory_id, machine_id, kpi, value, lower, upper, level, unit, model, details)
SELECT TIMESTAMPTZ '{DAY} 00:00:00+00', p, TIMESTAMPTZ '{DAY} 00:00:00+00' + make_interval(hours => i * s),
       TIMESTAMPTZ '{DAY} 00:00:00+00' + make_interval(hours => (i + 1) * s), 1 + i * s / 24, 't1', 'f1', m, k,
       10 + i % 5, 8 + i % 5, 13 + i % 5, 0.9, CASE k WHEN 'energy_kwh' THEN 'kWh' ELSE 'kW' END, 'contract',
       CASE WHEN p = 'day' THEN '{{"complete_days": 28}}'::jsonb END
FROM (VALUES ('hour', 1, 47), ('day', 24, 1)) AS periods (p, s, n)
CROSS JOIN LATERAL generate_series(0, n) AS i
CROSS JOIN (VALUES ('m1'), ('*')) AS machines (m)
CROSS JOIN (VALUES ('energy_kwh'), ('peak_demand_kw')) AS kpis (k);
"""

# Query values naming rows of the data set, per operation; `aim` lays one of them over a case.
RANGE = {"start": f"{DAY}T00:00:00Z", "end": "2025-08-21T00:00:00Z"}
SERIES = {"tenant_id": "t1", "factory_id": "f1", "machine_id": "m1", "metric": "temp", **RANGE}
AIMED_QUERIES: dict[str, list[dict[str, object]]] = {
    "/v1/readings": [{**SERIES, "start": f"{DAY}T03:00:00Z", "end": f"{DAY}T04:00:00Z"}],
    "/v1/agg": [{**SERIES, "window_s": w} for w in (60, 300, 3600, 7200, 86400)],
    "/v1/kpi": [
        *({"factory_id": "f1", "period": p, **RANGE} for p in ("hour", "shift", "day", "custom")),
        {"factory_id": "f1", "period": "month", "start": "2025-08-01T00:00:00Z", "end": "2025-09-01T00:00:00Z"},
        {"scope": "tenant", "period": "week", "start": "2025-08-18T00:00:00Z", "end": "2025-08-25T00:00:00Z"},
        {"factory_id": "f1", "scope": "factory", "period": "hour", **RANGE},
    ],
    "/v1/reports/energy-performance": [
        {"factory_id": "f1", "period": "custom", **RANGE},
        {"factory_id": "f1", "period": "month", "start": "2025-08-01T00:00:00Z", "end": "2025-09-01T00:00:00Z"},
    ],
    "/v1/event-rollup": [{"factory_id": "f1", "window_s": w, **RANGE} for w in (60, 3600, 86400)],
    "/v1/anomalies": [{}, {"factory_id": "f1", "status": "all", **RANGE}],
    # anomalies 1-4 are one event each (event_id = anomaly_id): 1 in the default ranges, 2-4 on {DAY}
    "/v1/anomaly-events": [{}, {"factory_id": "f1", "status": "all", **RANGE}],
    "/v1/anomaly-events/{event_id}": [{}, RANGE],
    "/v1/anomaly-events/{event_id}/resolve": [{}, RANGE],
    "/v1/anomaly-profiles": [{}, {"stage": "learning"}, {"machine_id": "m1"}],
    "/v1/baselines": [{}, {"include_inactive": True}],
    "/v1/baseline-deviation": [{"factory_id": "f1", "period": p, **RANGE} for p in ("hour", "day")],
    "/v1/trends": [{"factory_id": "f1", **RANGE}, {"factory_id": "f1", "machine_id": "m1", "window_hours": 6, **RANGE}],
    "/v1/spec-limits": [{}, {"factory_id": "f1"}],
    "/v1/fleet": [{}, {"factory_id": "f1", "machine_id": "m1"}],
    "/v1/quality": [{"factory_id": "f1", **RANGE}],
    "/v1/lab/agg": [{"factory_id": "f1", "analyte": "Moisture", "window_s": w, **RANGE} for w in (3600, 7200, 86400)],
    "/v1/alerts": [{}, RANGE],
    "/v1/rejects": [{}, RANGE, {"topic": "sensors.device.readings", **RANGE}],
    "/v1/catalog/metrics": [{}, {"tenant_id": "t1"}],
    "/v1/forecasts": [
        {"factory_id": "f1"},
        {"factory_id": "f1", "period": "day", "machine_id": "*", "issued_at": f"{DAY}T00:00:00Z"},
        {"factory_id": "f1", "kpi": "peak_demand_kw", **RANGE},
    ],
}
# Answered to an admin key only (403 to the t1 key, which the plain cases check): the aimed cases
# send the admin key, so their 200s are checked too; /v1/fleet lists the failing checks to it.
ADMIN_AIMED = ("/v1/rejects", "/v1/fleet")
# Catalogue edits need the `admin` scope (403 to the t1 key, which the plain cases check): the aimed cases
# send a t1 key that has it, so that bodies are judged and the 200 / 201 answers are checked too.
CATALOG_AIMED = ("/v1/catalog/metrics/{metric}", "/v1/catalog/policy")
AIMED_IDS = {
    "anomaly_id": [1, 2, 3, 4],  # anomaly 4 and baseline 3 are t2's: 404
    "event_id": [1, 2, 3, 4],  # so is event 4
    "baseline_id": [1, 2, 3],
    "metric": ["contract_a", "contract_b", "temp"],  # PUT: 201 the first time, 200 after
    "job_id": [1, 2],  # job 2 is t2's: 404
}
# Starting runs needs the `train` / `detect` scope (403 to the t1 key, which the plain cases check): the aimed
# cases send a t1 key that has both, with bodies naming the data set's machine, so the 202s (a run queued in
# the module's Dagster instance) and the 200s (the same request while it is queued) are checked too.
JOBS_AIMED = ("/v1/baselines/train", "/v1/anomalies/detect")
JOB_BODIES = {
    "/v1/baselines/train": {
        "factory_id": "f1",
        "machine_id": "m1",
        "drivers": ["oee"],
        "start": f"{DAY}T00:00:00Z",
        "end": "2025-08-21T00:00:00Z",
    },
    "/v1/anomalies/detect": {
        "factory_id": "f1",
        "machine_id": "m1",
        "start": f"{DAY}T00:00:00Z",
        "end": f"{DAY}T06:00:00Z",
    },
}
CATALOG_BODIES = {
    "/v1/catalog/metrics/{metric}": {"unit": "Nm", "min_value": 0, "max_value": 5000, "description": "torque"},
    "/v1/catalog/policy": {"unknown_metrics": "reject"},
}
# DELETE's success is a 204, and only for an entry that exists, which generated names seldom are (and the aimed
# ones only once); test_api_catalog.py checks its answers exactly.
SUCCESS_NOT_200 = ("DELETE /v1/catalog/metrics/{metric}",)
# A PUT succeeds with 201 (created) or 200 (replaced): which of the two the generated cases reach depends on
# the order Hypothesis sends them in (a DELETE in between makes the next PUT a 201 again).
SUCCESS_CODES = {
    "PUT /v1/catalog/metrics/{metric}": (200, 201),
    "POST /v1/baselines/train": (200, 202),
    "POST /v1/anomalies/detect": (200, 202),
}
PREDICT_BODY = {
    "factory_id": "f1",
    "machine_id": "m1",
    "drivers": {"production_count": 120, "avg_outdoor_temp": 31.5, "avg_outdoor_pressure": 1008},
}
LISTINGS = tuple(f"GET {path}" for path in AIMED_QUERIES if not path.endswith("/resolve"))
HOW = ("over", "exact", "csv", "no key", "bad key")


def aim(case: Case, how: str, pick: int) -> None:
    """Point a generated case at rows that exist. 'over' lays known values over the generated ones;
    'exact' (and 'csv', asking for CSV) sends only known values; 'no key' and 'bad key' are
    'exact' with no or a wrong key. `pick` chooses among the known values."""
    path = case.operation.path
    known = AIMED_QUERIES.get(path)
    if known:
        choice = known[pick % len(known)]
        case.query = {**(case.query or {}), **choice} if how == "over" else dict(choice)
    for name, ids in AIMED_IDS.items():
        if name in (case.path_parameters or {}):
            case.path_parameters[name] = ids[pick % len(ids)]
    if path == "/v1/baseline/predict" and how != "over":
        case.body = PREDICT_BODY
    if path in JOBS_AIMED and how != "over":
        case.body = dict(JOB_BODIES[path])
    if path in CATALOG_AIMED and how != "over":
        case.query = {}  # the key's own tenant
        if case.operation.method.upper() == "PUT":
            case.body = dict(CATALOG_BODIES[path])
    if how == "csv":
        case.headers = {**(case.headers or {}), "Accept": "text/csv"}


def rows_in(response: Response) -> int:
    """Rows a 200 carried: items of a page (or CSV lines after the header), 1 for a single object."""
    content_type = response.headers.get("content-type", [""])[0]
    if response.status_code != 200 or not content_type.startswith(("application/json", "text/csv")):
        return 0
    if content_type.startswith("text/csv"):
        return len(list(csv.reader(io.StringIO(response.text)))) - 1
    body = response.json()
    return len(body["items"]) if "items" in body else 1


class Tally:
    """Per operation, over the module: cases per phase, status codes, and rows answered."""

    def __init__(self) -> None:
        self.phases: dict[str, Counter[str]] = defaultdict(Counter)
        self.statuses: dict[str, Counter[int]] = defaultdict(Counter)
        self.rows: Counter[str] = Counter()

    def record(self, case: Case, response: Response, test: str) -> None:
        label = f"{case.operation.method.upper()} {case.operation.path}"
        phase = case.meta.phase.name.value if case.meta is not None else "explicit"
        self.phases[label][f"{test} {phase}"] += 1
        self.statuses[label][response.status_code] += 1
        self.rows[label] += rows_in(response)

    def summary(self) -> str:
        return "\n".join(
            f"{label}: {dict(sorted(self.phases[label].items()))}, statuses {dict(sorted(statuses.items()))}, "
            f"rows {self.rows[label]}"
            for label, statuses in sorted(self.statuses.items())
        )


@pytest.fixture(scope="module")
def tally() -> Tally:
    return Tally()


@dataclass(frozen=True)
class LiveApi:
    url: str
    key: str  # tenant t1, scopes read and resolve
    admin_key: str  # every tenant, scope read
    catalog_key: str  # tenant t1, scopes read and admin (edits t1's metrics catalogue)
    jobs_key: str  # tenant t1, scopes read, train and detect (starts runs)
    # One HTTP session for the module's ~5,600 generated requests: its connections are kept alive, where a
    # session per request (schemathesis' default) opened a TCP connection to uvicorn for each and read the
    # environment's proxy variables each time. schemathesis clears its cookies between requests, and with no
    # headers of its own it sends each case's headers alone, as a session per request did.
    session: requests.Session


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """`app` under uvicorn on a free loopback port (its lifespan runs as in production); yields the URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    host, port = listener.getsockname()
    # The app logs an unhandled error itself (captured with the failing test) before it answers 500;
    # uvicorn would log it again after the answer, from its thread, while pytest formats the failure:
    # on Python 3.11 two threads parsing source for tracebacks (ast.parse) at once can crash pytest
    # (INTERNALERROR "AST constructor recursion depth mismatch", a CPython 3.11 race).
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="critical", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="contract-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        listener.close()


@pytest.fixture(scope="module")
def live_api(pg_admin_url: str, login_roles: dict[str, str], kafka_brokers: str) -> Iterator[LiveApi]:
    """One fresh, migrated database with the data set, and the app serving it, for the whole module
    (a database and an app per operation would cost more than the operation's cases)."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        head, _, tail = pg_admin_url.rpartition("/")
        admin = f"{head}/{name}" + (f"?{tail.split('?', 1)[1]}" if "?" in tail else "")
        apply_migrations(admin, timescale=os.environ.get("ANALYTICS_TIMESCALE", "auto"))
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(SEED_SQL)
            _key_id, key = create_key(conn, "contract test", "t1", scopes=("read", "resolve"))
            _key_id, admin_key = create_key(conn, "contract test admin", None, scopes=("read",))
            _key_id, catalog_key = create_key(conn, "contract test catalogue", "t1", scopes=("read", "admin"))
            _key_id, jobs_key = create_key(conn, "contract test jobs", "t1", scopes=("read", "train", "detect"))
        password = role_password(pg_admin_url)
        pipeline, reader, writer = (
            with_credentials(admin, login_roles[role], password) for role in ("pipeline", "api", "writer")
        )
        settings = PlatformSettings(
            database_url=pipeline,
            api_database_url=reader,
            api_write_database_url=writer,
            kafka_brokers=kafka_brokers,
            baseline_min_samples=3,  # the data set's machine has 6 hours
        )
        # the runs the jobs' routes queue go to a Dagster instance of the module's own (nothing runs them)
        with tempfile.TemporaryDirectory() as home, pytest.MonkeyPatch.context() as patch:
            Path(home, "dagster.yaml").write_text(
                "run_coordinator:\n  module: dagster.core.run_coordinator\n  class: QueuedRunCoordinator\n"
                "telemetry:\n  enabled: false\n"
            )
            patch.setenv("DAGSTER_HOME", home)
            with serving(create_app(settings)) as url, ManagedCookiesSession() as session:
                session.headers.clear()
                session.trust_env = False  # loopback: no proxy, no .netrc
                yield LiveApi(url, key, admin_key, catalog_key, jobs_key, session)
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# A header name outside RFC 9110's token characters, or a generated framing header (a Content-Length that is
# not the body's), is not HTTP: uvicorn's parser answers 400 "Invalid HTTP request received." before the app
# sees the request. Hypothesis drew such headers for GET /v1/baselines/{baseline_id} once (its generated
# values depend on the modules loaded when the cases are built); they test the HTTP server, not the API.
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
FRAMING_HEADERS = {"content-length", "transfer-encoding", "host", "connection", "te", "upgrade"}


def http_headers(headers: dict[str, str]) -> dict[str, str]:
    """The generated headers an HTTP/1.1 client can send as given."""
    return {k: v for k, v in headers.items() if HEADER_NAME.fullmatch(k) and k.lower() not in FRAMING_HEADERS}


def call(case: Case, api: LiveApi, key: str | None, tally: Tally, test: str) -> None:
    if case.headers:
        case.headers = http_headers(case.headers)
    if key is None and case.headers:
        case.headers.pop("X-API-Key", None)  # a generated value of the security parameter
    response = case.call_and_validate(base_url=api.url, session=api.session, headers={"X-API-Key": key} if key else {})
    tally.record(case, response, test)
    assert response.status_code < 500, response.text


def test_the_live_app_serves_the_tested_schema(live_api: LiveApi) -> None:
    assert requests.get(f"{live_api.url}/openapi.json", timeout=30).json() == OPENAPI


@schema.parametrize()
@HYPOTHESIS
def test_api_contract(case: Case, live_api: LiveApi, tally: Tally) -> None:
    call(case, live_api, live_api.key, tally, "plain")


@aimed_schema.parametrize()
@aimed_schema.given(how=st.sampled_from(HOW), pick=st.integers(0, 59))
@HYPOTHESIS
def test_api_contract_aimed(case: Case, how: str, pick: int, live_api: LiveApi, tally: Tally) -> None:
    aim(case, how, pick)
    key = live_api.admin_key if case.operation.path in ADMIN_AIMED else live_api.key
    key = live_api.catalog_key if case.operation.path in CATALOG_AIMED else key
    key = live_api.jobs_key if case.operation.path in JOBS_AIMED else key
    wrong = key[:-1] + ("B" if key.endswith("A") else "A")
    call(case, live_api, {"no key": None, "bad key": wrong}.get(how, key), tally, "aimed")


# ------------------------------------------------------------------------------------------------
# inputs the generator does not make: JSON's \\u escapes can carry lone surrogates, which no UTF-8
# text (PostgreSQL's, or a JSON response's) can hold
# ------------------------------------------------------------------------------------------------
SURROGATE_CURSORS = [
    ("/v1/spec-limits", {}, ["t1", "\ud800", "analyte", "pH", "2025-01-01T00:00:00+00:00"]),
    ("/v1/kpi", {"factory_id": "f1", "period": "hour", **RANGE}, ["2025-08-20T00:00:00+00:00", "m1", "\udfff"]),
    ("/v1/agg", {**SERIES, "window_s": 7200}, ["2025-08-20T00:00:00+00:00", "s\ud83d"]),
    ("/v1/readings", AIMED_QUERIES["/v1/readings"][0], ["2025-08-20T03:00:00+00:00", "\ud800"]),
    ("/v1/anomaly-profiles", {}, ["t1", "f1", "\ud800", "s1", "temp"]),
]


@pytest.mark.parametrize(("path", "query", "values"), SURROGATE_CURSORS, ids=[c[0] for c in SURROGATE_CURSORS])
def test_a_cursor_with_a_lone_surrogate_is_a_422(live_api: LiveApi, path: str, query: dict, values: list) -> None:
    cursor = base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")  # ASCII: \\u escapes
    response = requests.get(
        f"{live_api.url}{path}", params={**query, "cursor": cursor}, headers={"X-API-Key": live_api.key}, timeout=30
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "cursor"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/baseline/predict", '{"factory_id": "\\ud800", "machine_id": "m1", "drivers": {}}'),
        ("/v1/anomalies/1/resolve", '{"note": "probe \\udfff replaced"}'),
    ],
    ids=["predict", "resolve"],
)
def test_a_body_with_a_lone_surrogate_is_a_422(live_api: LiveApi, path: str, body: str) -> None:
    response = requests.post(
        f"{live_api.url}{path}",
        data=body,
        headers={"X-API-Key": live_api.key, "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 422, response.text


def test_api_contract_reached_rows(tally: Tally) -> None:
    """Every operation that ran answered 200 at least once, and every listing answered rows (so the
    item schemas were checked on real rows, not only on empty pages)."""
    if not tally.statuses:
        pytest.skip("needs the contract tests of this module to run first")
    print(tally.summary())
    no_200 = [
        label
        for label, statuses in tally.statuses.items()
        if not any(statuses[code] for code in SUCCESS_CODES.get(label, (200,))) and label not in SUCCESS_NOT_200
    ]
    no_rows = [label for label in LISTINGS if label in tally.statuses and not tally.rows[label]]
    assert (no_200, no_rows) == ([], []), tally.summary()
