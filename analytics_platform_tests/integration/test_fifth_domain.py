"""A fifth domain, registered by configuration only, end to end on the real stack.

`analytics_platform_tests/extra_domains/energy_meter.py` defines an energy-meter contract outside the
platform's package; the test sets DOMAIN_MODULES (the settings' and the edge agent's) and nothing
else: the migration runner creates its raw table, the edge agent's HTTP source accepts and publishes
its readings (keyed by meter), the drain sensor consumes them from the broker into the table and sets
the bad messages aside, the raw asset and its checks materialise in Dagster, the API serves the
rejects and the Prometheus metrics name the domain's table. This is the recipe of
docs/configuration.md, "Adding a domain".
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import httpx
import orjson
import psycopg
from fastapi.testclient import TestClient

from analytics_platform.api.app import create_app
from analytics_platform.api.keys import create_key
from analytics_platform.contracts.registry import bind_domains
from analytics_platform.defs import build_definitions
from analytics_platform.devstack.broker import ensure_topics
from analytics_platform.migrations import apply_migrations
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.edge import agent_config, decoded, read_topic, running_agent, wait_for
from analytics_platform_tests.support.stack import DatabaseHandle, produce
from edge_agents.canonical import content_event_id
from edge_agents.sources.http import HTTPSource

MODULE = "analytics_platform_tests.extra_domains.energy_meter"
DOMAIN = "energy_meter"
RAW = dg.AssetKey("raw_energy_meter_readings")
# two days ago: inside TimescaleDB's 90-day raw retention, whose job would drop older chunks
HOUR = (datetime.now(UTC) - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)


def at(minutes: int) -> str:
    return (HOUR + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def meter(meter_id: str, minutes: int, kwh: float, kw: float) -> dict:
    return {
        "time": at(minutes),
        "tenant_id": "t1",
        "factory_id": "f1",
        "meter_id": meter_id,
        "energy_kwh": kwh,
        "power_kw": kw,
    }


def with_fifth_domain(settings: PlatformSettings) -> PlatformSettings:
    """The test's settings plus DOMAIN_MODULES: the one thing a deployment sets."""
    given = {name: getattr(settings, name) for name in settings.model_fields_set}
    return PlatformSettings(**given, domain_modules=[MODULE])


def test_an_energy_meter_domain_runs_end_to_end_from_configuration_alone(
    settings: PlatformSettings, database: DatabaseHandle, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    five = with_fifth_domain(settings)
    assert five.domains_enabled == ["sensor", "device", "lab", "sweep", DOMAIN]
    (binding,) = [b for b in bind_domains(five) if b.domain == DOMAIN]
    topic = five.kafka_topic_prefix + "meters.energy.readings"
    assert binding.topics == (topic,)

    # the migration runner creates the table from the contract
    echoed: list[str] = []
    apply_migrations(database.admin_url, echo=echoed.append, domain_modules=five.domain_modules)
    assert [m for m in echoed if m.startswith("raw table")] == [
        "raw table raw_energy_meter_readings (energy_meter): applied"
    ]
    assert database.query(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema = 'analytics' AND table_name = 'raw_energy_meter_readings' ORDER BY ordinal_position"
    ) == [
        ("time", "timestamp with time zone", "NO"),
        ("tenant_id", "text", "NO"),
        ("factory_id", "text", "NO"),
        ("meter_id", "text", "NO"),
        ("energy_kwh", "double precision", "NO"),
        ("power_kw", "double precision", "NO"),
        ("event_id", "text", "YES"),
        ("schema_version", "smallint", "NO"),
        ("dedup_key", "text", "NO"),
        ("topic", "text", "NO"),
        ("kafka_partition", "integer", "NO"),
        ("kafka_offset", "bigint", "NO"),
        ("ingested_at", "timestamp with time zone", "NO"),
    ]
    ensure_topics(five.kafka_client_config(), [topic], partitions=3)

    # the edge agent's HTTP source accepts the domain, refuses a bad batch whole, publishes keyed by meter
    good = [meter("em-01", 0, 1200.5, 42.0), meter("em-02", 1, 88.25, 3.5)]
    config = agent_config(
        five.kafka_brokers,
        five.kafka_topic_prefix,
        tmp_path / "queue.db",
        [{"type": "http", "name": "http", "port": 0}],
        contract={"domain_modules": MODULE},
    )
    with running_agent(config) as agent:
        http = agent.sources[0]
        assert isinstance(http, HTTPSource)
        port = wait_for(lambda: http.port, 60, "the HTTP source to listen")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            refused = client.post(f"/v1/ingest/{DOMAIN}", json=[good[0], meter("em-03", 2, -1.0, 1.0)])
            assert refused.status_code == 422
            assert [(p["index"], p["reason"]) for p in refused.json()["detail"]] == [(1, "invalid_value")]
            accepted = client.post(f"/v1/ingest/{DOMAIN}", json=good)
            assert (accepted.status_code, accepted.json()) == (202, {"accepted": 2})
        published = read_topic(five.kafka_brokers, topic, expect=2)
        wait_for(lambda: agent.engine.depth == 0, 30, "the agent's queue to drain")
    by_meter = sorted(published, key=lambda m: m.key())
    assert [m.key() for m in by_meter] == [b"t1-f1-em-01", b"t1-f1-em-02"]
    assert decoded(by_meter) == [{**p, "event_id": content_event_id(DOMAIN, p)} for p in good]

    # bad messages straight to the broker: the drain sets them aside with their reasons
    bad = [
        orjson.dumps(meter("em-01", 5, -3.0, 1.0)),  # a counter below zero
        b"{not json",
        orjson.dumps({**meter("em-01", 6, 1.0, 1.0), "power_kw": "fast"}),
    ]
    produce(five.kafka_brokers, topic, [("t1-f1-em-01", value) for value in bad])

    defs = build_definitions(five, secrets_from_env=False)
    sensor = defs.resolve_sensor_def(f"drain_{DOMAIN}")
    result = sensor(dg.build_sensor_context(instance=instance, resources=defs.resources))
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    live = {e.check_name: e.passed for e in result.asset_events if isinstance(e, dg.AssetCheckEvaluation)}
    assert live == {"keys_not_null": True, "time_in_partition": True, "values_finite": True, "reject_ratio": False}
    assert database.query(
        "SELECT time, tenant_id, factory_id, meter_id, energy_kwh, power_kw, event_id, topic "
        "FROM analytics.raw_energy_meter_readings ORDER BY meter_id"
    ) == [
        (HOUR, "t1", "f1", "em-01", 1200.5, 42.0, content_event_id(DOMAIN, good[0]), topic),
        (HOUR + timedelta(minutes=1), "t1", "f1", "em-02", 88.25, 3.5, content_event_id(DOMAIN, good[1]), topic),
    ]
    assert database.query(
        "SELECT reason, event_time FROM analytics.rejected_message WHERE topic = %s ORDER BY reason", (topic,)
    ) == [
        ("invalid_value", HOUR + timedelta(minutes=5)),
        ("not_json", None),
        ("wrong_type", HOUR + timedelta(minutes=6)),
    ]

    # the raw asset and its checks materialise for the hour (re-derived from landing)
    partition = HOUR.strftime("%Y-%m-%d-%H:%M")
    run = dg.materialize([defs.resolve_assets_def(RAW.to_user_string())], partition_key=partition, instance=instance)
    assert [m.partition for m in run.asset_materializations_for_node(RAW.to_user_string())] == [partition]
    checks = {e.check_name: (e.passed, e.severity) for e in run.get_asset_check_evaluations() if e.asset_key == RAW}
    assert checks == {
        "keys_not_null": (True, dg.AssetCheckSeverity.ERROR),
        "time_in_partition": (True, dg.AssetCheckSeverity.ERROR),
        "values_finite": (True, dg.AssetCheckSeverity.ERROR),
        "reject_ratio": (False, dg.AssetCheckSeverity.WARN),  # 2 of 4 timed messages of the hour rejected
    }
    assert database.scalar("SELECT count(*) FROM analytics.raw_energy_meter_readings") == 2

    # the API serves the domain's rejects and exports its ingest lag
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        _key_id, key = create_key(conn, "tests", None)
    with TestClient(create_app(five), headers={"X-API-Key": key}) as api:
        rejects = api.get("/v1/rejects", params={"topic": topic, "start": at(-60 * 24 * 3), "end": at(60 * 24 * 3)})
        assert rejects.status_code == 200
        assert sorted((i["reason"], i["count"]) for i in rejects.json()["items"]) == [
            ("invalid_value", 1),
            ("not_json", 1),
            ("wrong_type", 1),
        ]
        metrics = api.get("/v1/metrics").text
    lines = [line for line in metrics.splitlines() if not line.startswith("#")]
    assert any(line.startswith('analytics_ingest_lag_seconds{table="raw_energy_meter_readings"} ') for line in lines)
    rejected = sorted(line.rsplit(" ", 1)[0] for line in lines if line.startswith("analytics_rejected_messages"))
    assert rejected == [
        f'analytics_rejected_messages_total{{reason="{reason}",topic="{topic}"}}'
        for reason in ("invalid_value", "not_json", "wrong_type")
    ]
