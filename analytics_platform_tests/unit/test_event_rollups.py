"""Event rollups: count / pass / fail per window over [start, end), the windows an hourly partition
can roll up, and day rows built from the hourly rows (sums of their additive `details` parts)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from analytics_platform.transforms.event_rollups import (
    DEVICE_HEALTH,
    EVENT_SCHEMA,
    ROLLUP_COLUMNS,
    ROLLUP_SCHEMA,
    daily_rollup,
    rollup_events,
    rollup_windows,
)

DAY = datetime(2025, 8, 20, tzinfo=UTC)
NEXT_DAY = DAY + timedelta(days=1)
H3 = DAY + timedelta(hours=3)
H4 = DAY + timedelta(hours=4)
H23 = DAY + timedelta(hours=23)


def at(base: datetime, minutes: int = 0, seconds: int = 0, micros: int = 0) -> datetime:
    return base + timedelta(minutes=minutes, seconds=seconds, microseconds=micros)


def event(
    time: datetime,
    passed: bool | None = None,
    *,
    machine: str = "m1",
    event_type: str = "lab_result",
    subject: str = "",
) -> dict[str, Any]:
    return {
        "time": time,
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": machine,
        "event_type": event_type,
        "event_key": f"k-{time.isoformat()}",
        "domain": "lab",
        "level": "info",
        "value": 1.0,
        "passed": passed,
        "end_time": None,
        "duration_s": None,
        "details": "{}",
        "subject": subject,
    }


def events(*rows: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=EVENT_SCHEMA)


def counts(result: pl.DataFrame) -> list[tuple]:
    """(window_s, bucket_start, bucket_end, count_n, pass_n, fail_n) per row."""
    return result.select("window_s", "bucket_start", "bucket_end", "count_n", "pass_n", "fail_n").rows()


def hourly_row(
    bucket_start: datetime,
    details: dict[str, Any],
    *,
    event_type: str = DEVICE_HEALTH,
    count_n: int = 0,
    pass_n: int | None = None,
    fail_n: int | None = None,
    window_s: int = 3600,
) -> dict[str, Any]:
    return {
        "bucket_start": bucket_start,
        "bucket_end": bucket_start + timedelta(seconds=window_s),
        "window_s": window_s,
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "m1",
        "event_type": event_type,
        "subject": "",
        "count_n": count_n,
        "pass_n": pass_n,
        "fail_n": fail_n,
        "fail_rate": None,
        "pass_rate": None,
        "uptime_pct": None,
        "details": json.dumps(details),
    }


def health_details(up_s: float, down_s: float, maintenance_s: float, offline_s: float, scores: list[float]) -> dict:
    """The `details` of an hourly device_health row with these seconds and health scores."""
    return {
        "up_s": up_s,
        "down_s": down_s,
        "maintenance_s": maintenance_s,
        "offline_s": offline_s,
        "health_n": len(scores),
        "health_sum": sum(scores),
        "health_sumsq": sum(s * s for s in scores),
        "health_min": min(scores, default=None),
        "health_max": max(scores, default=None),
    }


# ----- rollup_windows ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("windows", "expected"),
    [
        ([60, 300, 900], [60, 300, 900, 3600]),  # the hour is always added
        ([3600, 60, 60], [60, 3600]),  # sorted, without repeats
        ([], [3600]),
        ([420, 7200, 86400], [3600]),  # windows that do not tile an hour are left out
        ([0, -60, 120], [120, 3600]),
        ([1, 3600], [1, 3600]),
    ],
)
def test_rollup_windows(windows: list[int], expected: list[int]) -> None:
    assert rollup_windows(windows) == expected


# ----- rollup_events -----------------------------------------------------------------------------


def test_no_events_give_an_empty_frame_with_the_rollup_schema() -> None:
    result = rollup_events(events(), [60, 3600], H3, H4)
    assert result.height == 0
    assert result.schema == pl.Schema(ROLLUP_SCHEMA)


def test_five_events_give_count_five() -> None:
    """2 passed, 1 failed, 2 without a verdict: rates are over the 3 verdicts only."""
    frame = events(
        event(at(H3, 1), True),
        event(at(H3, 12), False),
        event(at(H3, 23), None),
        event(at(H3, 34), True),
        event(at(H3, 45), None),
    )
    result = rollup_events(frame, [3600], H3, H4)
    [row] = result.to_dicts()
    assert json.loads(row.pop("details")) == {"no_verdict_n": 2}
    assert row == {
        "bucket_start": H3,
        "bucket_end": H4,
        "window_s": 3600,
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "m1",
        "event_type": "lab_result",
        "subject": "",
        "count_n": 5,
        "pass_n": 2,
        "fail_n": 1,
        "fail_rate": pytest.approx(1 / 3),
        "pass_rate": pytest.approx(2 / 3),
        "uptime_pct": None,
    }


def test_a_single_event() -> None:
    result = rollup_events(events(event(at(H3, 30), False)), [60, 3600], H3, H4)
    assert result.select(
        "window_s", "bucket_start", "count_n", "pass_n", "fail_n", "fail_rate", "pass_rate"
    ).rows() == [
        (60, at(H3, 30), 1, 0, 1, 1.0, 0.0),
        (3600, H3, 1, 0, 1, 1.0, 0.0),
    ]


def test_rates_are_null_when_no_event_has_a_verdict() -> None:
    result = rollup_events(events(event(at(H3, 1)), event(at(H3, 2))), [3600], H3, H4)
    assert result.select("count_n", "pass_n", "fail_n", "fail_rate", "pass_rate").rows() == [(2, 0, 0, None, None)]
    assert json.loads(result["details"][0]) == {"no_verdict_n": 2}


def test_only_events_in_start_inclusive_end_exclusive_are_rolled_up() -> None:
    frame = events(
        event(at(H3, -1, 59, 999999), True),  # 02:59:59.999999: before the range
        event(H3, True),  # start: inside
        event(at(H3, 59, 59, 999999), False),  # inside
        event(H4, False),  # end: outside
    )
    assert counts(rollup_events(frame, [3600], H3, H4)) == [(3600, H3, H4, 2, 1, 1)]


def test_events_on_window_edges_of_60_and_300() -> None:
    frame = events(
        event(H3, True),
        event(at(H3, 0, 59, 999999), True),
        event(at(H3, 1), False),  # on a 60 s edge
        event(at(H3, 4, 59), None),
        event(at(H3, 5), True),  # on a 60 s and a 300 s edge
    )
    assert counts(rollup_events(frame, [60, 300, 3600], H3, H4)) == [
        (60, H3, at(H3, 1), 2, 2, 0),
        (60, at(H3, 1), at(H3, 2), 1, 0, 1),
        (60, at(H3, 4), at(H3, 5), 1, 0, 0),
        (60, at(H3, 5), at(H3, 6), 1, 1, 0),
        (300, H3, at(H3, 5), 4, 2, 1),
        (300, at(H3, 5), at(H3, 10), 1, 1, 0),
        (3600, H3, H4, 5, 3, 1),
    ]


def test_events_across_midnight_utc_fall_into_different_days() -> None:
    frame = events(event(at(H23, 59, 59), True), event(NEXT_DAY, False), event(at(NEXT_DAY, 0, 0, 1), None))
    result = rollup_events(frame, [3600, 86400], H23, NEXT_DAY + timedelta(hours=1))
    assert counts(result) == [
        (3600, H23, NEXT_DAY, 1, 1, 0),
        (3600, NEXT_DAY, NEXT_DAY + timedelta(hours=1), 2, 0, 1),
        (86400, DAY, NEXT_DAY, 1, 1, 0),
        (86400, NEXT_DAY, NEXT_DAY + timedelta(days=1), 2, 0, 1),
    ]


def test_rollups_are_split_by_machine_event_type_and_subject_and_sorted() -> None:
    frame = events(
        event(at(H3, 1), True, machine="m2"),
        event(at(H3, 2), True, subject="ph"),
        event(at(H3, 3), False, subject="ph"),
        event(at(H3, 4), False, subject="brix"),
        event(at(H3, 5), None, event_type="sweep_batch"),
        event(at(H3, 6), True),
    )
    result = rollup_events(frame, [3600], H3, H4)
    assert result.select("machine_id", "event_type", "subject", "count_n", "pass_n", "fail_n").rows() == [
        ("m1", "lab_result", "", 1, 1, 0),
        ("m1", "lab_result", "brix", 1, 0, 1),
        ("m1", "lab_result", "ph", 2, 1, 1),
        ("m1", "sweep_batch", "", 1, 0, 0),
        ("m2", "lab_result", "", 1, 1, 0),
    ]


# ----- daily_rollup ------------------------------------------------------------------------------


def test_daily_rollup_of_nothing_is_empty() -> None:
    result = daily_rollup(pl.DataFrame(schema=ROLLUP_SCHEMA))
    assert result.height == 0
    assert result.schema == pl.Schema(ROLLUP_SCHEMA)


def test_daily_rollup_of_hourly_event_counts_across_midnight() -> None:
    """Events at 22:10 (pass), 23:59:59 (fail), 23:59:59 (no verdict) on the 20th and 00:00:00 (pass)
    on the 21st: the 20th has 3 events, 1 pass, 1 fail; the 21st has 1 event, 1 pass. The 60 s rows
    handed in alongside the hourly ones are not counted again."""
    frame = events(
        event(at(DAY, 22 * 60 + 10), True),
        event(at(H23, 59, 59), False),
        event(at(H23, 59, 59), None),
        event(NEXT_DAY, True),
    )
    hourly = rollup_events(frame, [60, 3600], DAY, NEXT_DAY + timedelta(hours=1))
    result = daily_rollup(hourly)
    assert result.columns == list(ROLLUP_COLUMNS)
    assert result.schema == pl.Schema(ROLLUP_SCHEMA)
    assert result.drop("details").rows() == [
        (DAY, NEXT_DAY, 86400, "t1", "f1", "m1", "lab_result", "", 3, 1, 1, 0.5, 0.5, None),
        (NEXT_DAY, NEXT_DAY + timedelta(days=1), 86400, "t1", "f1", "m1", "lab_result", "", 1, 1, 0, 0.0, 1.0, None),
    ]
    assert [json.loads(d) for d in result["details"]] == [{"no_verdict_n": 1}, {"no_verdict_n": 0}]


def test_daily_rollup_keeps_subjects_and_machines_apart() -> None:
    frame = events(
        event(at(H3, 1), True, subject="ph"),
        event(at(H4, 1), False, subject="ph"),
        event(at(H4, 2), True, subject="brix"),
        event(at(H4, 3), None, machine="m2", subject="ph"),
    )
    result = daily_rollup(rollup_events(frame, [3600], DAY, NEXT_DAY))
    assert result.select("machine_id", "subject", "count_n", "pass_n", "fail_n", "fail_rate").rows() == [
        ("m1", "brix", 1, 1, 0, 0.0),
        ("m1", "ph", 2, 1, 1, 0.5),
        ("m2", "ph", 1, 0, 0, None),
    ]
    assert [json.loads(d) for d in result["details"]] == [{"no_verdict_n": 0}, {"no_verdict_n": 0}, {"no_verdict_n": 1}]


def test_daily_rollup_of_device_health_hours() -> None:
    """Two hours of one day:
    03:00: up 3000 s, down 600 s (offline), scores 80, 90;
    04:00: up 1800 s, maintenance 1800 s, score 100.
    Day: up 4800, down 600 -> uptime 4800 / 5400 = 88.89 % (maintenance is not in the denominator);
    scores 80, 90, 100 -> n 3, sum 270, sumsq 24500, avg 90, min 80, max 100,
    stddev sqrt((24500 - 270^2 / 3) / 2) = sqrt(100) = 10."""
    hourly = pl.DataFrame(
        [
            hourly_row(H3, health_details(3000.0, 600.0, 0.0, 600.0, [80.0, 90.0]), count_n=2),
            hourly_row(H4, health_details(1800.0, 0.0, 1800.0, 0.0, [100.0]), count_n=1),
        ],
        schema=ROLLUP_SCHEMA,
    )
    [row] = daily_rollup(hourly).to_dicts()
    details = json.loads(row.pop("details"))
    assert row == {
        "bucket_start": DAY,
        "bucket_end": NEXT_DAY,
        "window_s": 86400,
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "m1",
        "event_type": DEVICE_HEALTH,
        "subject": "",
        "count_n": 3,
        "pass_n": None,
        "fail_n": None,
        "fail_rate": None,
        "pass_rate": None,
        "uptime_pct": pytest.approx(4800 / 5400 * 100),
    }
    assert details == {
        "up_s": 4800.0,
        "down_s": 600.0,
        "maintenance_s": 1800.0,
        "offline_s": 600.0,
        "health_n": 3,
        "health_sum": 270.0,
        "health_sumsq": 24500.0,
        "health_avg": 90.0,
        "health_min": 80.0,
        "health_max": 100.0,
        "health_stddev": pytest.approx(10.0),
    }


def test_daily_device_health_keeps_pass_and_fail_null_like_its_hours() -> None:
    hourly = pl.DataFrame(
        [hourly_row(H3, health_details(3600.0, 0.0, 0.0, 0.0, [90.0]), count_n=1)], schema=ROLLUP_SCHEMA
    )
    assert hourly.select("pass_n", "fail_n").rows() == [(None, None)]
    assert daily_rollup(hourly).select("pass_n", "fail_n").rows() == [(None, None)]


def test_daily_uptime_is_from_summed_seconds_not_an_average_of_hourly_percentages() -> None:
    """03:00 observed 1800 s, all up (100 %); 04:00 observed 3600 s, all down (0 %).
    The average of the percentages would be 50 %; the day is 1800 / 5400 = 33.3 %."""
    hourly = pl.DataFrame(
        [
            hourly_row(H3, health_details(1800.0, 0.0, 0.0, 0.0, [])),
            hourly_row(H4, health_details(0.0, 3600.0, 0.0, 3600.0, [])),
        ],
        schema=ROLLUP_SCHEMA,
    )
    result = daily_rollup(hourly)
    assert result["uptime_pct"].to_list() == [pytest.approx(100 / 3)]


def test_daily_device_health_without_observed_time_or_scores() -> None:
    """Only maintenance, no scores: uptime, average, min, max and stddev are NULL, not NaN."""
    hourly = pl.DataFrame([hourly_row(H3, health_details(0.0, 0.0, 3600.0, 0.0, []))], schema=ROLLUP_SCHEMA)
    [row] = daily_rollup(hourly).to_dicts()
    assert row["uptime_pct"] is None
    details = json.loads(row["details"])
    assert (details["health_n"], details["health_avg"], details["health_min"], details["health_max"]) == (
        0,
        None,
        None,
        None,
    )
    assert details["health_stddev"] is None
    assert details["maintenance_s"] == 3600.0


def test_daily_health_stddev_of_one_score_is_null() -> None:
    hourly = pl.DataFrame([hourly_row(H3, health_details(3600.0, 0.0, 0.0, 0.0, [77.0]))], schema=ROLLUP_SCHEMA)
    details = json.loads(daily_rollup(hourly)["details"][0])
    assert (details["health_n"], details["health_avg"], details["health_stddev"]) == (1, 77.0, None)


def test_daily_health_stddev_of_a_constant_score_is_zero() -> None:
    hourly = pl.DataFrame(
        [
            hourly_row(H3, health_details(3600.0, 0.0, 0.0, 0.0, [90.0, 90.0])),
            hourly_row(H4, health_details(3600.0, 0.0, 0.0, 0.0, [90.0])),
        ],
        schema=ROLLUP_SCHEMA,
    )
    details = json.loads(daily_rollup(hourly)["details"][0])
    assert (details["health_n"], details["health_avg"], details["health_stddev"]) == (3, 90.0, 0.0)


def test_daily_health_stddev_of_a_constant_score_from_sums_is_zero_up_to_rounding() -> None:
    """77.3 three times: sumsq - sum^2 / n cancels to about 1.8e-12 rather than 0 in floating point,
    so the stddev from sums is about 1.3e-6, not exactly 0 (a two-pass stddev would give 0)."""
    hourly = pl.DataFrame([hourly_row(H3, health_details(3600.0, 0.0, 0.0, 0.0, [77.3] * 3))], schema=ROLLUP_SCHEMA)
    details = json.loads(daily_rollup(hourly)["details"][0])
    assert details["health_avg"] == pytest.approx(77.3)
    assert details["health_stddev"] == pytest.approx(0.0, abs=1e-5)


def test_daily_rollup_of_device_hours_across_midnight_gives_separate_days() -> None:
    hourly = pl.DataFrame(
        [
            hourly_row(H23, health_details(3600.0, 0.0, 0.0, 0.0, [50.0, 70.0])),
            hourly_row(NEXT_DAY, health_details(0.0, 1200.0, 0.0, 0.0, [40.0])),
        ],
        schema=ROLLUP_SCHEMA,
    )
    result = daily_rollup(hourly)
    assert result.select("bucket_start", "bucket_end", "window_s", "uptime_pct").rows() == [
        (DAY, NEXT_DAY, 86400, 100.0),
        (NEXT_DAY, NEXT_DAY + timedelta(days=1), 86400, 0.0),
    ]
    first, second = (json.loads(d) for d in result["details"])
    # 50, 70: mean 60, sample variance ((-10)^2 + 10^2) / 1 = 200
    assert (first["health_n"], first["health_avg"], first["health_stddev"]) == (2, 60.0, pytest.approx(200**0.5))
    assert (second["health_n"], second["health_avg"], second["health_stddev"]) == (1, 40.0, None)
