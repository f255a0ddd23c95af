"""A running API over a known plant, for the dashboard tests: every row came through the real
pipeline, and the figures the dashboard must show are written down in EXPECTED.

Why a whole plant: a dashboard test that inserts its rows with SQL proves only that the page shows
what the test wrote. Here the messages go to the real broker, the drain sensors land them, the real
assets (Polars, scikit-learn) compute aggregates, events, KPIs and anomalies, and the alert engine
evaluates the shipped rules; the API answering the browser is a separate `uvicorn` process, as in
production. What the page shows can then be checked against numbers derived by hand from the
messages (EXPECTED), and `integration/test_dashboard_data.py` proves the pipeline really produced
those numbers, so a failing browser test points at the dashboard, not at the data.

Building it takes about 20 s, so it is built once per test module:

    from analytics_platform_tests.support.dashboard import EXPECTED, Plant, plant as plant

and asks for `plant: Plant`. (The redundant alias marks an explicit re-export: without it ruff
reports the import as unused, F401, and every test's `plant` argument as shadowing it, F811.)

The plant (tenant t1 in Asia/Bangkok, factory f1, all times UTC on 2025-08-20 unless said):
  t1/f1/mc-01  the energy hour (energy_hour.py): temp (s-temp) every 10 s 01:00..03:59:50 with spikes at 03:12 and
               03:41, power / energy / counters and run states for the KPIs of 03:00; readings.py's
               device health (HEALTH), sweeps (SWEEPS) and lab results (LAB, station lab-f1); plus two
               LIVE messages (status online, temp 64.5) stamped LIVE_AGE (30 s) before the build's clock
  t1/f1/mc-02  temp (s-temp) 70..79 once a minute 03:00..03:09, nothing since: offline
  t2/f9/mc-99  temp (s-temp) 20..24 once a minute 03:00..03:04 (another tenant: t1 must not see it),
               plus one LIVE reading (temp 25.0, no status message) with mc-01's
  rejects      dataset.py's malformed sensor messages (13 of P0 and the empty one of P2)
Limits (loaded before the messages): the packaged metrics catalogue (temp plausible from -60 to 400 degC)
and config/spec_limits.yaml (temp spec: t1 63..67, t2 62.5..67.5 degC), which the hourly anomaly asset
judges every reading against (methods `range` and `spec`), so mc-01's two spikes, every reading of mc-02
(above 67) and every reading of mc-99 (below 62.5) are `spec` anomalies.
Materialised: window aggregates 01:00..04:00, device health 02:00..04:00, sweeps and lab 03:00,
hourly KPIs 03:00, anomalies 03:00, the day's event rollups and KPIs; then one alert tick of the
shipped rules (config/alerts.yaml, no channel configured) at 2025-08-20T05:00Z.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import dagster as dg
import httpx
import pytest
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from analytics_platform.alerts.config import load_alert_config, read_alert_file, read_rules
from analytics_platform.alerts.engine import DeliveryPolicy, TickReport, run_tick
from analytics_platform.alerts.model import Rule
from analytics_platform.api.keys import create_key
from analytics_platform.defs import build_definitions
from analytics_platform.defs.alerts.sensors import CHECK_HISTORY, check_conditions, run_conditions
from analytics_platform.devstack.processes import StackError, api_command, free_port, start_service, wait_until
from analytics_platform.results.plant import load_plant_config
from analytics_platform.results.spec_limits import load_spec_limits
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support import energy_hour
from analytics_platform_tests.support.dataset import P0, P2
from analytics_platform_tests.support.readings import HEALTH, LAB, SWEEPS, drain, materialize
from analytics_platform_tests.support.stack import DatabaseHandle, domain_topic, produce

DAY = datetime(2025, 8, 20, tzinfo=UTC)
ALERT_NOW = datetime(2025, 8, 20, 5, tzinfo=UTC)  # the alert tick's clock: after every 2025-08-20 message
LIVE_AGE = timedelta(seconds=30)  # how old the live messages are when they are produced
DAGSTER_UI_URL = "http://127.0.0.1:3000"
API_START_TIMEOUT_S = 60.0


def at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    """A time on 2025-08-20 (UTC)."""
    return DAY + timedelta(hours=hour, minutes=minute, seconds=second)


def hour_key(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d-%H:00")


def _reading(tenant: str, factory: str, machine: str, ts: datetime, value: float) -> bytes:
    return json.dumps(
        {
            "time": energy_hour.iso(ts),
            "tenant_id": tenant,
            "factory_id": factory,
            "machine_id": machine,
            "sensor_id": "s-temp",
            "metric": "temp",
            "value": value,
        }
    ).encode()


def mc02_messages() -> list[bytes]:
    """t1/f1/mc-02: temp 70, 71, .. 79 at 03:00, 03:01, .. 03:09, and then silence."""
    return [_reading("t1", "f1", "mc-02", at(3, m), 70.0 + m) for m in range(10)]


def t2_messages() -> list[bytes]:
    """t2/f9/mc-99: temp 20, 21, .. 24 at 03:00, 03:01, .. 03:04."""
    return [_reading("t2", "f9", "mc-99", at(3, m), 20.0 + m) for m in range(5)]


# dataset.py's malformed messages, each with its reason in dataset.EXPECTED_REJECTS: P0[5:] are
# offsets 5..17 of its partition 0 (P0[:5] are valid readings, left out), P2[1] the empty value
MALFORMED = [*P0[5:], P2[1]]


def live_messages(live_at: datetime) -> dict[str, list[tuple[str, bytes]]]:
    """Keyed messages per domain at `live_at` (the real clock): mc-01 reports `online` and a
    temperature, mc-99 only a temperature, so one machine is live by its status and one by its data."""
    return {
        "device": [(energy_hour.KEY, energy_hour.message(live_at, status="online", level="ok"))],
        "sensor": [
            (energy_hour.KEY, energy_hour.sensor(live_at, "temp", EXPECTED.live_temp[MC01], "s-temp")),
            ("t2-f9-mc-99", _reading(*MC99, live_at, EXPECTED.live_temp[MC99])),
        ],
    }


# ----- what the dashboard must show ---------------------------------------------------------------

Machine = tuple[str, str, str]  # (tenant_id, factory_id, machine_id)
MC01: Machine = ("t1", "f1", "mc-01")
MC02: Machine = ("t1", "f1", "mc-02")
MC99: Machine = ("t2", "f9", "mc-99")
LAB_STATION: Machine = ("t1", "f1", "lab-f1")  # lab results are keyed by station, not machine


class Event(NamedTuple):
    """An anomaly event as GET /v1/anomaly-events lists it (analytics.anomaly_events)."""

    start: datetime
    end: datetime
    peak: datetime
    severity: int
    label: str
    methods: tuple[str, ...]
    anomalies: int
    observed: float  # the peak row's
    expected: float


@dataclass(frozen=True)
class Expected:
    """The plant's figures, derived by hand from the messages (see EXPECTED for how)."""

    agg_buckets: dict[Machine, dict[int, int]]
    temp_day: dict[Machine, dict[str, float]]
    temp_hours: dict[datetime, dict[str, float]]
    anomalies: list[tuple[datetime, str, int, str]]
    anomaly_observed: dict[tuple[datetime, str], tuple[float, float]]
    anomaly_events: list[Event]
    spec_anomalies: dict[Machine, list[tuple[datetime, float, float]]]
    spec_events: dict[Machine, Event]
    kpi_hour: dict[str, float]
    kpi_day: dict[str, float]
    kpi_null: dict[str, str]
    sweeps: dict[str, tuple[int, int, int]]
    sweep_batches: list[tuple[datetime, float, bool]]
    lab: dict[str, tuple[int, int, int]]
    lab_results: list[tuple[datetime, str, str, float, bool | None]]
    device_health: dict[tuple[int, datetime], tuple[int, float | None]]
    device_events: dict[str, int]
    rejects: dict[tuple[str, str], int]
    alert_rules: dict[str, tuple[str, ...]]
    alert_log: dict[str, int]
    alert_conditions: dict[str, list[str]]
    online: frozenset[Machine]
    offline: frozenset[Machine]
    last_seen: dict[Machine, datetime]
    live_temp: dict[Machine, float]
    failed_checks: tuple[str, ...]


_KPI_HOUR_RUN_S = 2400.0  # 03:00-03:20 and 03:30-03:50 running (energy_hour.STATES)
_KPI_DAY_RUN_S = 2700.0  # plus 02:55-03:00
_KPI_DAY_PLANNED_S = 72600.0  # planned_stop from 03:50 to the day's end: 20 h 10 min

EXPECTED = Expected(
    # GET /v1/agg, metric temp, sensor s-temp, [2025-08-20, 2025-08-21), per window_s:
    #   mc-01 every 10 s from 01:00:00 to 03:59:50 = 3 x 360 = 1080 readings: 180 minutes, 36 five-minute
    #         buckets, 3 hours, 1 day (86400 is rolled up from the stored 3600, or read from the
    #         continuous aggregate on TimescaleDB)
    #   mc-02 03:00..03:09 once a minute: 10 minutes, 03:00 and 03:05, one hour, one day
    #   mc-99 03:00..03:04 once a minute: 5 minutes, one five-minute bucket, one hour, one day
    agg_buckets={
        MC01: {60: 180, 300: 36, 3600: 3, 86400: 1},
        MC02: {60: 10, 300: 2, 3600: 1, 86400: 1},
        MC99: {60: 5, 300: 1, 3600: 1, 86400: 1},
    },
    # the day bucket (window_s 86400). mc-01's reading at step k is 65 + 0.5 sin(2 pi k/60) + 0.1 ((7k mod 5) - 2),
    # rounded to 3 places: the sine has whole periods in every hour and the sawtooth (-2, 0, 2, -1, 1) sums to 0
    # over every 5 steps, so an hour sums to 360 x 65 = 23400 (exactly, rounding included) and each spike adds 30:
    #   sum 3 x 23400 + 60 = 70260, avg 70260 / 1080 = 65.0556
    #   min 65 - 0.5 - 0.2 = 64.3 (k = 45 mod 60 has sin -1 and k mod 5 = 0, the sawtooth's -2)
    #   max the 03:12:00 spike, k = 792: 95 + 0.5 sin(2 pi 12/60) + 0.1 x 2 = 95.676 (03:41:00, k = 966: 95.294)
    #   mc-02: 70..79 -> n 10, sum 745, avg 74.5;  mc-99: 20..24 -> n 5, sum 110, avg 22
    temp_day={
        MC01: {"count": 1080, "sum": 70260.0, "avg": 70260 / 1080, "min": 64.3, "max": 95.676},
        MC02: {"count": 10, "sum": 745.0, "avg": 74.5, "min": 70.0, "max": 79.0},
        MC99: {"count": 5, "sum": 110.0, "avg": 22.0, "min": 20.0, "max": 24.0},
    },
    # mc-01's hours (window_s 3600): 360 readings each, 23400 (+ the two spikes in 03:00)
    temp_hours={
        at(1): {"count": 360, "sum": 23400.0, "min": 64.3},
        at(2): {"count": 360, "sum": 23400.0, "min": 64.3},
        at(3): {"count": 360, "sum": 23460.0, "min": 64.3, "max": 95.676},
    },
    # analytics_anomaly of mc-01 (reading_anomalies 03:00), (time, method, severity, label) ordered by time and
    # method. The seasonal statistics judge mc-01's temp (its 10-s readings as one-minute samples of 6) against a
    # profile learned from the two hours before 03:00 (01:00-02:59, 120 samples): less than a day of history, so
    # the 'flat' stage (expected = the median of the 120 minute means, the average of the middle two, 64.840333
    # and 65.094: 64.967167), and younger than 3 days (critical_after), so it only warns: severity 2 at most.
    #   03:12 the spike (95.676) lifts its minute's mean by +5: 'deviation' ~10 scales (robust sigma 0.55 of the
    #         minute means) and 'extreme' (the reading furthest from its minute's mean against the usual spread
    #         within a minute, 0.135) ~186, both beyond twice the critical level (4.86, the Gaussian floor for
    #         1440 samples a day) -> one 'deviation' row, capped at 2 'warning', window 03:12-03:13, sample_s 60
    #         ('shift' sees the residual clipped at 4 scales: 1.8 and 1.5 < 4.23; 'noise' leaves the furthest
    #         reading out: 1.15 < 2; no run of equal readings for 'stuck')
    #   03:41 not judged: the fault 03:20-03:30 and the 30-minute settling time after it (ANOMALY_SETTLE_MINUTES)
    #         exclude 03:20-04:00 (the planned_stop from 03:50 too), so the spike is never scored
    #   no 'isolation_forest': forests learn the day before the hour's midnight (00:00), which holds no data
    #   none on mc-02 or mc-99, none on mc-01's power: their profiles are 'learning' (too little history)
    # The limit rules need no profile and judge every reading of the hour, running or not (transforms.anomalies.
    # limit_anomalies): mc-01's temp is 64.3..65.7 apart from the spikes, inside t1's spec 63..67 and the
    # catalogue's -60..400, so only the two spikes break a limit, t1's spec upper 67 (not the range: < 400):
    #   03:12:00 95.676 and 03:41:00 95.294 (the 03:41 spike is judged here: no settling exclusion for a limit)
    #   -> two 'spec' rows, severity 3 'critical', expected = the broken limit 67, window the reading's minute
    anomalies=[
        (at(3, 12), "deviation", 2, "warning"),
        (at(3, 12), "spec", 3, "critical"),
        (at(3, 41), "spec", 3, "critical"),
    ],
    # (time, method) -> (observed, expected) of those rows: the spike's reading and the profile's expectation,
    # or for 'spec' the spike's reading and the upper spec limit
    anomaly_observed={
        (at(3, 12), "deviation"): (95.676, 64.96716666666667),
        (at(3, 12), "spec"): (95.676, 67.0),
        (at(3, 41), "spec"): (95.294, 67.0),
    },
    # GET /v1/anomaly-events of the day, mc-01 (analytics.anomaly_events), newest first as the API lists them.
    # Rows of one series whose windows are at most 3 samples (3 min) apart are one event:
    #   03:41 its 'spec' row alone (03:41-03:42; 28 min after the 03:13 end of the one before): peak itself
    #   03:12 the 'deviation' and the 'spec' row share the minute 03:12-03:13: one event of 2 anomalies, peak the
    #         highest severity, the 'spec' row (3): observed 95.676, expected 67
    anomaly_events=[
        Event(at(3, 41), at(3, 42), at(3, 41), 3, "critical", ("spec",), 1, 95.294, 67.0),
        Event(at(3, 12), at(3, 13), at(3, 12), 3, "critical", ("deviation", "spec"), 2, 95.676, 67.0),
    ],
    # the other machines' rows (their profiles are learning, so 'spec' rows only), (time, observed, expected):
    #   mc-02 (t1, spec 63..67): 70..79 at 03:00..03:09, every one above 67 -> 10 rows, expected 67
    #   mc-99 (t2, spec 62.5..67.5): 20..24 at 03:00..03:04, every one below 62.5 -> 5 rows, expected 62.5
    spec_anomalies={
        MC02: [(at(3, m), 70.0 + m, 67.0) for m in range(10)],
        MC99: [(at(3, m), 20.0 + m, 62.5) for m in range(5)],
    },
    # ... each machine's rows are consecutive minutes: one event each, from the first minute to the end of the
    # last, severity 3. Peak among equal severities = the largest score, 1 + distance beyond the limit / the
    # spec's width: mc-02 the furthest above 67, 79 at 03:09; mc-99 the furthest below 62.5, 20 at 03:00
    spec_events={
        MC02: Event(at(3), at(3, 10), at(3, 9), 3, "critical", ("spec",), 10, 79.0, 67.0),
        MC99: Event(at(3), at(3, 5), at(3), 3, "critical", ("spec",), 5, 20.0, 62.5),
    },
    # GET /v1/kpi period=hour, 2025-08-20 03:00, mc-01 (energy_hour.py's derivation; t1 = Asia/Bangkok, 10:00
    # local is the peak band at 4.18 THB/kWh, 0.4999 kg CO2/kWh; ideal cycle time 2.0 s). A counter or power
    # reading measures the interval back to its series' previous reading (docs/kpis.md): the readings at 03:00
    # belong to 02:55-03:00 (hour 02), the hour's last 5 minutes are closed by readings at 04:00 or later:
    kpi_hour={
        "run_time_s": _KPI_HOUR_RUN_S,
        "fault_time_s": 600.0,  # fault 03:20-03:30
        "downtime_s": 600.0,  # the fault; no gap
        "planned_downtime_s": 600.0,  # planned_stop 03:50-04:00
        "idle_time_s": 0.0,
        "availability": 0.8,  # 2400 / (3600 - 600)
        "production_count": 864.0,  # 8 x 108 closed by 03:05..03:55 (the reset at 03:35 is followed)
        "good_count": 840.0,  # 8 x 105
        "performance": 0.72,  # 2.0 x 864 / 2400
        "quality": 840 / 864,
        "oee": 0.56,  # good x ideal / busy = 840 x 2.0 / 3000 = 0.8 x 0.72 x 840 / 864
        "energy_kwh": 128 / 7,  # meter 1000 (02:55) -> 1012 (03:30): 12 x 1800 / 2100 = 72/7 in the hour; + 8 to 03:55
        "energy_cost": 128 / 7 * 4.18,
        "carbon_kg": 128 / 7 * 0.4999,
        "peak_demand_kw": 80.0,  # 03:10
        "avg_demand_kw": 32.5,  # the 12 samples 03:05..04:00, 300 s each: 438 - 50 (03:00) + 2 (04:00) = 390
        "load_factor": 32.5 / 80,
        "sec_kwh_per_unit": 128 / 7 / 864,
        "production_rate_per_h": 864 / (_KPI_HOUR_RUN_S / 3600),  # 1296
        "data_completeness_pct": 20.0,  # 12 of 60 minutes carry a KPI reading
    },
    # GET /v1/kpi period=day, 2025-08-20 (a UTC day), mc-01: the same readings over the whole day.
    #   state: unknown 00:00-02:55 (10500 s, a gap: downtime, but no state is known yet, so it is not
    #   planned busy time, as the hours that hold it say), running 02:55-03:20 and 03:30-03:50 (2700 s),
    #   fault 600 s, planned_stop 03:50-24:00 (72600 s); the sum is 86400
    kpi_day={
        "run_time_s": _KPI_DAY_RUN_S,
        "fault_time_s": 600.0,
        "downtime_s": 600.0 + 10500.0,
        "planned_downtime_s": _KPI_DAY_PLANNED_S,
        "idle_time_s": 0.0,
        "availability": _KPI_DAY_RUN_S / (86400 - _KPI_DAY_PLANNED_S - 10500),  # 2700 / 3300 = 0.818182
        "production_count": 972.0,
        "good_count": 945.0,
        "performance": 2.0 * 972 / _KPI_DAY_RUN_S,  # 0.72
        "quality": 945 / 972,
        "oee": 945 * 2.0 / (86400 - _KPI_DAY_PLANNED_S - 10500),  # good x ideal / busy = 1890 / 3300 = 0.572727
        "energy_kwh": 20.0,
        "energy_cost": 20 * 4.18,
        "carbon_kg": 20 * 0.4999,
        "peak_demand_kw": 80.0,
        # the 02:55 sample has no known interval (the first); 03:00..04:00 hold 300 s each: 438 + 2 = 440 / 13
        "avg_demand_kw": 440 / 13,
        "load_factor": 440 / 13 / 80,
        "sec_kwh_per_unit": 20 / 972,
        "production_rate_per_h": 972 / (_KPI_DAY_RUN_S / 3600),  # 1296
        "data_completeness_pct": 100 * 14 / 1440,  # 02:55, 03:00..03:55, 04:00
    },
    # NULL KPIs (hour and day) and their reasons: no outdoor sensors in the plant
    kpi_null={
        "avg_outdoor_temp": "no outdoor_temp readings in the period",
        "avg_outdoor_pressure": "no outdoor_pressure readings in the period",
    },
    # GET /v1/event-rollup event_type sweep_batch (hour 03:00 and the day): machine -> (count, pass, fail)
    #   03:15 readings 64, 65, 66: mean 65 in [63, 67], none out of spec -> pass
    #   03:45 readings 62, 65 (batch B-2): mean 63.5, but 62 is below 63 -> fail
    sweeps={"mc-01": (2, 1, 1)},
    sweep_batches=[(at(3, 15), 65.0, True), (at(3, 45), 63.5, False)],
    # GET /v1/event-rollup event_type lab_result (station lab-f1): analyte -> (count, pass, fail)
    #   Moisture 12.0 in [11.5, 13.5] pass, 14.0 fail; pH 6.8 in [6.5, 7.1] pass; Ash has no limit: no verdict
    lab={"Moisture": (2, 1, 1), "pH": (1, 1, 0), "Ash": (1, 0, 0)},
    lab_results=[
        (at(3, 5), "S-1", "Moisture", 12.0, True),
        (at(3, 6), "S-2", "Moisture", 14.0, False),
        (at(3, 7), "S-3", "pH", 6.8, True),
        (at(3, 8), "S-4", "Ash", 1.0, None),
    ],
    # event_type device_health of mc-01, (window_s, bucket_start) -> (count, uptime_pct). count = device
    # messages: 02:00 the run state at 02:55; 03:00 HEALTH's 5 plus the run states at 03:20, 03:30, 03:50;
    # 04:00 the offline at 04:30. Uptime (test_analytics): 02:00 no status yet -> NULL; 03:00 up 03:10-03:20 and
    # 03:40-03:50 of 3000 s observed (nothing at all came 03:50-04:30: silent for more than 10 min, offline from
    # 03:50) -> 40 %; 04:00 silent, then offline -> 0 %; hours 05-23 carry the offline status of 04:30 (nothing
    # came after it) -> day up 1200 of 6600 + 19 x 3600 s -> 1.6 %
    device_health={
        (3600, at(2)): (1, None),
        (3600, at(3)): (8, 40.0),
        (3600, at(4)): (1, 0.0),
        **{(3600, at(h)): (0, 0.0) for h in range(5, 24)},  # silent, offline since 04:30
        (86400, DAY): (10, 1200 / 75000 * 100),
    },
    # the day's device events of mc-01: offline 03:20 -> online 03:40 -> silent 03:50 -> offline 04:30 (still open)
    device_events={"status_change": 3, "offline_period": 3},
    # analytics.rejected_message, (domain, reason) -> rows: dataset.py's offsets 5..17 of partition 0 and 1
    # of partition 2 (its EXPECTED_REJECTS), all produced to the sensor topic (Plant.topic("sensor"))
    rejects={
        ("sensor", "not_json"): 2,  # "this is not json" and the empty value
        ("sensor", "not_object"): 1,
        ("sensor", "missing_field"): 1,  # no tenant_id
        ("sensor", "wrong_type"): 1,  # machine_id 7
        ("sensor", "non_finite"): 2,  # NaN, 1e999
        ("sensor", "bad_time"): 2,  # not ISO-8601, not UTC
        ("sensor", "future_time"): 1,  # 2099
        ("sensor", "unknown_metric"): 1,  # flux
        ("sensor", "unsupported_schema_version"): 1,  # 9
        ("sensor", "not_utf8"): 1,
        ("sensor", "invalid_value"): 1,  # empty tenant_id
    },
    # the shipped rules (config/alerts.yaml) and their channels
    alert_rules={
        "anomaly-critical": ("ops-slack", "ops-line", "ops-email", "ops-webhook"),
        "device-offline": ("ops-slack", "ops-line", "ops-email", "ops-webhook"),
        "sweep-fail-rate": ("ops-slack", "ops-webhook"),
        "lab-out-of-spec": ("ops-email", "ops-webhook"),
        "sweep-out-of-spec": ("ops-email", "ops-webhook"),
        "check-failed": ("ops-slack", "ops-webhook"),
        "run-failed": ("ops-slack", "ops-webhook"),
        "ingest-reset": ("ops-slack", "ops-webhook"),
    },
    # analytics.alert_log after the tick at ALERT_NOW (05:00): one 'open' row per condition and channel, every
    # one 'unconfigured' (no ALERT_*_URL set): anomaly-critical 4 conditions x 4 channels, device-offline 1 x 4,
    # lab-out-of-spec 1 x 2, sweep-out-of-spec 1 x 2 = 24 rows
    alert_log={"anomaly-critical": 16, "device-offline": 4, "lab-out-of-spec": 2, "sweep-out-of-spec": 2},
    # analytics.alert_conditions, all 'open', per rule (fingerprints):
    #   anomaly-critical (min_severity 3, the last 24 h, at most 3 events per machine): every event of the day is
    #     severity 3 (anomaly_events, spec_events): mc-01's two (2 <= 3: each its own), mc-02's and mc-99's one
    #     (the rule is for every tenant); keyed by series and event start
    #   device-offline: mc-01's last status before 05:00 is offline since 04:30 -> "device offline for 30 min"
    #     (mc-02 and mc-99 never sent device health, so the rule does not see them)
    #   lab-out-of-spec: Moisture 14.0 (sample S-2)
    #   sweep-out-of-spec: mc-01's batch B-2 at 03:45 (62 below temp's 63)
    #   none for sweep-fail-rate (no sweep in 04:00-05:00, and 2 < min_count 5), check-failed (no check failed)
    #   run-failed (no run failed) and ingest-reset (no Kafka log changed under a drain)
    alert_conditions={
        "anomaly-critical": [
            "anomaly-critical:t1/f1/mc-01/s-temp/temp/event/2025-08-20T03:12:00Z",
            "anomaly-critical:t1/f1/mc-01/s-temp/temp/event/2025-08-20T03:41:00Z",
            "anomaly-critical:t1/f1/mc-02/s-temp/temp/event/2025-08-20T03:00:00Z",
            "anomaly-critical:t2/f9/mc-99/s-temp/temp/event/2025-08-20T03:00:00Z",
        ],
        "device-offline": ["device-offline:t1/f1/mc-01"],
        # the event key is the result's identity: its scope (tenant, factory, station, sample, analyte),
        # each part length-prefixed, then `n` (no event id); then the result's time
        "lab-out-of-spec": [
            "lab-out-of-spec:t1/f1/lab-f1/2:t1\x1f2:f1\x1f6:lab-f1\x1f3:S-2\x1f8:Moisture\x1fn@2025-08-20T03:06:00+00:00"
        ],
        "sweep-out-of-spec": [
            "sweep-out-of-spec:t1/f1/mc-01/2:t1\x1f2:f1\x1f5:mc-01\x1f4:temp\x1f3:B-2\x1fn@2025-08-20T03:45:00+00:00"
        ],
    },
    # right now (the real clock): mc-01 sent `online` and a reading LIVE_AGE before the build, mc-99 a reading
    # (it never sent a status); mc-02 has been silent since 2025-08-20 03:09 and never sent a status. Their
    # newest message times are Plant.recent (mc-01 and mc-99: Plant.live_at, freshness LIVE_AGE at build time)
    online=frozenset({MC01, MC99}),
    offline=frozenset({MC02}),
    last_seen={MC02: at(3, 9)},
    live_temp={MC01: 64.5, MC99: 25.0},
    # every asset check evaluated on this data passes (reject_ratio: the 7 rejects that carry a time fall in
    # 03:00, 7 of 420 messages < 5 %); completeness is only judged when a raw partition is materialised
    failed_checks=(),
)


@dataclass
class Built:
    """What build_plant did: the live messages' time, the raw partitions the drain reported, the
    asset-check evaluations Dagster recorded (and which failed), the alert tick's report."""

    live_at: datetime
    reported: dict[str, list[str]]
    checks_evaluated: int
    failed_checks: list[str]
    tick: TickReport
    seconds: float = 0.0


def build_plant(
    settings: PlatformSettings, database: DatabaseHandle, instance: dg.DagsterInstance, *, now: datetime
) -> Built:
    """Produce the plant's messages to the broker, drain them, materialise the real assets and run
    one alert tick at ALERT_NOW; `now` (the real clock) dates only the two live messages."""
    started = time.monotonic()
    defs = build_definitions(settings, secrets_from_env=False)
    with database.connect() as conn:
        load_plant_config(conn)
        load_spec_limits(conn)
        load_alert_config(conn, settings.alerts_config)

    live_at = (now - LIVE_AGE).replace(microsecond=0)  # messages carry whole seconds
    live = live_messages(live_at)
    mc01 = energy_hour.KEY
    messages: dict[str, list[tuple[str, bytes]]] = {
        "sensor": [
            *((mc01, m) for m in energy_hour.sensor_messages()),
            *(("t1-f1-mc-02", m) for m in mc02_messages()),
            *(("t2-f9-mc-99", m) for m in t2_messages()),
            *((mc01, m) for m in MALFORMED),
            *live["sensor"],
        ],
        "device": [
            *((mc01, energy_hour.message(energy_hour.minutes(m), run_state=state)) for m, state in energy_hour.STATES),
            *((mc01, m) for m in HEALTH),
            *live["device"],
        ],
        "sweep": [(mc01, m) for m in SWEEPS],
        "lab": [("t1-f1-lab-f1", m) for m in LAB],
    }
    for domain, keyed in messages.items():
        produce(settings.kafka_brokers, domain_topic(settings, domain), keyed)
    reported = drain(defs, instance)
    consumed = dict(database.query("SELECT topic, sum(next_offset)::int FROM analytics.worker_checkpoints GROUP BY 1"))
    produced = {domain_topic(settings, domain): len(keyed) for domain, keyed in messages.items()}
    if consumed != produced:  # the plant's figures assume every message landed
        raise RuntimeError(f"one drain tick per domain consumed {consumed}, but {produced} were produced")

    def materialize_partitions(names: list[str], *partitions: str) -> None:
        for partition in partitions:
            materialize(defs, instance, names, partition)

    materialize_partitions(["sensor_window_aggregates"], *(hour_key(at(h)) for h in (1, 2, 3, 4)))
    materialize_partitions(["device_health_events"], *(hour_key(at(h)) for h in (2, 3, 4)))
    materialize_partitions(["sweep_batch_quality", "lab_result_quality", "lab_window_aggregates"], hour_key(at(3)))
    materialize_partitions(["hourly_machine_kpis"], hour_key(at(3)))
    materialize_partitions(["reading_anomalies"], hour_key(at(3)))
    materialize_partitions(["daily_event_rollups", "daily_machine_kpis"], "2025-08-20")

    checks = list(defs.resolve_asset_graph().asset_check_keys)
    tick = alert_tick(database, instance, checks, settings)
    evaluated, failed = check_evaluations(instance, checks)
    return Built(live_at, reported, evaluated, failed, tick, time.monotonic() - started)


def check_evaluations(instance: dg.DagsterInstance, keys: list[dg.AssetCheckKey]) -> tuple[int, list[str]]:
    """(evaluations recorded, `asset/check (partition)` of each failed one), over the history the
    alert sensor reads: how a test tells "no check failed" from "no check ran"."""
    evaluated, failed = 0, []
    for key in sorted(keys, key=lambda k: k.to_user_string()):
        for record in instance.event_log_storage.get_asset_check_execution_history(key, limit=CHECK_HISTORY):
            if record.status == AssetCheckExecutionRecordStatus.PLANNED:
                continue
            evaluated += 1
            if record.status == AssetCheckExecutionRecordStatus.FAILED:
                failed.append(f"{key.to_user_string()} ({record.partition or 'live'})")
    return evaluated, failed


def alert_tick(
    database: DatabaseHandle, instance: dg.DagsterInstance, checks: list[dg.AssetCheckKey], settings: PlatformSettings
) -> TickReport:
    """One tick of the shipped rules at ALERT_NOW, as the alert sensor runs it (asset checks and
    runs read from `instance`), with no channel configured: every notification is `unconfigured`."""
    channels = read_alert_file(settings.alerts_config).channels
    external = {
        "check_failed": lambda rule: check_conditions(instance, checks, rule, DAGSTER_UI_URL),
        "run_failed": lambda rule: run_conditions(instance, rule, ALERT_NOW, DAGSTER_UI_URL),
    }
    with database.connect(database.pipeline_url) as conn:
        rules: list[Rule] = read_rules(conn)
        return run_tick(conn, rules, ALERT_NOW, DAGSTER_UI_URL, channels, DeliveryPolicy(), external, environ={})


def make_keys(database: DatabaseHandle) -> tuple[str, str]:
    """(admin key: every tenant, read + resolve; tenant key: t1, read only)."""
    with database.connect() as conn:
        _, admin = create_key(conn, "dashboard-admin", None, scopes=("read", "resolve"))
        _, tenant = create_key(conn, "dashboard-t1", "t1")
    return admin, tenant


@contextmanager
def running_api(
    database: DatabaseHandle, settings: PlatformSettings, log: Path, extra_env: Mapping[str, str] | None = None
) -> Iterator[str]:
    """The API as its own process (`uvicorn --factory`, as deployed) over `database`; yields its
    base URL once GET /v1/health answers 200, stops it (SIGTERM, then wait) on exit. Its output
    goes to `log`, named in the error when it does not come up. `extra_env` adds or overrides
    settings (e.g. API_CORS_ORIGINS)."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database.pipeline_url,
        "API_DATABASE_URL": database.api_url,
        "API_WRITE_DATABASE_URL": database.writer_url,
        "KAFKA_BROKERS": settings.kafka_brokers,
        "KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
        "DAGSTER_UI_URL": DAGSTER_UI_URL,
        **(extra_env or {}),
    }
    service = start_service("api", api_command("127.0.0.1", port), log, env=env)
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            if not service.alive():
                raise StackError(f"the API exited with {service.process.returncode}; see {log}")
            try:
                return httpx.get(f"{url}/v1/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, API_START_TIMEOUT_S, "the API", log=log)
        yield url
    finally:
        service.stop(timeout=20)


@dataclass
class Plant:
    """The running API over the built plant, and what a test needs to talk to it."""

    api_url: str
    admin_key: str  # every tenant; read + resolve
    tenant_key: str  # t1 only; read
    database: DatabaseHandle
    settings: PlatformSettings
    dagster_ui_url: str
    log: Path  # the API process's output
    built: Built = field(repr=False)

    @property
    def live_at(self) -> datetime:
        """When the live messages (mc-01, mc-99) are stamped: LIVE_AGE before the build's clock."""
        return self.built.live_at

    @property
    def recent(self) -> dict[Machine, datetime]:
        """The newest message time of each machine: what its freshness and its newest raw
        partition follow from."""
        return {MC01: self.live_at, MC99: self.live_at, **EXPECTED.last_seen}

    def topic(self, domain: str) -> str:
        """The (prefixed) topic of a domain, as stored in rejected_message.topic."""
        return domain_topic(self.settings, domain)

    def get(self, path: str, *, key: str | None = None, **params: Any) -> httpx.Response:
        """GET `path` with `key` (default: the admin key); None-valued params are left out."""
        return httpx.get(
            f"{self.api_url}{path}",
            params={k: v for k, v in params.items() if v is not None},
            headers={"X-API-Key": key or self.admin_key},
            timeout=30,
        )


@pytest.fixture(scope="module")
def plant(
    module_database: DatabaseHandle,
    module_settings: PlatformSettings,
    module_instance: dg.DagsterInstance,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Plant]:
    """The plant, built once per module, and the API serving it. Tests may resolve anomalies (the
    admin key has the scope): they share the database, so a test that does says so."""
    built = build_plant(module_settings, module_database, module_instance, now=datetime.now(UTC))
    admin, tenant = make_keys(module_database)
    log = tmp_path_factory.mktemp("dashboard-api") / "api.log"
    with running_api(module_database, module_settings, log) as url:
        yield Plant(url, admin, tenant, module_database, module_settings, DAGSTER_UI_URL, log, built)
