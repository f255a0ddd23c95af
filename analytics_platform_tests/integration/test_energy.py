"""Energy and production intelligence end to end: known messages through the real broker and the
drain sensors, the KPI and anomaly assets materialised through Dagster, exact rows in
analytics_kpi and analytics_anomaly; baselines trained, versioned and compared; anomalies resolved
and kept across re-materialisation.

The hour's messages and the figures they must give, worked out by hand: support/energy_hour.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from analytics_platform.api.routes.reports import excluded
from analytics_platform.results.anomalies import resolve_anomaly
from analytics_platform.results.baselines import hourly_samples, predict_what_if
from analytics_platform.results.kpis import read_inputs
from analytics_platform.results.plant import load_plant_config
from analytics_platform.settings import PlatformSettings
from analytics_platform.transforms.kpi_catalog import Part
from analytics_platform_tests.support.api import at, insert
from analytics_platform_tests.support.api_data import kpi
from analytics_platform_tests.support.automation import Ticks
from analytics_platform_tests.support.energy_hour import (
    HOUR,
    KEY,
    SPIKES,
    STATES,
    message,
    minutes,
    sensor_messages,
)
from analytics_platform_tests.support.readings import drain, materialize
from analytics_platform_tests.support.stack import DatabaseHandle, domain_topic, produce


def kpis(db: DatabaseHandle, period: str, start: datetime) -> dict[str, tuple]:
    rows = db.query(
        "SELECT kpi, value, null_reason, details::text FROM analytics.analytics_kpi WHERE machine_id = 'mc-01' "
        "AND period = %s AND period_start = %s",
        (period, start),
    )
    return {kpi: (value, reason, json.loads(details) if details else None) for kpi, value, reason, details in rows}


@pytest.fixture
def landed(defs: dg.Definitions, instance: dg.DagsterInstance, settings: PlatformSettings, database: DatabaseHandle):
    return land(defs, instance, settings, database)


def land(defs: dg.Definitions, instance: dg.DagsterInstance, settings: PlatformSettings, database: DatabaseHandle):
    with database.connect() as conn:
        load_plant_config(conn)
    produce(settings.kafka_brokers, domain_topic(settings, "sensor"), [(KEY, m) for m in sensor_messages()])
    produce(
        settings.kafka_brokers,
        domain_topic(settings, "device"),
        [(KEY, message(minutes(m), run_state=state)) for m, state in STATES],
    )
    reported = drain(defs, instance, ["sensor", "device"])
    assert sorted(reported["raw_sensor_readings"]) == [
        "2025-08-20-01:00",
        "2025-08-20-02:00",
        "2025-08-20-03:00",
        "2025-08-20-04:00",
    ]
    return reported


def test_hourly_and_daily_kpis_from_kafka_messages(
    defs: dg.Definitions, instance: dg.DagsterInstance, database: DatabaseHandle, landed: dict
) -> None:
    materialize(defs, instance, ["hourly_machine_kpis"], "2025-08-20-03:00")
    k = kpis(database, "hour", HOUR)
    assert k["energy_kwh"][0] == pytest.approx(128 / 7)
    assert k["energy_kwh"][2] == {"counter_resets": 0, "increments": 2, "open_s": 300.0}
    assert k["energy_cost"][0] == pytest.approx(128 / 7 * 4.18)
    assert k["energy_cost"][2]["kwh_by_band"] == pytest.approx({"peak": 128 / 7})
    assert k["carbon_kg"][0] == pytest.approx(128 / 7 * 0.4999)
    assert k["peak_demand_kw"][0] == 80.0
    assert k["peak_demand_kw"][2]["at"].startswith("2025-08-20 03:10:00")
    assert k["avg_demand_kw"][0] == pytest.approx(32.5)
    assert k["load_factor"][0] == pytest.approx(32.5 / 80)
    assert k["production_count"][:1] == (864,) and k["production_count"][2] == {"open_s": 300.0}
    assert k["good_count"][0] == 840
    assert k["sec_kwh_per_unit"][0] == pytest.approx(128 / 7 / 864)
    assert k["run_time_s"][0] == 2400
    assert k["downtime_s"][:1] == (600.0,) and k["downtime_s"][2] == {"fault_s": 600.0, "gap_s": 0.0}
    assert k["planned_downtime_s"][0] == 600
    assert k["availability"][0] == pytest.approx(0.8)
    assert k["performance"][0] == pytest.approx(0.72)
    assert k["quality"][0] == pytest.approx(840 / 864)
    assert k["oee"][0] == pytest.approx(0.56)
    assert k["production_rate_per_h"][0] == pytest.approx(864 / (2400 / 3600))
    assert k["data_completeness_pct"][0] == pytest.approx(20.0)  # 12 of 60 minutes carry a KPI reading
    assert k["avg_outdoor_temp"] == (None, "no outdoor_temp readings in the period", None)

    # re-materialising replaces, never doubles
    count = database.scalar("SELECT count(*) FROM analytics.analytics_kpi")
    materialize(defs, instance, ["hourly_machine_kpis"], "2025-08-20-03:00")
    assert database.scalar("SELECT count(*) FROM analytics.analytics_kpi") == count

    # the day (and the shift it falls in) from the same readings: equal to the hour here
    materialize(defs, instance, ["daily_machine_kpis"], "2025-08-20")
    day = kpis(database, "day", datetime(2025, 8, 20, tzinfo=UTC))
    assert day["energy_kwh"][0] == pytest.approx(20.0)
    assert day["production_count"][0] == 972
    # t1 works A 06-14, B 14-22, C 22-06 in Bangkok: A of the 20th runs 23:00 (19th) .. 07:00 UTC
    shift_a = kpis(database, "shift", datetime(2025, 8, 19, 23, tzinfo=UTC))
    assert shift_a["energy_kwh"][0] == pytest.approx(20.0)
    assert shift_a["energy_kwh"][2]["shift"] == "A"
    assert database.query(
        "SELECT details->>'shift', period_start, period_end FROM analytics.analytics_kpi WHERE period = 'shift' "
        "AND kpi = 'energy_kwh' ORDER BY period_start"
    ) == [
        ("A", datetime(2025, 8, 19, 23, tzinfo=UTC), datetime(2025, 8, 20, 7, tzinfo=UTC)),
        ("B", datetime(2025, 8, 20, 7, tzinfo=UTC), datetime(2025, 8, 20, 15, tzinfo=UTC)),
        ("C", datetime(2025, 8, 20, 15, tzinfo=UTC), datetime(2025, 8, 20, 23, tzinfo=UTC)),
    ]
    # shift B saw only silence: completeness 0, energy NULL with its reason, never a fake 0 (the meter
    # last read at 03:55; whatever it reads next closes an interval over the whole shift)
    shift_b = kpis(database, "shift", datetime(2025, 8, 20, 7, tzinfo=UTC))
    assert shift_b["energy_kwh"] == (
        None,
        "the energy counter's interval over the period has not closed yet (no reading after it)",
        {"open_s": 8 * 3600.0, "shift": "B"},
    )
    assert shift_b["data_completeness_pct"][0] == 0.0


def test_anomalies_from_kafka_messages_are_replaced_and_keep_their_resolution(
    defs: dg.Definitions, instance: dg.DagsterInstance, database: DatabaseHandle, landed: dict
) -> None:
    for partition in ("2025-08-20-01:00", "2025-08-20-02:00"):
        materialize(defs, instance, ["sensor_window_aggregates"], partition)
    materialize(defs, instance, ["reading_anomalies"], "2025-08-20-03:00")
    rows = database.query(
        "SELECT time, method, metric, anomaly_type, severity, severity_label, observed, sample_s "
        "FROM analytics.analytics_anomaly ORDER BY time, method"
    )
    # Two hours of 10-s temperatures is enough to judge (per minute: 6 readings a sample), not enough
    # to know the machine's ordinary swings: a young profile warns, it does not page. The spike at 03:41
    # is not judged at all: the machine resumed from its fault at 03:30 and settles for 30 minutes. No
    # forest yet: forests learn the day before the hour's midnight, and there was no data then. Power
    # has one reading before the hour: learning.
    assert rows == [(SPIKES[0], "deviation", "temp", "temperature", 2, "warning", 95.676, 60.0)]
    assert database.query(
        "SELECT metric, stage, n_samples, cadence_s, span_hours FROM analytics.v_anomaly_profile ORDER BY metric"
    ) == [("power", "learning", 1, 60.0, 0.017), ("temp", "flat", 120, 10.0, 2.0)]
    (detail,) = database.query("SELECT details FROM analytics.analytics_anomaly WHERE method = 'deviation'")
    assert detail[0]["statistic"] == "extreme" and detail[0]["stage"] == "flat"
    assert {"time": SPIKES[0].isoformat(), "value": 95.676} in detail[0]["readings"]
    assert database.query(
        "SELECT start_time, end_time, severity, methods, anomalies, status "
        "FROM analytics.anomaly_events('2025-08-20', '2025-08-21')"
    ) == [(SPIKES[0], SPIKES[0] + timedelta(minutes=1), 2, ["deviation"], 1, "open")]
    # the hour's profiles: first those learned up to its midnight (nothing then: learning), then,
    # the series being younger than a day, those learned up to the hour itself (active)
    models = "SELECT method, metric, version, active, n_samples FROM analytics.analytics_anomaly_model ORDER BY 1, 2, 3"
    expected_models = [
        ("seasonal", "power", 1, False, 0),
        ("seasonal", "power", 2, True, 1),
        ("seasonal", "temp", 1, False, 0),
        ("seasonal", "temp", 2, True, 120),
    ]
    assert database.query(models) == expected_models

    # resolve one, re-materialise: the same anomalies, the resolution kept, the models reused
    first_id = database.scalar(
        "SELECT anomaly_id FROM analytics.analytics_anomaly WHERE method = 'deviation' ORDER BY time LIMIT 1"
    )
    with database.connect() as conn:
        assert resolve_anomaly(conn, first_id, "thermocouple reseated", "qa") is True
        assert resolve_anomaly(conn, 10**12, "no such", "qa") is False
    before = database.query("SELECT method, time, severity FROM analytics.analytics_anomaly ORDER BY 1, 2")
    materialize(defs, instance, ["reading_anomalies"], "2025-08-20-03:00")
    assert database.query("SELECT method, time, severity FROM analytics.analytics_anomaly ORDER BY 1, 2") == before
    assert database.query(
        "SELECT status, resolved_by, resolution_note FROM analytics.analytics_anomaly WHERE anomaly_id = %s",
        (first_id,),
    ) == [("resolved", "qa", "thermocouple reseated")]
    assert database.query(models) == expected_models


def test_two_meters_on_one_machine_are_read_and_booked_as_two_counters(
    defs: dg.Definitions, instance: dg.DagsterInstance, settings: PlatformSettings, database: DatabaseHandle
) -> None:
    """mc-07 has two energy meters. Hour 05:00 (12:00 Bangkok, peak 4.18):
      s-a 100 (04:50) -> 104 (05:20) -> 106 (05:40) -> 109 (06:10): 4 x 1200 / 1800 + 2 + 3 x 1200 / 1800 = 20/3
      s-b 5000 (04:00) -> 5030 (07:00): silent through the hour, 30 kWh over 3 h -> 10 in it
      machine 20/3 + 10 = 50/3 kWh. The reader finds both meters' last reading before the hour (s-b's
    is older than s-a's) and first after it; read as one series the meters would interleave."""
    with database.connect() as conn:
        load_plant_config(conn)
    # minutes after 03:00: 04:50 = 110, 05:20 = 140, 05:40 = 160, 06:10 = 190, 04:00 = 60, 07:00 = 240
    meters = [("s-a", 110, 100.0), ("s-a", 140, 104.0), ("s-a", 160, 106.0), ("s-a", 190, 109.0)]
    meters += [("s-b", 60, 5000.0), ("s-b", 240, 5030.0)]
    produce(
        settings.kafka_brokers,
        domain_topic(settings, "sensor"),
        [
            ("t1-f1-mc-07", message(minutes(m), machine_id="mc-07", sensor_id=s, metric="energy", value=v))
            for s, m, v in meters
        ],
    )
    drain(defs, instance, ["sensor"])
    hour = minutes(120)
    with database.connect() as conn:
        inputs = read_inputs(conn, hour, hour + timedelta(hours=1), drivers=[], gap_s=300, lookback=timedelta(hours=24))
    assert sorted(inputs.prior.select("sensor_id", "time", "value").rows()) == [
        ("s-a", minutes(110), 100.0),
        ("s-b", minutes(60), 5000.0),
    ]
    assert sorted(inputs.next_readings.select("sensor_id", "time", "value").rows()) == [
        ("s-a", minutes(190), 109.0),
        ("s-b", minutes(240), 5030.0),
    ]
    materialize(defs, instance, ["hourly_machine_kpis"], "2025-08-20-05:00")
    energy = database.query(
        "SELECT value, details::text FROM analytics.analytics_kpi WHERE machine_id = 'mc-07' AND kpi = 'energy_kwh'"
    )
    assert [(pytest.approx(v), json.loads(d)) for v, d in energy] == [(50 / 3, {"counter_resets": 0, "increments": 2})]


def test_baseline_training_versions_refusal_deviation_and_what_if(
    defs: dg.Definitions, instance: dg.DagsterInstance, database: DatabaseHandle
) -> None:
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    insert = """
        INSERT INTO analytics.analytics_kpi (period_start, period_end, period, tenant_id, factory_id, machine_id,
                                             kpi, value, unit, details)
        SELECT ts, ts + interval '1 hour', 'hour', 't1', 'f1', %(machine)s, k.kpi, k.value, '', k.details
        FROM generate_series(%(end)s - %(hours)s * interval '1 hour', %(end)s - interval '1 hour', interval '1 hour')
             WITH ORDINALITY AS g(ts, i)
        CROSS JOIN LATERAL (VALUES
            ('production_count', (i * 37 %% 1000)::float8, NULL::jsonb),
            ('avg_outdoor_temp', 15 + (i * 13 %% 20)::float8, NULL),
            ('avg_outdoor_pressure', 1000 + (i * 7 %% 25)::float8, NULL),
            ('energy_kwh', 10 + 0.05 * (i * 37 %% 1000) + 0.8 * (15 + (i * 13 %% 20)) + 0.1 * (1000 + (i * 7 %% 25))
                           + ((i * 31 %% 11) - 5) * 0.2
                           + CASE WHEN i %% 50 = 0 THEN 500 ELSE 0 END, NULL),
            ('fault_time_s', CASE WHEN i %% 50 = 0 THEN 600 ELSE 0 END, NULL),
            ('planned_downtime_s', 0, '{"maintenance_s": 0}'::jsonb)
        ) AS k(kpi, value, details)
    """
    with database.connect() as conn:
        conn.execute(insert, {"machine": "mc-01", "end": end, "hours": 1100})
        conn.execute(insert, {"machine": "mc-02", "end": end, "hours": 900})
    materialize(defs, instance, ["energy_baseline_models"])
    rows = database.query(
        "SELECT machine_id, version, active, accepted, n, excluded, r2 >= 0.99, "
        "round((coefficients->>'production_count')::numeric, 3)::float8 FROM analytics.analytics_baseline"
    )
    # 1100 hours, every 50th has a fault (and 500 kWh extra): 22 excluded, the model is exact
    assert rows == [("mc-01", 1, True, True, 1078, 22, True, 0.05)]  # mc-02: 900 hours, refused
    materialize(defs, instance, ["energy_baseline_models"])
    assert database.query(
        "SELECT version, active, deactivated_at IS NOT NULL FROM analytics.analytics_baseline ORDER BY version"
    ) == [(1, False, True), (2, True, False)]
    with database.connect() as conn:
        expected = predict_what_if(
            conn,
            ("t1", "f1", "mc-01"),
            {"production_count": 1000, "avg_outdoor_temp": 20, "avg_outdoor_pressure": 1010},
        )
        assert expected == pytest.approx(10 + 50 + 16 + 101, abs=0.3)
        with pytest.raises(LookupError, match="no active energy baseline for t1/f1/mc-02"):
            predict_what_if(conn, ("t1", "f1", "mc-02"), {"production_count": 1})


def test_hourly_kpis_follow_their_inputs_once_the_hour_has_ended(
    defs: dg.Definitions, instance: dg.DagsterInstance, settings: PlatformSettings, database: DatabaseHandle
) -> None:
    # what the analytics_automation sensor evaluates
    tick = Ticks(defs, instance, dg.AssetSelection.all() - dg.AssetSelection.assets("sensor_window_aggregates"))
    key = dg.AssetKey("hourly_machine_kpis")
    at_0330 = datetime(2025, 8, 20, 3, 30, tzinfo=UTC)
    start = tick(at_0330)
    assert start.total_requested == 0  # no data yet
    land(defs, instance, settings, database)
    during = tick(at_0330)
    # 03:00 is still running: only the ended hours with data are requested
    assert sorted(during.get_requested_partitions(key)) == ["2025-08-20-01:00", "2025-08-20-02:00"]
    after = tick(datetime(2025, 8, 20, 4, 10, tzinfo=UTC))
    # the hour has ended: its partition appears, and is requested once
    assert sorted(after.get_requested_partitions(key)) == ["2025-08-20-03:00"]
    # a later drain tick (nothing new) does not request it again ...
    quiet = tick(datetime(2025, 8, 20, 4, 15, tzinfo=UTC))
    assert quiet.get_requested_partitions(key) == set()
    # ... but at 04:20 the readings closing its last intervals (04:00 and later, in raw 04:00) have
    # landed: the latest ended hour is recomputed once more, and only once
    closing = tick(datetime(2025, 8, 20, 4, 20, 5, tzinfo=UTC))
    assert sorted(closing.get_requested_partitions(key)) == ["2025-08-20-03:00"]
    settled = tick(datetime(2025, 8, 20, 4, 40, tzinfo=UTC))
    assert settled.get_requested_partitions(key) == set()


def test_training_and_the_energy_report_exclude_the_same_hours(database: DatabaseHandle) -> None:
    """results/baselines.py reads ABNORMAL_TIME as SQL, the ISO 50001 report applies it in Python:
    the same stored hours are excluded by both (a twin of the rule once drifted apart silently)."""
    hours = {
        0: [("fault_time_s", 0.0, None), ("planned_downtime_s", 900.0, {"maintenance_s": 0.0})],
        1: [("fault_time_s", 120.0, None)],
        2: [("planned_downtime_s", 1800.0, {"maintenance_s": 1800.0})],
        3: [("planned_downtime_s", 900.0, {})],
        4: [("fault_time_s", None, None)],
        5: [],
    }
    rows = [kpi(h, "m1", "energy_kwh", 10.0 + h, "kWh") for h in hours]
    rows += [
        kpi(h, "m1", name, value, "s", details=details, null_reason=None if value is not None else "no run state")
        for h, parts in hours.items()
        for name, value, details in parts
    ]
    rows += [kpi(1, "m1", "fault_time_s", 0.0, "s", tenant="t2")]  # another tenant's same ids: its own hour
    insert(database, "analytics_kpi", rows)
    with database.connect() as conn:
        samples = hourly_samples(conn, at(0), at(6), ())
    by_sql = {(r["tenant_id"], r["period_start"]): r["excluded"] for r in samples.iter_rows(named=True)}
    by_python = {
        ("t1", at(h)): excluded({name: Part(value, details or {}, 3600.0) for name, value, details in parts})
        for h, parts in hours.items()
    }
    assert by_python == {("t1", at(h)): h in (1, 2) for h in hours}
    assert {k: v for k, v in by_sql.items() if k[0] == "t1"} == by_python
    assert by_sql[("t2", at(1))] is False
