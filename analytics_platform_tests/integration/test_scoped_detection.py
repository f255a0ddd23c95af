"""Detection scoped to a tenant's factory or machine and some methods (issue 25, POST /v1/anomalies/detect),
on real PostgreSQL: the scoped run judges and rewrites its scope's rows exactly as a full run does, and
leaves every other row untouched to the byte (its xmin included: not even rewritten with equal values).

Three temperature series with the same ids in two tenants: t1/f1/m1 and t2/f1/m1 (the same factory and
machine ids), and t1/f1/m2 (a second machine of t1), each with a spike in the judged hour; t1/f1/m1
and t2/f1/m1 also have an active energy baseline their hour deviates from (a critical baseline row)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from analytics_platform.defs.anomalies import READING_ANOMALIES
from analytics_platform.defs.anomalies.assets import SCOPE_TAG
from analytics_platform.defs.partitions import partition_key
from analytics_platform.results.anomalies import AnomalyOptions, Scope, recompute_anomalies
from analytics_platform.transforms.window_aggregates import READING_SCHEMA
from analytics_platform_tests.support.readings import materialize, store_raw_readings
from analytics_platform_tests.support.stack import DatabaseHandle

START = datetime(2025, 8, 15, tzinfo=UTC)  # four days of history before the judged hour
HOUR = datetime(2025, 8, 19, 13, tzinfo=UTC)
END = HOUR + timedelta(hours=1)
SERIES = {  # machine -> the minute of its spike in HOUR and its size
    ("t1", "f1", "m1"): (5, 12.0),
    ("t2", "f1", "m1"): (25, 14.0),
    ("t1", "f1", "m2"): (45, 13.0),
}
IN_SCOPE = ("t1", "f1", "m1")
# every column of a row, and its xmin: a row rewritten with equal values has a new one
ROWS = "SELECT a.*, a.xmin::text AS xmin FROM analytics.analytics_anomaly a ORDER BY a.anomaly_id"
JUDGED = (
    "SELECT anomaly_id, tenant_id, factory_id, machine_id, sensor_id, metric, method, anomaly_type, time, "
    "window_start, window_end, score, severity, severity_label, confidence, observed, expected, details, "
    "model_version, sample_s, detected_live_at, confirmed_at FROM analytics.analytics_anomaly "
    "WHERE (tenant_id, factory_id, machine_id) = (%s, %s, %s) ORDER BY anomaly_id"
)
MODELS = "SELECT m.*, m.xmin::text FROM analytics.analytics_anomaly_model m ORDER BY model_id"
MODEL_VALUES = (  # a model as fitted (its id, version and creation time aside)
    "SELECT sensor_id, metric, method, trained_from, trained_to, n_samples, contamination, params, library, model, "
    "active FROM analytics.analytics_anomaly_model WHERE (tenant_id, factory_id, machine_id) = (%s, %s, %s) "
    "ORDER BY method, sensor_id"
)
DEVIATIONS = (
    "SELECT tenant_id, machine_id, period, period_start, baseline_version, actual_kwh, predicted_kwh, z, severity, "
    "computed_at, d.xmin::text FROM analytics.analytics_baseline_deviation d ORDER BY tenant_id, machine_id"
)


def temperature(t: datetime, minute: int, size: float) -> float:
    days = (t - START).total_seconds() / 86_400
    value = 60 + 8 * math.cos(2 * math.pi * (days % 1 - 15 / 24)) + 0.4 * math.sin(17.3 * days * 24)
    if t == HOUR + timedelta(minutes=minute):
        value += size
    return round(value, 4)


def machine_of(row: dict) -> tuple[str, str, str]:
    return row["tenant_id"], row["factory_id"], row["machine_id"]


@pytest.fixture
def plant(database: DatabaseHandle) -> DatabaseHandle:
    rows = []
    t = START
    while t < END:
        for (tenant, factory, machine), (minute, size) in SERIES.items():
            rows.append((t, tenant, factory, machine, "s-temp", "temp", temperature(t, minute, size)))
        t += timedelta(minutes=5)
    frame = pl.DataFrame(rows, schema=READING_SCHEMA, orient="row")
    key = pl.concat_str("tenant_id", "machine_id", pl.col("time").dt.epoch("s").cast(pl.String), separator="|")
    store_raw_readings(database, frame, dedup_key=key, aggregates=pl.lit(True))
    with database.connect() as conn, conn.cursor() as cur:
        for tenant in ("t1", "t2"):  # energy = 10 + 0.05·production, RMSE 1 kWh: 70 kWh is z = 10
            cur.execute(
                "INSERT INTO analytics.analytics_baseline (tenant_id, factory_id, machine_id, version, target, "
                "drivers, coefficients, p_values, std_errors, r2, adj_r2, rmse, mae, n, excluded, trained_from, "
                "trained_to, accepted) VALUES (%s, 'f1', 'm1', 1, 'energy_kwh', ARRAY['production_count'], "
                '\'{"intercept": 10, "production_count": 0.05}\', \'{"intercept": 0, "production_count": 0}\', '
                '\'{"intercept": 0, "production_count": 0}\', 0.99, 0.99, 1.0, 0.8, 1000, 0, %s, %s, true)',
                (tenant, START - timedelta(days=60), START),
            )
            for kpi, value, details in (
                ("production_count", 1000.0, None),
                ("energy_kwh", 70.0, None),
                ("fault_time_s", 0.0, None),
                ("planned_downtime_s", 0.0, '{"maintenance_s": 0}'),
            ):
                cur.execute(
                    "INSERT INTO analytics.analytics_kpi (period_start, period_end, period, tenant_id, factory_id, "
                    "machine_id, kpi, value, unit, details) VALUES (%s, %s, 'hour', %s, 'f1', 'm1', %s, %s, '', %s)",
                    (HOUR, END, tenant, kpi, value, details),
                )
    return database


def rows_by_machine(database: DatabaseHandle) -> dict[tuple, list[dict]]:
    with database.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
        found: dict[tuple, list[dict]] = {}
        for row in cur.execute(ROWS).fetchall():
            found.setdefault(machine_of(row), []).append(row)
    return found


def judged(database: DatabaseHandle, machine: tuple[str, str, str]) -> list[tuple]:
    return database.query(JUDGED, machine)


def test_a_machine_judged_alone_gets_the_rows_a_full_run_gives_it_and_nothing_else_is_read_or_written(
    plant: DatabaseHandle,
) -> None:
    """From nothing stored: the scoped run fits its own series' forest and profile, and writes its
    machine's anomalies and baseline deviation only; the full run afterwards writes the other machines'
    and gives this machine's rows the very same values (same ids: updated in place to equal values)."""
    options = AnomalyOptions()
    with plant.connect(plant.pipeline_url) as conn:
        run = recompute_anomalies(conn, HOUR, END, options, scope=Scope(*IN_SCOPE))
    alone = judged(plant, IN_SCOPE)
    assert {r[6] for r in alone} >= {"deviation", "isolation_forest", "baseline"}  # the detectors all spoke
    assert run.anomalies == len(alone) and run.readings == 12
    assert plant.query("SELECT DISTINCT tenant_id, machine_id FROM analytics.analytics_anomaly") == [("t1", "m1")]
    assert plant.query("SELECT DISTINCT tenant_id, machine_id FROM analytics.analytics_anomaly_model") == [("t1", "m1")]
    assert plant.query("SELECT tenant_id, machine_id, severity FROM analytics.analytics_baseline_deviation") == [
        ("t1", "m1", "critical")
    ]

    with plant.connect(plant.pipeline_url) as conn:
        recompute_anomalies(conn, HOUR, END, options)
    assert judged(plant, IN_SCOPE) == alone
    for machine in SERIES:  # every machine now has its spike judged
        assert {r[6] for r in judged(plant, machine)} >= {"deviation", "isolation_forest"}
    assert plant.query(
        "SELECT tenant_id, machine_id, severity FROM analytics.analytics_baseline_deviation ORDER BY 1, 2"
    ) == [("t1", "m1", "critical"), ("t2", "m1", "critical")]

    # and from nothing stored again, the full run fitting every series' forest and profile itself
    # gives the machine the same rows (new ids, a new confirmation time) and the same models
    models = plant.query(MODEL_VALUES, IN_SCOPE)
    with plant.connect() as conn:
        for table in ("analytics_anomaly", "analytics_anomaly_model", "analytics_baseline_deviation"):
            conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier("analytics", table)))
    with plant.connect(plant.pipeline_url) as conn:
        recompute_anomalies(conn, HOUR, END, options)
    assert [r[1:-1] for r in judged(plant, IN_SCOPE)] == [r[1:-1] for r in alone]
    assert plant.query(MODEL_VALUES, IN_SCOPE) == models


def tamper(database: DatabaseHandle) -> dict[str, int]:
    """What a plant's rows look like between runs, in every machine alike: a row resolved by an
    engineer (its deviation), a score a later run must restore (its forest's), a stale row no run
    finds (found by an hour: it goes when its hour is judged again), and live flags (open) of a
    range and a spec limit no hour finds."""
    ids: dict[str, int] = {}
    with database.connect() as conn:
        for tenant, factory, machine in SERIES:
            name = f"{tenant}/{machine}"
            first, second = (
                conn.execute(
                    "SELECT anomaly_id FROM analytics.analytics_anomaly WHERE (tenant_id, factory_id, machine_id) = "
                    "(%s, %s, %s) AND method = %s",
                    (tenant, factory, machine, method),
                ).fetchone()
                for method in ("deviation", "isolation_forest")
            )
            conn.execute(
                "UPDATE analytics.analytics_anomaly SET status = 'resolved', resolved_at = %s, resolved_by = 'ana', "
                "resolution_note = 'sensor cleaned' WHERE anomaly_id = %s",
                (END + timedelta(hours=1), first[0]),
            )
            conn.execute("UPDATE analytics.analytics_anomaly SET score = 999 WHERE anomaly_id = %s", (second[0],))
            ids[f"{name} resolved"], ids[f"{name} scored"] = first[0], second[0]
            for method, minute, live in (("deviation", 59, None), ("range", 58, END), ("spec", 57, END)):
                ids[f"{name} {method} {'live' if live else 'stale'}"] = conn.execute(
                    "INSERT INTO analytics.analytics_anomaly (time, tenant_id, factory_id, machine_id, sensor_id, "
                    "metric, anomaly_type, method, score, severity, severity_label, detected_live_at, sample_s) "
                    "VALUES (%s, %s, %s, %s, 's-temp', 'temp', 'temperature', %s, 5, 3, 'critical', %s, 60) "
                    "RETURNING anomaly_id",
                    (HOUR + timedelta(minutes=minute), tenant, factory, machine, method, live),
                ).fetchone()[0]
    return ids


def test_a_scoped_detection_rewrites_its_machine_and_methods_alone(
    plant: DatabaseHandle, defs: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    """Through the asset, configured as an API request configures its run: t1/f1/m1, some methods.
    Out of the scope (t2's machine with the same ids, t1's other machine, t1/m1's other methods)
    every row keeps every byte; in it, the rows are the full run's again, resolutions kept, the
    stale row gone and the unconfirmed live flag closed."""
    options = AnomalyOptions()
    with plant.connect(plant.pipeline_url) as conn:
        recompute_anomalies(conn, HOUR, END, options)
    full = rows_by_machine(plant)
    ids = tamper(plant)
    before = rows_by_machine(plant)
    models, deviations = plant.query(MODELS), plant.query(DEVIATIONS)

    methods = ["isolation_forest", "deviation", "range"]
    config = {"tenant_id": "t1", "factory_id": "f1", "machine_id": "m1", "methods": methods}
    result = materialize(
        defs,
        instance,
        [READING_ANOMALIES.to_user_string()],
        partition_key(HOUR),
        run_config={"ops": {READING_ANOMALIES.to_python_identifier(): {"config": config}}},
    )
    [event] = result.asset_materializations_for_node(READING_ANOMALIES.to_python_identifier())
    assert event.metadata["scope"].value == "t1/f1/m1: deviation, isolation_forest, range"
    assert event.tags is not None and event.tags[SCOPE_TAG] == "partial"

    after = rows_by_machine(plant)
    for machine in SERIES:
        if machine != IN_SCOPE:
            assert after[machine] == before[machine], machine
    # the in-scope machine's other methods: untouched (the spec flag stays open; the baseline and shift rows)
    kept = [r for r in after[IN_SCOPE] if r["method"] not in methods]
    assert kept == [r for r in before[IN_SCOPE] if r["method"] not in methods]
    assert {r["method"] for r in kept} == {"baseline", "shift", "spec"}
    assert next(r for r in kept if r["anomaly_id"] == ids["t1/m1 spec live"])["status"] == "open"
    # the scope's rows: the full run's, with the engineer's resolution, the stale row gone, the live flag closed
    scoped = {r["anomaly_id"]: r for r in after[IN_SCOPE] if r["method"] in methods}
    assert ids["t1/m1 deviation stale"] not in scoped
    closed = scoped.pop(ids["t1/m1 range live"])
    assert (closed["status"], closed["confirmed_at"], closed["detected_live_at"]) == ("not_confirmed", None, END)
    resolved = scoped[ids["t1/m1 resolved"]]
    assert (resolved["status"], resolved["resolved_by"], resolved["resolution_note"]) == (
        "resolved",
        "ana",
        "sensor cleaned",
    )
    ignore = ("xmin", "status", "resolved_at", "resolved_by", "resolution_note")
    expected = [{k: v for k, v in r.items() if k not in ignore} for r in full[IN_SCOPE] if r["method"] in methods]
    assert [{k: v for k, v in r.items() if k not in ignore} for r in scoped.values()] == expected
    assert scoped[ids["t1/m1 scored"]]["score"] != 999
    # the forests and profiles were stored already; the baseline is not a method of the run
    assert plant.query(MODELS) == models and plant.query(DEVIATIONS) == deviations


def test_a_factory_scope_judges_the_tenants_machines_and_not_the_same_ids_of_another_tenant(
    plant: DatabaseHandle,
) -> None:
    options = AnomalyOptions()
    with plant.connect(plant.pipeline_url) as conn:
        recompute_anomalies(conn, HOUR, END, options)
    ids = tamper(plant)
    before = rows_by_machine(plant)
    deviations = plant.query(DEVIATIONS)
    with plant.connect(plant.pipeline_url) as conn:
        recompute_anomalies(conn, HOUR, END, options, scope=Scope("t1", "f1"))
    after = rows_by_machine(plant)
    assert after[("t2", "f1", "m1")] == before[("t2", "f1", "m1")]
    for machine in (("t1", "f1", "m1"), ("t1", "f1", "m2")):
        statuses = {r["anomaly_id"]: r["status"] for r in after[machine]}
        name = f"{machine[0]}/{machine[2]}"
        assert ids[f"{name} deviation stale"] not in statuses
        assert statuses[ids[f"{name} range live"]] == statuses[ids[f"{name} spec live"]] == "not_confirmed"
        assert statuses[ids[f"{name} resolved"]] == "resolved"
    # t1's baseline deviation was replaced (a new row, equal values), t2's is the very same row
    now = plant.query(DEVIATIONS)
    assert now[1] == deviations[1] and now[0][:-2] == deviations[0][:-2] and now[0][-1] != deviations[0][-1]

    # the unscoped run (the schedule's) judges everything again, as before
    with plant.connect(plant.pipeline_url) as conn:
        recompute_anomalies(conn, HOUR, END, options)
    statuses = {r["anomaly_id"]: r["status"] for rows in rows_by_machine(plant).values() for r in rows}
    assert ids["t2/m1 deviation stale"] not in statuses
    assert statuses[ids["t2/m1 range live"]] == "not_confirmed"
