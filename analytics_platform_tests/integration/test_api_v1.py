"""The API skeleton against a real database: health, metrics, readings with paging and 422s."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from analytics_platform.api.app import create_app
from analytics_platform.devstack.processes import free_port
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.conftest import DatabaseHandle

BASE = datetime(2025, 8, 20, 3, 0, tzinfo=UTC)
COLUMNS = (
    "time, tenant_id, factory_id, machine_id, sensor_id, metric, value, unit, payload, event_id, "
    "schema_version, dedup_key, topic, kafka_partition, kafka_offset"
)


def insert(db: DatabaseHandle, rows: list[tuple]) -> None:
    with psycopg.connect(db.admin_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO analytics.raw_sensor_readings ({COLUMNS}) VALUES "
            "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 1, %s, 't', 0, %s)",
            rows,
        )


def row(
    minute: int,
    value: float,
    *,
    sensor: str = "s1",
    machine: str = "m1",
    tenant: str = "t1",
    metric: str = "temp",
    n: int = 0,
) -> tuple:
    time = BASE + timedelta(minutes=minute)
    return (
        time,
        tenant,
        "f1",
        machine,
        sensor,
        metric,
        value,
        "degC",
        None,
        None,
        f"{tenant}|{machine}|{sensor}|{metric}",
        n,
    )


@pytest.fixture
def client(settings: PlatformSettings):
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def readings(client: TestClient, **params: object):
    query = {
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "m1",
        "metric": "temp",
        "start": "2025-08-20T03:00:00Z",
        "end": "2025-08-20T04:00:00Z",
        **params,
    }
    return client.get("/v1/readings", params={k: v for k, v in query.items() if v is not None})


def test_health_reports_database_and_broker(client: TestClient) -> None:
    response = client.get("/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == {"ok": True, "detail": "reachable"}
    assert body["broker"]["ok"] is True


def test_health_degraded_without_broker_and_down_without_database(settings: PlatformSettings) -> None:
    no_broker = settings.model_copy(update={"kafka_brokers": f"127.0.0.1:{free_port()}"})
    with TestClient(create_app(no_broker)) as client:
        body = client.get("/v1/health").json()
    assert body["status"] == "degraded"
    assert body["database"]["ok"] is True
    assert body["broker"]["ok"] is False and "unreachable" in body["broker"]["detail"]

    dead = f"postgresql://nobody:x@127.0.0.1:{free_port()}/nowhere"
    no_db = settings.model_copy(update={"api_database_url": SecretStr(dead)})
    with TestClient(create_app(no_db), raise_server_exceptions=False) as client:
        response = client.get("/v1/health")
        assert response.status_code == 503
        assert response.json()["status"] == "down"
        assert "Traceback" not in response.text
        page = readings(client)
        assert page.status_code == 503
        assert page.json()["detail"].startswith("no database connection available")


def test_readings_exact_rows_filters_and_utc(client: TestClient, database: DatabaseHandle) -> None:
    insert(
        database,
        [
            row(0, 1.0),
            row(30, 2.0),
            row(60, 3.0),  # 04:00 is outside [03:00, 04:00)
            row(10, 9.0, machine="m2"),
            row(10, 9.0, tenant="t2"),
            row(10, 9.0, metric="humidity"),
            row(20, 5.0, sensor="s2"),
        ],
    )
    response = readings(client)
    assert response.status_code == 200
    body = response.json()
    assert body["next_cursor"] is None
    assert [(i["time"], i["sensor_id"], i["value"]) for i in body["items"]] == [
        ("2025-08-20T03:00:00Z", "s1", 1.0),
        ("2025-08-20T03:20:00Z", "s2", 5.0),
        ("2025-08-20T03:30:00Z", "s1", 2.0),
    ]
    assert body["items"][0] == {
        "time": "2025-08-20T03:00:00Z",
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "m1",
        "sensor_id": "s1",
        "metric": "temp",
        "value": 1.0,
        "unit": "degC",
        "payload": None,
        "event_id": None,
    }
    only_s2 = readings(client, sensor_id="s2").json()["items"]
    assert [i["value"] for i in only_s2] == [5.0]
    # an offset time is converted: 10:00+07:00 is 03:00Z
    shifted = readings(client, start="2025-08-20T10:00:00+07:00", end="2025-08-20T10:25:00+07:00").json()
    assert [i["value"] for i in shifted["items"]] == [1.0, 5.0]


def test_cursor_paging_has_no_gaps_or_repeats(client: TestClient, database: DatabaseHandle) -> None:
    # 7 rows; three pairs share a timestamp (two sensors)
    insert(
        database,
        [
            row(m, float(i), sensor=s)
            for i, (m, s) in enumerate([(1, "s1"), (1, "s2"), (2, "s1"), (2, "s2"), (3, "s1"), (3, "s2"), (4, "s1")])
        ],
    )
    seen, cursor, sizes = [], None, []
    while True:
        body = readings(client, limit=3, cursor=cursor).json()
        sizes.append(body["count"])
        seen.extend(i["value"] for i in body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert sizes == [3, 3, 1]
    assert seen == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"metric": None}, "metric", "Field required"),
        ({"start": "2025-08-20T05:00:00Z"}, "end", "end must be after start"),
        ({"end": "2025-08-20T03:00:00Z"}, "end", "end must be after start"),
        ({"end": "2025-09-30T00:00:00Z"}, "end", "range is longer than 31 days"),
        ({"start": "2025-08-20T03:00:00"}, "start", "time must include a timezone"),
        ({"start": "yesterday"}, "start", "Input should be a valid datetime"),
        ({"metric": "flux"}, "metric", "unknown metric 'flux'"),
        ({"limit": 0}, "limit", "greater than or equal to 1"),
        ({"limit": 10001}, "limit", "less than or equal to 10000"),
        ({"cursor": "%%%"}, "cursor", "cursor is not one this API returned"),
        ({"cursor": "WzFd"}, "cursor", "cursor is not one this API returned"),  # [1]
        ({"cursor": "WyJub3QgYSB0aW1lIiwgImsiXQ"}, "cursor", "cursor is not one this API returned"),
        ({"tenant_id": ""}, "tenant_id", "at least 1 character"),
    ],
)
def test_bad_parameters_get_422_naming_the_field(client: TestClient, params: dict, field: str, message: str) -> None:
    response = readings(client, **params)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", field]
    assert message in error["msg"]


def test_the_api_role_cannot_write(database: DatabaseHandle) -> None:
    with psycopg.connect(database.api_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM analytics.raw_sensor_readings").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                f"INSERT INTO analytics.raw_sensor_readings ({COLUMNS}) VALUES "
                "(now(), 't', 'f', 'm', 's', 'temp', 1, null, null, null, 1, 'k', 't', 0, 0)"
            )


def test_metrics_expose_traffic_and_pipeline_figures(client: TestClient, database: DatabaseHandle) -> None:
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO analytics.rejected_message (topic, kafka_partition, kafka_offset, kafka_ts, reason, detail) "
            "VALUES ('x', 0, 1, now(), 'not_json', 'd'), ('x', 0, 2, now(), 'not_json', 'd'), "
            "('x', 0, 3, now(), 'bad_time', 'd')"
        )
        conn.execute(
            "INSERT INTO analytics.worker_checkpoints (consumer, topic, kafka_partition, next_offset) "
            "VALUES ('c', 'x', 0, 4)"
        )
    assert readings(client).status_code == 200
    assert readings(client, limit=0).status_code == 422
    response = client.get("/v1/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'analytics_api_requests_total{method="GET",route="/v1/readings",status="200"} 1.0' in text
    assert 'analytics_api_requests_total{method="GET",route="/v1/readings",status="422"} 1.0' in text
    assert 'analytics_rejected_messages_total{reason="not_json",topic="x"} 2.0' in text
    assert 'analytics_rejected_messages_total{reason="bad_time",topic="x"} 1.0' in text
    assert 'analytics_drain_next_offset{consumer="c",partition="0",topic="x"} 4.0' in text
    assert "analytics_database_up 1.0" in text
