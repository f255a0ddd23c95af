"""The drain service's finaliser (defs/aggregates/live.py): at each end of a bucket of the smallest
window it runs the window aggregates of that bucket's hour as a Dagster run in its own process, so
the bucket is final seconds later, and the aggregates' automation then leaves the current hour to it.

Asserted: the run is a real, recorded materialisation of the hourly asset (its job, its partition,
its tag) whose buckets are exactly the readings'; an hour final up to the bucket, an hour without
readings, or another process holding the lock means no run; the loop finalises the bucket that just
closed; without a Dagster instance the service says so in one line; the automation requests the
earlier hours and not the current one."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from analytics_platform.defs import build_definitions
from analytics_platform.defs.aggregates.live import (
    FINALISE_MODE_TAG,
    FINALISED_TAG,
    LIVE_JOB,
    LOCK_KEY,
    Backlog,
    Drained,
    Finaliser,
    start_finaliser,
)
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.support.edge import wait_for
from analytics_platform_tests.support.readings import KEY, drain, materialize, reading
from analytics_platform_tests.support.stack import DatabaseHandle, domain_topic, produce

AGG = dg.AssetKey("sensor_window_aggregates")
BUCKETS = (
    "SELECT bucket_start, count_n, sum_v, min_v, max_v, first_v, last_v FROM analytics.analytics_agg "
    "WHERE window_s = 60 ORDER BY bucket_start"
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def service_settings(settings: PlatformSettings) -> PlatformSettings:
    return settings.model_copy(update={"drain_mode": "service", "agg_finalise_delay_s": 0.5})


@pytest.fixture
def produced(settings: PlatformSettings, defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
    readings(settings, defs, instance)


@pytest.fixture
def finaliser(service_settings: PlatformSettings, instance: dg.DagsterInstance) -> Finaliser:
    job = build_definitions(service_settings, secrets_from_env=False).resolve_job_def(LIVE_JOB)
    return Finaliser(service_settings, job, instance)


def readings(settings: PlatformSettings, defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
    """Two readings in the 03:10 bucket, one in 03:11 and one in the 04:00 hour, drained by the sensor."""
    produce(
        settings.kafka_brokers,
        domain_topic(settings, "sensor"),
        [
            (KEY, reading("2025-08-20T03:10:00Z", 1.0, "a")),
            (KEY, reading("2025-08-20T03:10:30Z", 2.0, "b")),
            (KEY, reading("2025-08-20T03:11:10Z", 4.0, "c")),
            (KEY, reading("2025-08-20T04:00:05Z", 8.0, "d")),
        ],
    )
    drain(defs, instance, ["sensor"])


def finaliser_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(dg.RunsFilter(job_name=LIVE_JOB)))


def test_a_closed_bucket_is_made_final_by_a_recorded_run_of_the_hourly_asset(
    finaliser: Finaliser, instance: dg.DagsterInstance, database: DatabaseHandle, produced: None
) -> None:
    outcome = finaliser.finalise(at("2025-08-20T03:11:00"))
    assert (outcome.ran, outcome.reason, outcome.hour) == (True, "materialised", at("2025-08-20T03:00"))

    # the whole hour was recomputed, exactly (the 04:00 reading is another partition's)
    assert database.query(BUCKETS) == [
        (at("2025-08-20T03:10"), 2, 3.0, 1.0, 2.0, 1.0, 2.0),
        (at("2025-08-20T03:11"), 1, 4.0, 4.0, 4.0, 4.0, 4.0),
    ]
    as_of = database.scalar(
        "SELECT as_of FROM analytics.agg_materialised_hours WHERE hour_start = %s", (at("2025-08-20T03:00"),)
    )
    assert as_of >= at("2025-08-20T03:11:00")  # final for /v1/agg

    # a Dagster run of the asset's partition, recorded with its materialisation and tag
    [run] = finaliser_runs(instance)
    assert run.run_id == outcome.run_id and run.is_success
    assert run.tags[FINALISED_TAG] == "2025-08-20T03:11:00+00:00"
    assert run.tags["dagster/partition"] == "2025-08-20-03:00"
    event = instance.get_latest_materialization_event(AGG)
    assert event.run_id == run.run_id and event.asset_materialization.partition == "2025-08-20-03:00"

    # final up to the bucket already (also the hour's last bucket, whose end is the next hour): no run
    again = finaliser.finalise(at("2025-08-20T03:11:00"))
    last = finaliser.finalise(at("2025-08-20T04:00:00"))
    assert (again.ran, again.reason) == (False, "final already")
    assert (last.ran, last.reason, last.hour) == (False, "final already", at("2025-08-20T03:00"))
    # an hour without readings: no run
    quiet = finaliser.finalise(at("2025-08-20T06:01:00"))
    assert (quiet.ran, quiet.reason, quiet.hour) == (False, "no readings in the hour", at("2025-08-20T06:00"))
    assert len(finaliser_runs(instance)) == 1


def test_only_one_process_finalises_at_a_time(
    finaliser: Finaliser, instance: dg.DagsterInstance, database: DatabaseHandle, produced: None
) -> None:
    with database.connect() as other:
        other.execute("SELECT pg_advisory_lock(hashtext(%s))", (LOCK_KEY,))
        held = finaliser.finalise(at("2025-08-20T04:01:00"))
        assert (held.ran, held.reason) == (False, "another drain service is finalising")
        assert finaliser_runs(instance) == []
    done = finaliser.finalise(at("2025-08-20T04:01:00"))
    assert (done.ran, done.reason, done.hour) == (True, "materialised", at("2025-08-20T04:00"))
    assert database.scalar("SELECT sum_v FROM analytics.analytics_agg WHERE window_s = 3600") == 8.0


def test_the_loop_finalises_the_bucket_that_just_closed(
    service_settings: PlatformSettings, instance: dg.DagsterInstance, database: DatabaseHandle, produced: None
) -> None:
    # a clock that reads 03:10:59 now and then runs at real speed: the bucket 03:10..03:11 closes in 1 s
    offset = datetime.now(UTC) - at("2025-08-20T03:10:59")
    job = build_definitions(service_settings, secrets_from_env=False).resolve_job_def(LIVE_JOB)
    finaliser = Finaliser(service_settings, job, instance, clock=lambda: datetime.now(UTC) - offset)
    finaliser.start()
    try:
        wait_for(lambda: finaliser.outcomes, 120, "the finaliser's first boundary")
    finally:
        finaliser.stop.set()
        assert finaliser.join(60)
    first = finaliser.outcomes[0]
    assert (first.bucket_end, first.ran, first.reason) == (at("2025-08-20T03:11:00"), True, "materialised")
    assert database.query(BUCKETS)[0] == (at("2025-08-20T03:10"), 2, 3.0, 1.0, 2.0, 1.0, 2.0)
    assert finaliser.latest_due(at("2025-08-20T03:11:00.4")) == at("2025-08-20T03:10:00")  # 0.5 s delay
    assert finaliser.latest_due(at("2025-08-20T03:11:00.5")) == at("2025-08-20T03:11:00")


def test_without_a_dagster_instance_the_service_says_what_to_set(
    service_settings: PlatformSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    line = start_finaliser(service_settings, stop=None)  # type: ignore[arg-type]
    assert isinstance(line, str) and "set DAGSTER_HOME" in line and "AGG_FINALISE=false" in line
    off = start_finaliser(service_settings.model_copy(update={"agg_finalise": False}), stop=None)  # type: ignore[arg-type]
    assert isinstance(off, str) and "automation keeps every hour" in off
    sensor_mode = start_finaliser(service_settings.model_copy(update={"drain_mode": "sensor"}), stop=None)  # type: ignore[arg-type]
    assert isinstance(sensor_mode, str)


def test_the_automation_leaves_the_current_hour_to_the_finaliser(
    service_settings: PlatformSettings,
    settings: PlatformSettings,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
) -> None:
    variants = {
        "finaliser": service_settings,
        # without a finaliser (sensor mode, or AGG_FINALISE=false) the automation keeps the current hour too
        "sensor mode": service_settings.model_copy(update={"drain_mode": "sensor"}),
        "finalise off": service_settings.model_copy(update={"agg_finalise": False}),
    }

    def evaluate(variant: PlatformSettings, cursor: object = None) -> dg.EvaluateAutomationConditionsResult:
        return dg.evaluate_automation_conditions(
            defs=build_definitions(variant, secrets_from_env=False),
            instance=instance,
            asset_selection=dg.AssetSelection.assets(AGG),
            evaluation_time=at("2025-08-20T04:10:00"),
            cursor=cursor,
        )

    cursors = {name: evaluate(variant).cursor for name, variant in variants.items()}
    readings(settings, defs, instance)
    requested = {
        name: sorted(evaluate(variant, cursors[name]).get_requested_partitions(AGG))
        for name, variant in variants.items()
    }
    both = ["2025-08-20-03:00", "2025-08-20-04:00"]
    assert requested == {"finaliser": ["2025-08-20-03:00"], "sensor mode": both, "finalise off": both}


def test_a_finaliser_run_after_the_first_rewrites_only_what_changed_and_the_ui_recomputes_the_hour(
    finaliser: Finaliser,
    settings: PlatformSettings,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    database: DatabaseHandle,
    produced: None,
) -> None:
    first = finaliser.finalise(at("2025-08-20T03:11:00"))
    assert (first.ran, first.reason) == (True, "materialised")
    [run] = finaliser_runs(instance)
    assert run.tags[FINALISE_MODE_TAG] == "full"  # a process' first run trusts nothing it finds
    # the clock is a year past these readings: make it as if that full run had been at 03:11
    hour = at("2025-08-20T03:00")
    with database.connect() as conn:
        conn.execute(
            "UPDATE analytics.agg_materialised_hours SET as_of = %s WHERE hour_start = %s", (first.bucket_end, hour)
        )
        conn.execute(
            "UPDATE analytics.agg_finalise_positions SET closed_until = %s WHERE hour_start = %s",
            (first.bucket_end, hour),
        )
    produce(
        settings.kafka_brokers,
        domain_topic(settings, "sensor"),
        [(KEY, reading("2025-08-20T03:10:45Z", 16.0, "late")), (KEY, reading("2025-08-20T03:11:40Z", 32.0, "e"))],
    )
    drain(defs, instance, ["sensor"])

    second = finaliser.finalise(at("2025-08-20T03:12:00"))
    assert (second.ran, second.reason) == (True, "materialised")
    newest = instance.get_run_by_id(second.run_id)
    assert newest.tags[FINALISE_MODE_TAG] == "incremental"
    metadata = instance.get_latest_materialization_event(AGG).asset_materialization.metadata
    assert metadata["incremental"].value is True
    # 03:11 closed; the series' 03:10 got a late reading; the 300 s and 3600 s buckets are open
    assert metadata["closed_buckets_by_window"].value == {"60s": 1, "300s": 0, "3600s": 0}
    assert metadata["late_series_buckets_by_window"].value == {"60s": 1}
    assert metadata["readings"].value == 5
    assert database.query(BUCKETS) == [
        (at("2025-08-20T03:10"), 3, 19.0, 1.0, 16.0, 1.0, 16.0),
        (at("2025-08-20T03:11"), 2, 36.0, 4.0, 32.0, 4.0, 32.0),
    ]
    assert database.scalar("SELECT as_of FROM analytics.agg_materialised_hours WHERE hour_start = %s", (hour,)) == (
        at("2025-08-20T03:12")
    )

    # a re-materialisation from the UI (no finaliser tags) is the authoritative, full recompute
    materialize(defs, instance, ["sensor_window_aggregates"], "2025-08-20-03:00")
    metadata = instance.get_latest_materialization_event(AGG).asset_materialization.metadata
    assert metadata["incremental"].value is False and "full_because" not in metadata
    assert metadata["readings"].value == 5 and metadata["buckets_by_window"].value == {"60s": 2, "300s": 1, "3600s": 1}
    assert database.scalar("SELECT sum_v FROM analytics.analytics_agg WHERE window_s = 3600") == 55.0


def test_the_finaliser_waits_until_the_drains_committed_what_the_broker_held(
    service_settings: PlatformSettings, defs: dg.Definitions, instance: dg.DagsterInstance, database: DatabaseHandle
) -> None:
    """A bucket is finalised once the sensor drains have committed every message the broker held
    when the wait began (watermarks against the offsets stored with the rows), not at a fixed delay
    that lagging drains overrun; at most a limit, then it finalises anyway and says how many are owed."""
    job = build_definitions(service_settings, secrets_from_env=False).resolve_job_def(LIVE_JOB)
    backlog = Backlog(service_settings)
    finaliser = Finaliser(service_settings, job, instance, backlog=backlog)
    try:
        # nothing produced yet: the topic may not exist, nothing owed
        first = finaliser.wait_drained(5.0)
        assert first.complete and first.reason.startswith("drained in ")
        readings(service_settings, defs, instance)  # four messages, drained: a stored position
        with database.connect() as conn:
            assert backlog.owed(conn, backlog.marks()) == 0
        topic = domain_topic(service_settings, "sensor")
        # one produce request each: Tansu's high watermark is the start of the log's last batch + 1
        # (docs/architecture.md), which is the true end only for a batch of one
        produce(service_settings.kafka_brokers, topic, [(KEY, reading("2025-08-20T03:12:00Z", 16.0, "e"))])
        produce(service_settings.kafka_brokers, topic, [(KEY, reading("2025-08-20T03:12:30Z", 32.0, "f"))])
        marks = backlog.marks()
        with database.connect() as conn:
            assert backlog.owed(conn, marks) == 2
        assert finaliser.wait_drained(0.5) == Drained(False, "2 messages still owed after 0.5 s: finalised anyway")
        drain(defs, instance, ["sensor"])
        with database.connect() as conn:
            assert backlog.owed(conn, marks) == 0
        last = finaliser.wait_drained(5.0)
        assert last.complete and last.reason.startswith("drained in ")
    finally:
        backlog.close()
    # without a backlog (tests, AGG_FINALISE without a broker client): the delay alone, as before
    assert Finaliser(service_settings, job, instance).wait_drained(5.0) == Drained(True, "no backlog to wait for")
