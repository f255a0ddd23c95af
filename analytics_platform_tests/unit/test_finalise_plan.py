"""Which buckets a finaliser run rewrites (`results.aggregates.buckets_to_finalise`) and what it
reads for them (`spans`, `without`): every series' buckets that closed since the last run, a late
series' closed buckets, never an open one, never a reading twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from analytics_platform.results.aggregates import buckets_to_finalise, spans, without

HOUR = datetime(2025, 8, 20, 10, tzinfo=UTC)
A = ("t1", "f1", "m1", "s1", "temp")
B = ("t2", "f1", "m1", "s1", "temp")  # another tenant, the same ids


def at(minute: float) -> datetime:
    return HOUR + timedelta(minutes=minute)


def test_closed_since_for_every_series_late_for_its_own_series_open_for_nobody() -> None:
    touched = [(A, at(6.5)), (A, at(0.2)), (B, at(2)), (B, at(7.5)), (A, at(0.9)), (B, at(-30))]
    plan = buckets_to_finalise([60, 300, 3600, 5400], HOUR, at(5), at(7), touched)
    assert plan.closed == {60: [at(5), at(6)], 300: [], 3600: [], 5400: []}
    # 10:06 is closed for every series already; 10:07 (B) and the 300 s 10:05, 3600 s and 5400 s are open
    assert plan.late == {A: {60: [at(0)], 300: [at(0)]}, B: {60: [at(2)], 300: [at(0)]}}
    assert plan.late_counts() == {60: 2, 300: 2}


def test_a_plan_splits_into_its_smallest_window_and_the_rest() -> None:
    touched = [(A, at(0.2)), (B, at(7.5)), (B, at(2))]
    plan = buckets_to_finalise([60, 300, 3600], HOUR, at(5), at(10), touched)
    ahead, rest = plan.split(60)
    assert (ahead.closed, ahead.late) == (
        {60: [at(5), at(6), at(7), at(8), at(9)]},
        {A: {60: [at(0)]}, B: {60: [at(2)]}},
    )
    # B's 10:05 300 s bucket closed for everyone: not a late one
    assert (rest.closed, rest.late) == ({300: [at(5)], 3600: []}, {A: {300: [at(0)]}, B: {300: [at(0)]}})
    assert ahead.late_counts() == {60: 2} and rest.late_counts() == {300: 2}
    only_small = buckets_to_finalise([60, 300], HOUR, at(5), at(7), [(A, at(6.5))]).split(60)[1]
    assert (only_small.closed, only_small.late) == ({300: []}, {})  # nothing of the rest: no second part


def test_a_window_longer_than_the_hour_closes_inside_it() -> None:
    plan = buckets_to_finalise([60, 5400], HOUR, at(29), at(31), [(A, at(-50))])
    assert plan.closed == {60: [at(29), at(30)], 5400: [at(-60)]}
    assert plan.late == {}  # A's 09:10 is in the 5400 s bucket that just closed for everyone


def test_a_run_asked_for_an_earlier_bucket_still_takes_the_late_readings_of_what_closed() -> None:
    plan = buckets_to_finalise([60, 300], HOUR, at(20), at(10), [(A, at(15.5))])
    assert plan.closed == {60: [], 300: []}
    assert plan.late == {A: {60: [at(15)], 300: [at(15)]}}


def test_reads_cover_each_bucket_once() -> None:
    taken = spans({60: [at(5), at(6)], 300: [at(5)]})
    assert taken == [(at(5), at(10))]
    assert spans({60: [at(0), at(2)], 300: [at(0)]}) == [(at(0), at(5))]
    assert without([(at(0), at(5)), (at(8), at(12))], taken) == [(at(0), at(5)), (at(10), at(12))]
    assert without([(at(4), at(11))], [(at(5), at(6)), (at(7), at(8))]) == [
        (at(4), at(5)),
        (at(6), at(7)),
        (at(8), at(11)),
    ]
    assert without([(at(5), at(6))], taken) == []
