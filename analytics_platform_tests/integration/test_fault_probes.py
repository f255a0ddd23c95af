"""Probe round 4: faults a plant injects with the real parts. The database goes away (a restart, a
failover) under the drain service while it follows the broker, under the API while dashboards poll it,
and under an asset's run; it comes back read-only (a standby) for a while. Asserted: exact rows and
offsets once it is back (nothing lost, nothing doubled), what the service says meanwhile (one line per
new problem, no traceback), the API's one-line 503s and its recovery without a restart, and the failed
hour asked for again by the automation."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import dagster as dg
import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from pydantic import SecretStr

from analytics_platform.api.app import create_app
from analytics_platform.api.keys import create_key
from analytics_platform.defs import build_definitions
from analytics_platform.ingest.service import DrainService
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.api import Caller, running
from analytics_platform_tests.support.api_data import (
    AGG_QUERY,
    ANOMALY_RANGE,
    EVENT_QUERY,
    KPI_QUERY,
    READING_QUERY,
    insert_reading_data,
)
from analytics_platform_tests.support.edge import wait_for
from analytics_platform_tests.support.readings import KEY, drain, materialize, reading
from analytics_platform_tests.support.stack import DatabaseHandle, domain_topic, produce

STATE = (
    "SELECT (SELECT count(*) FROM analytics.kafka_landing), "
    "(SELECT count(*) FROM analytics.raw_sensor_readings), "
    "(SELECT count(*) FROM analytics.rejected_message), "
    "(SELECT coalesce(sum(next_offset), 0) FROM analytics.worker_checkpoints)"
)


def state(database: DatabaseHandle) -> tuple[int, ...]:
    return tuple(database.query(STATE)[0])


def send(settings: PlatformSettings, *values: bytes) -> None:
    produce(settings.kafka_brokers, domain_topic(settings), [(KEY, v) for v in values], partition=0)


@contextmanager
def database_away(pg_admin_url: str, database: DatabaseHandle) -> Iterator[None]:
    """The database refuses connections and every session in it is ended (what a restart of the server
    does to its clients), until the block ends."""
    name = sql.Identifier(database.name)
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(name))
        try:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (database.name,),
            )
            yield
        finally:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(name))


def test_the_drain_service_rides_out_a_database_outage_with_one_line_and_lands_everything_once(
    settings: PlatformSettings, database: DatabaseHandle, pg_admin_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # a pass long enough that the outage ends the connection of a pass that is following the broker
    follow = settings.model_copy(update={"drain_mode": "service", "drain_pass_s": 30.0, "drain_linger_s": 0.2})
    service = DrainService(follow)
    caplog.set_level(logging.INFO, logger="analytics_platform.ingest")
    service.start()
    try:
        send(follow, *(reading(f"2025-08-20T03:{m:02d}:00Z", 20.0 + m, f"e-{m}") for m in range(3)))
        wait_for(lambda: state(database) == (3, 3, 0, 3), 60, "three readings committed before the outage")
        worker = service.states[("sensor", 0)]
        with database_away(pg_admin_url, database):
            send(follow, *(reading(f"2025-08-20T03:{m:02d}:00Z", 20.0 + m, f"e-{m}") for m in range(3, 6)))
            wait_for(lambda: worker.errors >= 3, 60, "three failed attempts while the database was away")
        wait_for(lambda: state(database) == (6, 6, 0, 6), 60, "the three readings of the outage once it was back")
    finally:
        service.stop.set()
        assert service.join(60), "the drain service did not stop"

    assert database.query("SELECT kafka_offset, value FROM analytics.raw_sensor_readings ORDER BY kafka_offset") == [
        (m, 20.0 + m) for m in range(6)
    ]
    drain_records = [r for r in caplog.records if r.name.startswith("analytics_platform.ingest")]
    tracebacks = [r.getMessage() for r in drain_records if r.exc_info]
    assert tracebacks == [], f"a database outage is expected, yet logged with a traceback: {tracebacks}"
    problems = [r.getMessage() for r in drain_records if r.levelno >= logging.WARNING]
    assert 1 <= len(problems) <= 2, f"one line per new problem, not one per retry: {problems}"
    assert all("database" in line and "\n" not in line for line in problems), problems
    assert any(r.getMessage() == "sensor (unsharded): draining again" for r in drain_records), [
        r.getMessage() for r in drain_records
    ]


def test_a_read_only_database_after_a_failover_is_one_line_and_the_drain_goes_on_once_it_is_writable(
    settings: PlatformSettings, database: DatabaseHandle, pg_admin_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A failover points DATABASE_URL at a standby for a while: connections succeed, every write fails.
    follow = settings.model_copy(update={"drain_mode": "service", "drain_pass_s": 2.0, "drain_linger_s": 0.2})
    name = sql.Identifier(database.name)
    service = DrainService(follow)
    caplog.set_level(logging.INFO, logger="analytics_platform.ingest")
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(name))
        try:
            service.start()
            send(follow, *(reading(f"2025-08-20T03:{m:02d}:00Z", 20.0 + m, f"e-{m}") for m in range(3)))
            worker = service.states[("sensor", 0)]
            wait_for(lambda: worker.errors >= 3, 60, "three failed passes against the read-only database")
        finally:
            admin.execute(sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(name))
    try:
        wait_for(lambda: state(database) == (3, 3, 0, 3), 60, "the three readings once the database was writable")
    finally:
        service.stop.set()
        assert service.join(60), "the drain service did not stop"

    drain_records = [r for r in caplog.records if r.name.startswith("analytics_platform.ingest")]
    tracebacks = [r.getMessage() for r in drain_records if r.exc_info]
    assert tracebacks == [], f"a read-only database (a failover) logged a traceback per retry: {tracebacks}"
    problems = [r.getMessage() for r in drain_records if r.levelno >= logging.WARNING]
    assert len(problems) == 1 and "read-only" in problems[0], problems


# the read endpoints a dashboard polls, each with a valid query of tenant t1 (support/api_data.py's data)
POLLED = [
    ("/v1/readings", READING_QUERY),
    ("/v1/agg", {**AGG_QUERY, "window_s": 3600, "start": READING_QUERY["start"], "end": READING_QUERY["end"]}),
    ("/v1/kpi", KPI_QUERY),
    ("/v1/event-rollup", EVENT_QUERY),
    ("/v1/quality", {"factory_id": "f1", "start": EVENT_QUERY["start"], "end": EVENT_QUERY["end"]}),
    ("/v1/anomaly-events", ANOMALY_RANGE),
    ("/v1/alerts", {}),
    ("/v1/spec-limits", {}),
]


def test_the_api_answers_503_in_one_line_while_the_database_is_away_and_recovers_by_itself(
    settings: PlatformSettings, database: DatabaseHandle, pg_admin_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    insert_reading_data(database)
    impatient = settings.model_copy(update={"api_db_wait_s": 2.0})  # a 503 comes after this wait
    with running(impatient, database) as api:
        pool = api.client.app.state.db

        def poll_readings() -> httpx.Response:
            path, query = POLLED[0]
            return api.t1.get(path, **query)

        before = {path: api.t1.get(path, **query) for path, query in POLLED}
        assert {path: r.status_code for path, r in before.items()} == dict.fromkeys(before, 200)
        with database_away(pg_admin_url, database):
            away = {path: api.t1.get(path, **query) for path, query in POLLED}
            health = api.client.get("/v1/health")
            # an outage that lasts: dashboards keep polling while the pool fails to reconnect five times (its
            # pauses between attempts back off 1, 2, 4, 8 s ...)
            wait_for(
                lambda: poll_readings().status_code == 503 and pool.stats()["connections_errors"] >= 5,
                120,
                "five failed reconnections while the database was away",
            )
        # the database is back: the next poll of each endpoint is served
        after = {path: api.t1.get(path, **query) for path, query in POLLED}
        health_after = api.client.get("/v1/health")

    assert {path: r.status_code for path, r in away.items()} == dict.fromkeys(away, 503), {
        path: r.text for path, r in away.items()
    }
    for path, response in away.items():
        detail = response.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail, (path, detail)
    assert health.status_code == 503 and health.json()["status"] == "down"
    assert {path: r.status_code for path, r in after.items()} == dict.fromkeys(after, 200), (
        "the database was back, yet the API answered 503 until its pool's next reconnection attempt, "
        f"which backs off with the outage's length: { {path: r.text for path, r in after.items()} }"
    )
    assert after["/v1/readings"].json() == before["/v1/readings"].json()
    assert health_after.status_code == 200
    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info and r.name.startswith("analytics_platform")]
    assert tracebacks == [], f"a database outage is expected, yet the API logged tracebacks: {tracebacks}"


def test_an_hour_whose_run_failed_while_the_database_was_away_is_asked_for_again(
    settings: PlatformSettings, database: DatabaseHandle, pg_admin_url: str, instance: dg.DagsterInstance
) -> None:
    defs = build_definitions(settings, secrets_from_env=False)
    aggregates = dg.AssetKey("sensor_window_aggregates")
    selection = dg.AssetSelection.assets(aggregates)

    def evaluate(at: str, cursor: dg.AutomationConditionEvaluationResult | None) -> set[str]:
        result = dg.evaluate_automation_conditions(
            defs=defs,
            instance=instance,
            asset_selection=selection,
            evaluation_time=datetime.fromisoformat(at),
            cursor=cursor.cursor if cursor is not None else None,
        )
        evaluations.append(result)
        return result.get_requested_partitions(aggregates)

    evaluations: list = []
    assert evaluate("2025-08-20T05:10:00+00:00", None) == set()
    send(settings, reading("2025-08-20T03:10:00Z", 21.0, "e-1"))
    drain(defs, instance, ["sensor"])
    assert evaluate("2025-08-20T05:10:30+00:00", evaluations[-1]) == {"2025-08-20-03:00"}
    with database_away(pg_admin_url, database):  # the requested run starts while PostgreSQL restarts
        failed = dg.materialize(
            [defs.resolve_assets_def("sensor_window_aggregates")],
            partition_key="2025-08-20-03:00",
            instance=instance,
            raise_on_error=False,
        )
    assert not failed.success
    assert evaluate("2025-08-20T05:14:00+00:00", evaluations[-1]) == set()  # not at once: at the next 5-min mark
    assert evaluate("2025-08-20T05:15:30+00:00", evaluations[-1]) == {"2025-08-20-03:00"}, (
        "the hour's run failed while the database was away and no automation ever asked for it again: "
        "its aggregates stay missing until more data lands in that hour"
    )
    materialize(defs, instance, ["sensor_window_aggregates"], "2025-08-20-03:00")
    assert database.scalar("SELECT count(*) FROM analytics.analytics_agg WHERE window_s = 3600") == 1
    assert evaluate("2025-08-20T05:20:30+00:00", evaluations[-1]) == set()  # served: nothing more


def test_an_edit_through_the_api_on_a_read_only_database_is_a_503_in_one_line(
    settings: PlatformSettings, database: DatabaseHandle, pg_admin_url: str
) -> None:
    urls = {"api_database_url": SecretStr(database.api_url), "api_write_database_url": SecretStr(database.writer_url)}
    name = sql.Identifier(database.name)
    with TestClient(create_app(settings.model_copy(update=urls)), raise_server_exceptions=False) as client:
        with psycopg.connect(database.admin_url, autocommit=True) as conn:
            editor = Caller(client, create_key(conn, "t1-catalog", "t1", scopes=("read", "admin"))[1])
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(name))
            try:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                    "AND pid <> pg_backend_pid()",
                    (database.name,),
                )
                refused = editor.put("/v1/catalog/metrics/spindle_speed", {"unit": "rpm"})
            finally:
                admin.execute(sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(name))
        # the pool may have opened sessions while the database was read-only (they keep that default, as
        # sessions on a standby would); the first edit that meets one drains the pool, so the second at the
        # latest reaches a session opened since: whatever the pool's size, never one failed edit per session
        answers = [editor.put("/v1/catalog/metrics/spindle_speed", {"unit": "rpm"}) for _ in range(2)]

    read_only = "cannot execute INSERT in a read-only transaction"
    refusal = {"detail": f"database is read-only ({read_only}): a standby after a failover?"}
    assert refused.status_code == 503, f"an edit on a read-only database (a failover) answered {refused.text}"
    assert refused.json() == refusal
    codes = [a.status_code for a in answers]
    assert 201 in codes, [a.text for a in answers]
    assert all(a.json() == refusal for a in answers[: codes.index(201)])
