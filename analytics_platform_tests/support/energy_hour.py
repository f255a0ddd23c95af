"""The energy hour: the messages of t1/f1/mc-01 that integration/test_energy.py checks KPI by KPI and
the dashboard plant (support/dashboard.py) reuses, with the figures they must give worked out by hand.

Hour 2025-08-20 03:00 UTC of t1/f1/mc-01 (t1 is Asia/Bangkok: 10:00 local, the peak band at 4.18).
A counter or power reading at t1 measures (t0, t1] back to the previous reading of its series, and is
booked to the hours that interval overlaps, in proportion to time (docs/kpis.md):
  run state: running (since 02:55), fault 03:20-03:30, running, planned_stop from 03:50
    -> running 2400 s, fault 600 s, planned 600 s; availability 2400 / 3000 = 0.8
  count_total every 5 min from 02:55 (5000): +108 at 03:00..03:20 and 03:40..03:50, reset at 03:35
    (reads 108: +108), +0 at 03:25, 03:30, 03:55. The +108 read at 03:00 was made in 02:55-03:00 (hour
    02's); 03:05..03:55 close 8 x 108 = 864 units in the hour, and 03:55-04:00 is still open (no count
    after 03:55): performance 2.0 x 864 / 2400 = 0.72
  count_good: +105 with each +108 -> 8 x 105 = 840; quality 840 / 864; OEE = good x ideal / busy =
    840 x 2.0 / 3000 = 0.56 (= 0.8 x 0.72 x 840 / 864)
  energy 1000 (02:55) -> 1012 (03:30) -> 1020 (03:55): 12 kWh over 2100 s of which 1800 s in the hour,
    + 8 -> 12 x 1800 / 2100 + 8 = 72/7 + 8 = 128/7 = 18.29 kWh (the other 12/7 are hour 02's),
    cost x 4.18, carbon x 0.4999; 03:55-04:00 still open
  power every 5 min: 50 kW running, 80 at 03:10, 2 kW in fault / planned; each sample holds the 300 s
    before it, so the hour is 03:05..04:00: 438 - 50 (03:00) + 2 (04:00) = 390 over 12 -> 32.5 kW
    average; peak 80 at 03:10
  The day holds all of these intervals: 972 units, 945 good, 20 kWh.
  temp every 10 s for three hours around 65 (bounded), +30 spikes at 03:12:00 and 03:41:00
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

KEY = "t1-f1-mc-01"
HOUR = datetime(2025, 8, 20, 3, tzinfo=UTC)
SPIKES = (HOUR + timedelta(minutes=12), HOUR + timedelta(minutes=41))


def iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def message(ts: datetime, **fields: object) -> bytes:
    return json.dumps(
        {"time": iso(ts), "tenant_id": "t1", "factory_id": "f1", "machine_id": "mc-01", **fields}
    ).encode()


def sensor(ts: datetime, metric: str, value: float, sensor_id: str) -> bytes:
    return message(ts, sensor_id=sensor_id, metric=metric, value=value)


def minutes(m: int) -> datetime:
    return HOUR + timedelta(minutes=m)


def sensor_messages() -> list[bytes]:
    out = []
    total, good = 5000, 4000
    out += [sensor(minutes(-5), "count_total", total, "s-count"), sensor(minutes(-5), "count_good", good, "s-count")]
    for m in range(0, 60, 5):
        if m == 35:
            total, good = 108, 105  # the PLC reset its counters
        elif m <= 20 or 35 < m <= 50:
            total, good = total + 108, good + 105
        out += [sensor(minutes(m), "count_total", total, "s-count"), sensor(minutes(m), "count_good", good, "s-count")]
        power = 2.0 if 20 <= m < 30 or m >= 50 else (80.0 if m == 10 else 50.0)
        out.append(sensor(minutes(m), "power", power, "s-pwr"))
    out += [sensor(minutes(-5), "power", 50.0, "s-pwr"), sensor(minutes(60), "power", 2.0, "s-pwr")]
    out += [sensor(minutes(m), "energy", kwh, "s-meter") for m, kwh in ((-5, 1000.0), (30, 1012.0), (55, 1020.0))]
    for step in range(3 * 360):  # 01:00 .. 03:59:50, every 10 s
        ts = HOUR - timedelta(hours=2) + timedelta(seconds=10 * step)
        value = 65.0 + 0.5 * math.sin(2 * math.pi * step / 60) + 0.1 * ((step * 7) % 5 - 2)
        out.append(sensor(ts, "temp", round(value + (30.0 if ts in SPIKES else 0.0), 3), "s-temp"))
    return out


STATES = [(-5, "running"), (20, "fault"), (30, "running"), (50, "planned_stop")]
