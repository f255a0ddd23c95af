"""`PlantSimulator` without Kafka: deterministic messages that the platform's contracts accept,
and injected faults that they reject (or deduplicate) exactly as labelled."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import cache

import polars as pl

from analytics_platform.contracts.base import MESSAGE_SCHEMA, ContractConfig, ParsedBatch
from analytics_platform.contracts.catalog import PACKAGED_CATALOG, MetricCatalog
from analytics_platform.contracts.device import DeviceHealth
from analytics_platform.contracts.registry import load_known_metrics, registry
from edge_agents.simulator import (
    HEALTH_TOPIC,
    IDEAL_CYCLE_TIME_S,
    LAB_TOPIC,
    MALFORMED_KINDS,
    RUN_STATES,
    SENSOR_TOPIC,
    SWEEP_TOPIC,
    TOPICS,
    WEEKLY_CREW,
    Message,
    PlantSimulator,
    SimulatorConfig,
    crew,
    planned_stop,
)

NOW = datetime(2025, 8, 20, 3, 30, tzinfo=UTC)
CONFIG = ContractConfig(
    catalog=MetricCatalog.of(load_known_metrics(PACKAGED_CATALOG)),
    max_future_s=600,
    partitions_start=datetime(2024, 1, 1, tzinfo=UTC),
)
CONTRACTS = {c.default_topic: c for c in registry().contracts.values()}

# the reject reason each injected kind must produce
MALFORMED_REASON = {
    "not_json": "not_json",
    "not_object": "not_object",
    "missing_field": "missing_field",
    "wrong_type": "wrong_type",
    "nan_value": "non_finite",
    "bad_time": "bad_time",
    "future_time": "future_time",
    "unknown_metric": "unknown_metric",
}


def generate(count: int, **config: object) -> list[Message]:
    return PlantSimulator(SimulatorConfig(**config)).messages(NOW, count)


def parse_by_topic(messages: list[Message], kafka_ts: datetime = NOW) -> dict[str, tuple[list[Message], ParsedBatch]]:
    """Each topic's messages as one micro-batch (partition 0, offsets in order, Kafka time `kafka_ts`)."""
    out = {}
    for topic in TOPICS:
        mine = [m for m in messages if m.topic == topic]
        frame = pl.DataFrame(
            {
                "topic": [topic] * len(mine),
                "kafka_partition": [0] * len(mine),
                "kafka_offset": list(range(len(mine))),
                "kafka_key": [m.key.encode() for m in mine],
                "kafka_ts": [kafka_ts] * len(mine),
                "value": [m.value for m in mine],
            },
            schema=MESSAGE_SCHEMA,
        )
        out[topic] = (mine, CONTRACTS[topic].parse(frame, CONFIG))
    return out


def body_time(message: Message) -> datetime:
    return datetime.fromisoformat(json.loads(message.value)["time"].replace("Z", "+00:00"))


def test_mapping_covers_every_malformed_kind() -> None:
    assert set(MALFORMED_REASON) == set(MALFORMED_KINDS)


def test_same_seed_same_messages() -> None:
    config = {"late": 0.1, "duplicate": 0.1, "malformed": 0.1, "seed": 11}
    first, second = PlantSimulator(SimulatorConfig(**config)), PlantSimulator(SimulatorConfig(**config))
    for _ in range(3):  # successive calls stay in step too
        assert first.messages(NOW, 200) == second.messages(NOW, 200)


def test_another_seed_other_messages() -> None:
    assert generate(20, seed=1) != generate(20, seed=2)


def test_first_round_of_the_default_plant() -> None:
    # 1 tenant x 2 factories x 3 machines; round 0 per machine: the run state (first report), 10 sensor
    # readings (4 process sensors, power, energy, 2 production counters, 2 outdoor drivers), 1 health,
    # 1 sweep, and one lab result per factory (with its first machine)
    messages = generate(80)
    assert Counter(m.topic for m in messages) == {SENSOR_TOPIC: 60, HEALTH_TOPIC: 12, SWEEP_TOPIC: 6, LAB_TOPIC: 2}
    per_machine = Counter(json.loads(m.value)["metric"] for m in messages if m.topic == SENSOR_TOPIC)
    assert set(per_machine.values()) == {6}
    assert set(per_machine) == {
        *("temp", "humidity", "pressure", "vibration", "power", "energy"),
        *("count_total", "count_good", "outdoor_temp", "outdoor_pressure"),
    }
    assert Counter("run_state" in json.loads(m.value) for m in messages if m.topic == HEALTH_TOPIC) == {
        True: 6,
        False: 6,
    }
    assert {m.kind for m in messages} == {"ok"}
    assert sorted({m.key for m in messages}) == [
        "t1-f1-lab-f1",
        "t1-f1-mc-01",
        "t1-f1-mc-02",
        "t1-f1-mc-03",
        "t1-f2-lab-f2",
        "t1-f2-mc-01",
        "t1-f2-mc-02",
        "t1-f2-mc-03",
    ]
    assert all(body_time(m) == NOW for m in messages)


def test_keys_follow_tenant_factory_machine_and_the_lab_station() -> None:
    messages = generate(400, tenants=2, factories=2, machines=2)
    for message in messages:
        body = json.loads(message.value)
        if message.topic == LAB_TOPIC:
            assert message.key == f"{body['tenant_id']}-{body['factory_id']}-{body['station_id']}"
            assert body["station_id"] == f"lab-{body['factory_id']}"
        else:
            assert message.key == f"{body['tenant_id']}-{body['factory_id']}-{body['machine_id']}"
    assert {m.key.split("-")[0] for m in messages} == {"t1", "t2"}


def test_a_long_run_covers_all_four_topics() -> None:
    assert Counter(m.topic for m in generate(2000)) == {
        SENSOR_TOPIC: 1815,
        HEALTH_TOPIC: 141,
        SWEEP_TOPIC: 36,
        LAB_TOPIC: 8,
    }


def test_every_clean_message_passes_its_contract() -> None:
    messages = generate(2000)
    assert {m.kind for m in messages} == {"ok"}
    for topic, (mine, parsed) in parse_by_topic(messages).items():
        assert parsed.rejects.height == 0, (topic, parsed.rejects.select("reason", "detail").rows()[:3])
        assert parsed.accepted.all()
        # every message carries its own event id: one row per message, nothing deduplicated
        assert parsed.rows.height == len(mine)
        assert parsed.duplicates_in_batch == 0
        assert parsed.rows.get_column("event_id").n_unique() == len(mine)


def test_every_malformed_message_is_rejected_with_its_reason() -> None:
    messages = generate(2000, malformed=1.0)
    kinds = Counter(m.kind for m in messages)
    assert set(kinds) == {f"malformed:{kind}" for kind in MALFORMED_KINDS}
    pairs: Counter[tuple[str, str]] = Counter()
    for topic, (mine, parsed) in parse_by_topic(messages).items():
        assert parsed.rows.height == 0
        assert parsed.rejects.height == len(mine)
        assert not parsed.accepted.any()
        for reject in parsed.rejects.iter_rows(named=True):
            kind = mine[reject["kafka_offset"]].kind.removeprefix("malformed:")
            assert reject["reason"] == MALFORMED_REASON[kind], (topic, kind, reject["detail"])
            pairs[(topic, kind)] += 1
    # only sensor and sweep messages carry a metric to spoil
    assert {topic for topic, kind in pairs if kind == "unknown_metric"} == {SENSOR_TOPIC, SWEEP_TOPIC}
    assert sum(pairs.values()) == len(messages) == 2000


def test_duplicates_are_the_same_bytes_twice_and_collapse_to_one_row() -> None:
    messages = generate(300, duplicate=1.0)
    assert len(messages) == 600
    originals, copies = messages[0::2], messages[1::2]
    assert {m.kind for m in originals} == {"ok"}
    assert {m.kind for m in copies} == {"duplicate"}
    assert [(m.topic, m.key, m.value) for m in originals] == [(m.topic, m.key, m.value) for m in copies]
    for _topic, (mine, parsed) in parse_by_topic(messages).items():
        assert parsed.rejects.height == 0
        assert parsed.rows.height == len(mine) // 2
        assert parsed.duplicates_in_batch == len(mine) // 2


def test_late_messages_are_5_to_90_minutes_in_the_past_and_valid() -> None:
    messages = generate(500, late=1.0)
    assert len(messages) == 500
    assert {m.kind for m in messages} == {"late"}
    lags = [NOW - body_time(m) for m in messages]
    assert {lag % timedelta(minutes=1) for lag in lags} == {timedelta(0)}  # whole minutes (NOW has none)
    assert min(lags) == timedelta(minutes=5)
    assert max(lags) == timedelta(minutes=90)
    for _topic, (_mine, parsed) in parse_by_topic(messages).items():
        assert parsed.rejects.height == 0


def test_fault_fractions_label_every_message() -> None:
    messages = generate(400, late=0.25, duplicate=0.25, malformed=0.25)
    kinds = Counter(m.kind.split(":")[0] for m in messages)
    # seed 7: every logical message is sent once ("ok" includes the first copy of each duplicate) ...
    assert kinds == {"ok": 180, "late": 100, "malformed": 120, "duplicate": 85}
    assert kinds["ok"] + kinds["late"] + kinds["malformed"] == 400
    # ... plus the second copy of each duplicate
    assert len(messages) == 485


def test_no_faults_by_default() -> None:
    assert Counter(m.kind for m in generate(400)) == {"ok": 400}


# ----- run state, power, energy, production, outdoor drivers ------------------------------------


@cache
def clocked(start: datetime, seconds: int, **config: object) -> tuple[Message, ...]:
    """One machine's messages with the clock advancing 1 s per call (about one round per call)."""
    simulator = PlantSimulator(SimulatorConfig(**{"factories": 1, "machines": 1, **config}))
    out: list[Message] = []
    for second in range(seconds + 1):
        out.extend(simulator.messages(start + timedelta(seconds=second), 11))
    return tuple(out)


LUNCH = datetime(2025, 8, 20, 11, 0, tzinfo=UTC)  # 11:00-13:00 covers the 12:00-12:30 break
SHIFT = datetime(2025, 8, 20, 5, 0, tzinfo=UTC)  # 05:00-07:00 covers the 06:00 reset and stop


def series(messages: tuple[Message, ...], metric: str) -> list[tuple[datetime, float]]:
    rows = [json.loads(m.value) for m in messages if m.topic == SENSOR_TOPIC]
    return [(_time(r), r["value"]) for r in rows if r["metric"] == metric]


def run_states(messages: tuple[Message, ...]) -> list[tuple[datetime, str]]:
    rows = [json.loads(m.value) for m in messages if m.topic == HEALTH_TOPIC]
    return [(_time(r), r["run_state"]) for r in rows if "run_state" in r]


def _time(body: dict) -> datetime:
    return datetime.fromisoformat(body["time"].replace("Z", "+00:00"))


def test_run_state_messages_are_well_formed_and_pass_the_device_contract() -> None:
    messages = clocked(LUNCH, 7200)
    states = run_states(messages)
    assert {state for _, state in states} <= set(RUN_STATES)
    assert {"running", "planned_stop"} <= {state for _, state in states}
    for message in messages:
        body = json.loads(message.value)
        if "run_state" in body:
            assert set(body) == {"time", "tenant_id", "factory_id", "machine_id", "event_id", "run_state"}
    assert "run_state" in DeviceHealth.__struct_fields__  # the contract knows the field: validate fully
    mine, parsed = parse_by_topic(list(messages), LUNCH + timedelta(hours=2))[HEALTH_TOPIC]
    assert parsed.rejects.height == 0, parsed.rejects.select("reason", "detail").rows()[:3]
    assert parsed.rows.height == len(mine)


def test_run_state_is_sent_on_change_and_as_a_heartbeat() -> None:
    states = run_states(clocked(LUNCH, 7200))
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(states)]
    assert max(gaps) <= timedelta(seconds=4)  # a heartbeat every third round (~1 round a second here)
    changes = [(t, s) for (_, prev), (t, s) in itertools.pairwise(states) if s != prev]
    assert changes[0] == (datetime(2025, 8, 20, 12, 0, tzinfo=UTC), "planned_stop")
    assert changes[-1] == (datetime(2025, 8, 20, 12, 30, tzinfo=UTC), "running")


def test_planned_stop_schedule() -> None:
    day = datetime(2025, 8, 20, tzinfo=UTC)
    stopped = {m for m in range(24 * 60) if planned_stop(day + timedelta(minutes=m))}
    expected = {*range(360, 375), *range(720, 750), *range(840, 855), *range(1320, 1335)}
    assert stopped == expected


def test_weekly_shift_plan() -> None:
    # Monday 2025-08-18 00:00 UTC, hour by hour for a week: the shift that started at 22:00 the day
    # before holds until 06:00, then early 06-14, late 14-22, night 22-06
    monday = datetime(2025, 8, 18, tzinfo=UTC)
    week = [crew(monday + timedelta(hours=h)) for h in range(7 * 24)]
    sunday_night, full = [0.75] * 6, [1.0] * 24
    expected = (
        sunday_night + [1.0] * 18  # Monday: still Sunday's night shift until 06:00
        + full * 4  # Tuesday-Friday
        + [1.0] * 6 + [1.0] * 8 + [0.75] * 8 + [0.5] * 2  # Saturday: Friday's night, early, late, own night
        + [0.5] * 6 + [0.5] * 8 + [0.5] * 8 + [0.75] * 2  # Sunday: Saturday's night, early, late, own night
    )  # fmt: skip
    assert week == expected
    assert crew(datetime(2025, 8, 24, 21, 59, 59, tzinfo=UTC)) == 0.5  # the minute before Sunday's night shift
    assert crew(datetime(2025, 8, 24, 22, 0, tzinfo=UTC)) == 0.75
    assert set(WEEKLY_CREW) == set(range(1, 8))
    # the plan holds in any zone the caller's clock carries: 2025-08-24 00:30+02:00 is Saturday 22:30 UTC
    assert crew(datetime.fromisoformat("2025-08-24T00:30:00+02:00")) == 0.5


def test_a_sunday_shift_runs_at_half_the_rate_and_draws_less_power() -> None:
    # Sunday 09:00-10:00 UTC, crew 0.5, no spells for this seed: speed (0.85-0.95) x 0.5 / 2 s units a
    # second = 765-855 units in the hour; power 40 x 0.75 + 30 x 0.2125..0.2375 = 36.4-37.1 kW at 20 degC
    # (outdoor 18.3-21.2 degC here: at most +-0.4 kW), +-3 % drift, noise 1 kW
    messages = clocked(datetime(2025, 8, 24, 9, 0, tzinfo=UTC), 3600)
    assert {s for _, s in run_states(messages)} == {"running"}
    total = [v for _, v in series(messages, "count_total")]
    assert total[0] == 0 and 765 - 2 <= total[-1] <= 855 + 2
    power = [v for _, v in series(messages, "power")]
    assert 35.0 < sum(power) / len(power) < 38.5  # a weekday's running hours average 45-60 kW
    assert max(power) < 42


def test_lunch_break_is_a_planned_stop_without_production() -> None:
    messages = clocked(LUNCH, 7200)
    noon, half_past = datetime(2025, 8, 20, 12, 0, tzinfo=UTC), datetime(2025, 8, 20, 12, 30, tzinfo=UTC)
    assert {s for t, s in run_states(messages) if noon <= t < half_past} == {"planned_stop"}
    for metric in ("count_total", "count_good"):
        during = {v for t, v in series(messages, metric) if noon <= t <= half_past}
        assert len(during) == 1
    power = [v for t, v in series(messages, "power") if noon <= t < half_past]
    assert min(power) >= 1.0 and max(power) <= 2.0
    running = [v for t, v in series(messages, "power") if t < noon]
    assert 45 < sum(running) / len(running) < 60
    assert min(running) > 35


def test_production_rate_while_running_and_good_never_above_total() -> None:
    messages = clocked(LUNCH, 7200)
    total, good = series(messages, "count_total"), series(messages, "count_good")
    assert [t for t, _ in total] == [t for t, _ in good]  # read together
    assert all(g <= n for (_, g), (_, n) in zip(good, total, strict=True))
    assert all(isinstance(v, int) for _, v in total + good)
    assert [v for _, v in total] == sorted(v for _, v in total)  # no reset between 11:00 and 13:00
    # an hour of running (11:00-12:00, no spells for this seed): 0.85-0.95 of the ideal rate
    made = max(v for t, v in total if t <= datetime(2025, 8, 20, 12, 0, tzinfo=UTC))
    assert 0.85 * 3600 / IDEAL_CYCLE_TIME_S - 2 <= made <= 0.95 * 3600 / IDEAL_CYCLE_TIME_S + 2
    assert 0.95 < good[-1][1] / total[-1][1] < 0.99


def test_production_counters_reset_at_06_00() -> None:
    messages = clocked(SHIFT, 7200)
    six, quarter_past = datetime(2025, 8, 20, 6, 0, tzinfo=UTC), datetime(2025, 8, 20, 6, 15, tzinfo=UTC)
    for metric in ("count_total", "count_good"):
        values = series(messages, metric)
        before = [v for t, v in values if t < six]
        after = [v for t, v in values if t >= six]
        assert before == sorted(before) and after == sorted(after)
        assert before[-1] > 1000  # an hour of production since the first reading at 05:00
        assert after[0] == 0  # reset at 06:00, then the shift-change stop until 06:15
        assert {v for t, v in values if six <= t <= quarter_past} == {0}
        assert after[-1] > 1000
    assert {s for t, s in run_states(messages) if six <= t < quarter_past} == {"planned_stop"}


def test_energy_counter_integrates_power() -> None:
    messages = clocked(LUNCH, 7200, counter_reset_every=0)
    energy, power = series(messages, "energy"), series(messages, "power")
    assert 10000 <= energy[0][1] <= 15000
    assert [v for _, v in energy] == sorted(v for _, v in energy)
    start, end = energy[0][0], energy[-1][0]
    inside = [(t, v) for t, v in power if start <= t <= end]
    integral = sum(v * (b - a).total_seconds() / 3600 for (a, v), (b, _) in itertools.pairwise(inside))
    used = energy[-1][1] - energy[0][1]
    assert 70 < used < 110  # ~1.5 h running at ~53 kW, a half-hour stop at ~1.5 kW
    assert abs(used - integral) / used < 0.01


def test_energy_meter_resets_to_zero_sometimes() -> None:
    energy = [v for _, v in series(clocked(LUNCH, 1800, counter_reset_every=500), "energy")]
    drops = [(a, b) for a, b in itertools.pairwise(energy) if b < a]
    assert drops and all(b == 0.0 for _, b in drops)
    assert len(drops) < len(energy) / 100


def test_offline_machines_report_a_fault_and_produce_nothing() -> None:
    messages = clocked(LUNCH, 7200, seed=6)
    health = [json.loads(m.value) for m in messages if m.topic == HEALTH_TOPIC]
    events = [(_time(h), h["status"]) for h in health if "status" in h]
    spells = [
        (t, next(u for u, s in events if u > t and s == "online"))
        for (t, s), (_, prev) in zip(events[1:], events, strict=False)
        if s == "offline" and prev != "offline"
    ]
    assert spells  # seed 6 has offline spells in these two hours
    total = series(messages, "count_total")
    for start, end in spells:
        assert {s for t, s in run_states(messages) if start < t < end} == {"fault"}
        assert len({v for t, v in total if start < t < end}) == 1


def test_outdoor_drivers_are_shared_by_a_factory() -> None:
    simulator = PlantSimulator(SimulatorConfig(factories=2, machines=3))
    rows = []
    for minute in range(0, 24 * 60, 30):
        messages = simulator.messages(NOW + timedelta(minutes=minute), 160)  # >= 2 rounds
        rows += [json.loads(m.value) for m in messages if m.topic == SENSOR_TOPIC]
    for metric, low, high in (("outdoor_temp", 9.0, 27.0), ("outdoor_pressure", 1005.0, 1021.0)):
        by_time: dict[tuple[str, str], dict[str, float]] = {}
        for row in rows:
            if row["metric"] == metric:
                by_time.setdefault((row["factory_id"], row["time"]), {})[row["machine_id"]] = row["value"]
        assert {len(readings) for readings in by_time.values()} == {3}  # every machine of the factory ...
        assert {len(set(readings.values())) for readings in by_time.values()} == {1}  # ... the same value
        assert len(by_time) == 2 * 48  # both factories, every half hour of a day
        values = [v for readings in by_time.values() for v in readings.values()]
        assert low <= min(values) and max(values) <= high
        assert max(values) - min(values) > (5.0 if metric == "outdoor_temp" else 1.0)
