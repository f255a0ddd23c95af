"""`PlantSimulator` without Kafka: deterministic messages that the platform's contracts accept,
and injected faults that they reject (or deduplicate) exactly as labelled."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import polars as pl

from analytics_platform.contracts.base import MESSAGE_SCHEMA, ContractConfig, ParsedBatch
from analytics_platform.contracts.registry import load_known_metrics, registry
from analytics_platform.settings import REPO_ROOT
from edge_agents.simulator import (
    HEALTH_TOPIC,
    LAB_TOPIC,
    MALFORMED_KINDS,
    SENSOR_TOPIC,
    SWEEP_TOPIC,
    TOPICS,
    Message,
    PlantSimulator,
    SimulatorConfig,
)

NOW = datetime(2025, 8, 20, 3, 30, tzinfo=UTC)
CONFIG = ContractConfig(
    known_metrics=load_known_metrics(REPO_ROOT / "analytics_platform" / "config" / "metrics.yaml"),
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


def parse_by_topic(messages: list[Message]) -> dict[str, tuple[list[Message], ParsedBatch]]:
    """Each topic's messages as one micro-batch (partition 0, offsets in order, Kafka time NOW)."""
    out = {}
    for topic in TOPICS:
        mine = [m for m in messages if m.topic == topic]
        frame = pl.DataFrame(
            {
                "topic": [topic] * len(mine),
                "kafka_partition": [0] * len(mine),
                "kafka_offset": list(range(len(mine))),
                "kafka_key": [m.key.encode() for m in mine],
                "kafka_ts": [NOW] * len(mine),
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
    # 1 tenant x 2 factories x 3 machines; round 0: 6 sensor readings, 1 health, 1 sweep per machine,
    # and one lab result per factory (with its first machine)
    messages = generate(50)
    assert Counter(m.topic for m in messages) == {SENSOR_TOPIC: 36, HEALTH_TOPIC: 6, SWEEP_TOPIC: 6, LAB_TOPIC: 2}
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
        SENSOR_TOPIC: 1832,
        HEALTH_TOPIC: 102,
        SWEEP_TOPIC: 54,
        LAB_TOPIC: 12,
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
    assert kinds == {"ok": 184, "late": 112, "malformed": 104, "duplicate": 86}
    assert kinds["ok"] + kinds["late"] + kinds["malformed"] == 400
    # ... plus the second copy of each duplicate
    assert len(messages) == 486


def test_no_faults_by_default() -> None:
    assert Counter(m.kind for m in generate(400)) == {"ok": 400}
