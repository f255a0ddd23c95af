"""Data contracts (analytics_platform.data_quality): Great Expectations suites over small hand-built
frames, each expected failure written out by hand with the exact offending values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from analytics_platform.contracts.catalog import LIMITS_SCHEMA, PACKAGED_CATALOG
from analytics_platform.data_quality import raw, result_contracts, validation
from analytics_platform.data_quality.config import (
    ChecksConfig,
    Completeness,
    ResultRanges,
    load_checks_config,
    load_metric_limits,
)
from analytics_platform.data_quality.raw_profile import PartitionQuality, range_outcomes, range_profile
from analytics_platform.data_quality.validation import merge_windows
from analytics_platform.defs import build_definitions
from analytics_platform.settings import REPO_ROOT, PlatformSettings

H3 = datetime(2025, 8, 20, 3, tzinfo=UTC)
H4 = H3 + timedelta(hours=1)
LIMITS = pl.DataFrame(
    [
        ("*", "temp", -60.0, 400.0, "degC"),
        ("*", "humidity", 0.0, 100.0, "%"),
        ("*", "outdoor_temp", -80.0, 70.0, "degC"),
    ],
    schema=LIMITS_SCHEMA,
    orient="row",
)
CONFIG = ChecksConfig()
RANGES = ResultRanges(kpi={"availability": (0, 1), "run_time_s": (0, None)})


def at(minutes: float) -> datetime:
    return H3 + timedelta(minutes=minutes)


def iso(minutes: float) -> str:
    return at(minutes).isoformat()


def by_name(outcomes: list) -> dict:
    return {o.name: o for o in outcomes}


def columns_of(contract: result_contracts.TableContract, drop: str | None = None) -> pl.DataFrame:
    """information_schema rows of a table that matches `contract` (minus `drop`), plus a column
    the contract does not mention (extra columns are allowed)."""
    rows = [(name, kind) for name, kind in contract.columns.items() if name != drop] + [
        ("computed_at", result_contracts.TS)
    ]
    return pl.DataFrame(rows, schema={"column_name": pl.String(), "data_type": pl.String()}, orient="row")


# ----- raw sensor readings: values in range, units ------------------------------------------------
def readings(rows: list[tuple]) -> pl.DataFrame:
    """(minute, machine, metric, value, unit) -> raw sensor reading rows of hour 03."""
    return pl.DataFrame(
        [(at(m), "t1", "f1", machine, f"s-{metric}", metric, value, unit) for m, machine, metric, value, unit in rows],
        schema={
            "time": pl.Datetime("us", "UTC"),
            "tenant_id": pl.String(),
            "factory_id": pl.String(),
            "machine_id": pl.String(),
            "sensor_id": pl.String(),
            "metric": pl.String(),
            "value": pl.Float64(),
            "unit": pl.String(),
        },
        orient="row",
    )


FLAWED = readings(
    [
        (0, "mc-01", "temp", 21.5, "degC"),
        (1, "mc-01", "temp", 5000.0, "degC"),  # above temp's 400
        (2, "mc-02", "temp", 20.0, "degF"),  # wrong unit
        (3, "mc-02", "humidity", -1.0, "%"),  # below humidity's 0
        (4, "mc-03", "humidity", 50.0, None),  # no unit: taken as canonical
    ]
)
NO_SERIES = pl.DataFrame(schema=raw.SERIES_SCHEMA)


def sensor_outcomes(frame: pl.DataFrame, config: ChecksConfig = CONFIG) -> dict:
    return by_name(raw.sensor_outcomes(frame, NO_SERIES, LIMITS, config, start=H3, end=H4, as_of=H3))


def test_an_out_of_range_value_is_found_with_its_keys_value_and_bound() -> None:
    outcome = sensor_outcomes(FLAWED)["values_in_range"]
    assert not outcome.passed
    assert outcome.metadata["rows"] == 5
    assert outcome.metadata["unexpected"] == 2
    below, above = outcome.metadata["failures"]
    key = {"tenant_id": "t1", "factory_id": "f1"}
    assert below["column_A"] == "value" and below["column_B"] == "min_value"
    assert below["partial_unexpected_list"] == [[-1.0, 0.0]]
    assert below["offending"] == [
        {
            **key,
            "time": iso(3),
            "machine_id": "mc-02",
            "sensor_id": "s-humidity",
            "metric": "humidity",
            "value": -1.0,
            "min_value": 0.0,
        }
    ]
    assert above["column_A"] == "max_value" and above["column_B"] == "value"
    assert above["partial_unexpected_list"] == [[400.0, 5000.0]]
    assert above["offending"] == [
        {
            **key,
            "time": iso(1),
            "machine_id": "mc-01",
            "sensor_id": "s-temp",
            "metric": "temp",
            "value": 5000.0,
            "max_value": 400.0,
        }
    ]


def test_a_wrong_unit_is_found_and_a_missing_unit_is_canonical_unless_configured() -> None:
    outcome = sensor_outcomes(FLAWED)["units_match"]
    assert not outcome.passed
    assert outcome.metadata["unexpected"] == 1
    (failure,) = outcome.metadata["failures"]
    assert failure["partial_unexpected_list"] == [["degF", "degC"]]
    assert failure["offending"] == [
        {
            "time": iso(2),
            "tenant_id": "t1",
            "factory_id": "f1",
            "machine_id": "mc-02",
            "sensor_id": "s-temp",
            "metric": "temp",
            "unit": "degF",
            "canonical_unit": "degC",
        }
    ]
    strict = ChecksConfig.model_validate({"units": {"missing_is_canonical": False}})
    outcome = sensor_outcomes(FLAWED, strict)["units_match"]
    assert outcome.metadata["unexpected"] == 2  # degF, and mc-03's reading without a unit
    assert outcome.metadata["failures"][1]["offending"][0]["machine_id"] == "mc-03"


def test_the_live_drain_profile_finds_the_same_readings_as_the_suite() -> None:
    quality = PartitionQuality()
    for row in range_profile(FLAWED, LIMITS, "value", raw.SERIES).iter_rows(named=True):
        quality.add_range_profile(row)
    values, units = range_outcomes(quality)
    assert (values.passed, values.metadata["unexpected"], units.passed, units.metadata["unexpected"]) == (
        False,
        2,
        False,
        1,
    )
    assert [(o["machine_id"], o["metric"], o["value"]) for o in values.metadata["offending"]] == [
        ("mc-01", "temp", 5000.0),
        ("mc-02", "humidity", -1.0),
    ]
    assert [(o["machine_id"], o["unit"], o["canonical_unit"]) for o in units.metadata["offending"]] == [
        ("mc-02", "degF", "degC")
    ]


def test_a_sweep_batch_is_out_of_range_when_one_of_its_values_is() -> None:
    batches = pl.DataFrame(
        [
            (at(5), "t1", "f1", "mc-01", "temp", "B-1", "degC", [60.0, 61.0]),
            (at(6), "t1", "f1", "mc-01", "temp", "B-2", "degC", [60.0, 450.0, 59.0]),
        ],
        schema={
            "time": pl.Datetime("us", "UTC"),
            "tenant_id": pl.String(),
            "factory_id": pl.String(),
            "machine_id": pl.String(),
            "metric": pl.String(),
            "batch_id": pl.String(),
            "unit": pl.String(),
            "reading_values": pl.List(pl.Float64()),
        },
        orient="row",
    )
    outcome = by_name(raw.sweep_outcomes(batches, LIMITS, CONFIG))["values_in_range"]
    assert not outcome.passed
    assert outcome.metadata["rows"] == 5  # every value of every batch is judged
    (failure,) = outcome.metadata["failures"]
    assert failure["offending"] == [
        {
            "time": iso(6),
            "tenant_id": "t1",
            "factory_id": "f1",
            "machine_id": "mc-01",
            "metric": "temp",
            "batch_id": "B-2",
            "value": 450.0,
            "max_value": 400.0,
        }
    ]


# ----- completeness -------------------------------------------------------------------------------
def test_completeness_per_machine_against_its_series_of_this_hour_and_the_previous() -> None:
    settings = Completeness(min_ratio=0.9, interval_s={"default": 600, "humidity": 1200})
    # an hour holds 6 temp readings (every 600 s) and 3 humidity readings (every 1200 s)
    frame = readings(
        [(m, "mc-01", "temp", 20.0, "degC") for m in (0, 10, 20, 30, 40, 50)]  # 6 of 6
        + [(m, "mc-01", "humidity", 40.0, "%") for m in (0, 20, 40)]  # 3 of 3
        + [(m, "mc-02", "temp", 20.0, "degC") for m in (0, 10, 20)]  # silent after 03:20: 3 of 6
    )
    previous = pl.DataFrame(
        [("t1", "f1", "mc-02", "s-temp", "temp"), ("t1", "f1", "mc-03", "s-temp", "temp")],  # mc-03: silent
        schema=raw.SERIES_SCHEMA,
        orient="row",
    )
    table = raw.completeness_frame(frame, previous, settings, H3, H4)
    assert table.rows() == [
        ("t1", "f1", "mc-01", 2, 9, 9.0, 1.0),
        ("t1", "f1", "mc-02", 1, 3, 6.0, 0.5),
        ("t1", "f1", "mc-03", 1, 0, 6.0, 0.0),
    ]
    config = ChecksConfig(completeness=settings)
    outcome = by_name(raw.sensor_outcomes(frame, previous, LIMITS, config, start=H3, end=H4, as_of=H4))["completeness"]
    assert not outcome.passed
    assert outcome.metadata["machines"] == 3
    assert outcome.metadata["unexpected"] == 2
    assert outcome.metadata["failures"][0]["offending"] == [
        {
            "tenant_id": "t1",
            "factory_id": "f1",
            "machine_id": "mc-02",
            "series": 1,
            "received": 3,
            "expected": 6.0,
            "ratio": 0.5,
        },
        {
            "tenant_id": "t1",
            "factory_id": "f1",
            "machine_id": "mc-03",
            "series": 1,
            "received": 0,
            "expected": 6.0,
            "ratio": 0.0,
        },
    ]


def test_completeness_of_an_hour_still_running_is_not_judged() -> None:
    outcome = by_name(raw.sensor_outcomes(FLAWED, NO_SERIES, LIMITS, CONFIG, start=H3, end=H4, as_of=at(30)))
    assert outcome["completeness"].passed
    assert outcome["completeness"].metadata == {"judged": False, "reason": f"the window ends at {H4.isoformat()}"}


# ----- window aggregates: keys, reconciliation, ranges ---------------------------------------------
def agg(window_s: int, minute: int, count: int, low: float = 1.0, high: float = 3.0, machine: str = "mc-01") -> tuple:
    start = at(minute)
    mid = (low + high) / 2
    return (
        start,
        start + timedelta(seconds=window_s),
        window_s,
        "t1",
        "f1",
        machine,
        "s-temp",
        "temp",
        count,
        mid * count,
        mid,
        low,
        high,
        0.5,
        low,
        high,
        mid,
        high,
    )


def agg_frame(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=result_contracts.AGG.schema, orient="row")


CLEAN_AGG = [
    agg(60, 0, 3),
    agg(60, 1, 2),
    agg(60, 59, 1),
    agg(3600, 0, 6),
    agg(60, 0, 4, machine="mc-02"),
    agg(3600, 0, 4, machine="mc-02"),
]


def aggregate_outcomes(rows: list[tuple], columns: pl.DataFrame | None = None) -> dict:
    found = result_contracts.aggregate_outcomes(
        agg_frame(rows),
        columns_of(result_contracts.AGG) if columns is None else columns,
        LIMITS,
        RANGES,
        start=H3,
        end=H4,
    )
    return by_name(found)


def test_clean_aggregates_pass_every_check() -> None:
    found = aggregate_outcomes(CLEAN_AGG)
    assert {name: o.passed for name, o in found.items()} == {
        "schema": True,
        "unique_keys": True,
        "reconciliation": True,
        "result_ranges": True,
    }
    assert found["reconciliation"].metadata["rows"] == 2  # two series' hour buckets


def test_a_duplicate_natural_key_is_found_with_the_key() -> None:
    outcome = aggregate_outcomes([*CLEAN_AGG, agg(60, 1, 2)])["unique_keys"]
    assert not outcome.passed
    assert outcome.metadata["unexpected"] == 2
    (failure,) = outcome.metadata["failures"]
    key = {
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "mc-01",
        "sensor_id": "s-temp",
        "metric": "temp",
        "window_s": 60,
        "bucket_start": iso(1),
    }
    assert failure["offending"] == [key, key]


def test_a_reconciliation_mismatch_names_the_series_and_both_counts() -> None:
    rows = [
        agg(60, 0, 3),
        agg(60, 1, 2),
        agg(3600, 0, 6),
        agg(60, 0, 4, machine="mc-02"),
        agg(3600, 0, 4, machine="mc-02"),
    ]
    outcome = aggregate_outcomes(rows)["reconciliation"]
    assert not outcome.passed
    (failure,) = outcome.metadata["failures"]
    assert failure["partial_unexpected_list"] == [[5, 6]]
    assert failure["offending"] == [
        {
            "tenant_id": "t1",
            "factory_id": "f1",
            "machine_id": "mc-01",
            "sensor_id": "s-temp",
            "metric": "temp",
            "window_s": 3600,
            "bucket_start": iso(0),
            "fine_count": 5,
            "count_n": 6,
        }
    ]


def test_reconciliation_only_judges_coarse_buckets_inside_the_window() -> None:
    frame = agg_frame([agg(60, 0, 3), agg(300, 0, 3), agg(7200, 0, 9)])  # the 7200 s bucket runs past 04:00
    table = result_contracts.count_reconciliation(frame, result_contracts.SERIES, H3, H4)
    assert table.select("window_s", "bucket_start", "fine_window_s", "fine_count", "count_n").rows() == [
        (300, at(0), 60, 3, 3)
    ]


def test_derived_aggregate_values_out_of_their_ranges_warn() -> None:
    broken = list(agg(60, 1, 2))
    broken[10] = 9.0  # avg above max (3)
    outcome = aggregate_outcomes([agg(60, 0, 3), tuple(broken), agg(60, 59, 1), agg(3600, 0, 6)])["result_ranges"]
    assert not outcome.passed
    (failure,) = outcome.metadata["failures"]
    assert (failure["column_A"], failure["column_B"]) == ("max_v__slack", "avg_v")
    assert failure["offending"][0]["avg_v"] == 9.0


def test_a_table_missing_a_contract_column_fails_the_schema_check() -> None:
    outcome = aggregate_outcomes(CLEAN_AGG, columns_of(result_contracts.AGG, drop="p95_v"))["schema"]
    assert not outcome.passed
    assert outcome.metadata["unexpected"] == 1
    assert outcome.metadata["failures"][0]["missing"] == ["p95_v double precision"]


# ----- lab window aggregates: the same promises on the lab series key --------------------------------
def lab_agg(window_s: int, minute: int, count: int, station: str = "lab-01", tenant: str = "t1") -> tuple:
    """A lab bucket of `count` results between 11 and 14 (the sensor bucket's statistics, lab key)."""
    row = list(agg(window_s, minute, count, 11.0, 14.0))
    return (*row[:3], tenant, "f1", station, "Moisture", *row[8:])


def lab_outcomes(rows: list[tuple], columns: pl.DataFrame | None = None) -> dict:
    found = result_contracts.lab_aggregate_outcomes(
        pl.DataFrame(rows, schema=result_contracts.LAB_AGG.schema, orient="row"),
        columns_of(result_contracts.LAB_AGG) if columns is None else columns,
        RANGES,
        start=H3,
        end=H4,
    )
    return by_name(found)


# the same station id in two tenants: two series, each reconciling on its own
CLEAN_LAB = [lab_agg(60, 5, 1), lab_agg(60, 20, 3), lab_agg(3600, 0, 4), lab_agg(60, 7, 2, tenant="t2")]
CLEAN_LAB.append(lab_agg(3600, 0, 2, tenant="t2"))


def test_clean_lab_aggregates_pass_every_check() -> None:
    found = lab_outcomes(CLEAN_LAB)
    assert {name: o.passed for name, o in found.items()} == {
        "schema": True,
        "unique_keys": True,
        "reconciliation": True,
        "result_ranges": True,
    }
    assert found["reconciliation"].metadata["rows"] == 2  # each tenant's hour bucket


def test_lab_aggregates_keys_reconciliation_and_ranges_are_judged_per_series() -> None:
    broken = list(lab_agg(60, 21, 1))
    broken[10] = 20.0  # avg above max (14)
    found = lab_outcomes([*CLEAN_LAB, lab_agg(60, 5, 1), tuple(broken)])
    assert not found["unique_keys"].passed and not found["result_ranges"].passed
    (mismatch,) = found["reconciliation"].metadata["failures"]
    assert mismatch["offending"] == [
        {
            "tenant_id": "t1",
            "factory_id": "f1",
            "station_id": "lab-01",
            "analyte": "Moisture",
            "window_s": 3600,
            "bucket_start": iso(0),
            "fine_count": 6,
            "count_n": 4,
        }
    ]
    missing = lab_outcomes(CLEAN_LAB, columns_of(result_contracts.LAB_AGG, drop="station_id"))["schema"]
    assert missing.metadata["failures"][0]["missing"] == ["station_id text"]


# ----- other result tables ------------------------------------------------------------------------
def kpi(name: str, value: float | None, unit: str = "ratio", machine: str = "mc-01") -> tuple:
    return (H3, H4, "hour", "t1", "f1", machine, name, value, unit, None if value is not None else "no data", None)


def test_kpis_outside_their_ranges_and_longer_than_their_period_are_found() -> None:
    rows = [
        kpi("availability", 0.8),
        kpi("availability", 1.2, machine="mc-02"),  # a ratio above 1
        kpi("run_time_s", 4000.0, "s"),  # longer than the hour
        kpi("run_time_s", None, "s", machine="mc-02"),  # NULL with a reason: not judged
        kpi("avg_outdoor_temp", 95.0, ""),  # outdoor_temp's catalogue range ends at 70
        kpi("unknown_kpi", -5.0, ""),  # no range configured: not judged
    ]
    found = by_name(
        result_contracts.kpi_outcomes(
            pl.DataFrame(rows, schema=result_contracts.KPI.schema, orient="row"),
            columns_of(result_contracts.KPI),
            RANGES,
            LIMITS,
        )
    )
    assert [found[n].passed for n in ("schema", "unique_keys")] == [True, True]
    outcome = found["result_ranges"]
    assert not outcome.passed
    offending = {
        (f["column_A"], f["column_B"]): [(o["machine_id"], o["kpi"]) for o in f["offending"]]
        for f in outcome.metadata["failures"]
    }
    assert offending == {
        ("kpi_max__slack", "value"): [("mc-02", "availability"), ("mc-01", "avg_outdoor_temp")],
        ("period_s__slack", "value"): [("mc-01", "run_time_s")],
    }


def anomaly(severity: int, label: str, confidence: float, method: str = "zscore") -> tuple:
    return (
        at(5),
        "t1",
        "f1",
        "mc-01",
        "s-temp",
        "temp",
        "temperature",
        method,
        3.2,
        severity,
        label,
        confidence,
        90.0,
        65.0,
        None,
        "open",
        at(5),
        at(6),
    )


def test_anomalies_with_a_duplicate_key_or_severity_out_of_range_are_found() -> None:
    rows = pl.DataFrame(
        [anomaly(3, "critical", 0.99), anomaly(3, "critical", 0.99), anomaly(7, "extreme", 1.5, "sudden_change")],
        schema=result_contracts.ANOMALY.schema,
        orient="row",
    )
    found = by_name(result_contracts.anomaly_outcomes(rows, columns_of(result_contracts.ANOMALY), RANGES))
    assert found["schema"].passed
    assert not found["unique_keys"].passed and found["unique_keys"].metadata["unexpected"] == 2
    failures = found["result_ranges"].metadata["failures"]
    assert [(f["column"], f["partial_unexpected_list"]) for f in failures] == [
        ("severity", [7]),
        ("confidence", [1.5]),
        ("severity_label", ["extreme"]),
    ]


def test_clean_events_and_rollups_pass_and_a_rollup_mismatch_is_found() -> None:
    events = pl.DataFrame(
        [(at(5), "t1", "f1", "lab-1", "lab_result", "S-1", "lab", None, 12.0, True, None, None, None)],
        schema=result_contracts.EVENT.schema,
        orient="row",
    )

    def rollup(window_s: int, minute: int, count: int, passed: int) -> tuple:
        start = at(minute)
        return (
            start,
            start + timedelta(seconds=window_s),
            window_s,
            "t1",
            "f1",
            "lab-1",
            "lab_result",
            "Moisture",
            count,
            passed,
            count - passed,
            (count - passed) / count,
            passed / count,
            None,
            None,
        )

    clean = [rollup(60, 5, 2, 1), rollup(3600, 0, 2, 1)]
    frame = pl.DataFrame(clean, schema=result_contracts.ROLLUP.schema, orient="row")
    columns = (columns_of(result_contracts.EVENT), columns_of(result_contracts.ROLLUP))
    found = by_name(result_contracts.event_outcomes(events, frame, *columns, RANGES, start=H3, end=H4))
    assert all(o.passed for o in found.values()), {n: o.metadata for n, o in found.items()}

    frame = pl.DataFrame(
        [rollup(60, 5, 2, 1), rollup(3600, 0, 3, 1)], schema=result_contracts.ROLLUP.schema, orient="row"
    )
    outcome = by_name(result_contracts.event_outcomes(events, frame, *columns, RANGES, start=H3, end=H4))[
        "reconciliation"
    ]
    assert not outcome.passed
    assert outcome.metadata["failures"][0]["offending"][0] == {
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "lab-1",
        "event_type": "lab_result",
        "subject": "Moisture",
        "window_s": 3600,
        "bucket_start": iso(0),
        "fine_count": 2,
        "count_n": 3,
    }


def test_two_active_baselines_for_one_machine_break_the_key() -> None:
    def model(version: int, active: bool, r2: float = 0.9) -> tuple:
        return ("t1", "f1", "mc-01", version, "energy_kwh", "{x}", "{}", r2, r2, 1.0, 0.8, 1200, H3, H4, True, active)

    frame = pl.DataFrame(
        [model(1, True), model(2, True, r2=0.5)], schema=result_contracts.BASELINE.schema, orient="row"
    )
    found = by_name(
        result_contracts.baseline_outcomes(
            frame, columns_of(result_contracts.BASELINE), RANGES, min_samples=1000, r2_min=0.8
        )
    )
    assert not found["unique_keys"].passed
    assert found["unique_keys"].metadata["failures"][0]["offending"] == [
        {"tenant_id": "t1", "factory_id": "f1", "machine_id": "mc-01", "version": 1},
        {"tenant_id": "t1", "factory_id": "f1", "machine_id": "mc-01", "version": 2},
    ]
    # version 2 is flagged accepted although its R² is below BASELINE_R2_MIN
    assert found["result_ranges"].metadata["failures"][0]["partial_unexpected_list"] == [0.5]


# ----- configuration ------------------------------------------------------------------------------
def test_the_shipped_configuration_loads_and_names_existing_metrics() -> None:
    config = load_checks_config(REPO_ROOT / "analytics_platform" / "config" / "checks.yaml")
    assert config.blocking.of("values_in_range") and not config.blocking.of("completeness")
    assert config.reject_ratio_max(0.05) == 0.05  # null in the file: REJECT_RATIO_MAX
    limits = load_metric_limits(PACKAGED_CATALOG)
    assert limits.filter(pl.col("metric") == "temp").rows() == [("*", "temp", -60.0, 400.0, "degC")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("completeness:\n  min_ratoi: 0.5\n", "unknown key 'completeness.min_ratoi'"),
        ("blocking:\n  value_in_range: true\n", "unknown key 'blocking.value_in_range'"),
        ("freshness:\n  raw_sensor_readings: {mode: hourly, lag_minutes: 5}\n", "freshness.raw_sensor_readings.mode"),
        ("result_ranges:\n  kpi:\n    oee: [1, 0]\n", "oee: range [1.0, 0.0] has its minimum above its maximum"),
        ("completeness:\n  interval_s: {temp: 5}\n", "needs a `default` interval"),
        ("reject_ratio:\n  max: 2\n", "reject_ratio.max: Input should be less than or equal to 1"),
        ("- not a mapping\n", "must hold a mapping at the top level"),
    ],
)
def test_a_bad_configuration_fails_with_a_message_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "checks.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="CHECKS_CONFIG file") as failure:
        load_checks_config(path)
    assert message in str(failure.value)
    assert str(path) in str(failure.value)


def test_a_missing_configuration_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"CHECKS_CONFIG file .*nothing\.yaml does not exist"):
        load_checks_config(tmp_path / "nothing.yaml")


def test_a_range_judged_hour_by_hour_is_one_outcome_naming_the_failing_hours() -> None:
    clean = readings([(0, "mc-01", "temp", 20.0, "degC")])
    hours = [
        ("2025-08-20-03:00", raw.sensor_outcomes(FLAWED, NO_SERIES, LIMITS, CONFIG, start=H3, end=H4, as_of=H3)),
        ("2025-08-20-04:00", raw.sensor_outcomes(clean, NO_SERIES, LIMITS, CONFIG, start=H3, end=H4, as_of=H3)),
    ]
    merged = by_name(merge_windows(hours))
    assert [(o.name, o.passed) for o in merged.values()] == [
        ("values_in_range", False),
        ("units_match", False),
        ("completeness", True),
    ]
    outcome = merged["values_in_range"]
    assert {k: outcome.metadata[k] for k in ("windows", "rows", "unexpected")} == {
        "windows": 2,
        "rows": 6,
        "unexpected": 2,
    }
    assert list(outcome.metadata["failing_windows"]) == ["2025-08-20-03:00"]
    assert merge_windows(hours[:1]) == hours[0][1]  # one window: as it is


def test_warming_up_in_threads_builds_one_context_and_the_suites_judge_as_before() -> None:
    threads = [validation.warm_up() for _ in range(3)]
    first = validation._batch_definition()  # asked while the threads may still be building it
    for thread in threads:
        thread.join()
    assert validation._batch_definition() is first
    assert aggregate_outcomes([*CLEAN_AGG, agg(60, 1, 2)])["unique_keys"].metadata["unexpected"] == 2


def test_the_live_profile_judges_every_value_of_a_sweep_batch_per_hour() -> None:
    batches = pl.DataFrame(
        [
            (at(5), "t1", "mc-01", "temp", "degC", [60.0, 61.0]),
            (at(6), "t1", "mc-01", "temp", "degC", [-70.0, 450.0]),  # both sides out: the high one is shown
            (H4, "t1", "mc-01", "temp", None, [60.0]),
        ],
        schema={
            "time": pl.Datetime("us", "UTC"),
            "tenant_id": pl.String(),
            "machine_id": pl.String(),
            "metric": pl.String(),
            "unit": pl.String(),
            "reading_values": pl.List(pl.Float64()),
        },
        orient="row",
    )
    profile = range_profile(batches, LIMITS, "reading_values", ["machine_id", "metric"], missing_unit_ok=False)
    assert profile.select("partition_start", "range_rows", "out_of_range", "unit_mismatch").rows() == [
        (H3, 2, 1, 0),
        (H4, 1, 0, 1),
    ]
    assert profile["out_of_range_sample"][0].to_list() == [
        {
            "time": at(6),
            "tenant_id": "t1",
            "machine_id": "mc-01",
            "metric": "temp",
            "value": 450.0,
            "min_value": -60.0,
            "max_value": 400.0,
            "unit": "degC",
        }
    ]


@pytest.mark.parametrize(
    ("freshness", "message"),
    [
        ("raw_sensor_reading: {mode: last_update, lag_minutes: 5}", "freshness.raw_sensor_reading names no asset"),
        ("sensor_window_aggregates: {mode: latest_partition, lag_minutes: 90}", "an hourly asset needs lag_minutes"),
        ("energy_baseline_models: {mode: latest_partition, lag_minutes: 60}", "needs an hourly or daily partitioned"),
    ],
)
def test_a_freshness_entry_that_cannot_work_stops_the_definitions(tmp_path: Path, freshness: str, message: str) -> None:
    path = tmp_path / "checks.yaml"
    path.write_text(f"freshness:\n  {freshness}\n")
    with pytest.raises(ValueError, match=message):
        build_definitions(PlatformSettings(checks_config=path), secrets_from_env=False)


def test_a_freshness_entry_of_a_disabled_domain_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "checks.yaml"
    path.write_text("freshness:\n  raw_lab_results: {mode: last_update, lag_minutes: 5}\n")
    defs = build_definitions(PlatformSettings(checks_config=path, domains_enabled=["sensor"]), secrets_from_env=False)
    assert [k.name for k in defs.resolve_asset_graph().asset_check_keys if k.name == "freshness_check"] == []


def test_a_tenant_entry_replaces_the_default_limits_for_that_tenant_only() -> None:
    """The catalogue is tenant data: t2 lifts temp's range to 1200 degC (a furnace) and adds its own
    `power_kw`; t1 keeps the default 400 degC; a metric in neither is not judged (uncatalogued)."""
    limits = pl.concat(
        [
            LIMITS,
            pl.DataFrame(
                [("t2", "temp", 0.0, 1200.0, "degC"), ("t2", "power_kw", 0.0, 500.0, "kW")],
                schema=LIMITS_SCHEMA,
                orient="row",
            ),
        ]
    )
    readings = pl.DataFrame(
        [
            (at(1), "t1", "mc-01", "temp", "degC", 900.0),  # above t1's (default) 400: out
            (at(2), "t2", "mc-01", "temp", "degC", 900.0),  # within t2's own 1200: in
            (at(3), "t2", "mc-01", "temp", "degC", -5.0),  # below t2's own 0, though the default allows it
            (at(4), "t2", "mc-01", "power_kw", "kW", 700.0),  # t2's own metric, above its 500
            (at(5), "t1", "mc-01", "power_kw", "kW", 700.0),  # not in t1's catalogue: not judged
        ],
        schema={
            "time": pl.Datetime("us", "UTC"),
            "tenant_id": pl.String(),
            "machine_id": pl.String(),
            "metric": pl.String(),
            "unit": pl.String(),
            "value": pl.Float64(),
        },
        orient="row",
    )
    profile = range_profile(readings, limits, "value", ["machine_id", "metric"])
    assert profile.select("range_rows", "out_of_range", "unit_mismatch").rows() == [(5, 3, 0)]
    assert [(r["tenant_id"], r["metric"], r["value"]) for r in profile["out_of_range_sample"][0].to_list()] == [
        ("t1", "temp", 900.0),
        ("t2", "temp", -5.0),
        ("t2", "power_kw", 700.0),
    ]
