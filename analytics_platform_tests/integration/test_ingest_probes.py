"""Ingest as a real plant breaks it, through the real broker and database: an edge gateway whose
clock runs days ahead stamps both its readings and its Kafka messages (CreateTime) with that clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from confluent_kafka import Producer

from analytics_platform.contracts.registry import bind_domains, contract_config
from analytics_platform.ingest import store
from analytics_platform.ingest.drain import Drain
from analytics_platform.ingest.rederive import rederive_hour
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.stack import DatabaseHandle, domain_drain, domain_topic


def make_drain(settings: PlatformSettings) -> Drain:
    return domain_drain(settings, "sensor", cold_fetch_s=30.0)


def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def reading(at: datetime, value: float, event_id: str) -> bytes:
    return json.dumps(
        {
            "time": iso(at),
            "tenant_id": "t1",
            "factory_id": "f1",
            "machine_id": "mc-01",
            "sensor_id": "s-001",
            "metric": "temp",
            "value": value,
            "event_id": event_id,
        }
    ).encode()


def produce_stamped(brokers: str, topic: str, messages: list[tuple[bytes, datetime]]) -> None:
    """Produce to partition 0 with an explicit Kafka timestamp (CreateTime), as a producer whose
    clock reads `at` does; wait for every acknowledgement."""
    producer = Producer({"bootstrap.servers": brokers, "enable.idempotence": True})
    failures: list[str] = []
    for value, at in messages:
        producer.produce(
            topic,
            key=b"t1-f1-mc-01",
            value=value,
            partition=0,
            timestamp=int(at.timestamp() * 1000),
            on_delivery=lambda err, _m: failures.append(str(err)) if err else None,
        )
    assert producer.flush(30) == 0 and not failures, failures


def test_an_edge_clock_days_ahead_cannot_carry_its_readings_past_the_future_bound(
    settings: PlatformSettings, database: DatabaseHandle
) -> None:
    # The gateway's clock is 2 days fast: its readings say "now + 2 d" and so does the Kafka timestamp
    # its producer sets. A reading two days in the future is a contract violation (future_time)
    # whatever the sender's own clock claims; the bound is judged against when the platform got it.
    now = datetime.now(UTC).replace(microsecond=0)
    skewed = now + timedelta(days=2)
    topic = domain_topic(settings)
    produce_stamped(
        settings.kafka_brokers,
        topic,
        [
            (reading(skewed, 21.5, "fast-1"), skewed),  # offset 0: two days ahead of the platform
            (reading(now - timedelta(hours=1), 20.0, "fast-2"), skewed),  # offset 1: a correct time
        ],
    )
    make_drain(settings).run(budget_s=30)

    rejects = database.query(
        "SELECT kafka_offset, reason FROM analytics.rejected_message WHERE topic = %s ORDER BY 1", (topic,)
    )
    assert rejects == [(0, "future_time")], "a reading 2 days ahead was stored because its sender's clock agreed"
    assert database.query("SELECT event_id, value FROM analytics.raw_sensor_readings ORDER BY 1") == [("fast-2", 20.0)]


def test_a_batch_the_drain_commits_while_its_hour_is_rederived_stays_in_raw(
    settings: PlatformSettings, database: DatabaseHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator adds a metric mid-stream and re-admits its rejects (or re-materialises the raw hour from
    # the UI) while the drain goes on committing readings of that same, current hour. The re-derivation reads
    # the hour's landed messages, parses them, then replaces the hour's raw rows: a batch the drain committed
    # in between must not be deleted with the rows it replaces.
    hour = datetime(2025, 8, 20, 3, tzinfo=UTC)
    topic = domain_topic(settings, "sensor")
    produce_stamped(
        settings.kafka_brokers, topic, [(reading(hour + timedelta(minutes=m), m, f"e-{m}"), hour) for m in (1, 2)]
    )
    assert make_drain(settings).run(budget_s=30).rows == 2
    binding = next(b for b in bind_domains(settings) if b.domain == "sensor")

    read_landing = store.read_landing

    def drain_commits_meanwhile(*args, **kwargs):
        messages = read_landing(*args, **kwargs)
        produce_stamped(settings.kafka_brokers, topic, [(reading(hour + timedelta(minutes=3), 3.0, "e-3"), hour)])
        assert make_drain(settings).run(budget_s=30).rows == 1  # committed while the hour is being re-derived
        return messages

    monkeypatch.setattr(store, "read_landing", drain_commits_meanwhile)
    with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
        rederive_hour(conn, binding, contract_config(settings), hour)

    assert database.query("SELECT count(*) FROM analytics.kafka_landing") == [(3,)]
    assert database.query("SELECT event_id, value FROM analytics.raw_sensor_readings ORDER BY time") == [
        ("e-1", 1.0),
        ("e-2", 2.0),
        ("e-3", 3.0),
    ], "a reading the drain committed while its hour was re-derived was deleted from raw (it stays only in landing)"


def test_poison_payloads_in_the_middle_of_a_batch_are_rejected_with_their_reason_and_the_rest_lands(
    settings: PlatformSettings, database: DatabaseHandle
) -> None:
    # An edge gateway forwards whatever its PLC driver put in `payload`: a runaway nesting, a number beyond
    # any database's range, a broken escape. Each is one message of a batch; the batch must not fail with it.
    hour = datetime(2025, 8, 20, 3, tzinfo=UTC)

    def with_payload(minute: int, payload: str) -> bytes:
        head = reading(hour + timedelta(minutes=minute), float(minute), f"e-{minute}").decode()[:-1]
        return f'{head}, "payload": {payload}}}'.encode()

    poison = {
        1: "[" * 2000 + "]" * 2000,  # nested deeper than any decoder recurses
        2: '{"counter": 1e999999}',  # beyond PostgreSQL's numeric range (jsonb numbers are numeric)
        3: '{"counter": 0.5e-16383}',  # 16,384 digits after the point: beyond it too
        4: '{"tag": "\\ud800"}',  # a lone surrogate escape: not JSON text
    }
    messages = [
        with_payload(0, "{}"),
        *(with_payload(m, p) for m, p in poison.items()),
        with_payload(5, '{"ok": 1e300}'),
    ]
    produce_stamped(settings.kafka_brokers, domain_topic(settings), [(m, hour) for m in messages])

    report = make_drain(settings).run(budget_s=30)

    assert (report.rows, report.rejects) == (2, 4)
    assert database.query("SELECT event_id FROM analytics.raw_sensor_readings ORDER BY time") == [("e-0",), ("e-5",)]
    rejects = database.query("SELECT kafka_offset, reason, detail FROM analytics.rejected_message ORDER BY 1")
    assert [(offset, reason) for offset, reason, _ in rejects] == [
        (1, "not_json"),
        (2, "invalid_value"),
        (3, "invalid_value"),
        (4, "not_json"),
    ], rejects
    assert "nested" in rejects[0][2] and "numeric range" in rejects[1][2] and "NaN" not in rejects[3][2], rejects
