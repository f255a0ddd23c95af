"""Lab analytes as time series: window aggregates of lab results per tenant, factory, station and
analyte, checked against values computed by hand."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from analytics_platform.transforms.lab_series import LAB_AGG_COLUMNS, LAB_RESULT_SCHEMA, lab_window_aggregates
from analytics_platform.transforms.window_aggregates import READING_SCHEMA, window_aggregates

H3 = datetime(2025, 8, 20, 3, tzinfo=UTC)
MOISTURE = ("t1", "f1", "lab-01", "Moisture")


def at(minutes: float) -> datetime:
    return H3 + timedelta(minutes=minutes)


def results(*rows: tuple[datetime, float], series: tuple[str, ...] = MOISTURE) -> pl.DataFrame:
    return pl.DataFrame([(t, *series, v) for t, v in rows], schema=LAB_RESULT_SCHEMA, orient="row")


HOUR_3 = [(at(5), 12.0), (at(20), 14.0), (at(40), 13.0), (at(55), 11.0)]


def by_key(frame: pl.DataFrame) -> dict[tuple, dict]:
    return {(r["window_s"], *(r[c] for c in LAB_AGG_COLUMNS[3:7]), r["bucket_start"]): r for r in frame.to_dicts()}


def test_one_hour_of_moisture_by_hand() -> None:
    frame = lab_window_aggregates(results(*HOUR_3), [3600])
    assert frame.columns == list(LAB_AGG_COLUMNS)
    (row,) = frame.to_dicts()
    # [12, 14, 13, 11]: sum 50, mean 12.5, squared deviations 0.25 + 2.25 + 0.25 + 2.25 = 5 -> var 5/3;
    # sorted [11, 12, 13, 14]: p50 = 12.5, p95 at rank 0.95 * 3 = 2.85 -> 13 + 0.85 * (14 - 13)
    assert {k: v for k, v in row.items() if k not in ("stddev_v", "p95_v")} == {
        "bucket_start": H3,
        "bucket_end": H3 + timedelta(hours=1),
        "window_s": 3600,
        "tenant_id": "t1",
        "factory_id": "f1",
        "station_id": "lab-01",
        "analyte": "Moisture",
        "count_n": 4,
        "sum_v": 50.0,
        "avg_v": 12.5,
        "min_v": 11.0,
        "max_v": 14.0,
        "first_v": 12.0,
        "last_v": 11.0,
        "p50_v": 12.5,
    }
    assert row["stddev_v"] == pytest.approx(math.sqrt(5 / 3), abs=1e-12)
    assert row["p95_v"] == pytest.approx(13.85, abs=1e-12)


def test_a_lone_result_has_no_stddev_and_every_statistic_its_value() -> None:
    (row,) = lab_window_aggregates(results((at(30), 6.8), series=("t1", "f1", "lab-01", "pH")), [3600]).to_dicts()
    assert (row["count_n"], row["stddev_v"]) == (1, None)
    assert {row[c] for c in ("sum_v", "avg_v", "min_v", "max_v", "first_v", "last_v", "p50_v", "p95_v")} == {6.8}


def test_buckets_are_epoch_aligned_and_a_result_on_the_hour_opens_the_next() -> None:
    frame = lab_window_aggregates(results(*HOUR_3, (at(60), 15.0)), [1800, 3600])
    found = {(r["window_s"], r["bucket_start"]): (r["count_n"], r["sum_v"]) for r in frame.to_dicts()}
    assert found == {
        (1800, at(0)): (2, 26.0),
        (1800, at(30)): (2, 24.0),
        (1800, at(60)): (1, 15.0),
        (3600, at(0)): (4, 50.0),
        (3600, at(60)): (1, 15.0),
    }


def test_tenants_factories_stations_and_analytes_are_separate_series() -> None:
    same_ids_other_tenant = ("t2", "f1", "lab-01", "Moisture")
    frame = lab_window_aggregates(
        pl.concat(
            [
                results(*HOUR_3),
                results((at(10), 50.0), series=same_ids_other_tenant),
                results((at(10), 7.0), series=("t1", "f2", "lab-01", "Moisture")),
                results((at(10), 8.0), series=("t1", "f1", "lab-02", "Moisture")),
                results((at(10), 6.8), series=("t1", "f1", "lab-01", "pH")),
            ]
        ),
        [3600],
    )
    found = {k[1:5]: (r["count_n"], r["sum_v"]) for k, r in by_key(frame).items()}
    assert found == {
        MOISTURE: (4, 50.0),
        same_ids_other_tenant: (1, 50.0),
        ("t1", "f2", "lab-01", "Moisture"): (1, 7.0),
        ("t1", "f1", "lab-02", "Moisture"): (1, 8.0),
        ("t1", "f1", "lab-01", "pH"): (1, 6.8),
    }


def test_the_numbers_do_not_depend_on_the_order_results_arrived_in() -> None:
    values = [0.1, 0.2, 0.3, 1e16, -1e16, 0.7, 12.4, 13.05]
    rows = [(at(i * 5), v) for i, v in enumerate(values)]
    forward = lab_window_aggregates(results(*rows), [3600])
    backward = lab_window_aggregates(results(*reversed(rows)), [3600])
    assert forward.to_dicts() == backward.to_dicts()


def test_the_numbers_are_the_sensor_aggregates_own() -> None:
    """The same values as a sensor series give the same statistics: one definition for both."""
    rows = [*HOUR_3, (at(61), 9.5), (at(61), 10.5)]
    lab = lab_window_aggregates(results(*rows), [60, 3600]).sort("window_s", "bucket_start")
    sensor_series = [(t, "t1", "f1", "m1", "s1", "temp", v) for t, v in rows]
    sensor = pl.DataFrame(sensor_series, schema=READING_SCHEMA, orient="row")
    sensor_rows = window_aggregates(sensor.sort("value").lazy(), [60, 3600]).collect().sort("window_s", "bucket_start")
    stats = ["bucket_start", "bucket_end", "window_s", *LAB_AGG_COLUMNS[7:]]
    assert lab.select(stats).to_dicts() == sensor_rows.select(stats).to_dicts()


def test_start_and_end_keep_the_buckets_overlapping_the_range() -> None:
    # 7200 s buckets start at even hours of the epoch: 02:00-04:00 holds hour 3, 04:00-06:00 the 04:05 result
    frame = lab_window_aggregates(results(*HOUR_3, (at(65), 15.0)), [3600, 7200], start=at(60), end=at(120))
    assert sorted((r["window_s"], r["bucket_start"], r["count_n"]) for r in frame.to_dicts()) == [
        (3600, at(60), 1),
        (7200, at(60), 1),
    ]


def test_no_results_give_no_rows_with_the_columns() -> None:
    frame = lab_window_aggregates(pl.DataFrame(schema=LAB_RESULT_SCHEMA), [3600])
    assert frame.columns == list(LAB_AGG_COLUMNS) and frame.height == 0
