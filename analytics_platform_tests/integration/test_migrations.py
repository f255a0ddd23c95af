"""Migrations: numbered, idempotent, recorded; the schema the foundation promises; two roles."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from analytics_platform.migrations import apply_migrations, discover
from analytics_platform_tests.support.stack import DatabaseHandle, new_database, older_database

TABLES = {
    "kafka_landing",
    "raw_sensor_readings",
    "raw_device_health",
    "raw_sweep_readings",
    "raw_lab_results",
    "rejected_message",
    "worker_checkpoints",
    "drain_reports",
    "analytics_agg",
    "analytics_lab_agg",
    "analytics_anomaly",
    "analytics_kpi",
    "analytics_spec_limits",
    "analytics_event",
    "analytics_event_rollup",
    "plant_tenants",
    "plant_tariff_bands",
    "plant_emission_factors",
    "plant_shifts",
    "machine_metadata",
    "analytics_baseline",
    "analytics_baseline_deviation",
    "analytics_trend",
    "analytics_anomaly_model",
    "alert_rules",
    "alert_mutes",
    "alert_conditions",
    "alert_log",
    "api_keys",
    "api_jobs",
    "schema_migrations",
    "raw_rederivations",
    "metric_catalog",
    "metric_policy",
    "ingest_resets",
    "agg_daily",
    "agg_daily_days",
    "agg_materialised_days",
    "agg_finalise_positions",
    "analytics_forecast",
}
VIEWS = {
    "v_agg_latest",
    "v_anomaly_recent",
    "v_kpi_latest",
    "v_event_daily",
    "v_rejects_summary",
    "v_ingest_progress",
    "v_anomaly_profile",
}


@pytest.fixture
def database(pg_admin_url: str, login_roles: dict[str, str]) -> Iterator[DatabaseHandle]:
    """Migrated from scratch here, not copied from the session's template: these tests are about
    what the migrations do to a new database."""
    with new_database(pg_admin_url, login_roles) as handle:
        yield handle


def test_files_are_numbered_and_ordered(repo_root) -> None:
    versions = [m.version for m in discover(repo_root / "sql")]
    assert versions[:11] == [
        "01_analytics_core",
        "02_analytics_events",
        "03_analytics_rollup_subjects",
        "04_analytics_energy",
        "05_analytics_alerts",
        "06_analytics_api",
        "07_sender_identity",
        "08_metric_catalog",
        "09_log_identity",
        "10_analytics_views",
        "11_anomaly_events",
    ]
    assert versions == sorted(versions, key=lambda v: int(v.split("_", 1)[0]))


def test_schema_tables_and_views_exist(database: DatabaseHandle) -> None:
    tables = {
        r[0]
        for r in database.query(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'analytics' AND table_type = 'BASE TABLE'"
        )
    }
    views = {
        r[0] for r in database.query("SELECT table_name FROM information_schema.views WHERE table_schema = 'analytics'")
    }
    assert tables >= TABLES
    # on TimescaleDB the daily continuous aggregate is a view too
    timescale = database.scalar("SELECT analytics.timescale_enabled()")
    assert views == VIEWS | ({"analytics_agg_daily"} if timescale else set())
    applied = database.query("SELECT version FROM analytics.schema_migrations ORDER BY version")
    assert [r[0] for r in applied] == [
        "01_analytics_core",
        "02_analytics_events",
        "03_analytics_rollup_subjects",
        "04_analytics_energy",
        "05_analytics_alerts",
        "06_analytics_api",
        "07_sender_identity",
        "08_metric_catalog",
        "09_log_identity",
        "10_analytics_views",
        "11_anomaly_events",
        "12_agg_materialised_hours",
        "13_live_detection",
        "14_agg_daily",
        "15_drain_reports",
        "16_sweep_out_of_spec",
        "18_lab_agg",
        "19_trends",
        "20_alert_kpi_trend_kinds",
        "21_energy_forecasts",
        "22_api_jobs",
        "23_alert_forecast_kind",
        "24_agg_finalise_positions",
        "26_pipeline_sees_writers",
        "27_agg_window_as_of",
        "28_agg_materialised_days",
        "29_plant_versions",
        "30_oee_terms",
        "31_agg_daily_m2",
        "32_baseline_cv_rmse",
        "33_agg_daily_cagg_m2",
    ]


def test_rerun_is_a_no_op_and_a_changed_file_is_reapplied(database: DatabaseHandle, repo_root, tmp_path) -> None:
    assert {r.action for r in apply_migrations(database.admin_url)} == {"skipped"}
    copy = tmp_path / "sql"
    shutil.copytree(repo_root / "sql", copy)
    views = copy / "10_analytics_views.sql"
    views.write_text(views.read_text() + "\n-- a comment changes the checksum\n")
    results = {r.version: r.action for r in apply_migrations(database.admin_url, copy)}
    assert results == {
        "01_analytics_core": "skipped",
        "02_analytics_events": "skipped",
        "03_analytics_rollup_subjects": "skipped",
        "04_analytics_energy": "skipped",
        "05_analytics_alerts": "skipped",
        "06_analytics_api": "skipped",
        "07_sender_identity": "skipped",
        "08_metric_catalog": "skipped",
        "09_log_identity": "skipped",
        "10_analytics_views": "reapplied",
        "11_anomaly_events": "skipped",
        "12_agg_materialised_hours": "skipped",
        "13_live_detection": "skipped",
        "14_agg_daily": "skipped",
        "15_drain_reports": "skipped",
        "16_sweep_out_of_spec": "skipped",
        "18_lab_agg": "skipped",
        "19_trends": "skipped",
        "20_alert_kpi_trend_kinds": "skipped",
        "21_energy_forecasts": "skipped",
        "22_api_jobs": "skipped",
        "23_alert_forecast_kind": "skipped",
        "24_agg_finalise_positions": "skipped",
        "26_pipeline_sees_writers": "skipped",
        "27_agg_window_as_of": "skipped",
        "28_agg_materialised_days": "skipped",
        "29_plant_versions": "skipped",
        "30_oee_terms": "skipped",
        "31_agg_daily_m2": "skipped",
        "32_baseline_cv_rmse": "skipped",
        "33_agg_daily_cagg_m2": "skipped",
    }
    # re-applying a file twice more changes nothing either (idempotent statements)
    for path in sorted(copy.glob("*.sql")):
        with psycopg.connect(database.admin_url, autocommit=True) as conn:
            conn.execute(path.read_text())


def test_rollup_subjects_upgrade_a_database_that_has_rollups(pg_admin_url: str, repo_root, tmp_path) -> None:
    """03 on a database migrated before it: existing rollup rows get subject '' and the key gains
    subject, so one station can hold a pass rate per analyte."""
    files = [repo_root / "sql" / name for name in ("01_analytics_core.sql", "02_analytics_events.sql")]
    with older_database(pg_admin_url, files, tmp_path) as url:
        insert = (
            "INSERT INTO analytics.analytics_event_rollup (bucket_start, bucket_end, window_s, tenant_id, factory_id, "
            "machine_id, event_type, count_n) VALUES ('2025-08-20', '2025-08-21', 86400, 't1', 'f1', 'lab-f1', "
            "'lab_result', 3)"
        )
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(insert)
        results = {r.version: r.action for r in apply_migrations(url)}
        assert results["03_analytics_rollup_subjects"] == "applied"
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT subject, count_n FROM analytics.analytics_event_rollup").fetchall() == [("", 3)]
            conn.execute(insert.replace("count_n)", "count_n, subject)").replace("3)", "2, 'pH')"))
            key = conn.execute(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = 'analytics.analytics_event_rollup'::regclass AND contype = 'p'"
            ).fetchone()[0]
        assert key == "PRIMARY KEY (tenant_id, factory_id, machine_id, event_type, subject, window_s, bucket_start)"


def test_energy_upgrade_keeps_device_rows_even_in_compressed_chunks(pg_admin_url: str, repo_root, tmp_path) -> None:
    """04 on a database migrated before it: existing device.health rows (in a compressed chunk on
    TimescaleDB) gain a NULL run_state, and new rows can carry one. The rows are ten days old:
    older than the 7 days after which chunks compress, younger than the raw tables' 90-day
    retention, whose job would otherwise drop them whenever the scheduler runs it."""
    earlier = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=10)
    names = ("01_analytics_core.sql", "02_analytics_events.sql", "03_analytics_rollup_subjects.sql")
    insert = (
        "INSERT INTO analytics.raw_device_health (time, tenant_id, factory_id, machine_id, status, schema_version, "
        "dedup_key, topic, kafka_partition, kafka_offset) VALUES (%s, 't1', 'f1', 'mc-01', 'online', 1, %s, "
        "'device.health', 0, %s)"
    )
    with older_database(pg_admin_url, [repo_root / "sql" / name for name in names], tmp_path) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(insert, (earlier, "a", 1))
            if conn.execute("SELECT analytics.timescale_enabled()").fetchone()[0]:
                conn.execute("SELECT compress_chunk(c) FROM show_chunks('analytics.raw_device_health') c")
        results = {r.version: r.action for r in apply_migrations(url)}
        assert results["04_analytics_energy"] == "applied"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                insert.replace("'online'", "NULL")
                .replace("kafka_offset)", "kafka_offset, run_state)")
                .replace("%s)", "%s, 'running')"),
                (earlier + timedelta(minutes=5), "b", 2),
            )
            rows = conn.execute(
                "SELECT time, status, run_state FROM analytics.raw_device_health ORDER BY time"
            ).fetchall()
        assert [(r[1], r[2]) for r in rows] == [("online", None), (None, "running")]


def test_timescale_on_fails_clearly_without_the_extension(database: DatabaseHandle) -> None:
    available = database.scalar("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")
    if available:
        pytest.skip("this server has TimescaleDB")
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        conn.execute("DELETE FROM analytics.schema_migrations WHERE version = '01_analytics_core'")
    with pytest.raises(psycopg.errors.RaiseException, match="timescaledb is not"):
        apply_migrations(database.admin_url, timescale="on")


def test_read_only_and_read_write_roles(database: DatabaseHandle) -> None:
    insert = (
        "INSERT INTO analytics.worker_checkpoints (consumer, topic, kafka_partition, next_offset) "
        "VALUES ('c', 't', 0, 1)"
    )
    with psycopg.connect(database.pipeline_url, autocommit=True) as conn:
        conn.execute(insert)
        assert conn.execute("SELECT next_offset FROM analytics.worker_checkpoints").fetchall() == [(1,)]
    with psycopg.connect(database.api_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM analytics.worker_checkpoints").fetchone() == (1,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM analytics.worker_checkpoints")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(insert.replace("'c'", "'d'"))


def test_timeseries_tables_on_the_available_path(database: DatabaseHandle) -> None:
    """Hypertables with compression and retention on TimescaleDB; plain tables otherwise, same indexes."""
    timescale = database.scalar("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'") == 1
    indexes = {
        r[0]
        for r in database.query(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'analytics' AND tablename = 'raw_sensor_readings'"
        )
    }
    assert indexes == {
        "raw_sensor_readings_pkey",
        "raw_sensor_readings_key_idx",
        "raw_sensor_readings_uncatalogued_idx",
        "raw_sensor_readings_ingested_idx",
    }
    if not timescale:
        assert database.scalar("SELECT analytics.timescale_enabled()") is False
        return
    hypertables = {
        r[0]
        for r in database.query(
            "SELECT hypertable_name FROM timescaledb_information.hypertables WHERE hypertable_schema = 'analytics'"
        )
    }
    assert {
        "kafka_landing",
        "raw_sensor_readings",
        "raw_device_health",
        "raw_sweep_readings",
        "raw_lab_results",
        "analytics_agg",
        "analytics_lab_agg",
        "analytics_kpi",
        "analytics_event",
        "analytics_event_rollup",
        "analytics_baseline_deviation",
        "analytics_trend",
        "analytics_forecast",
    } == hypertables
    jobs = set(
        database.query(
            "SELECT hypertable_name, proc_name FROM timescaledb_information.jobs WHERE hypertable_schema = 'analytics'"
        )
    )
    for table in ("kafka_landing", "raw_sensor_readings", "raw_device_health", "raw_sweep_readings", "raw_lab_results"):
        assert (table, "policy_compression") in jobs
        assert (table, "policy_retention") in jobs


def test_daily_continuous_aggregate_only_on_timescaledb(database: DatabaseHandle) -> None:
    """The API reads whole days from analytics_agg_daily on TimescaleDB (refreshed by a policy, with
    real-time aggregation for hours not yet materialised); plain PostgreSQL has no such view."""
    timescale = database.scalar("SELECT analytics.timescale_enabled()")
    exists = database.scalar("SELECT to_regclass('analytics.analytics_agg_daily') IS NOT NULL")
    assert exists is timescale
    if not timescale:
        return
    assert database.query(
        "SELECT materialized_only FROM timescaledb_information.continuous_aggregates "
        "WHERE view_schema = 'analytics' AND view_name = 'analytics_agg_daily'"
    ) == [(False,)]
    assert (
        database.scalar(
            "SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'policy_refresh_continuous_aggregate'"
        )
        == 1
    )
    columns = (
        "bucket_start, bucket_end, window_s, tenant_id, factory_id, machine_id, sensor_id, metric, "
        "count_n, sum_v, avg_v, min_v, max_v, stddev_v, first_v, last_v"
    )
    series = ("t1", "f1", "m1", "s1", "temp")
    rows = [
        ("2025-08-20T01:00Z", "2025-08-20T02:00Z", 3600, *series, 2, 3, 1.5, 1, 2, None, 1, 2),
        ("2025-08-20T02:00Z", "2025-08-20T03:00Z", 3600, *series, 1, 5, 5, 5, 5, None, 5, 5),
        ("2025-08-20T02:00Z", "2025-08-20T02:01Z", 60, *series, 9, 9, 1, 1, 1, None, 1, 1),
    ]
    with psycopg.connect(database.admin_url, autocommit=True) as conn, conn.cursor() as cur:
        marks = ", ".join(["%s"] * 16)
        cur.executemany(f"INSERT INTO analytics.analytics_agg ({columns}) VALUES ({marks})", rows)
    # real-time aggregation: the hours count before any refresh; the 60 s row does not
    with psycopg.connect(database.api_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT bucket_start::text, count_n, sum_v, min_v, max_v, first_v, last_v, sumsq_v, "
            "m2_within_v, mean_sum_n, mean_sq_n FROM analytics.analytics_agg_daily"
        ).fetchall()
    # Σx² = (2-1)·0² + 2·1.5² + (1-1)·0² + 1·5² = 4.5 + 25; the hours' own squared deviations 0 + 0;
    # Σ n·mean = 2·1.5 + 1·5 = 8, Σ n·mean² = 2·2.25 + 1·25 = 29.5 (numeric)
    assert rows == [("2025-08-20 00:00:00+00", 3, 8.0, 1.0, 5.0, 1.0, 5.0, 29.5, 0.0, Decimal("8.0"), Decimal("29.50"))]


def test_migration_33_remakes_the_daily_continuous_aggregate_with_a_spread_that_does_not_cancel(
    pg_admin_url: str, repo_root, tmp_path
) -> None:
    """A TimescaleDB database an older release migrated has the daily continuous aggregate with Σx² only
    (a day of 10000000.1 .. 10000000.3 read back as stddev 0). sql/33 makes it again with the hours' own
    squared deviations and numeric sums of their means; it serves the stored hours at once (real-time
    aggregation) and the same after its refresh; a re-run changes nothing. On plain PostgreSQL it is a no-op."""
    base = 10_000_000.0
    older = [path for path in sorted((repo_root / "sql").glob("*.sql")) if path.name < "33"]
    day = datetime(2025, 8, 20, tzinfo=UTC)
    with older_database(pg_admin_url, older, tmp_path) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            timescale = conn.execute("SELECT analytics.timescale_enabled()").fetchone()[0]
            for hour in range(6):  # each hour 10000000.1, .3, .2: mean 10000000.2, sample stddev 0.1
                start = day + timedelta(hours=hour)
                conn.execute(
                    "INSERT INTO analytics.analytics_agg (bucket_start, bucket_end, window_s, tenant_id, factory_id, "
                    "machine_id, sensor_id, metric, count_n, sum_v, avg_v, min_v, max_v, stddev_v, first_v, last_v) "
                    "VALUES (%s, %s, 3600, 't1', 'f1', 'm1', 's1', 'temp', 3, %s, %s, %s, %s, 0.1, %s, %s)",
                    (
                        start,
                        start + timedelta(hours=1),
                        3 * (base + 0.2),
                        base + 0.2,
                        base + 0.1,
                        base + 0.3,
                        base + 0.1,
                        base + 0.2,
                    ),
                )
        assert {r.version: r.action for r in apply_migrations(url)}["33_agg_daily_cagg_m2"] == "applied"
        with psycopg.connect(url, autocommit=True) as conn:
            view = conn.execute("SELECT to_regclass('analytics.analytics_agg_daily') IS NOT NULL").fetchone()[0]
            assert view is timescale
            if not timescale:
                return
            read = (
                "SELECT count_n, m2_within_v, mean_sum_n, mean_sq_n, sqrt(m2_within_v + ((count_n * mean_sq_n "
                "- mean_sum_n * mean_sum_n) / count_n)::float8) / sqrt(count_n - 1) FROM analytics.analytics_agg_daily"
            )
            # 18 readings: the hours' squared deviations 6 x (3 - 1) x 0.1² = 0.12, the hours' means all the
            # day's (Σ n·mean = 18 x 10000000.2, Σ n·mean² = 18 x 10000000.2², exactly): stddev sqrt(0.12 / 17)
            expected = (18, Decimal("180000003.6"), Decimal("1800000072000000.72"))
            before_refresh = conn.execute(read).fetchall()
            conn.execute("CALL refresh_continuous_aggregate('analytics.analytics_agg_daily', NULL, NULL)")
            refreshed = conn.execute(read).fetchall()
            conn.execute((repo_root / "sql" / "33_agg_daily_cagg_m2.sql").read_text())  # a re-run: nothing
            rerun = conn.execute(read).fetchall()
            jobs = conn.execute(
                "SELECT count(*) FROM timescaledb_information.jobs "
                "WHERE proc_name = 'policy_refresh_continuous_aggregate'"
            ).fetchone()[0]
            materialised = conn.execute(
                "SELECT count(*) FROM analytics.analytics_agg_daily WHERE bucket_start < "
                "_timescaledb_functions.to_timestamp(_timescaledb_functions.cagg_watermark("
                "(SELECT mat_hypertable_id FROM _timescaledb_catalog.continuous_agg WHERE user_view_name = "
                "'analytics_agg_daily')))"
            ).fetchone()[0]
    for rows in (before_refresh, refreshed, rerun):
        ((count, within, mean_sum, mean_sq, stddev),) = rows
        assert (count, mean_sum, mean_sq) == expected
        assert math.isclose(within, 0.12, rel_tol=1e-9)
        assert math.isclose(stddev, math.sqrt(0.12 / 17), rel_tol=1e-9)
    assert jobs == 1
    assert materialised == 1  # the refresh materialised the day, and the re-run did not drop it


def test_migration_30_gives_stored_oee_rows_their_terms_and_an_idle_hours_oee_zero(
    pg_admin_url: str, repo_root, tmp_path
) -> None:
    """Rows written before OEE became good x ideal / planned busy time carry no terms in their details (a
    month over them would leave them out) and an idle hour's OEE is NULL. The migration fills both from the
    same hour's rows, as the assets now write them, and re-versions the periods it touched."""
    idle, made, blind = (datetime(2026, 3, 2, h, tzinfo=UTC) for h in (10, 11, 12))
    q = "quality: no units produced in the period"
    rows = [
        # 10:00 idle all hour: nothing made in 3600 s of planned time
        (idle, "availability", 0.0, None, {"run_time_s": 0.0, "planned_busy_s": 3600.0, "unknown_s": 0.0}),
        (idle, "run_time_s", 0.0, None, None),
        (idle, "performance", None, "no run time in the period", {"ideal_cycle_time_s": 2.0}),
        (idle, "good_count", 0.0, None, None),
        (idle, "oee", None, q, {"availability": 0.0, "performance": None, "quality": None}),
        # 11:00 ran 1800 s of 3000 planned, 700 good of 720
        (made, "availability", 0.6, None, {"run_time_s": 1800.0, "planned_busy_s": 3000.0, "unknown_s": 0.0}),
        (made, "run_time_s", 1800.0, None, None),
        (made, "performance", 0.8, None, {"ideal_cycle_time_s": 2.0}),
        (made, "good_count", 700.0, None, None),
        (made, "oee", 700 * 2.0 / 3000, None, {"availability": 0.6, "performance": 0.8, "quality": 700 / 720}),
        # 12:00 no run states: no planned production time is known
        (blind, "availability", None, "no run-state data for the machine in the period", {"planned_busy_s": 0.0}),
        (blind, "run_time_s", None, "no run-state data for the machine in the period", None),
        (blind, "performance", None, "no run-state data", {"ideal_cycle_time_s": 2.0}),
        (blind, "good_count", 0.0, None, None),
        (blind, "oee", None, "availability: no run-state data for the machine in the period", {}),
    ]
    older = [path for path in sorted((repo_root / "sql").glob("*.sql")) if path.name < "30"]
    with older_database(pg_admin_url, older, tmp_path) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            for start, kpi, value, why, details in rows:
                conn.execute(
                    "INSERT INTO analytics.analytics_kpi (period_start, period_end, period, tenant_id, factory_id, "
                    "machine_id, kpi, value, null_reason, details) VALUES (%s, %s, 'hour', 't1', 'f1', 'm1', %s, %s, "
                    "%s, %s)",
                    (start, start + timedelta(hours=1), kpi, value, why, psycopg.types.json.Jsonb(details)),
                )
            conn.execute(
                "INSERT INTO analytics.kpi_materialised_periods (period, period_start) VALUES ('hour', %s), "
                "('hour', %s), ('day', %s)",
                (idle, made, idle.replace(hour=0)),
            )
            before = dict(
                conn.execute("SELECT period, max(version) FROM analytics.kpi_materialised_periods GROUP BY 1")
            )
        assert {r.version: r.action for r in apply_migrations(url)}["30_oee_terms"] == "applied"
        for _ in range(2):  # a re-run changes nothing
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute((repo_root / "sql" / "30_oee_terms.sql").read_text())
        with psycopg.connect(url, autocommit=True) as conn:
            got = conn.execute(
                "SELECT period_start, value, null_reason, details FROM analytics.analytics_kpi WHERE kpi = 'oee' "
                "ORDER BY period_start"
            ).fetchall()
            versions = conn.execute(
                "SELECT period, period_start, version FROM analytics.kpi_materialised_periods ORDER BY version"
            ).fetchall()
        assert got == [
            (
                idle,
                0.0,
                None,
                {
                    "availability": 0.0,
                    "performance": None,
                    "quality": None,
                    "ideal_cycle_time_s": 2.0,
                    "planned_busy_s": 3600.0,
                },
            ),
            (
                made,
                700 * 2.0 / 3000,
                None,
                {
                    "availability": 0.6,
                    "performance": 0.8,
                    "quality": 700 / 720,
                    "ideal_cycle_time_s": 2.0,
                    "planned_busy_s": 3000.0,
                },
            ),
            (
                blind,
                None,
                "availability: no run-state data for the machine in the period",
                {"ideal_cycle_time_s": 2.0, "planned_busy_s": None},
            ),
        ]
        # the two hours touched drew new versions (once: the re-runs found nothing), the day did not
        assert versions[0][:2] == ("day", idle.replace(hour=0)) and versions[0][2] == before["day"]
        assert sorted(s for _, s, _ in versions[1:]) == [idle, made]
        assert min(v for _, _, v in versions[1:]) > max(before.values())
