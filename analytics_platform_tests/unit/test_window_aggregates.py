"""Tumbling-window aggregates: epoch-aligned buckets, `floor_to` / `ceil_to` / `covering_range`, and
the PostgreSQL conventions (stddev_samp, percentile_cont, first/last ordered by time then value)."""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from analytics_platform.transforms.window_aggregates import (
    AGG_COLUMNS,
    READING_SCHEMA,
    SERIES_KEY,
    TIME,
    ceil_to,
    covering_range,
    floor_to,
    window_aggregates,
)

DAY = datetime(2025, 8, 20, tzinfo=UTC)  # 1755648000 s after the epoch = 20320 whole days
NEXT_DAY = DAY + timedelta(days=1)
H2 = DAY + timedelta(hours=2)
H3 = DAY + timedelta(hours=3)
H4 = DAY + timedelta(hours=4)
H5 = DAY + timedelta(hours=5)
H6 = DAY + timedelta(hours=6)
SERIES = ("t1", "f1", "m1", "s1", "temp")


def at(base: datetime, minutes: int = 0, seconds: int = 0, micros: int = 0) -> datetime:
    return base + timedelta(minutes=minutes, seconds=seconds, microseconds=micros)


def readings(*rows: tuple[datetime, float], series: tuple[str, ...] = SERIES) -> pl.LazyFrame:
    """(time, value) readings of one series."""
    return pl.DataFrame([(t, *series, v) for t, v in rows], schema=READING_SCHEMA, orient="row").lazy()


def aggregate(frame: pl.LazyFrame, windows: list[int], **kwargs: datetime) -> pl.DataFrame:
    """The aggregates in a stable order (group_by does not keep one)."""
    return window_aggregates(frame, windows, **kwargs).collect().sort("window_s", *SERIES_KEY, "bucket_start")


def buckets(result: pl.DataFrame) -> list[tuple]:
    """(window_s, bucket_start, bucket_end, count_n, sum_v) per row."""
    return result.select("window_s", "bucket_start", "bucket_end", "count_n", "sum_v").rows()


# ----- floor_to / ceil_to / covering_range -------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "window_s", "expected"),
    [
        (H3, 3600, H3),  # exactly on the edge: its own bucket
        (at(H2, 59, 59, 999999), 3600, H2),  # one microsecond before: the previous bucket
        (at(H2, 59, 59, 999999), 60, at(H2, 59)),
        (at(H3, 17, 45), 60, at(H3, 17)),
        (at(H3, 17, 45), 300, at(H3, 15)),
        (at(H3, 15), 300, at(H3, 15)),
        (H5, 7200, H4),  # 7200 s buckets start at even UTC hours
        (H4, 7200, H4),
        (at(H5, 30), 86400, DAY),  # a day bucket starts at midnight UTC
        (H3, 420, H3),  # 1755658800 = 4180140 * 420: 03:00 happens to be aligned to 7 minutes
        (H5, 420, at(H4, 59)),  # 1755666000 = 4180157 * 420 + 60: 05:00 is 60 s into its bucket
    ],
)
def test_floor_to(moment: datetime, window_s: int, expected: datetime) -> None:
    assert floor_to(moment, window_s) == expected


@pytest.mark.parametrize(
    ("moment", "window_s", "expected"),
    [
        (H4, 3600, H4),  # aligned: itself
        (at(H4, micros=1), 3600, H5),  # one microsecond past: the next edge
        (at(H3, 59, 59, 999999), 3600, H4),
        (at(H3, 4, 59), 300, at(H3, 5)),
        (H5, 7200, H6),
        (H6, 7200, H6),
        (H5, 86400, NEXT_DAY),
        (H4, 420, at(H4, 3)),  # 04:00 is 240 s into the 420 s bucket 03:56-04:03
        (H6, 420, at(H6, 2)),  # 06:00 is 300 s into the bucket 05:55-06:02
    ],
)
def test_ceil_to(moment: datetime, window_s: int, expected: datetime) -> None:
    assert ceil_to(moment, window_s) == expected


def test_floor_to_and_ceil_to_return_utc() -> None:
    assert floor_to(at(H3, 10), 300).tzinfo == UTC
    assert ceil_to(at(H3, 11), 300).tzinfo == UTC


def test_covering_range_of_windows_that_tile_an_hour_is_the_hour() -> None:
    assert covering_range(H3, H4, [60, 300, 3600]) == (H3, H4)


def test_covering_range_widens_to_whole_buckets_of_a_window_that_does_not_divide_an_hour() -> None:
    # 420 s buckets around 05:00-06:00: 04:59-05:06 ... 05:55-06:02
    assert covering_range(H5, H6, [60, 420]) == (at(H4, 59), at(H6, 2))


def test_covering_range_of_windows_longer_than_an_hour() -> None:
    assert covering_range(H5, H6, [3600, 7200]) == (H4, H6)  # the 7200 s bucket 04:00-06:00
    assert covering_range(H5, H6, [3600, 86400]) == (DAY, NEXT_DAY)


def test_covering_range_takes_the_widest_window_at_each_end() -> None:
    # start from the 7200 s bucket (04:00), end from the 420 s bucket (06:02)
    assert covering_range(H5, H6, [420, 7200]) == (H4, at(H6, 2))


# ----- window_aggregates -------------------------------------------------------------------------


def test_empty_input_gives_no_rows_with_the_aggregate_columns() -> None:
    result = window_aggregates(readings(), [60, 3600]).collect()
    assert result.height == 0
    assert result.columns == list(AGG_COLUMNS)
    schema = result.schema
    assert (schema["bucket_start"], schema["bucket_end"], schema["window_s"], schema["count_n"]) == (
        TIME,
        TIME,
        pl.Int32(),
        pl.Int64(),
    )


def test_empty_input_with_start_and_end() -> None:
    result = window_aggregates(readings(), [420], start=H5, end=H6).collect()
    assert result.height == 0


def test_no_window_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one window"):
        window_aggregates(readings((H3, 1.0)), [])


@pytest.mark.parametrize("window_s", [0, -60])
def test_a_non_positive_window_is_an_error(window_s: int) -> None:
    with pytest.raises(ValueError, match="positive number of seconds"):
        window_aggregates(readings((H3, 1.0)), [60, window_s])


def test_a_single_reading() -> None:
    result = aggregate(readings((at(H3, 7, 30), 4.5)), [60, 3600])
    common = {
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "m1",
        "sensor_id": "s1",
        "metric": "temp",
        "count_n": 1,
        "sum_v": 4.5,
        "avg_v": 4.5,
        "min_v": 4.5,
        "max_v": 4.5,
        "stddev_v": None,  # stddev_samp of one value is NULL
        "first_v": 4.5,
        "last_v": 4.5,
        "p50_v": 4.5,
        "p95_v": 4.5,
    }
    assert result.to_dicts() == [
        {"bucket_start": at(H3, 7), "bucket_end": at(H3, 8), "window_s": 60, **common},
        {"bucket_start": H3, "bucket_end": H4, "window_s": 3600, **common},
    ]


def test_stddev_of_one_value_is_null_never_nan() -> None:
    # 03:00 bucket: one reading; 04:00 bucket: 1 and 3 -> mean 2, ((1-2)^2 + (3-2)^2) / (2-1) = 2
    result = aggregate(readings((at(H3, 10), 7.0), (at(H4, 10), 1.0), (at(H4, 20), 3.0)), [3600])
    stddevs = result.select("bucket_start", "stddev_v").rows()
    assert stddevs[0] == (H3, None)
    assert stddevs[1][0] == H4
    assert stddevs[1][1] == pytest.approx(math.sqrt(2))
    assert result["stddev_v"].is_nan().fill_null(False).sum() == 0


def test_stddev_of_equal_values_is_zero() -> None:
    result = aggregate(readings((at(H3, 1), 5.0), (at(H3, 2), 5.0)), [3600])
    assert result["stddev_v"].to_list() == [0.0]


def test_the_full_aggregate_of_one_bucket() -> None:
    """Values 4, 1, 2 at 03:10, 03:20, 03:30: count 3, sum 7, avg 7/3, min 1, max 4,
    stddev sqrt(((4-7/3)^2 + (1-7/3)^2 + (2-7/3)^2) / 2) = sqrt(7/3), first 4, last 2,
    p50 = sorted [1, 2, 4][1] = 2, p95 at rank 0.95 * 2 = 1.9: 2 + 0.9 * (4 - 2) = 3.8."""
    [row] = aggregate(readings((at(H3, 10), 4.0), (at(H3, 20), 1.0), (at(H3, 30), 2.0)), [3600]).to_dicts()
    assert row == {
        "bucket_start": H3,
        "bucket_end": H4,
        "window_s": 3600,
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "m1",
        "sensor_id": "s1",
        "metric": "temp",
        "count_n": 3,
        "sum_v": 7.0,
        "avg_v": pytest.approx(7 / 3),
        "min_v": 1.0,
        "max_v": 4.0,
        "stddev_v": pytest.approx(math.sqrt(7 / 3)),
        "first_v": 4.0,
        "last_v": 2.0,
        "p50_v": 2.0,
        "p95_v": pytest.approx(3.8),
    }


def test_percentiles_interpolate_linearly() -> None:
    """1..10: p50 at rank 4.5 -> 5 + 0.5 * (6 - 5) = 5.5; p95 at rank 8.55 -> 9 + 0.55 * (10 - 9) = 9.55."""
    values = [7.0, 3.0, 10.0, 1.0, 5.0, 9.0, 2.0, 8.0, 4.0, 6.0]
    result = aggregate(readings(*[(at(H3, i), v) for i, v in enumerate(values)]), [3600])
    assert result["p50_v"].to_list() == [pytest.approx(5.5)]
    assert result["p95_v"].to_list() == [pytest.approx(9.55)]


def test_percentiles_of_two_values() -> None:
    # ranks 0.5 and 0.95 between 10 and 20: 15 and 19.5
    result = aggregate(readings((at(H3, 1), 20.0), (at(H3, 2), 10.0)), [3600])
    assert result.select("p50_v", "p95_v").rows() == [(pytest.approx(15.0), pytest.approx(19.5))]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("windows", [[3600], [60, 300, 3600]])  # the hour from the readings, or from finer buckets
def test_first_and_last_with_ties_at_the_same_instant(reverse: bool, windows: list[int]) -> None:
    """The earliest instant 03:10 has 5 and 3: first is the smaller, 3. The latest instant 03:30 has
    7 and 8: last is the larger, 8. The arrival order of the rows does not matter."""
    rows = [(at(H3, 10), 5.0), (at(H3, 10), 3.0), (at(H3, 20), 9.0), (at(H3, 30), 8.0), (at(H3, 30), 7.0)]
    if reverse:
        rows.reverse()
    result = aggregate(readings(*rows), windows).filter(pl.col("window_s") == 3600)
    assert result.select("count_n", "first_v", "last_v", "min_v", "max_v").rows() == [(5, 3.0, 8.0, 3.0, 9.0)]


def float_bits(frame: pl.DataFrame) -> list[tuple]:
    """The rows with every float as its 64 bits (-0.0 and 0.0 told apart)."""
    return frame.with_columns(
        pl.col(c).map_elements(lambda v: struct.unpack("<q", struct.pack("<d", v))[0], return_dtype=pl.Int64)
        for c, dtype in frame.schema.items()
        if dtype == pl.Float64
    ).rows()


def test_a_window_computed_with_finer_ones_is_bit_for_bit_the_window_computed_alone() -> None:
    """Count, min, max, first and last of a window that a finer one divides come from the finer
    buckets: over 2,000 readings of three series with ties at one instant (across 60 s edges too),
    on and off every edge, each window must equal the same window computed from the readings alone."""
    rows = []
    for n in range(2000):
        moment = at(H3, micros=(n * 7_919_993) % 7_500_000_000 // 1000 * 1000)  # 03:00..05:05, ms steps
        series = (*SERIES[:3], f"s{n % 3}", "temp")
        value = ((n * 7919) % 1013 - 500) / 7.0
        rows.append((moment, *series, value))
        if n % 97 == 0:  # another reading at the same instant, either side of the first
            rows.append((moment, *series, value + (1.0 if n % 2 else -1.0)))
    rows.append((H4, *SERIES, 1.0))  # on every edge
    frame = pl.DataFrame(rows, schema=READING_SCHEMA, orient="row").sort("value").lazy()
    windows = [60, 300, 420, 900, 3600, 7200]
    together = aggregate(frame, windows, start=H3, end=H5)
    for window_s in windows:
        alone = aggregate(frame, [window_s], start=H3, end=H5)
        assert alone.height > 0
        assert float_bits(together.filter(pl.col("window_s") == window_s)) == float_bits(alone)


def test_first_and_last_follow_time_not_arrival_order() -> None:
    rows = [(at(H3, 30), 1.0), (at(H3, 10), 2.0), (at(H3, 50), 3.0), (at(H3, 20), 4.0)]
    result = aggregate(readings(*rows), [3600])
    assert result.select("first_v", "last_v").rows() == [(2.0, 3.0)]


def test_a_reading_on_the_hour_belongs_to_the_bucket_it_starts() -> None:
    frame = readings(
        (at(H2, 59, 59, 999999), 1.0),  # last microsecond of 02:00
        (H3, 2.0),  # first instant of 03:00
        (at(H3, 59, 59, 999999), 3.0),
        (H4, 4.0),
    )
    assert buckets(aggregate(frame, [3600])) == [
        (3600, H2, H3, 1, 1.0),
        (3600, H3, H4, 2, 5.0),
        (3600, H4, H5, 1, 4.0),
    ]


def test_readings_exactly_on_window_edges_of_60_300_and_3600() -> None:
    frame = readings(
        (H3, 1.0),  # on an edge of every window
        (at(H3, 0, 59, 999999), 2.0),
        (at(H3, 1), 4.0),  # on a 60 s edge
        (at(H3, 4, 59, 999999), 8.0),
        (at(H3, 5), 16.0),  # on a 60 s and a 300 s edge
        (H4, 32.0),  # on every edge again: the next hour
    )
    assert buckets(aggregate(frame, [3600, 300, 60])) == [
        (60, H3, at(H3, 1), 2, 3.0),
        (60, at(H3, 1), at(H3, 2), 1, 4.0),
        (60, at(H3, 4), at(H3, 5), 1, 8.0),
        (60, at(H3, 5), at(H3, 6), 1, 16.0),
        (60, H4, at(H4, 1), 1, 32.0),
        (300, H3, at(H3, 5), 4, 15.0),
        (300, at(H3, 5), at(H3, 10), 1, 16.0),
        (300, H4, at(H4, 5), 1, 32.0),
        (3600, H3, H4, 5, 31.0),
        (3600, H4, H5, 1, 32.0),
    ]


def test_a_repeated_window_is_computed_once() -> None:
    assert buckets(aggregate(readings((at(H3, 1), 1.0)), [60, 60])) == [(60, at(H3, 1), at(H3, 2), 1, 1.0)]


def test_windows_longer_than_an_hour() -> None:
    frame = readings(
        (at(H3, 30), 1.0),  # 7200: 02:00-04:00
        (H4, 2.0),  # 7200: 04:00-06:00, on its edge
        (at(H5, 59, 59), 4.0),
        (H6, 8.0),  # 7200: 06:00-08:00
        (at(DAY, 23 * 60 + 59, 59, 999999), 16.0),  # 7200: 22:00-24:00, the last microsecond of the day
        (NEXT_DAY, 32.0),  # the first instant of the next day
    )
    h22 = DAY + timedelta(hours=22)
    assert buckets(aggregate(frame, [86400, 7200])) == [
        (7200, H2, H4, 1, 1.0),
        (7200, H4, H6, 2, 6.0),
        (7200, H6, DAY + timedelta(hours=8), 1, 8.0),
        (7200, h22, NEXT_DAY, 1, 16.0),
        (7200, NEXT_DAY, NEXT_DAY + timedelta(hours=2), 1, 32.0),
        (86400, DAY, NEXT_DAY, 5, 31.0),
        (86400, NEXT_DAY, NEXT_DAY + timedelta(days=1), 1, 32.0),
    ]


def test_a_window_that_does_not_divide_an_hour_with_start_and_end() -> None:
    """Hour 05:00-06:00 with 60 s and 420 s windows; covering_range gives 04:59-06:02.

    The 420 s buckets overlapping the hour are 04:59-05:06 ... 05:55-06:02; they are returned whole,
    with readings before 05:00 and after 06:00. Buckets ending at or before 05:00, or starting at or
    after 06:00, are not returned."""
    frame = readings(
        (at(H4, 58, 59), 100.0),  # 420: 04:52-04:59, ends before the hour; 60: 04:58
        (at(H4, 59), 1.0),  # 420: 04:59-05:06 (returned); 60: 04:59-05:00 (ends at start: not returned)
        (at(H5, 5, 59), 2.0),  # 420: 04:59-05:06; 60: 05:05
        (at(H5, 59, 30), 3.0),  # 420: 05:55-06:02; 60: 05:59
        (at(H6, 1, 59), 4.0),  # 420: 05:55-06:02 (returned); 60: 06:01 (after the hour)
        (at(H6, 2), 200.0),  # 420: 06:02-06:09, starts after the hour
    )
    result = aggregate(frame, [60, 420], start=H5, end=H6)
    assert buckets(result) == [
        (60, at(H5, 5), at(H5, 6), 1, 2.0),
        (60, at(H5, 59), H6, 1, 3.0),
        (420, at(H4, 59), at(H5, 6), 2, 3.0),
        (420, at(H5, 55), at(H6, 2), 2, 7.0),
    ]
    # the readings inside covering_range are all those buckets need
    read_start, read_end = covering_range(H5, H6, [60, 420])
    inside = frame.filter((pl.col("time") >= read_start) & (pl.col("time") < read_end))
    assert inside.collect().height == 4
    assert aggregate(inside, [60, 420], start=H5, end=H6).equals(result)


def test_a_two_hour_window_with_start_and_end_of_one_hour() -> None:
    """Hour 05:00-06:00 with 3600 s and 7200 s windows: covering_range is 04:00-06:00, and the
    7200 s bucket 04:00-06:00 is returned whole, with its reading at 04:30, whose own hour is not."""
    frame = readings((at(H4, 30), 1.0), (at(H5, 30), 2.0), (H6, 4.0))
    assert covering_range(H5, H6, [3600, 7200]) == (H4, H6)
    assert buckets(aggregate(frame, [3600, 7200], start=H5, end=H6)) == [
        (3600, H5, H6, 1, 2.0),
        (7200, H4, H6, 2, 3.0),
    ]


def test_start_and_end_filter_keeps_buckets_overlapping_the_range() -> None:
    frame = readings((at(H2, 59, 59, 999999), 1.0), (H3, 2.0), (at(H3, 59, 59, 999999), 4.0), (H4, 8.0))
    assert buckets(aggregate(frame, [60, 3600], start=H3, end=H4)) == [
        (60, H3, at(H3, 1), 1, 2.0),
        (60, at(H3, 59), H4, 1, 4.0),
        (3600, H3, H4, 2, 6.0),
    ]


def test_series_are_aggregated_separately() -> None:
    a = readings((at(H3, 1), 1.0), (at(H3, 2), 2.0))
    b = readings((at(H3, 3), 10.0), series=("t1", "f1", "m1", "s2", "temp"))
    c = readings((at(H3, 4), 100.0), series=("t1", "f1", "m2", "s1", "temp"))
    d = readings((at(H3, 5), 1000.0), series=("t1", "f1", "m1", "s1", "rpm"))
    result = aggregate(pl.concat([a, b, c, d]), [3600])
    assert result.select(*SERIES_KEY, "count_n", "sum_v").rows() == [
        ("t1", "f1", "m1", "s1", "rpm", 1, 1000.0),
        ("t1", "f1", "m1", "s1", "temp", 2, 3.0),
        ("t1", "f1", "m1", "s2", "temp", 1, 10.0),
        ("t1", "f1", "m2", "s1", "temp", 1, 100.0),
    ]
