"""Probe round 4: faults a plant injects with the real parts, the database going away under the drain
service while it follows the broker. Asserted: exact rows and offsets once the database is back (nothing
lost, nothing doubled) and what the service says meanwhile (one line per new problem, no traceback)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql

from analytics_platform.ingest.service import DrainService
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.edge import wait_for
from analytics_platform_tests.support.readings import KEY, reading
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
