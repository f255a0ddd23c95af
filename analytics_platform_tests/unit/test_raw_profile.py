"""Raw-contract quality: `profile` counts, `PartitionQuality` arithmetic and the four checks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from analytics_platform.data_quality.raw_profile import (
    CHECK_NAMES,
    PROFILE_SCHEMA,
    PartitionQuality,
    check_outcomes,
    hour_window,
    profile,
)

NAN = float("nan")
INF = float("inf")
H3 = datetime(2025, 8, 20, 3, tzinfo=UTC)
H4 = datetime(2025, 8, 20, 4, tzinfo=UTC)
H5 = datetime(2025, 8, 20, 5, tzinfo=UTC)
ROW_SCHEMA = {
    "time": pl.Datetime("us", "UTC"),
    "machine_id": pl.String(),
    "metric": pl.String(),
    "value": pl.Float64(),
    "reading_values": pl.List(pl.Float64()),
}


def at(hour: datetime, minutes: int = 0, seconds: int = 0, micros: int = 0) -> datetime:
    return hour + timedelta(minutes=minutes, seconds=seconds, microseconds=micros)


def rows() -> pl.DataFrame:
    """Nine rows over three hours (and one without a time), each flaw written next to its row."""
    data = [
        (at(H3), "mc-01", "temp", 1.0, [1.0, 2.0]),  # clean, first instant of 03:00
        (at(H3, 10), "", "temp", 2.0, [1.0]),  # empty key
        (at(H3, 20), "mc-01", None, NAN, [1.0]),  # null key and NaN value
        (at(H3, 59, 59, 999999), "mc-02", "temp", -INF, [INF]),  # non-finite in both columns: one row
        (at(H4), "mc-01", "temp", 3.0, [NAN, 1.0]),  # non-finite list element; first instant of 04:00
        (at(H4, 30), "mc-01", "temp", None, None),  # nulls are not non-finite
        (at(H4, 45), "mc-01", "temp", 4.0, []),  # an empty list is finite
        (at(H5, 1), None, "", INF, [0.5]),  # two bad keys still count one row; inf value
        (None, "mc-03", "temp", 5.0, [1.0]),  # no time: null key and outside every window
    ]
    return pl.DataFrame(data, schema=ROW_SCHEMA, orient="row")


def test_profile_groups_by_utc_hour() -> None:
    result = profile(rows(), ["machine_id", "metric"], ["value", "reading_values"])
    assert result.schema == pl.Schema(PROFILE_SCHEMA)
    assert result.rows() == [
        # partition_start, rows, null_keys, non_finite, outside_window, min_time, max_time
        (None, 1, 1, 0, 1, None, None),
        (H3, 4, 2, 2, 0, at(H3), at(H3, 59, 59, 999999)),
        (H4, 3, 0, 1, 0, at(H4), at(H4, 45)),
        (H5, 1, 1, 1, 0, at(H5, 1), at(H5, 1)),
    ]


def test_profile_of_a_float_column_alone() -> None:
    result = profile(rows(), ["machine_id"], ["value"])
    assert result.select("partition_start", "null_keys", "non_finite").rows() == [
        (None, 1, 0),
        (H3, 1, 2),
        (H4, 0, 0),
        (H5, 1, 1),
    ]


def test_profile_of_a_list_column_alone() -> None:
    result = profile(rows(), [], ["reading_values"])
    assert result.select("partition_start", "null_keys", "non_finite").rows() == [
        (None, 1, 0),  # only `time` is a key here
        (H3, 0, 1),
        (H4, 0, 1),
        (H5, 0, 0),
    ]


def test_profile_without_finite_columns_counts_no_non_finite() -> None:
    result = profile(rows(), ["metric"], [])
    assert result.select("partition_start", "rows", "null_keys", "non_finite").rows() == [
        (None, 1, 1, 0),
        (H3, 4, 1, 0),
        (H4, 3, 0, 0),
        (H5, 1, 1, 0),
    ]


def test_profile_with_a_window_is_one_partition_counting_rows_outside() -> None:
    result = profile(rows(), ["machine_id", "metric"], ["value", "reading_values"], window=hour_window(H4))
    assert result.rows() == [
        # 04:00 (start) and 04:30, 04:45 are inside; 03:xx, 05:01 and the null time are outside
        (H4, 9, 4, 4, 6, at(H3), at(H5, 1)),
    ]


def test_profile_window_end_is_exclusive_and_start_inclusive() -> None:
    frame = pl.DataFrame(
        [
            (at(H3, 59, 59, 999999), "m", "temp", 1.0, [1.0]),
            (at(H4), "m", "temp", 1.0, [1.0]),
            (at(H4, 59, 59, 999999), "m", "temp", 1.0, [1.0]),
            (at(H5), "m", "temp", 1.0, [1.0]),
        ],
        schema=ROW_SCHEMA,
        orient="row",
    )
    result = profile(frame, ["machine_id"], ["value"], window=(H4, H5))
    assert result.select("partition_start", "rows", "outside_window").rows() == [(H4, 4, 2)]


def test_profile_of_no_rows_is_an_empty_frame_with_the_schema() -> None:
    result = profile(pl.DataFrame(schema=ROW_SCHEMA), ["machine_id"], ["value"])
    assert result.height == 0
    assert result.schema == pl.Schema(PROFILE_SCHEMA)


def test_hour_window() -> None:
    assert hour_window(H3) == (H3, H4)


# ----- PartitionQuality --------------------------------------------------------------------------


def test_add_profile_and_rejects_accumulate() -> None:
    quality = PartitionQuality()
    quality.add_profile(
        {"rows": 10, "null_keys": 1, "non_finite": 2, "outside_window": 0, "min_time": at(H3, 5), "max_time": at(H3, 9)}
    )
    quality.add_profile(
        {"rows": 5, "null_keys": 0, "non_finite": 1, "outside_window": 3, "min_time": at(H3, 1), "max_time": at(H3, 7)}
    )
    quality.add_rejects({"bad_time": 2, "not_json": 1}, at(H3, 30), at(H3, 40))
    quality.add_rejects({"bad_time": 1}, None, None)  # rejects whose time is unknown
    assert quality == PartitionQuality(
        rows=15,
        rejects=4,
        null_keys=1,
        non_finite=3,
        outside_window=3,
        min_time=at(H3, 1),
        max_time=at(H3, 40),
        duplicates=0,
        reject_reasons={"bad_time": 3, "not_json": 1},
    )
    assert quality.reject_ratio == 4 / 19


def test_merge_adds_every_count() -> None:
    first = PartitionQuality(
        rows=100,
        rejects=3,
        null_keys=1,
        non_finite=0,
        outside_window=2,
        min_time=at(H3, 10),
        max_time=at(H3, 20),
        duplicates=4,
        reject_reasons={"bad_time": 2, "unknown_metric": 1},
    )
    second = PartitionQuality(
        rows=50,
        rejects=2,
        null_keys=0,
        non_finite=5,
        outside_window=0,
        min_time=at(H3, 5),
        max_time=at(H3, 15),
        duplicates=1,
        reject_reasons={"bad_time": 1, "not_json": 1},
    )
    first.merge(second)
    assert first == PartitionQuality(
        rows=150,
        rejects=5,
        null_keys=1,
        non_finite=5,
        outside_window=2,
        min_time=at(H3, 5),
        max_time=at(H3, 20),
        duplicates=5,
        reject_reasons={"bad_time": 3, "unknown_metric": 1, "not_json": 1},
    )
    assert second.rows == 50  # the merged-in counts are left alone


def test_merge_into_an_empty_quality_takes_the_other_times() -> None:
    empty = PartitionQuality()
    empty.merge(PartitionQuality(rows=2, min_time=at(H4), max_time=at(H4, 1)))
    assert (empty.rows, empty.rejects, empty.min_time, empty.max_time) == (2, 0, at(H4), at(H4, 1))
    assert empty.reject_ratio == 0.0


def test_reject_ratio_of_nothing_is_zero() -> None:
    assert PartitionQuality().reject_ratio == 0.0


def test_reject_ratio_counts_rejects_against_all_messages() -> None:
    quality = PartitionQuality(rows=3)
    quality.add_rejects({"not_json": 1}, None, None)
    assert quality.reject_ratio == 0.25


# ----- check_outcomes ----------------------------------------------------------------------------


def quality_with(rows: int, rejects: int, **counts: int) -> PartitionQuality:
    quality = PartitionQuality(rows=rows, **counts)
    if rejects:
        quality.add_rejects({"bad_time": rejects}, None, None)
    return quality


@pytest.mark.parametrize(
    ("rows", "rejects", "threshold", "passed", "ratio"),
    [
        (95, 5, 0.05, True, 0.05),  # exactly at the threshold: passes
        (94, 6, 0.05, False, 0.06),  # one more: fails
        (96, 4, 0.05, True, 0.04),
        (0, 0, 0.05, True, 0.0),  # an empty partition
        (0, 1, 0.05, False, 1.0),  # only rejects
        (10, 0, 0.0, True, 0.0),  # a zero threshold allows no rejects ...
        (999, 1, 0.0, False, 0.001),  # ... not even one
        (0, 3, 1.0, True, 1.0),  # threshold 1 allows anything
        (2, 1, 0.05, False, 0.333333),  # the metadata ratio is rounded to 6 places
    ],
)
def test_reject_ratio_check(rows: int, rejects: int, threshold: float, passed: bool, ratio: float) -> None:
    outcome = {o.name: o for o in check_outcomes(quality_with(rows, rejects), threshold)}["reject_ratio"]
    assert outcome.passed is passed
    assert outcome.metadata == {
        "rejects": rejects,
        "rows": rows,
        "reject_ratio": ratio,
        "threshold": threshold,
        "reasons": {"bad_time": rejects} if rejects else {},
    }


def test_check_outcomes_of_a_clean_partition() -> None:
    outcomes = check_outcomes(quality_with(100, 0), 0.05)
    assert [o.name for o in outcomes] == list(CHECK_NAMES)
    assert [o.passed for o in outcomes] == [True, True, True, True]
    assert [o.description for o in outcomes] == [
        "every row has its time and key columns",
        "every row's time lies inside the partition's hour",
        "every value is a finite number",
        "rejected messages are at most 5.0% of the partition's messages",
    ]


def test_check_outcomes_report_each_flaw_with_its_figures() -> None:
    quality = quality_with(40, 0, null_keys=1, outside_window=2, non_finite=3)
    quality.add_rejects({"unknown_metric": 1, "bad_time": 2}, None, None)
    outcomes = check_outcomes(quality, 0.1)
    assert [(o.name, o.passed, o.metadata) for o in outcomes] == [
        ("keys_not_null", False, {"rows": 40, "rows_with_null_key": 1}),
        ("time_in_partition", False, {"rows": 40, "rows_outside": 2}),
        ("values_finite", False, {"rows": 40, "non_finite_rows": 3}),
        (
            "reject_ratio",
            True,  # 3 / 43 = 0.069767... <= 0.1
            {
                "rejects": 3,
                "rows": 40,
                "reject_ratio": 0.069767,
                "threshold": 0.1,
                "reasons": {"bad_time": 2, "unknown_metric": 1},  # sorted by reason
            },
        ),
    ]
    assert list(outcomes[3].metadata["reasons"]) == ["bad_time", "unknown_metric"]


def test_partition_quality_survives_json_exactly() -> None:
    # the drain service stores each batch's counts as JSON (analytics.drain_reports); the sensor reads
    # them back in another process, so every field must come back as it went in
    quality = PartitionQuality(
        rows=3,
        rejects=1,
        null_keys=0,
        non_finite=1,
        min_time=datetime(2025, 8, 20, 3, 10, tzinfo=UTC),
        max_time=datetime(2025, 8, 20, 3, 20, tzinfo=UTC),
        reject_reasons={"bad_json": 1},
        range_rows=3,
        out_of_range=1,
        out_of_range_sample=[{"metric": "temp", "value": 999.0}],
    )
    back = PartitionQuality.from_json(json.loads(json.dumps(quality.to_json())))
    assert back == quality
    assert PartitionQuality.from_json(PartitionQuality().to_json()) == PartitionQuality()
