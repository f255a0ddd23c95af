"""The metrics catalogue is tenant data, and rejects are recoverable (issue 19, finding 3), through
the real broker, drain, database and CLI.

Tried as a tenant would: its meters send `power_kw`, which the packaged catalogue does not list.
Before, every reading was rejected as `unknown_metric` until someone edited a YAML file inside the
installed package and restarted, and the kept messages were never re-admitted.
"""

from __future__ import annotations

import json

import dagster as dg
import pytest

from analytics_platform import cli
from analytics_platform.contracts.registry import bind_domains
from analytics_platform.defs import build_definitions
from analytics_platform.settings import PlatformSettings, get_settings
from analytics_platform_tests.support.stack import DatabaseHandle, domain_drain, produce


def reading(tenant: str, minute: int, metric: str = "power_kw", value: float = 42.0) -> bytes:
    return json.dumps(
        {
            "time": f"2025-08-20T03:{minute:02d}:00Z",
            "tenant_id": tenant,
            "factory_id": "f1",
            "machine_id": "mc-01",
            "sensor_id": "meter",
            "metric": metric,
            "value": value,
            "unit": "kW",
        }
    ).encode()


@pytest.fixture
def run_cli(settings: PlatformSettings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """`analytics-platform ...` against this test's database and topics; returns (exit code, output)."""
    monkeypatch.setenv("DATABASE_URL", settings.database_url.get_secret_value())
    monkeypatch.setenv("KAFKA_TOPIC_PREFIX", settings.kafka_topic_prefix)
    monkeypatch.setenv("USER", "tester")
    get_settings.cache_clear()

    def run(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        code = cli.main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    yield run
    get_settings.cache_clear()


def rows(database: DatabaseHandle) -> list[tuple]:
    return database.query(
        "SELECT tenant_id, metric, time, value, uncatalogued FROM analytics.raw_sensor_readings ORDER BY 1, 2, 3"
    )


def rejects(database: DatabaseHandle) -> list[tuple]:
    return database.query(
        "SELECT value_text::jsonb->>'tenant_id', reason FROM analytics.rejected_message ORDER BY kafka_offset"
    )


def test_a_tenant_adds_a_metric_and_readmits_its_rejected_readings(
    settings: PlatformSettings, database: DatabaseHandle, run_cli
) -> None:
    topic = next(b for b in bind_domains(settings) if b.domain == "sensor").topics[0]
    produce(
        settings.kafka_brokers,
        topic,
        [(None, reading("t1", m)) for m in (1, 2, 3)] + [(None, reading("t2", m)) for m in (1, 2)],
        partition=0,
    )
    domain_drain(settings).run(budget_s=30)
    assert rows(database) == []
    assert rejects(database) == [("t1", "unknown_metric")] * 3 + [("t2", "unknown_metric")] * 2

    # t1 adds the metric: no deploy, no restart
    code, out = run_cli("metrics", "set", "power_kw", "--tenant", "t1", "--unit", "kW", "--min", "0", "--max", "5000")
    assert (code, out.splitlines()[0]) == (0, "added power_kw for tenant t1")
    code, out = run_cli("rejects", "readmit", "--reason", "unknown_metric", "--tenant", "t1", "--dry-run")
    assert code == 0 and out.splitlines()[0].startswith("3 rejected message(s) matched; 3 pass")
    assert len(rejects(database)) == 5  # a dry run changes nothing

    code, out = run_cli("rejects", "readmit", "--reason", "unknown_metric", "--tenant", "t1")
    assert code == 0
    assert out.splitlines()[0] == (
        "3 rejected message(s) matched; 3 pass the current catalogue and contracts; "
        "3 re-admitted into raw (exactly once)"
    )
    hour = [r for r in rows(database)]
    assert [(t, m, v, u) for t, m, _time, v, u in hour] == [("t1", "power_kw", 42.0, False)] * 3
    assert rejects(database) == [("t2", "unknown_metric")] * 2  # t2 has no such entry: still rejected

    # again: nothing left to re-admit, nothing doubled
    code, out = run_cli("rejects", "readmit", "--tenant", "t1")
    assert out.splitlines()[0].startswith("0 rejected message(s) matched")
    assert len(rows(database)) == 3

    # the drain judges with the table from its next pass on
    produce(settings.kafka_brokers, topic, [(None, reading("t1", 4)), (None, reading("t2", 4))], partition=0)
    domain_drain(settings).run(budget_s=30)
    assert len(rows(database)) == 4 and len(rejects(database)) == 3

    # t2 chooses to accept whatever its meters send: stored, flagged uncatalogued, no range check
    assert run_cli("metrics", "policy", "accept", "--tenant", "t2")[0] == 0
    assert run_cli("metrics", "policy", "--tenant", "t2")[1].strip() == "t2: accept"
    assert run_cli("metrics", "policy", "--tenant", "t3")[1].strip() == "t3: reject (the default)"
    code, out = run_cli("rejects", "readmit", "--tenant", "t2")
    assert out.splitlines()[0].startswith("3 rejected message(s) matched; 3 pass")
    assert [(t, u) for t, _m, _time, _v, u in rows(database)] == [("t1", False)] * 4 + [("t2", True)] * 3
    assert rejects(database) == []

    # the readmitted hours are told to Dagster, so the aggregates recompute them
    defs = build_definitions(settings, secrets_from_env=False)
    sensor = defs.resolve_sensor_def("raw_rederivations")
    with dg.instance_for_test() as instance:
        result = sensor(dg.build_sensor_context(instance=instance, resources=defs.resources))
        reported = [(e.asset_key.to_user_string(), e.partition, e.metadata["rows"].value) for e in result.asset_events]
        assert reported == [
            ("raw_sensor_readings", "2025-08-20-03:00", 3),
            ("raw_sensor_readings", "2025-08-20-03:00", 7),
        ]
        again = sensor(dg.build_sensor_context(instance=instance, resources=defs.resources, cursor=result.cursor))
        assert again.asset_events == []


def test_the_catalogue_cli_lists_edits_and_refuses_bad_entries(
    settings: PlatformSettings, database: DatabaseHandle, run_cli
) -> None:
    code, out = run_cli("metrics", "list", "--tenant", "t1")
    assert code == 0 and "temp " in out and out.strip().endswith("unknown metrics of tenant t1: reject (the default)")
    assert database.scalar("SELECT count(*) FROM analytics.metric_catalog WHERE tenant_id = '*'") == 17
    # a tenant overrides a default's range for itself only
    assert run_cli("metrics", "set", "temp", "--tenant", "t9", "--unit", "degC", "--min", "0", "--max", "1200")[0] == 0
    assert database.query(
        "SELECT tenant_id, max_value, source, updated_by FROM analytics.metric_catalog WHERE metric = 'temp' "
        "ORDER BY tenant_id"
    ) == [("*", 400.0, "packaged", "metrics.yaml"), ("t9", 1200.0, "cli", "tester")]
    assert run_cli("metrics", "set", "x", "--tenant", "t9", "--min", "5", "--max", "1") == (
        2,
        "error: min 5.0 is above max 1.0\n",
    )
    assert run_cli("metrics", "set", "x") == (
        2,
        "error: metrics set needs the metric NAME and --tenant (a tenant, or '*')\n",
    )
    assert run_cli("metrics", "policy", "maybe", "--tenant", "t9") == (
        2,
        "error: policy must be one of reject, accept, got 'maybe'\n",
    )
    assert run_cli("metrics", "remove", "nope", "--tenant", "t9") == (1, "error: tenant t9 has no entry nope\n")
    assert run_cli("metrics", "remove", "temp", "--tenant", "t9")[0] == 0
    assert run_cli("rejects", "readmit", "--since", "yesterday") == (
        2,
        "error: --since 'yesterday' is not an ISO-8601 time, e.g. 2025-08-20T03:00:00Z\n",
    )
