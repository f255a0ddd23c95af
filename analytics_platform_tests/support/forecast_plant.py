"""Two weeks of hourly readings for the energy forecasts (issue 25), run through the pipeline's own
KPI computation (results/kpis.recompute_kpis, one UTC day per call as a backfill chunk does), with
the forecasts a machine that repeats exactly must get worked out by hand.

Every reading is stamped on a UTC hour and closes the hour before it (docs/kpis.md): the energy
counter's increase over (t - 1 h, t] is that hour's kWh, and a power sample stamped at the hour's
end is its peak demand.

* t1/f1/m1 (t1 in Asia/Bangkok): 10 kWh and 10 kW in the hours 08:00-18:00 UTC, 4 kWh and 4 kW in
  the others, every day. Forecast for every hour of the next 7 days: the same, with a zero-width
  band; a day 10 x 10 + 14 x 4 = 156 kWh, peak 10 kW.
* t1/f1/m2: 6 kWh and 7 kW every hour: a day 144 kWh, peak 7 kW. Factory t1/f1 ('*'): hours of 16 or
  10 kWh, a day 300 kWh; peak 17 kW (the sum of its machines' peaks).
* t1/f2/m9: 20 + 5 sin(2 pi h / 24) kWh plus seeded noise, power 2 kW above it: fitted by the AR
  model (no hand values; the stored rows must equal the transform's on the stored KPIs).
* t2/f1/m1 (UTC; the same factory and machine names as t1's): 100 kWh and 120 kW every hour, so
  any leak between the tenants shows.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

from analytics_platform.results.kpis import recompute_kpis
from analytics_platform.transforms.machine_kpis import KpiOptions, fixed_periods
from analytics_platform_tests.support.stack import DatabaseHandle

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
FIRST = datetime(2026, 3, 1, tzinfo=UTC)  # the first hour with a KPI
ISSUE = datetime(2026, 3, 15, tzinfo=UTC)  # partition 2026-03-14's forecast starts here (14 days learned)
PARTITION = "2026-03-14"
EARLIER_PARTITION = "2026-03-13"  # an earlier issue (13 days learned), starting 2026-03-14
OPTIONS = KpiOptions(gap_s=3700, slot_s=3600, drivers=())  # hourly readings are not silences


def m1_kwh(hour_start: datetime) -> float:
    return 10.0 if 8 <= hour_start.hour < 18 else 4.0


def m9_kwh(hour_start: datetime, rng: random.Random) -> float:
    return 20.0 + 5.0 * math.sin(2 * math.pi * hour_start.hour / 24) + rng.gauss(0, 1.0)


# per machine: (tenant, factory, machine) -> kWh of the hour starting at a time, kW above the kWh
def _machines() -> dict[tuple[str, str, str], tuple]:
    rng = random.Random(25)
    noise = {FIRST - HOUR + HOUR * i: m9_kwh(FIRST - HOUR + HOUR * i, rng) for i in range(16 * 24 + 2)}
    return {
        ("t1", "f1", "m1"): (m1_kwh, 0.0),
        ("t1", "f1", "m2"): (lambda _at: 6.0, 1.0),
        ("t1", "f2", "m9"): (noise.__getitem__, 2.0),
        ("t2", "f1", "m1"): (lambda _at: 100.0, 20.0),
    }


def readings() -> list[tuple]:
    """(time, tenant, factory, machine, sensor, metric, value): from FIRST - 1 h (the reading before
    the first hour) to ISSUE + 1 h (the one closing the last hour, and one more)."""
    rows: list[tuple] = []
    for (tenant, factory, machine), (kwh, extra_kw) in _machines().items():
        counter = 1000.0
        at = FIRST - HOUR
        while at <= ISSUE + HOUR:
            rows.append((at, tenant, factory, machine, "meter", "energy", counter))
            if at > FIRST - HOUR:  # the power of the hour this stamp closes
                rows.append((at, tenant, factory, machine, "pwr", "power", kwh(at - HOUR) + extra_kw))
            counter += kwh(at)
            at += HOUR
    return rows


def load_plant(database: DatabaseHandle) -> None:
    """The tenants' zones, the readings above and the KPI hours of every UTC day before ISSUE."""
    with database.connect() as conn:
        conn.execute(
            "INSERT INTO analytics.plant_tenants (tenant_id, timezone, currency) "
            "VALUES ('t1', 'Asia/Bangkok', 'THB'), ('t2', 'UTC', 'USD')"
        )
        conn.execute(
            "INSERT INTO analytics.plant_emission_factors (tenant_id, kg_per_kwh) VALUES ('t1', 0.5), ('t2', 0.3)"
        )  # valid since forever
        with conn.cursor().copy(
            "COPY analytics.raw_sensor_readings (time, tenant_id, factory_id, machine_id, sensor_id, metric, value, "
            "schema_version, dedup_key, topic, kafka_partition, kafka_offset) FROM STDIN"
        ) as copy:
            for offset, row in enumerate(readings()):
                copy.write_row((*row, 1, f"forecast-{offset}", "sensors", 0, offset))
    day = FIRST
    with database.connect(database.pipeline_url) as conn:
        while day < ISSUE:
            periods = fixed_periods("hour", day, day + DAY, HOUR)
            recompute_kpis(conn, periods, OPTIONS, lookback=timedelta(seconds=OPTIONS.max_interval_s))
            day += DAY
