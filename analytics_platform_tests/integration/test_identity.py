"""Identity belongs to the sender: senders that number their messages alike never touch each other's
rows, in any domain, through the real broker, drain and database (issue 19, finding 1).

Tried as a new user would: tenant A sends `e-1 .. e-n`; later tenant B sends its own readings with
the same ids and times. Before the fix, B's rows replaced A's (the key was the event id alone) and
nothing was counted or rejected.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
import pytest

from analytics_platform import cli
from analytics_platform.settings import PlatformSettings, get_settings
from analytics_platform_tests.support.stack import DatabaseHandle, domain_drain, domain_topic, older_database, produce

TIMES = ["2025-08-20T03:12:00Z", "2025-08-20T03:13:00Z", "2025-08-20T03:14:00Z"]
IDS = ["e-1", "e-2", "e-3"]

SENDER = {"tenant_id": "t1", "factory_id": "f1", "machine_id": "mc-01"}


def sensor(time: str, event_id: str, value: float, **who: str) -> dict:
    return {**SENDER, "sensor_id": "s-001", "metric": "temp", **who, "time": time, "value": value, "event_id": event_id}


def device(time: str, event_id: str, value: float, **who: str) -> dict:
    return {**SENDER, **who, "time": time, "health_score": value / 100, "event_id": event_id}


def sweep(time: str, event_id: str, value: float, **who: str) -> dict:
    return {**SENDER, "metric": "temp", **who, "time": time, "readings": [{"value": value}], "event_id": event_id}


def lab(time: str, event_id: str, value: float, **who: str) -> dict:
    body = {"tenant_id": "t1", "factory_id": "f1", "station_id": "lab-01", "sample_id": "S-1", "analyte": "pH"}
    return {**body, **who, "time": time, "value": value, "event_id": event_id}


# (domain, payload builder, the raw table, its value column, the two senders that reuse the ids)
CASES: list[tuple[str, Callable[..., dict], str, str, dict, dict]] = [
    ("sensor", sensor, "raw_sensor_readings", "value", {"tenant_id": "t-a"}, {"tenant_id": "t-b"}),
    ("sensor", sensor, "raw_sensor_readings", "value", {"machine_id": "mc-01"}, {"machine_id": "mc-02"}),
    ("sensor", sensor, "raw_sensor_readings", "value", {"sensor_id": "s-001"}, {"sensor_id": "s-002"}),
    ("sensor", sensor, "raw_sensor_readings", "value", {"metric": "temp"}, {"metric": "humidity"}),
    ("sensor", sensor, "raw_sensor_readings", "value", {"factory_id": "f1"}, {"factory_id": "f2"}),
    ("device", device, "raw_device_health", "health_score", {"tenant_id": "t-a"}, {"tenant_id": "t-b"}),
    ("device", device, "raw_device_health", "health_score", {"machine_id": "mc-01"}, {"machine_id": "mc-02"}),
    ("sweep", sweep, "raw_sweep_readings", "reading_values[1]", {"tenant_id": "t-a"}, {"tenant_id": "t-b"}),
    ("sweep", sweep, "raw_sweep_readings", "reading_values[1]", {"machine_id": "mc-01"}, {"machine_id": "mc-02"}),
    ("lab", lab, "raw_lab_results", "value", {"tenant_id": "t-a"}, {"tenant_id": "t-b"}),
    ("lab", lab, "raw_lab_results", "value", {"station_id": "lab-01"}, {"station_id": "lab-02"}),
]


def case_base(n: int, varied: str) -> dict:
    """What keeps the cases apart in one database: each its own factory (or tenant, for the case
    that varies the factory), so the two senders of a case differ only in the field under test."""
    return {"tenant_id": f"t-case{n}"} if varied == "factory_id" else {"factory_id": f"f-case{n}"}


@pytest.fixture(scope="module")
def reused_ids(module_settings: PlatformSettings) -> dict[str, list]:
    """Every case's first sender sends `e-1 .. e-3` and is drained; then every case's second sender
    sends the same ids at the same times and is drained. One database for all cases (they cannot
    touch each other: see case_base); returns the drain reports of the second round per domain."""
    rounds: dict[str, list] = {}
    for position in (4, 5):  # the first senders, then the second
        for domain in sorted({c[0] for c in CASES}):
            messages = []
            for n, case in enumerate(CASES):
                if case[0] != domain:
                    continue
                who = {**case_base(n, next(iter(case[4]))), **case[position]}
                base = 10.0 if position == 4 else 50.0
                messages += [case[1](t, i, base + k, **who) for k, (t, i) in enumerate(zip(TIMES, IDS, strict=True))]
            topic = domain_topic(module_settings, domain)
            produce(
                module_settings.kafka_brokers, topic, [(None, json.dumps(m).encode()) for m in messages], partition=0
            )
            rounds.setdefault(domain, []).append(domain_drain(module_settings, domain).run(budget_s=30))
    return rounds


@pytest.mark.parametrize(("n", "case"), list(enumerate(CASES)), ids=[f"{c[0]}-{next(iter(c[4]))}" for c in CASES])
def test_senders_reusing_ids_keep_their_own_rows(
    reused_ids: dict[str, list], module_database: DatabaseHandle, n: int, case: tuple
) -> None:
    domain, _build, table, value, first, second = case
    column = next(iter(first))
    base = case_base(n, column)
    ((where, tag),) = base.items()
    second_round = reused_ids[domain][1]
    assert second_round.rejects == 0 and second_round.rows == 3 * sum(c[0] == domain for c in CASES)
    scale = 100 if domain == "device" else 1
    stored = module_database.query(
        f"SELECT {column}, event_id, round(({value} * {scale})::numeric, 6)::float FROM analytics.{table} "
        f"WHERE {where} = %s ORDER BY 1, 2",
        (tag,),
    )
    assert stored == sorted(
        [(first[column], i, 10.0 + k) for k, i in enumerate(IDS)]
        + [(second[column], i, 50.0 + k) for k, i in enumerate(IDS)]
    )
    assert module_database.scalar("SELECT count(*) FROM analytics.rejected_message") == 0


def test_a_true_resend_from_the_same_sender_is_stored_once(
    settings: PlatformSettings, database: DatabaseHandle
) -> None:
    """The other half of the guarantee: the same sender re-sending its id (an edge replay) is one row."""
    topic = domain_topic(settings, "sensor")
    messages = [sensor(t, i, 1.0 + n) for n, (t, i) in enumerate(zip(TIMES, IDS, strict=True))]
    produce(settings.kafka_brokers, topic, [(None, json.dumps(m).encode()) for m in messages], partition=1)
    domain_drain(settings, "sensor").run(budget_s=30)
    produce(settings.kafka_brokers, topic, [(None, json.dumps(m).encode()) for m in messages], partition=2)
    domain_drain(settings, "sensor").run(budget_s=30)
    assert database.query("SELECT event_id, value, kafka_partition FROM analytics.raw_sensor_readings ORDER BY 1") == [
        ("e-1", 1.0, 1),
        ("e-2", 2.0, 1),
        ("e-3", 3.0, 1),
    ]


def test_ids_containing_the_key_separator_cannot_forge_another_senders_key(
    settings: PlatformSettings, database: DatabaseHandle
) -> None:
    """Ids are the sender's choice, characters and all: (machine `a<US>b`, sensor `c`) and (machine
    `a`, sensor `b<US>c`) join to the same text with a plain separator, yet are two senders."""
    topic = domain_topic(settings, "sensor")
    sep = "\x1f"
    one = sensor(TIMES[0], "x", 1.0, machine_id=f"a{sep}b", sensor_id="c")
    other = sensor(TIMES[0], "x", 2.0, machine_id="a", sensor_id=f"b{sep}c")
    produce(settings.kafka_brokers, topic, [(None, json.dumps(m).encode()) for m in (one, other)], partition=0)
    domain_drain(settings, "sensor").run(budget_s=30)
    assert database.query("SELECT machine_id, sensor_id, value FROM analytics.raw_sensor_readings ORDER BY 3") == [
        (f"a{sep}b", "c", 1.0),
        ("a", f"b{sep}c", 2.0),
    ]


# ----- upgrading a database that holds collided rows ---------------------------------------------

LANDING = (
    "INSERT INTO analytics.kafka_landing (topic, kafka_partition, kafka_offset, kafka_ts, kafka_key, value_text, "
    "event_time) VALUES (%s, 0, %s, %s, NULL, %s, %s)"
)
OLD_RAW = (
    "INSERT INTO analytics.raw_sensor_readings (time, tenant_id, factory_id, machine_id, sensor_id, metric, value, "
    "event_id, schema_version, dedup_key, topic, kafka_partition, kafka_offset) "
    "VALUES (%s, %s, 'f1', 'mc-01', 's-001', 'temp', %s, %s, 1, %s, %s, 0, %s)"
)


def test_the_upgrade_rewrites_keys_and_brings_collided_rows_back(pg_admin_url: str, repo_root, tmp_path) -> None:
    """A database migrated before 07, as the old drain left it: tenant t-b's three readings reused
    t-a's ids and times and were dropped (only t-a's rows, keyed by the id alone, are in raw), while
    landing holds all six messages. `analytics-platform migrate` must rewrite the keys in place
    (compressed chunks included on TimescaleDB) and re-derive the hour, bringing t-b's rows back."""
    topic = "sensors.device.readings"
    with older_database(pg_admin_url, sorted((repo_root / "sql").glob("0[1-6]_*.sql")), tmp_path) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            for n, (when, event) in enumerate(zip(TIMES, IDS, strict=True)):
                a = sensor(when, event, 10.0 + n, tenant_id="t-a")
                b = sensor(when, event, 50.0 + n, tenant_id="t-b")
                conn.execute(LANDING, (topic, n, "2025-08-20T03:20:00Z", json.dumps(a), when))
                conn.execute(LANDING, (topic, 3 + n, "2025-08-20T03:21:00Z", json.dumps(b), when))
                conn.execute(OLD_RAW, (when, "t-a", 10.0 + n, event, f"{event}\x1ftemp", topic, n))
            natural = json.dumps({**sensor(TIMES[0], "x", 7.0, machine_id="mc-09"), "event_id": None})
            conn.execute(LANDING, (topic, 6, "2025-08-20T03:22:00Z", natural, TIMES[0]))
            conn.execute(
                OLD_RAW.replace("'mc-01'", "'mc-09'"),
                (TIMES[0], "t1", 7.0, None, "t1\x1ff1\x1fmc-09\x1fs-001\x1ftemp", topic, 6),
            )
            if conn.execute("SELECT analytics.timescale_enabled()").fetchone()[0]:
                conn.execute("SELECT compress_chunk(c) FROM show_chunks('analytics.raw_sensor_readings') c")

        env = {"MIGRATIONS_DATABASE_URL": url, "DATABASE_URL": url, "KAFKA_TOPIC_PREFIX": ""}
        with _environment(env):
            assert cli.main(["migrate"]) == 0

        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT tenant_id, machine_id, event_id, value, dedup_key FROM analytics.raw_sensor_readings "
                "ORDER BY tenant_id, event_id"
            ).fetchall()
            queued = conn.execute(
                "SELECT raw_table, hour, rows_before, rows_after, done_at IS NOT NULL FROM analytics.raw_rederivations"
            ).fetchall()
            # the SQL key function and the contracts' agree, on every domain's scope
            agree = conn.execute(
                "SELECT analytics.identity_key(%s, 'e-1'), analytics.identity_key(ARRAY['t1'], NULL)",
                (["t1", "f\x1f1", None, "mc-é"],),
            ).fetchone()
        assert agree == (ident("t1", "f\x1f1", None, "mc-é", event="e-1"), ident("t1"))
        assert [r[:4] for r in rows] == [
            ("t-a", "mc-01", "e-1", 10.0),
            ("t-a", "mc-01", "e-2", 11.0),
            ("t-a", "mc-01", "e-3", 12.0),
            ("t-b", "mc-01", "e-1", 50.0),
            ("t-b", "mc-01", "e-2", 51.0),
            ("t-b", "mc-01", "e-3", 52.0),
            ("t1", "mc-09", None, 7.0),
        ]
        assert {r[4] for r in rows} == {
            ident(t, "f1", m, "s-001", "temp", event=e) for t, m, e, _ in [r[:4] for r in rows]
        }
        assert queued == [("raw_sensor_readings", dataset_hour(), 4, 7, True)]
        # a second migrate finds nothing to rewrite or re-derive
        with _environment(env):
            assert cli.main(["migrate"]) == 0
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM analytics.raw_rederivations").fetchone() == (1,)


def dataset_hour() -> datetime:
    return datetime(2025, 8, 20, 3, tzinfo=UTC)


def ident(*scope: str | None, event: str | None = None) -> str:
    """An identity key written out by hand (as in unit/test_contracts.py): `<bytes>:<text>` per part."""
    parts = ["~" if p is None else f"{len(p.encode())}:{p}" for p in scope]
    return "\x1f".join([*parts, "n" if event is None else f"e{len(event.encode())}:{event}"])


class _environment:
    """Environment variables for a CLI call, restored afterwards (settings are read from them)."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        for key, value in self.values.items():
            self.saved[key] = os.environ.get(key)
            os.environ[key] = value
        get_settings.cache_clear()

    def __exit__(self, *exc: object) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
