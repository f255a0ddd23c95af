"""A plant simulator: realistic canonical payloads on all four topics, produced to Kafka.

N tenants x factories x machines. Each machine has sensors (temperature, humidity, pressure,
vibration, power, a cumulative energy counter) that random-walk around a set point with a daily
cycle, a health status with occasional offline spells and a health score, and sweep batches; each
factory has a lab station that reports analytes per sample. Messages are keyed
`<tenant>-<factory>-<machine>` (lab: the station) and carry an `event_id`.

Fault injection (fractions of messages): `late` shifts a reading's time 5-90 minutes into the past
(edge replay after an outage), `duplicate` sends a message twice, `malformed` replaces it with one
of the contract violations the platform must reject (not JSON, not an object, missing key, wrong
type, NaN, bad time, far-future time, unknown metric).

`PlantSimulator` is deterministic for a seed and a clock you pass in, so tests can predict it.
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
    "power": ("s-pwr", 55.0, 12.0, 1.5, "kW"),
}
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
        """Round-robin over machines; per machine per round: 5 sensor readings, and less often
        a health event, a sweep batch and (per factory) a lab result."""
        round_no = 0
        while True:
            for machine in self.machines:
                for metric in SENSORS:
                    yield metric, machine
                yield "energy", machine
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
        for _ in range(count):
            kind, machine = next(self._cycle)
            message = self._make(kind, machine, now)
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

    def _make(self, kind: str, machine: _Machine, now: datetime) -> Message:
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
        if kind == "energy":
            machine.energy_kwh += 55.0 / 3600 * 6
            body = {
                **self._base(machine, now),
                "sensor_id": "s-meter",
                "metric": "energy",
                "value": round(machine.energy_kwh, 4),
                "unit": "kWh",
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

    def _health(self, machine: _Machine, now: datetime) -> dict:
        body = self._base(machine, now)
        if machine.offline_until and now < machine.offline_until:
            return {**body, "status": "offline", "level": "critical"}
        if machine.offline_until:
            machine.offline_until = None
            return {**body, "status": "online", "level": "ok"}
        if self.rng.random() < 0.01:
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
