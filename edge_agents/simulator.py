"""A plant simulator: realistic canonical payloads on all four topics, produced to Kafka.

N tenants x factories x machines. Each machine has sensors (temperature, humidity, pressure,
vibration) that random-walk around a set point with a daily cycle, a health status with occasional
offline spells and a health score, and sweep batches; each factory has a lab station that reports
analytes per sample. Messages are keyed `<tenant>-<factory>-<machine>` (lab: the station) and carry
an `event_id`.

Energy and production inputs (per machine, all driven by the `now` passed to `messages`):

* run state (`device.health`, field `run_state`, alone in its message): one of `RUN_STATES`, sent
  when it changes and as a heartbeat every third round. The state at a time is, by precedence:
  `fault` while the health status is offline; an active random spell (`maintenance` 30-120 min,
  ~1 per 2 days; `fault` 2-20 min, ~1 per 4 h; `idle` 2-10 min, ~1 per 2 h; faults and idle
  spells only start outside planned stops); `planned_stop` in the daily schedule
  (`PLANNED_STOPS`: 12:00-12:30 UTC lunch break and 15 minutes from each shift change at
  06:00/14:00/22:00 UTC, every day of the week); otherwise `running`.
* weekly shift plan (`WEEKLY_CREW`, `crew(ts)`): three shifts a day, early 06-14, late 14-22 and
  night 22-06 UTC (a night shift belongs to the day it starts on). Monday-Friday every shift is
  fully crewed (1.0); the weekend runs with fewer people: Saturday 1.0 / 0.75 / 0.5, Sunday
  0.5 / 0.5 / 0.75 (the Sunday night shift prepares Monday). A reduced crew runs the line slower
  rather than stopping it, so a demo started on any day at any hour produces within minutes:
  production rate speed*crew/`IDEAL_CYCLE_TIME_S`, and the weekend's performance and energy fall.
  This is the plant's weekly seasonality (a weekday and its weekend differ; weekdays are alike).
* power (kW, `power`/`s-pwr`): running 40*(0.5 + 0.5*crew) (the line's auxiliaries scale with
  the crew) + 0.3*(outdoor_temp - 20)*k (k per machine, 0.8-1.2) + 30 kW per unit/s of production
  rate (~13.5 kW on a full crew), so ~53.5 kW on weekdays and ~37 kW on a Sunday day shift at
  20 degC; idle ~8 kW, stopped (planned_stop, maintenance, fault) ~1.5 kW; a slow +-3% drift and
  white noise on top, never negative.
* energy (kWh, `energy`/`s-meter`): the machine's power integrated over the elapsed `now` (steps
  of at most 10 s, split at quarter hours), starting at 10000-15000 kWh; monotonic except a rare
  meter reset to 0 (probability 1/`counter_reset_every` per energy message; 0 disables).
* production (`count_total`, `count_good`, sensor `s-count`, unit "units"): cumulative integer
  counters; while running a machine makes speed*crew/`IDEAL_CYCLE_TIME_S` units per second (speed
  0.85-0.95, random walk; crew from the weekly shift plan), ~97% of them good (good <= total
  always; both values are read at once and carry the same time). Both reset to 0 at 06:00 UTC
  daily (shift-start reset). Nothing is produced unless running, so nothing while offline.
* drivers (`outdoor_temp` degC / `s-outdoor-temp`, `outdoor_pressure` hPa / `s-outdoor-press`,
  every other round): a daily sinusoid 18 +- 7 degC (peak 15:00 UTC) and 1013 +- 8 hPa, each
  with slow variation that is a pure function of (seed, tenant, factory, time): every machine
  of a factory reports the same value at the same `now`.

Per machine per round: [run_state], temp, humidity, pressure, vibration, power, energy,
count_total, count_good, then outdoor_temp and outdoor_pressure every other round, health every
third, a sweep batch every sixth, and (first machine of each factory) a lab result every tenth.
A skipped run-state message (no change, no heartbeat) does not count towards `messages(count)`.

Fault injection (fractions of messages): `late` shifts a reading's time 5-90 minutes into the past
(edge replay after an outage), `duplicate` sends a message twice, `malformed` replaces it with one
of the contract violations the platform must reject (not JSON, not an object, missing key, wrong
type, NaN, bad time, far-future time, unknown metric).

`PlantSimulator` is deterministic for a seed and the sequence of clocks you pass in, so tests can
predict it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import signal
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

log = logging.getLogger("edge_agents.simulator")

SENSOR_TOPIC = "sensors.device.readings"
HEALTH_TOPIC = "device.health"
SWEEP_TOPIC = "sensors.sweep.readings"
LAB_TOPIC = "lab.results"
TOPICS = (SENSOR_TOPIC, HEALTH_TOPIC, SWEEP_TOPIC, LAB_TOPIC)

# metric -> (sensor id, set point, daily amplitude, noise, unit)
SENSORS: dict[str, tuple[str, float, float, float, str]] = {
    "temp": ("s-temp", 65.0, 4.0, 0.4, "degC"),
    "humidity": ("s-hum", 45.0, 8.0, 0.8, "%"),
    "pressure": ("s-press", 420.0, 15.0, 2.0, "kPa"),
    "vibration": ("s-vib", 3.2, 0.5, 0.15, "mm/s"),
}
# the power, energy, production and outdoor series: metric -> (sensor id, unit)
PLANT_SENSORS: dict[str, tuple[str, str]] = {
    "power": ("s-pwr", "kW"),
    "energy": ("s-meter", "kWh"),
    "count_total": ("s-count", "units"),
    "count_good": ("s-count", "units"),
    "outdoor_temp": ("s-outdoor-temp", "degC"),
    "outdoor_pressure": ("s-outdoor-press", "hPa"),
}
RUN_STATES = ("running", "idle", "planned_stop", "maintenance", "fault")
# ideal cycle time of every machine (seconds per unit); the platform's machine metadata seed uses it too
IDEAL_CYCLE_TIME_S = 2.0
# daily planned stops, UTC (start, end) as minutes of the day: the 15 minutes from each shift change
# (06:00, 14:00, 22:00) and the 12:00-12:30 lunch break
PLANNED_STOPS = ((6 * 60, 6 * 60 + 15), (12 * 60, 12 * 60 + 30), (14 * 60, 14 * 60 + 15), (22 * 60, 22 * 60 + 15))
# weekly shift plan: ISO weekday (Mon = 1) -> crew of its (early 06-14, late 14-22, night 22-06) shifts,
# UTC, as the fraction of the full line's rate; the night shift belongs to the day it starts on
WEEKLY_CREW: dict[int, tuple[float, float, float]] = {
    **{weekday: (1.0, 1.0, 1.0) for weekday in range(1, 6)},
    6: (1.0, 0.75, 0.5),
    7: (0.5, 0.5, 0.75),
}
SHIFT_START = timedelta(hours=6)  # the early shift starts the production day
# production counters reset daily at this UTC time (shift start)
COUNTER_RESET = timedelta(hours=6)
# random spells: state -> (mean starts per hour while eligible, min minutes, max minutes)
SPELLS: dict[str, tuple[float, int, int]] = {
    "maintenance": (1 / 48, 30, 120),
    "fault": (1 / 4, 2, 20),
    "idle": (1 / 2, 2, 10),
}
# offline (connectivity) spells of 2-15 minutes start at this mean rate per machine
OFFLINE_PER_HOUR = 1 / 6
MAX_STEP_S = 10.0  # integration step for energy and production
HEARTBEAT_ROUNDS = 3  # a run-state message every this many rounds even without a change
ANALYTES = {"Moisture": (12.5, 0.6, "%"), "pH": (6.8, 0.15, "pH"), "Protein": (21.0, 0.8, "%")}
MALFORMED_KINDS = (
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "nan_value",
    "bad_time",
    "future_time",
    "unknown_metric",
)


@dataclass(frozen=True)
class Message:
    topic: str
    key: str
    value: bytes
    kind: str = "ok"  # ok | late | duplicate | malformed:<kind>


@dataclass
class SimulatorConfig:
    tenants: int = 1
    factories: int = 2
    machines: int = 3
    rate: float = 50.0
    late: float = 0.0
    duplicate: float = 0.0
    malformed: float = 0.0
    seed: int = 7
    event_ids: bool = True
    counter_reset_every: int = 20000  # energy meter resets to 0 with probability 1/this per message


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


@dataclass
class _Machine:
    tenant: str
    factory: str
    machine: str
    walk: dict[str, float] = field(default_factory=dict)
    energy_kwh: float = 0.0
    offline_until: datetime | None = None
    clock: datetime | None = None  # how far energy and production are integrated
    temp_k: float = 1.0  # power sensitivity to outdoor temperature
    speed: float = 0.9  # fraction of the ideal rate while running
    power_drift: float = 0.0  # slow relative drift of the power draw
    spell: str | None = None  # an active random spell (maintenance, fault, idle) ...
    spell_until: datetime | None = None  # ... until then
    reported_state: str | None = None
    count_total: float = 0.0
    count_good: float = 0.0
    count_day: int = 0  # production day (starts at COUNTER_RESET) the counters belong to
    count_read: tuple[datetime, int, int] | None = None  # (time, total, good) of the last read
    health_at: datetime | None = None  # time of the last online health check (offline chance)

    @property
    def key(self) -> str:
        return f"{self.tenant}-{self.factory}-{self.machine}"


class PlantSimulator:
    """Generates the plant's messages; `messages(now, count)` is deterministic for a seed."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.machines = [
            _Machine(f"t{t + 1}", f"f{f + 1}", f"mc-{m + 1:02d}")
            for t in range(config.tenants)
            for f in range(config.factories)
            for m in range(config.machines)
        ]
        self._cycle = self._schedule()
        self._sample = 0

    def _schedule(self) -> Iterator[tuple[str, _Machine]]:
        """Round-robin over machines; per machine per round: the run state (on change or as a
        heartbeat), 5 sensor readings, energy, 2 production counters, every other round the 2
        outdoor drivers, and less often a health event, a sweep batch and (per factory) a lab
        result."""
        round_no = 0
        while True:
            for machine in self.machines:
                yield ("run_state" if round_no % HEARTBEAT_ROUNDS == 1 else "run_state_change"), machine
                for metric in (*SENSORS, "power", "energy", "count_total", "count_good"):
                    yield metric, machine
                if round_no % 2 == 0:
                    yield "outdoor_temp", machine
                    yield "outdoor_pressure", machine
                if round_no % 3 == 0:
                    yield "health", machine
                if round_no % 6 == 0:
                    yield "sweep", machine
                if round_no % 10 == 0 and machine.machine == "mc-01":
                    yield "lab", machine
            round_no += 1

    def messages(self, now: datetime, count: int) -> list[Message]:
        """The next `count` logical messages stamped around `now` (plus injected duplicates)."""
        out: list[Message] = []
        made = 0
        while made < count:
            kind, machine = next(self._cycle)
            message = self._make(kind, machine, now)
            if message is None:  # a run state without change or heartbeat
                continue
            made += 1
            out.extend(self._inject(message, now))
        return out

    # ----- payloads ---------------------------------------------------------------------------
    def _base(self, machine: _Machine, ts: datetime) -> dict:
        payload = {
            "time": iso(ts),
            "tenant_id": machine.tenant,
            "factory_id": machine.factory,
            "machine_id": machine.machine,
        }
        if self.config.event_ids:
            payload["event_id"] = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        return payload

    def _reading(self, machine: _Machine, ts: datetime, metric: str, value: float) -> Message:
        sensor_id, unit = PLANT_SENSORS[metric]
        body = {**self._base(machine, ts), "sensor_id": sensor_id, "metric": metric, "value": value, "unit": unit}
        return Message(SENSOR_TOPIC, machine.key, _dump(body))

    def _make(self, kind: str, machine: _Machine, now: datetime) -> Message | None:
        self._advance(machine, now)
        if kind in ("run_state", "run_state_change"):
            state = self._state(machine, now)
            if kind == "run_state_change" and state == machine.reported_state:
                return None
            machine.reported_state = state
            return Message(HEALTH_TOPIC, machine.key, _dump({**self._base(machine, now), "run_state": state}))
        if kind == "power":
            state = self._state(machine, now)
            noise = {"running": 1.0, "idle": 0.3}.get(state, 0.08)
            value = self._power_kw(machine, now, state) + self.rng.gauss(0, noise)
            return self._reading(machine, now, kind, round(max(value, 0.0), 3))
        if kind == "energy":
            if self.config.counter_reset_every > 0 and self.rng.random() < 1 / self.config.counter_reset_every:
                machine.energy_kwh = 0.0  # meter reset (replaced meter, PLC restart)
            return self._reading(machine, now, kind, round(machine.energy_kwh, 4))
        if kind == "count_total":
            machine.count_read = (now, int(machine.count_total), int(machine.count_good))
            return self._reading(machine, now, kind, machine.count_read[1])
        if kind == "count_good":
            # read together with the total (same time), so good <= total holds per reading
            ts, _total, good = machine.count_read or (now, int(machine.count_total), int(machine.count_good))
            return self._reading(machine, ts, kind, good)
        if kind == "outdoor_temp":
            return self._reading(machine, now, kind, round(self.outdoor_temp(machine, now), 2))
        if kind == "outdoor_pressure":
            return self._reading(machine, now, kind, round(self.outdoor_pressure(machine, now), 2))
        if kind in SENSORS:
            sensor_id, setpoint, amplitude, noise, unit = SENSORS[kind]
            hour = now.hour + now.minute / 60
            drift = machine.walk.get(kind, 0.0) + self.rng.gauss(0, noise / 3)
            machine.walk[kind] = max(-3 * noise, min(3 * noise, drift))
            value = setpoint + amplitude * math.sin(2 * math.pi * hour / 24) + drift + self.rng.gauss(0, noise)
            body = {
                **self._base(machine, now),
                "sensor_id": sensor_id,
                "metric": kind,
                "value": round(max(value, 0.0), 3),
                "unit": unit,
                "payload": {"source": "simulator"},
            }
            return Message(SENSOR_TOPIC, machine.key, _dump(body))
        if kind == "health":
            return Message(HEALTH_TOPIC, machine.key, _dump(self._health(machine, now)))
        if kind == "sweep":
            readings = [{"value": round(self.rng.gauss(65.0, 0.8), 3)} for _ in range(self.rng.randint(5, 12))]
            body = {
                **self._base(machine, now),
                "metric": "temp",
                "readings": readings,
                "batch_id": f"B-{self.rng.randint(1, 10**6):06d}",
                "unit": "degC",
            }
            return Message(SWEEP_TOPIC, machine.key, _dump(body))
        self._sample += 1
        analyte = list(ANALYTES)[self._sample % len(ANALYTES)]
        mean, spread, unit = ANALYTES[analyte]
        body = {
            **self._base(machine, now),
            "station_id": f"lab-{machine.factory}",
            "sample_id": f"S-{self._sample:05d}",
            "analyte": analyte,
            "value": round(self.rng.gauss(mean, spread), 3),
            "unit": unit,
        }
        return Message(LAB_TOPIC, f"{machine.tenant}-{machine.factory}-lab-{machine.factory}", _dump(body))

    # ----- run state, power, energy, production ------------------------------------------------
    def _state(self, machine: _Machine, ts: datetime) -> str:
        """The run state at `ts` from the offline spell, the active random spell and the schedule."""
        if machine.offline_until and ts < machine.offline_until:
            return "fault"
        if machine.spell and machine.spell_until and ts < machine.spell_until:
            return machine.spell
        return "planned_stop" if planned_stop(ts) else "running"

    def _roll_spell(self, machine: _Machine, ts: datetime, dt: float) -> None:
        """Maybe start a random spell at `ts` (one draw per integration step of `dt` seconds)."""
        if machine.spell_until and ts < machine.spell_until:
            return
        machine.spell = machine.spell_until = None
        roll = self.rng.random()
        scheduled = planned_stop(ts)
        for state, (per_hour, low, high) in SPELLS.items():
            chance = per_hour * dt / 3600
            if roll < chance:
                if state == "maintenance" or not scheduled:
                    machine.spell = state
                    machine.spell_until = ts + timedelta(minutes=self.rng.uniform(low, high))
                return
            roll -= chance

    def outdoor_temp(self, machine: _Machine, ts: datetime) -> float:
        """degC: 18 +- 7 daily (peak 15:00 UTC) plus slow variation, the same for a whole factory."""
        hours = ts.timestamp() / 3600
        p = self._phases(machine)
        daily = 7.0 * math.sin(2 * math.pi * (hours % 24 - 9) / 24)
        slow = 1.2 * math.sin(2 * math.pi * hours / 5.3 + p[0]) + 0.4 * math.sin(2 * math.pi * hours / 1.7 + p[1])
        return 18.0 + daily + slow

    def outdoor_pressure(self, machine: _Machine, ts: datetime) -> float:
        """hPa: 1013 +- 8, slowly varying, the same for a whole factory."""
        hours = ts.timestamp() / 3600
        p = self._phases(machine)
        return (
            1013.0
            + 5.0 * math.sin(2 * math.pi * hours / 41.0 + p[2])
            + 2.3 * math.sin(2 * math.pi * hours / 11.3 + p[3])
            + 0.6 * math.sin(2 * math.pi * hours / 2.3 + p[4])
        )

    def _phases(self, machine: _Machine) -> list[float]:
        digest = zlib.crc32(f"{self.config.seed}/{machine.tenant}/{machine.factory}".encode())
        return [2 * math.pi * ((digest >> (6 * i)) % 64) / 64 for i in range(5)]

    def _power_kw(self, machine: _Machine, ts: datetime, state: str) -> float:
        """The machine's power draw without white noise."""
        if state == "running":
            staffed = crew(ts)
            rate = machine.speed * staffed / IDEAL_CYCLE_TIME_S  # units per second
            auxiliaries = 40.0 * (0.5 + 0.5 * staffed)
            base = auxiliaries + 0.3 * (self.outdoor_temp(machine, ts) - 20.0) * machine.temp_k + 30.0 * rate
        elif state == "idle":
            base = 8.0
        else:
            base = 1.5
        return max(0.0, base * (1.0 + machine.power_drift))

    def _advance(self, machine: _Machine, now: datetime) -> None:
        """Integrate energy and production from the machine's clock to `now` in steps of at most
        MAX_STEP_S that never straddle a quarter hour (planned stops and the counter reset)."""
        if machine.clock is None:
            machine.clock = now
            machine.energy_kwh = round(10000.0 + self.rng.uniform(0, 5000), 1)
            machine.temp_k = self.rng.uniform(0.8, 1.2)
            machine.speed = self.rng.uniform(0.85, 0.95)
            machine.count_day = _production_day(now)
            return
        ts = machine.clock
        while ts < now:
            quarter = ts.replace(minute=ts.minute // 15 * 15, second=0, microsecond=0) + timedelta(minutes=15)
            end = min(now, ts + timedelta(seconds=MAX_STEP_S), quarter)
            dt = (end - ts).total_seconds()
            self._roll_spell(machine, ts, dt)
            state = self._state(machine, ts)
            machine.power_drift = max(-0.03, min(0.03, machine.power_drift + self.rng.gauss(0, 0.002)))
            machine.speed = max(0.85, min(0.95, machine.speed + self.rng.gauss(0, 0.003)))
            machine.energy_kwh += self._power_kw(machine, ts, state) * dt / 3600
            if state == "running":
                made = machine.speed * crew(ts) / IDEAL_CYCLE_TIME_S * dt
                machine.count_total += made
                machine.count_good += made * min(1.0, max(0.9, self.rng.gauss(0.97, 0.01)))
            day = _production_day(end)
            if day != machine.count_day:  # shift-start reset of the PLC counters (steps end at 06:00)
                machine.count_day = day
                machine.count_total = machine.count_good = 0.0
            ts = end
        machine.clock = max(machine.clock, now)

    def _health(self, machine: _Machine, now: datetime) -> dict:
        body = self._base(machine, now)
        if machine.offline_until and now < machine.offline_until:
            return {**body, "status": "offline", "level": "critical"}
        if machine.offline_until:
            machine.offline_until = None
            machine.health_at = now
            return {**body, "status": "online", "level": "ok"}
        since = (now - machine.health_at).total_seconds() if machine.health_at else 0.0
        machine.health_at = now
        if self.rng.random() < OFFLINE_PER_HOUR * max(since, 0.0) / 3600:
            machine.offline_until = now + timedelta(minutes=self.rng.randint(2, 15))
            return {**body, "status": "offline", "level": "critical"}
        if self.rng.random() < 0.5:
            return {**body, "status": "online", "level": "ok"}
        return {**body, "health_score": round(min(1.0, max(0.0, self.rng.gauss(0.93, 0.04))), 3)}

    # ----- faults -----------------------------------------------------------------------------
    def _inject(self, message: Message, now: datetime) -> list[Message]:
        roll = self.rng.random()
        cfg = self.config
        if roll < cfg.malformed:
            return [self._malformed(message)]
        roll -= cfg.malformed
        if roll < cfg.late:
            body = json.loads(message.value)
            body["time"] = iso(now - timedelta(minutes=self.rng.randint(5, 90)))
            return [Message(message.topic, message.key, _dump(body), "late")]
        roll -= cfg.late
        if roll < cfg.duplicate:
            return [message, Message(message.topic, message.key, message.value, "duplicate")]
        return [message]

    def _malformed(self, message: Message) -> Message:
        kinds = MALFORMED_KINDS if message.topic in (SENSOR_TOPIC, SWEEP_TOPIC) else MALFORMED_KINDS[:-1]
        kind = self.rng.choice(kinds)  # only sensor and sweep payloads carry a metric
        body = json.loads(message.value)
        if kind == "not_json":
            value = message.value[: len(message.value) // 2]
        elif kind == "not_object":
            value = _dump([body])
        elif kind == "missing_field":
            body.pop("tenant_id")
            value = _dump(body)
        elif kind == "wrong_type":
            body["factory_id"] = 17
            value = _dump(body)
        elif kind == "nan_value":
            value = json.dumps({**body, "value": float("nan")}).encode()
        elif kind == "bad_time":
            body["time"] = body["time"].replace("T", " ").rstrip("Z")
            value = _dump(body)
        elif kind == "future_time":
            body["time"] = "2099-01-01T00:00:00.000Z"
            value = _dump(body)
        else:
            body["metric"] = "flux_capacitance"
            value = _dump(body)
        return Message(message.topic, message.key, value, f"malformed:{kind}")


def planned_stop(ts: datetime) -> bool:
    """Whether `ts` is in one of the daily PLANNED_STOPS (UTC)."""
    minute = ts.astimezone(UTC).hour * 60 + ts.astimezone(UTC).minute
    return any(start <= minute < end for start, end in PLANNED_STOPS)


def crew(ts: datetime) -> float:
    """The weekly shift plan's crew at `ts` (WEEKLY_CREW): a pure function of the time, so the
    weekly pattern is the same for every seed and every clock, and tests can compute it."""
    shifted = ts.astimezone(UTC) - SHIFT_START  # 06:00 -> 00:00 of the shift's own day
    return WEEKLY_CREW[shifted.isoweekday()][shifted.hour // 8]


def _production_day(ts: datetime) -> int:
    """Days since the epoch, counted from COUNTER_RESET (06:00 UTC) on."""
    return int((ts.timestamp() - COUNTER_RESET.total_seconds()) // 86400)


def _dump(body: object) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


# ----- running against Kafka ---------------------------------------------------------------------


def run(
    config: SimulatorConfig,
    brokers: str,
    prefix: str = "",
    duration_s: float = 0.0,
    kafka_extra: dict | None = None,
) -> dict[str, int]:
    """Produce at `config.rate` messages/s until `duration_s` (0 = until SIGINT/SIGTERM)."""
    from confluent_kafka import KafkaException, Producer

    producer = Producer(
        {
            "bootstrap.servers": brokers,
            "enable.idempotence": True,
            "linger.ms": 20,
            "compression.type": "lz4",
            **(kafka_extra or {}),
        }
    )
    simulator = PlantSimulator(config)
    stop = {"now": False}

    def _stop(_signum: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    counts: dict[str, int] = {}
    started = time.monotonic()
    tick = 0.2
    next_tick = started
    carry = 0.0
    last_report = started
    while not stop["now"] and (duration_s <= 0 or time.monotonic() - started < duration_s):
        carry += config.rate * tick
        count, carry = int(carry), carry - int(carry)
        for message in simulator.messages(datetime.now(UTC), count):
            topic = prefix + message.topic
            try:
                producer.produce(topic, key=message.key.encode(), value=message.value)
            except BufferError:
                producer.poll(0.5)
                producer.produce(topic, key=message.key.encode(), value=message.value)
            except KafkaException as exc:
                log.error("produce failed: %s", exc)
                continue
            counts[message.kind.split(":")[0]] = counts.get(message.kind.split(":")[0], 0) + 1
        producer.poll(0)
        if time.monotonic() - last_report > 30:
            log.info("produced so far: %s", counts)
            last_report = time.monotonic()
        next_tick += tick
        time.sleep(max(0.0, next_tick - time.monotonic()))
    remaining = producer.flush(10)
    if remaining:
        log.warning("%d messages were still unacknowledged at exit", remaining)
    log.info("simulator stopped: %s", counts)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-simulator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--brokers", default=None, help="bootstrap servers (default: $KAFKA_BROKERS)")
    parser.add_argument("--topic-prefix", default=None, help="prepended to topics ($KAFKA_TOPIC_PREFIX)")
    parser.add_argument("--tenants", type=int, default=1)
    parser.add_argument("--factories", type=int, default=2, help="per tenant")
    parser.add_argument("--machines", type=int, default=3, help="per factory")
    parser.add_argument("--rate", type=float, default=50.0, help="messages per second, all topics")
    parser.add_argument("--late", type=float, default=0.0, help="fraction of readings sent late")
    parser.add_argument("--duplicate", type=float, default=0.0, help="fraction of messages sent twice")
    parser.add_argument("--malformed", type=float, default=0.0, help="fraction of malformed messages")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds to run (0 = until Ctrl-C)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-event-ids", action="store_true", help="rely on natural keys for dedup")
    parser.add_argument(
        "--counter-reset-every",
        type=int,
        default=20000,
        help="energy meter resets to 0 once per this many energy messages on average (0 = never)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s simulator %(levelname)s %(message)s")
    import os

    brokers = args.brokers or os.environ.get("KAFKA_BROKERS", "127.0.0.1:9092")
    prefix = args.topic_prefix if args.topic_prefix is not None else os.environ.get("KAFKA_TOPIC_PREFIX", "")
    for name in ("late", "duplicate", "malformed"):
        if not 0 <= getattr(args, name) <= 1:
            parser.error(f"--{name} must be a fraction between 0 and 1")
    config = SimulatorConfig(
        tenants=args.tenants,
        factories=args.factories,
        machines=args.machines,
        rate=args.rate,
        late=args.late,
        duplicate=args.duplicate,
        malformed=args.malformed,
        seed=args.seed,
        event_ids=not args.no_event_ids,
        counter_reset_every=args.counter_reset_every,
    )
    log.info(
        "producing %.0f msg/s to %s for %d machines",
        config.rate,
        brokers,
        config.tenants * config.factories * config.machines,
    )
    run(config, brokers, prefix, args.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
