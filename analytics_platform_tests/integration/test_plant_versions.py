"""Emission factors and tariffs with validity dates, through the plant file, the real KPI assets and
PostgreSQL: history stays as it was billed. A day materialised, a new version valid from the next day
loaded, the day re-materialised: the same figures, bit for bit; the next day: the new figures. Two
tenants with different histories stay apart. And migration 29 on a database that had one factor and
one tariff per tenant keeps its figures.

The meters (both tenants' mc-01): an energy counter reading every 20 minutes, +2 kWh each: 6 kWh an
hour, 144 kWh a UTC day, each reading closing the 20 minutes before it.
  t1 (Asia/Bangkok): 0.45 kg/kWh and a flat 0.10 since forever; later a version from 2025-08-21T07:00
     local (= 2025-08-21T00:00Z): 0.40 kg/kWh and a flat 0.12.
     20 Aug: 144 x 0.10 = 14.4, 144 x 0.45 = 64.8; 21 Aug: 144 x 0.12 = 17.28, 144 x 0.40 = 57.6
  t2 (UTC): 0.30 since forever, 0.20 from 2025-08-21T12:00; a flat 0.50.
     20 Aug: 72, 144 x 0.30 = 43.2; 21 Aug: 72, 72 x 0.30 + 72 x 0.20 = 36.0
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from analytics_platform import cli
from analytics_platform.migrations import apply_migrations
from analytics_platform.results.plant import load_plant_config, read_plant
from analytics_platform_tests.support.readings import materialize
from analytics_platform_tests.support.stack import DatabaseHandle, older_database

FIRST = datetime(2025, 8, 19, 23, 40, tzinfo=UTC)
DAY = datetime(2025, 8, 20, tzinfo=UTC)
NEXT = DAY + timedelta(days=1)

BEFORE = """
tenants:
  t1:
    timezone: Asia/Bangkok
    emission_factor_kg_per_kwh: 0.45
    tariff: [{band: flat, start: "00:00", end: "24:00", price: 0.10}]
  t2:
    emission_factors:
      - {kg_per_kwh: 0.30}
      - {from: "2025-08-21T12:00", kg_per_kwh: 0.20}
    tariff: [{band: flat, start: "00:00", end: "24:00", price: 0.50}]
"""
AFTER = """
tenants:
  t1:
    timezone: Asia/Bangkok
    emission_factors:
      - {kg_per_kwh: 0.45}
      - {from: "2025-08-21T07:00", kg_per_kwh: 0.40}
    tariffs:
      - bands: [{band: flat, start: "00:00", end: "24:00", price: 0.10}]
      - from: "2025-08-21T07:00"
        bands: [{band: flat, start: "00:00", end: "24:00", price: 0.12}]
  t2:
    emission_factors:
      - {kg_per_kwh: 0.30}
      - {from: "2025-08-21T12:00", kg_per_kwh: 0.20}
    tariff: [{band: flat, start: "00:00", end: "24:00", price: 0.50}]
"""


def store_meters(database: DatabaseHandle) -> None:
    stamps = [FIRST + timedelta(minutes=20 * n) for n in range(3 * 24 * 2 + 4)]  # to 22 Aug 00:20
    with (
        database.connect() as conn,
        conn.cursor().copy(
            "COPY analytics.raw_sensor_readings (time, tenant_id, factory_id, machine_id, sensor_id, metric, value, "
            "schema_version, dedup_key, topic, kafka_partition, kafka_offset) FROM STDIN"
        ) as copy,
    ):
        offset = 0
        for tenant in ("t1", "t2"):
            for n, at in enumerate(stamps):
                row = (at, tenant, "f1", "mc-01", "meter", "energy", 2.0 * n, 1, f"{tenant}-{n}", "s", 0, offset)
                copy.write_row(row)
                offset += 1


def day_rows(database: DatabaseHandle, day: datetime) -> list[tuple]:
    """Every stored KPI row of the UTC day (all tenants), as stored."""
    return database.query(
        "SELECT tenant_id, kpi, value, null_reason, details::text FROM analytics.analytics_kpi "
        "WHERE period = 'day' AND period_start = %s ORDER BY tenant_id, kpi",
        (day,),
    )


def figures(database: DatabaseHandle, day: datetime) -> dict[tuple[str, str], float | None]:
    return {
        (tenant, kpi): value
        for tenant, kpi, value, _, _ in day_rows(database, day)
        if kpi in ("energy_kwh", "energy_cost", "carbon_kg")
    }


def test_a_new_version_changes_the_days_it_covers_and_no_other(
    defs: dg.Definitions, instance: dg.DagsterInstance, database: DatabaseHandle, tmp_path: Path
) -> None:
    plant_file = tmp_path / "plant.yaml"
    plant_file.write_text(BEFORE)
    with database.connect() as conn:
        load_plant_config(conn, plant_file)
    store_meters(database)
    materialize(defs, instance, ["daily_machine_kpis"], "2025-08-20")
    billed = day_rows(database, DAY)
    assert figures(database, DAY) == {
        ("t1", "energy_kwh"): 144.0,
        ("t1", "energy_cost"): pytest.approx(14.4),
        ("t1", "carbon_kg"): pytest.approx(64.8),
        ("t2", "energy_kwh"): 144.0,
        ("t2", "energy_cost"): pytest.approx(72.0),
        ("t2", "carbon_kg"): pytest.approx(43.2),
    }

    plant_file.write_text(AFTER)
    with database.connect() as conn:
        load_plant_config(conn, plant_file)
    materialize(defs, instance, ["daily_machine_kpis"], "2025-08-20")
    assert day_rows(database, DAY) == billed  # the day as it was billed, every value and detail

    materialize(defs, instance, ["daily_machine_kpis"], "2025-08-21")
    assert figures(database, NEXT) == {
        ("t1", "energy_kwh"): 144.0,
        ("t1", "energy_cost"): pytest.approx(17.28),
        ("t1", "carbon_kg"): pytest.approx(57.6),
        ("t2", "energy_kwh"): 144.0,
        ("t2", "energy_cost"): pytest.approx(72.0),
        ("t2", "carbon_kg"): pytest.approx(36.0),
    }
    details = {t: json.loads(d) for t, kpi, _, _, d in day_rows(database, NEXT) if kpi == "carbon_kg"}
    assert details == {
        "t1": {"kg_co2_per_kwh": 0.4},
        "t2": {"kg_co2_per_kwh": None, "kwh_by_factor": {"0.3": 72.0, "0.2": 72.0}},
    }


def test_loading_replaces_a_tenants_history(database: DatabaseHandle, tmp_path: Path) -> None:
    """The file is the history: a version dropped from it is dropped from the tables; `-infinity` is
    stored for the version since forever and read back as NULL."""
    plant_file = tmp_path / "plant.yaml"
    plant_file.write_text(AFTER)
    with database.connect() as conn:
        load_plant_config(conn, plant_file)
    plant_file.write_text(BEFORE)
    with database.connect() as conn:
        load_plant_config(conn, plant_file)
        stored = read_plant(conn)
    assert database.query(
        "SELECT tenant_id, valid_from::text, kg_per_kwh FROM analytics.plant_emission_factors ORDER BY 1, 2"
    ) == [("t1", "-infinity", 0.45), ("t2", "-infinity", 0.3), ("t2", "2025-08-21 12:00:00+00", 0.2)]
    assert database.query(
        "SELECT tenant_id, valid_from::text, band, price FROM analytics.plant_tariff_bands ORDER BY 1, 2"
    ) == [("t1", "-infinity", "flat", 0.1), ("t2", "-infinity", "flat", 0.5)]
    assert sorted(stored.emission_factors.rows(), key=str) == sorted(
        [("t1", None, 0.45), ("t2", None, 0.3), ("t2", datetime(2025, 8, 21, 12, tzinfo=UTC), 0.2)], key=str
    )


def test_plant_show_prints_the_versions_and_a_bad_file_loads_nothing(
    database: DatabaseHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", database.admin_url)
    plant_file = tmp_path / "plant.yaml"
    plant_file.write_text(AFTER)
    assert cli.main(["plant", "load", str(plant_file)]) == 0
    plant_file.write_text(AFTER.replace("kg_per_kwh: 0.40", "kg_per_kwh: -0.40"))
    capsys.readouterr()
    assert cli.main(["plant", "load", str(plant_file)]) == 2
    assert capsys.readouterr().err == (
        f"error: {plant_file} tenant t1 emission_factors entry 2 kg_per_kwh must be zero or more, got -0.4\n"
    )
    assert cli.main(["plant", "show"]) == 0
    shown = capsys.readouterr().out
    assert "emission factors (versions):\n" in shown
    assert (
        "  tenant_id=t1, valid_from=since forever, kg_per_kwh=0.45\n"
        "  tenant_id=t1, valid_from=2025-08-21T00:00:00Z, kg_per_kwh=0.4\n"
        "  tenant_id=t2, valid_from=since forever, kg_per_kwh=0.3\n"
        "  tenant_id=t2, valid_from=2025-08-21T12:00:00Z, kg_per_kwh=0.2\n"
    ) in shown
    assert (
        "  tenant_id=t1, valid_from=since forever, band=flat, start_minute=0, end_minute=1440, price=0.1\n"
        "  tenant_id=t1, valid_from=2025-08-21T00:00:00Z, band=flat, start_minute=0, end_minute=1440, price=0.12\n"
    ) in shown


def test_migration_29_keeps_a_databases_factor_and_bands_as_the_versions_since_forever(
    pg_admin_url: str, repo_root: Path, tmp_path: Path
) -> None:
    older = [path for path in sorted((repo_root / "sql").glob("*.sql")) if path.name < "29"]
    with older_database(pg_admin_url, older, tmp_path) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO analytics.plant_tenants (tenant_id, timezone, currency, emission_factor_kg_per_kwh) "
                "VALUES ('*', 'UTC', 'USD', 0.45), ('t1', 'Asia/Bangkok', 'THB', 0.4999), ('t9', 'UTC', 'USD', NULL)"
            )
            conn.execute(
                "INSERT INTO analytics.plant_tariff_bands (tenant_id, band, start_minute, end_minute, price) "
                "VALUES ('t1', 'peak', 540, 1320, 4.18), ('t1', 'off_peak', 1320, 540, 2.60)"
            )
        results = {r.version: r.action for r in apply_migrations(url)}
        assert results["29_plant_versions"] == "applied"
        for _ in range(2):  # a re-run changes nothing
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute((repo_root / "sql" / "29_plant_versions.sql").read_text())
        with psycopg.connect(url, autocommit=True) as conn:
            factors = conn.execute(
                "SELECT tenant_id, valid_from::text, kg_per_kwh FROM analytics.plant_emission_factors ORDER BY 1"
            ).fetchall()
            bands = conn.execute(
                "SELECT tenant_id, valid_from::text, band FROM analytics.plant_tariff_bands ORDER BY band"
            ).fetchall()
            columns = conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'analytics' "
                "AND table_name = 'plant_tenants' ORDER BY ordinal_position"
            ).fetchall()
            key = conn.execute(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'plant_tariff_bands_pkey'"
            ).fetchone()
        assert factors == [("*", "-infinity", 0.45), ("t1", "-infinity", 0.4999)]
        assert bands == [("t1", "-infinity", "off_peak"), ("t1", "-infinity", "peak")]
        assert [c[0] for c in columns] == ["tenant_id", "timezone", "currency", "updated_at"]
        assert key == ("PRIMARY KEY (tenant_id, valid_from, band, start_minute)",)
