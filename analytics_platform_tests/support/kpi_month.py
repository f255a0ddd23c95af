"""A month of readings for KPIs over any period (GET /v1/kpi period=week|month|custom, the energy
performance report), run through the pipeline's own KPI computation (results/kpis.recompute_kpis,
one UTC day per call as a backfill chunk does), with every figure worked out by hand below.

Tenant t1 is in Europe/Berlin, whose March 2026 holds the spring DST change (29 March): local March
runs 2026-02-28T23:00Z .. 2026-03-31T22:00Z, 743 hours, the first starting at an odd UTC hour (23).
Every reading is stamped on a UTC hour and closes the hour before it (docs/kpis.md).

* t1/f1/m1, readings every hour from FIRST to LAST: the hour starting at an odd UTC hour gets
  3 kWh, 2 units, 1 good; an even one 2 kWh, 4 units, 4 good. Power 10 kW, except the sample
  stamped 2026-03-10 12:00Z: 50 kW (it stands for 11:00-12:00). Running (said every hour); ideal cycle
  time 1200 s. March: 372 odd and 371 even hours:
    energy  3 x 372 + 2 x 371 = 1858 kWh    units 2 x 372 + 4 x 371 = 2228    good 372 + 4 x 371 = 1856
    SEC 1858 / 2228 (the mean of the hourly SECs, (1.5 + 0.5) / 2 = 1, would be wrong)
    avg demand (742 x 10 + 50) / 743 = 7470 / 743 kW; peak 50 kW at 2026-03-10 12:00Z;
    load factor 7470 / 743 / 50; run time 743 x 3600 = 2674800 s; availability 1;
    performance 1200 x 2228 / 2674800; quality 1856 / 2228; OEE 1200 x 1856 / 2674800
* t1/f1/m2 joins mid-month: readings every hour from 2026-03-16T00:00Z: 5 kWh and 1 unit an hour,
  no power, no good count, no run state. March: 15 x 24 + 22 = 382 hours: 1910 kWh, 382 units.
* t2/f1/m1 (America/New_York; same factory and machine names): 100 kWh and 1 unit an hour over the
  same hours, so any leak into t1's figures shows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from analytics_platform.results.kpis import recompute_kpis
from analytics_platform.transforms.machine_kpis import KpiOptions, fixed_periods
from analytics_platform_tests.support.stack import DatabaseHandle

HOUR = timedelta(hours=1)
FIRST = datetime(2026, 2, 28, 20, tzinfo=UTC)
LAST = datetime(2026, 4, 1, 2, tzinfo=UTC)
M2_FIRST = datetime(2026, 3, 16, tzinfo=UTC)
SPIKE = datetime(2026, 3, 10, 12, tzinfo=UTC)
OPTIONS = KpiOptions(gap_s=3700, slot_s=3600, drivers=())  # hourly readings are not silences
COMPUTED = (datetime(2026, 2, 28, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))  # the UTC days computed


def _stamps(first: datetime) -> list[datetime]:
    out, at = [], first
    while at <= LAST:
        out.append(at)
        at += HOUR
    return out


def readings() -> list[tuple]:
    """(time, tenant, factory, machine, sensor, metric, value) of every series above."""
    rows: list[tuple] = []
    totals = {"energy": 0.0, "count_total": 0.0, "count_good": 0.0}
    for at in _stamps(FIRST):
        if at > FIRST:  # the hour this reading closes
            odd = (at - HOUR).hour % 2 == 1
            totals["energy"] += 3 if odd else 2
            totals["count_total"] += 2 if odd else 4
            totals["count_good"] += 1 if odd else 4
        for metric, value in totals.items():
            rows.append((at, "t1", "f1", "m1", f"{metric}-meter", metric, value))
        rows.append((at, "t1", "f1", "m1", "power-meter", "power", 50.0 if at == SPIKE else 10.0))
        n = (at - FIRST) // HOUR
        rows.append((at, "t2", "f1", "m1", "energy-meter", "energy", 100.0 * n))
        rows.append((at, "t2", "f1", "m1", "count-meter", "count_total", float(n)))
    for n, at in enumerate(_stamps(M2_FIRST)):
        rows.append((at, "t1", "f1", "m2", "energy-meter", "energy", 5.0 * n))
        rows.append((at, "t1", "f1", "m2", "count-meter", "count_total", float(n)))
    return rows


def load_month(database: DatabaseHandle) -> None:
    """The plant metadata and readings above, then the KPI hours of every UTC day in COMPUTED."""
    with database.connect() as conn:
        conn.execute(
            "INSERT INTO analytics.plant_tenants (tenant_id, timezone, currency) "
            "VALUES ('t1', 'Europe/Berlin', 'EUR'), ('t2', 'America/New_York', 'USD')"
        )
        conn.execute(
            "INSERT INTO analytics.plant_emission_factors (tenant_id, kg_per_kwh) VALUES ('t1', 0.5), ('t2', 0.3)"
        )  # valid since forever
        conn.execute(
            "INSERT INTO analytics.machine_metadata (tenant_id, factory_id, machine_id, ideal_cycle_time_s) "
            "VALUES ('t1', 'f1', 'm1', 1200)"
        )
        with conn.cursor().copy(
            "COPY analytics.raw_sensor_readings (time, tenant_id, factory_id, machine_id, sensor_id, metric, value, "
            "schema_version, dedup_key, topic, kafka_partition, kafka_offset) FROM STDIN"
        ) as copy:
            for offset, row in enumerate(readings()):
                copy.write_row((*row, 1, f"kpi-month-{offset}", "sensors", 0, offset))
        # the device repeats its state every hour (a state older than the KPI lookback is not looked for)
        conn.cursor().executemany(
            "INSERT INTO analytics.raw_device_health (time, tenant_id, factory_id, machine_id, run_state, "
            "schema_version, dedup_key, topic, kafka_partition, kafka_offset) "
            "VALUES (%s, 't1', 'f1', 'm1', 'running', 1, %s, 'device.health', 0, 0)",
            [(at, f"kpi-month-state-{at:%Y%m%d%H}") for at in _stamps(FIRST)],
        )
    day = COMPUTED[0]
    with database.connect(database.pipeline_url) as conn:
        while day < COMPUTED[1]:
            periods = fixed_periods("hour", day, day + timedelta(days=1), HOUR)
            recompute_kpis(conn, periods, OPTIONS, lookback=timedelta(seconds=OPTIONS.max_interval_s))
            day += timedelta(days=1)


# The energy baselines of the report (GET /v1/reports/energy-performance). m1's active version 2
# expects 0.5 + 0.5 x units kWh an hour: an odd hour (3 kWh, 2 units) 1.5 kWh, deviation +1.5; an
# even hour (2 kWh, 4 units) 2.5 kWh, deviation -0.5. A 24-hour local day (12 odd, 12 even hours)
# deviates +12 kWh; the 23-hour 29 March (12 odd, 11 even) +12.5. March (372 odd, 371 even):
# expected 372 x 1.5 + 371 x 2.5 = 1485.5 kWh, deviation 1858 - 1485.5 = +372.5 kWh (the CUSUM at
# its end), 372.5 / 1485.5 x 100 %. Version 1 (inactive) and t2's model must not be used.
def baseline(tenant: str, version: int, active: bool, intercept: float, per_unit: float) -> dict:
    return {
        "tenant_id": tenant,
        "factory_id": "f1",
        "machine_id": "m1",
        "version": version,
        "target": "energy_kwh",
        "drivers": ["production_count"],
        "coefficients": {"intercept": intercept, "production_count": per_unit},
        "p_values": {"intercept": 0.01, "production_count": 0.001},
        "std_errors": {"intercept": 0.1, "production_count": 0.01},
        "r2": 0.91,
        "adj_r2": 0.9,
        "rmse": 0.4,
        "mae": 0.3,
        "n": 1200,
        "excluded": 3,
        "trained_from": datetime(2026, 1, 1, tzinfo=UTC),
        "trained_to": datetime(2026, 2, 1, tzinfo=UTC),
        "accepted": True,
        "active": active,
    }


BASELINES = [baseline("t1", 1, False, 10.0, 1.0), baseline("t1", 2, True, 0.5, 0.5), baseline("t2", 1, True, 0.0, 7.0)]
