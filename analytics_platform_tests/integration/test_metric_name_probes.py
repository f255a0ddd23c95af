"""Probe round 4: metric names as plants name their tags (slash-separated paths, spaces, dots,
Vietnamese and Chinese) appearing mid-stream. Through the real broker, drain, catalogue API, re-admission,
aggregates asset and read API: each name is rejected as unknown, added to the tenant's catalogue over the
API without a restart, re-admitted exactly once, aggregated and read back under its own name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import dagster as dg
import psycopg
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from analytics_platform.api.app import create_app
from analytics_platform.api.keys import create_key
from analytics_platform.contracts.registry import bind_domains, contract_config
from analytics_platform.defs import build_definitions
from analytics_platform.ingest.catalog import read_catalog
from analytics_platform.ingest.readmit import readmit
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.api import Caller, ok
from analytics_platform_tests.support.readings import materialize
from analytics_platform_tests.support.stack import DatabaseHandle, domain_drain, domain_topic, produce

# a path-like tag, a space, a dot, Vietnamese ("flow rate"), Chinese ("temperature"), URL-special characters
NAMES = ["Line1/Flow", "air temp", "temp.c", "Lưu lượng", "温度", "x?y#z&w=1"]
HOUR = {"start": "2025-08-20T03:00:00Z", "end": "2025-08-20T04:00:00Z"}
SERIES = {"factory_id": "f1", "machine_id": "mc-01"}


def message(metric: str, minute: int, value: float) -> bytes:
    reading = {
        "time": f"2025-08-20T03:{minute:02d}:00Z",
        "tenant_id": "t1",
        **SERIES,
        "sensor_id": "s-001",
        "metric": metric,
        "value": value,
    }
    return json.dumps(reading, ensure_ascii=False).encode()


@pytest.fixture
def catalog_admin(settings: PlatformSettings, database: DatabaseHandle) -> Iterator[Caller]:
    """A key of tenant t1 with the `admin` scope (edits its catalogue), over an app with a writer role."""
    urls = {"api_database_url": SecretStr(database.api_url), "api_write_database_url": SecretStr(database.writer_url)}
    with TestClient(create_app(settings.model_copy(update=urls)), raise_server_exceptions=False) as client:
        with psycopg.connect(database.admin_url, autocommit=True) as conn:
            key = create_key(conn, "t1-catalog", "t1", scopes=("read", "admin"))[1]
        yield Caller(client, key)


def test_odd_metric_names_appear_mid_stream_and_round_trip(
    settings: PlatformSettings, database: DatabaseHandle, instance: dg.DagsterInstance, catalog_admin: Caller
) -> None:
    produce(
        settings.kafka_brokers,
        domain_topic(settings),
        [(None, message(name, minute, value)) for name in NAMES for minute, value in ((10, 1.5), (20, 2.5))],
        partition=0,
    )
    domain_drain(settings).run(budget_s=30)
    assert database.query("SELECT reason, count(*) FROM analytics.rejected_message GROUP BY 1") == [
        ("unknown_metric", 2 * len(NAMES))
    ]

    for name in NAMES:  # the path segment is the name, percent-encoded as any client encodes a segment
        response = catalog_admin.put(f"/v1/catalog/metrics/{quote(name, safe='')}", {"unit": "u"})
        assert response.status_code == 201, f"adding metric {name!r} to the catalogue: {response.text}"
        assert response.json()["metric"] == name
    with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
        report = readmit(conn, bind_domains(settings), contract_config(settings, read_catalog(conn)), tenant="t1")
    assert (report.matched, report.passing, report.readmitted) == (12, 12, 12)

    defs = build_definitions(settings, secrets_from_env=False)
    materialize(defs, instance, ["sensor_window_aggregates"], partition="2025-08-20-03:00")
    for name in NAMES:
        readings = ok(catalog_admin.get("/v1/readings", metric=name, **SERIES, **HOUR))
        assert [(i["metric"], i["value"]) for i in readings["items"]] == [(name, 1.5), (name, 2.5)], name
        agg = ok(catalog_admin.get("/v1/agg", metric=name, window_s=3600, **SERIES, **HOUR))
        assert [(i["metric"], i["count"], i["sum"]) for i in agg["items"]] == [(name, 2, 4.0)], name

    for name in NAMES:
        response = catalog_admin.delete(f"/v1/catalog/metrics/{quote(name, safe='')}")
        assert response.status_code == 204, f"removing metric {name!r} from the catalogue: {response.text}"
    assert database.query("SELECT metric FROM analytics.metric_catalog WHERE tenant_id = 't1'") == []
