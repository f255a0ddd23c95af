"""Which 60 s samples a live seasonal pass judges (`closed_buckets`): closed at least `grace` ago,
from the judge's position on, none older than the look-back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from analytics_platform.results.live_detection import closed_buckets

GRACE = timedelta(seconds=5)
LOOKBACK = timedelta(minutes=10)


def at(minute: int, second: int = 0) -> datetime:
    return datetime(2025, 8, 19, 10, minute, second, tzinfo=UTC)


def test_a_sample_is_judged_only_grace_seconds_after_it_closed() -> None:
    # 10:05 closed 4 s ago: not yet; 5 s ago: judged with the ones since the position
    assert closed_buckets(at(2), at(6, 4), GRACE, LOOKBACK, 60) == (at(2), at(5))
    assert closed_buckets(at(2), at(6, 5), GRACE, LOOKBACK, 60) == (at(2), at(6))


def test_nothing_to_judge_until_the_next_sample_closes() -> None:
    since, until = closed_buckets(at(6), at(6, 59), GRACE, LOOKBACK, 60)
    assert (since, until) == (at(6), at(6))


def test_samples_older_than_the_lookback_are_left_to_the_hour() -> None:
    # a position left an hour behind (the sensor was stopped): the first sample starting within the
    # look-back of now (09:56:05 -> 09:57) on
    assert closed_buckets(at(6) - timedelta(hours=1), at(6, 5), GRACE, LOOKBACK, 60) == (
        datetime(2025, 8, 19, 9, 57, tzinfo=UTC),
        at(6),
    )


def test_an_unaligned_position_is_floored_to_its_sample() -> None:
    assert closed_buckets(at(2, 30), at(6, 5), GRACE, LOOKBACK, 60) == (at(2), at(6))
