"""Machine KPIs as a real plant breaks them, on the real database: run states and meter readings an
edge agent replays after an outage, once the hours around them were computed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from analytics_platform.results.kpis import recompute_kpis
from analytics_platform.transforms.machine_kpis import KpiOptions, fixed_periods
from analytics_platform_tests.support.stack import DatabaseHandle

H10 = datetime(2025, 8, 20, 10, tzinfo=UTC)
HOUR = timedelta(hours=1)
OPTIONS = KpiOptions(drivers=())
LOOKBACK = timedelta(seconds=OPTIONS.max_interval_s)


def insert_readings(db: DatabaseHandle, rows: list[tuple[datetime, str, str, float]]) -> None:
    """(time, sensor, metric, value) readings of t1/f1/mc-01, as the drain stores them."""
    with db.connect() as conn:
        conn.cursor().executemany(
            """INSERT INTO analytics.raw_sensor_readings (time, tenant_id, factory_id, machine_id, sensor_id, metric,
                   value, schema_version, dedup_key, topic, kafka_partition, kafka_offset)
               VALUES (%s, 't1', 'f1', 'mc-01', %s, %s, %s, 1, %s, 'sensors.device.readings', 0, 0)""",
            [(ts, s, m, v, f"{s}|{m}|{ts.isoformat()}") for ts, s, m, v in rows],
        )


def insert_states(db: DatabaseHandle, rows: list[tuple[datetime, str]]) -> None:
    with db.connect() as conn:
        conn.cursor().executemany(
            """INSERT INTO analytics.raw_device_health (time, tenant_id, factory_id, machine_id, run_state,
                   schema_version, dedup_key, topic, kafka_partition, kafka_offset)
               VALUES (%s, 't1', 'f1', 'mc-01', %s, 1, %s, 'device.health', 0, 0)""",
            [(ts, s, f"run|{ts.isoformat()}") for ts, s in rows],
        )


def compute_hour(db: DatabaseHandle, start: datetime) -> None:
    """What hourly_machine_kpis does for the hour partition starting at `start`."""
    with db.connect(db.pipeline_url) as conn:
        recompute_kpis(conn, fixed_periods("hour", start, start + HOUR, HOUR), OPTIONS, lookback=LOOKBACK)


def hourly(db: DatabaseHandle, kpi: str) -> dict[int, float | None]:
    rows = db.query(
        "SELECT period_start, value FROM analytics.analytics_kpi WHERE period = 'hour' AND kpi = %s ORDER BY 1", (kpi,)
    )
    return {start.hour: value for start, value in rows}


def test_replayed_run_states_and_meter_readings_recompute_the_hours_they_reach(database: DatabaseHandle) -> None:
    # mc-01 runs from 09:50; its power (every 5 min) keeps every hour observed. Its energy meter
    # read 100 kWh at 09:55, then the agent lost the broker: hours 10, 11, 12 were computed running,
    # with the meter's interval still open.
    insert_states(database, [(H10 - timedelta(minutes=10), "running")])
    insert_readings(database, [(H10 - timedelta(minutes=5), "s-e", "energy", 100.0)])
    insert_readings(database, [(H10 + timedelta(minutes=5 * i), "s-p", "power", 50.0) for i in range(37)])
    for hour in range(3):
        compute_hour(database, H10 + hour * HOUR)
    assert hourly(database, "run_time_s") == {10: 3600.0, 11: 3600.0, 12: 3600.0}

    # The agent replays in order: fault at 10:10, running again at 12:15, and the meter's reading at
    # 12:55 (+150 kWh over 09:55-12:55, 180 min). Hours 10 and 12 received them and are recomputed
    # (hour 9, which the meter's interval also reaches, was never computed); hour 11 received nothing.
    insert_states(
        database, [(H10 + timedelta(minutes=10), "fault"), (H10 + 2 * HOUR + timedelta(minutes=15), "running")]
    )
    insert_readings(database, [(H10 + 2 * HOUR + timedelta(minutes=55), "s-e", "energy", 250.0)])
    compute_hour(database, H10)
    compute_hour(database, H10 + 2 * HOUR)

    # By hand: running 10:00-10:10 and 12:15-13:00, fault in between; 150 kWh / 180 min = 50 kWh an hour
    # in hours 10 and 11 and 55 min of it (45.83 kWh) in hour 12.
    assert hourly(database, "run_time_s") == {10: 600.0, 11: 0.0, 12: 2700.0}, (
        "hour 11 kept the run state it carried before the replay: running while the machine was in fault"
    )
    assert hourly(database, "fault_time_s") == {10: 3000.0, 11: 3600.0, 12: 900.0}
    energy = hourly(database, "energy_kwh")
    assert (energy[10], energy[11], round(energy[12], 9)) == (50.0, 50.0, round(150 * 55 / 180, 9))

    # recomputing hour 10 again, with nothing new landed, leaves the hours around it as they are
    computed = "SELECT period_start, min(computed_at) FROM analytics.analytics_kpi WHERE period_start > %s GROUP BY 1"
    before = database.query(computed, (H10,))
    compute_hour(database, H10)
    assert database.query(computed, (H10,)) == before


def test_two_run_states_with_one_stamp_hold_the_same_state_in_their_hour_and_the_next(
    database: DatabaseHandle,
) -> None:
    # A PLC stamping in whole seconds sends "running" and "fault" (two event ids) at 10:30:00. Which
    # one holds after it is a tie-break, but one tie-break: hour 10 carried one of them to its end and
    # hour 11, which starts in the state carried from before it, must carry the same one.
    insert_states(database, [(H10 - timedelta(minutes=30), "running")])
    with database.connect() as conn:
        conn.cursor().executemany(
            """INSERT INTO analytics.raw_device_health (time, tenant_id, factory_id, machine_id, run_state, event_id,
                   schema_version, dedup_key, topic, kafka_partition, kafka_offset)
               VALUES (%s, 't1', 'f1', 'mc-01', %s, %s, 1, %s, 'device.health', 0, %s)""",
            [(H10 + timedelta(minutes=30), s, s, f"run|e|{s}", n) for n, s in enumerate(("running", "fault"))],
        )
    insert_readings(database, [(H10 + timedelta(minutes=5 * i), "s-p", "power", 50.0) for i in range(25)])
    compute_hour(database, H10)
    compute_hour(database, H10 + HOUR)
    run, fault = hourly(database, "run_time_s"), hourly(database, "fault_time_s")
    after_tie_in_10 = "running" if run[10] == 3600.0 else "fault"
    assert (run[10], fault[10]) in ((3600.0, 0.0), (1800.0, 1800.0))
    assert (run[11], fault[11]) == ((3600.0, 0.0) if after_tie_in_10 == "running" else (0.0, 3600.0)), (
        f"hour 10 ended in {after_tie_in_10}, hour 11 began in the other state"
    )
