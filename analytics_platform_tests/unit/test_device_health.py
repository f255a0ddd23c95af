"""Device health of an hour: status transitions, offline periods (with the status before the hour and
the next `up` after it), uptime seconds per window, health-score statistics and their day rollup."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from analytics_platform.transforms.device_health import (
    HEALTH_SCHEMA,
    NEXT_SEEN_SCHEMA,
    NEXT_UP_SCHEMA,
    PRIOR_SCHEMA,
    DeviceHealthResult,
    device_health,
)
from analytics_platform.transforms.event_rollups import (
    DEVICE_HEALTH,
    EVENT_SCHEMA,
    ROLLUP_SCHEMA,
    daily_rollup,
)

DAY = datetime(2025, 8, 20, tzinfo=UTC)
NEXT_DAY = DAY + timedelta(days=1)
H1 = DAY + timedelta(hours=1)
H2 = DAY + timedelta(hours=2)
H3 = DAY + timedelta(hours=3)
H4 = DAY + timedelta(hours=4)
H5 = DAY + timedelta(hours=5)


def at(base: datetime, minutes: int = 0, seconds: int = 0) -> datetime:
    return base + timedelta(minutes=minutes, seconds=seconds)


def h(
    time: datetime, status: str | None, score: float | None = None, *, level: str = "info", machine: str = "m1"
) -> dict[str, Any]:
    """One `device.health` message."""
    return {
        "time": time,
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": machine,
        "status": status,
        "level": level,
        "health_score": score,
    }


def prior(status: str, since: datetime, *, level: str = "info", machine: str = "m1") -> dict[str, Any]:
    return {
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": machine,
        "status": status,
        "level": level,
        "since": since,
    }


def next_up(time: datetime, *, machine: str = "m1") -> dict[str, Any]:
    return {"tenant_id": "t1", "factory_id": "f1", "machine_id": machine, "next_up": time}


def run(
    health: Sequence[dict[str, Any]],
    priors: Sequence[dict[str, Any]] = (),
    next_ups: Sequence[dict[str, Any]] = (),
    *,
    start: datetime = H3,
    end: datetime = H4,
    until: datetime | None = None,
    windows: Sequence[int] = (3600,),
) -> DeviceHealthResult:
    return device_health(
        pl.DataFrame(list(health), schema=HEALTH_SCHEMA),
        pl.DataFrame(list(priors), schema=PRIOR_SCHEMA),
        pl.DataFrame(list(next_ups), schema=NEXT_UP_SCHEMA),
        start=start,
        end=end,
        until=end if until is None else until,
        windows=list(windows),
    )


def changes(result: DeviceHealthResult) -> list[tuple]:
    """(machine, time, new status, level, details) of each status_change event."""
    rows = result.events.filter(pl.col("event_type") == "status_change")
    return [
        (r["machine_id"], r["time"], r["event_key"], r["level"], json.loads(r["details"]))
        for r in rows.iter_rows(named=True)
    ]


def periods(result: DeviceHealthResult) -> list[tuple]:
    """(machine, start, end, duration_s, level, details) of each offline_period event."""
    rows = result.events.filter(pl.col("event_type") == "offline_period")
    return [
        (r["machine_id"], r["time"], r["end_time"], r["duration_s"], r["level"], json.loads(r["details"]))
        for r in rows.iter_rows(named=True)
    ]


def health_rows(result: DeviceHealthResult) -> list[dict[str, Any]]:
    """The device_health rollup rows, with `details` parsed."""
    rows = result.rollups.filter(pl.col("event_type") == DEVICE_HEALTH).to_dicts()
    for row in rows:
        row["details"] = json.loads(row["details"])
    return rows


def seconds(result: DeviceHealthResult) -> list[tuple]:
    """(window_s, bucket_start, up_s, down_s, maintenance_s, offline_s, uptime_pct) per device_health row."""
    return [
        (
            r["window_s"],
            r["bucket_start"],
            r["details"]["up_s"],
            r["details"]["down_s"],
            r["details"]["maintenance_s"],
            r["details"]["offline_s"],
            r["uptime_pct"],
        )
        for r in health_rows(result)
    ]


def counted(result: DeviceHealthResult) -> list[tuple]:
    """(event_type, machine, window_s, bucket_start, count_n) of the status_change / offline_period rollups."""
    return (
        result.rollups.filter(pl.col("event_type") != DEVICE_HEALTH)
        .select("event_type", "machine_id", "window_s", "bucket_start", "count_n")
        .rows()
    )


# ----- empty input -------------------------------------------------------------------------------


def test_no_health_and_no_prior_give_no_events_and_no_rollups() -> None:
    result = run([])
    assert result.events.height == 0
    assert result.events.schema == pl.Schema(EVENT_SCHEMA)
    assert result.rollups.height == 0
    assert result.rollups.schema == pl.Schema(ROLLUP_SCHEMA)


# ----- status transitions ------------------------------------------------------------------------


def test_transitions_without_a_prior_status() -> None:
    """The first status ever (03:00) and a repeated status (03:10, 03:40) are not transitions."""
    result = run(
        [
            h(H3, "online"),
            h(at(H3, 10), "online"),
            h(at(H3, 20), "degraded", level="warning"),
            h(at(H3, 30), "offline", level="critical"),
            h(at(H3, 40), "offline", level="critical"),
            h(at(H3, 50), "online"),
        ]
    )
    assert changes(result) == [
        ("m1", at(H3, 20), "degraded", "warning", {"from": "online", "to": "degraded"}),
        ("m1", at(H3, 30), "offline", "critical", {"from": "degraded", "to": "offline"}),
        ("m1", at(H3, 50), "online", "info", {"from": "offline", "to": "online"}),
    ]
    assert counted(result) == [("offline_period", "m1", 3600, H3, 1), ("status_change", "m1", 3600, H3, 3)]


def test_a_status_change_event_has_every_event_column() -> None:
    result = run([h(at(H3, 5), "online"), h(at(H3, 6), "fault", level="error")])
    [row] = result.events.to_dicts()
    assert row == {
        "time": at(H3, 6),
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "m1",
        "event_type": "status_change",
        "event_key": "fault",
        "domain": "device",
        "level": "error",
        "value": None,
        "passed": None,
        "end_time": None,
        "duration_s": None,
        "details": '{"from":"online","to":"fault"}',
        "subject": "",
    }


def test_transitions_from_the_prior_status() -> None:
    result = run(
        [
            h(H3, "online"),  # m1: the same as its prior status: no transition
            h(at(H3, 5), "fault", level="error", machine="m1"),
            h(at(H3, 15), "online", machine="m2"),  # m2: offline before the hour
            h(at(H3, 20), "online", machine="m3"),  # m3: first status ever
        ],
        [prior("online", H1, machine="m1"), prior("offline", at(H2, 30), level="critical", machine="m2")],
    )
    assert changes(result) == [
        ("m1", at(H3, 5), "fault", "error", {"from": "online", "to": "fault"}),
        ("m2", at(H3, 15), "online", "info", {"from": "offline", "to": "online"}),
    ]


def test_a_prior_status_alone_makes_no_transition() -> None:
    result = run([], [prior("online", H1)])
    assert result.events.height == 0
    assert seconds(result) == [(3600, H3, 3600.0, 0.0, 0.0, 0.0, 100.0)]


# ----- offline periods ---------------------------------------------------------------------------


def test_offline_periods_inside_the_hour() -> None:
    """03:10-03:25 closed by `online` (900 s); 03:40-03:45 closed by `fault` (300 s)."""
    result = run(
        [
            h(H3, "online"),
            h(at(H3, 10), "offline", level="critical"),
            h(at(H3, 25), "online"),
            h(at(H3, 40), "offline", level="warning"),
            h(at(H3, 45), "fault", level="error"),
            h(at(H3, 50), "online"),
        ],
        [],
        [next_up(at(H4, 12))],  # not used: no period is open at the end of the hour
    )
    assert periods(result) == [
        ("m1", at(H3, 10), at(H3, 25), 900.0, "critical", {"open": False}),
        ("m1", at(H3, 40), at(H3, 45), 300.0, "warning", {"open": False}),
    ]
    assert counted(result) == [("offline_period", "m1", 3600, H3, 2), ("status_change", "m1", 3600, H3, 5)]
    # up: 03:00-03:10, 03:25-03:40, 03:50-04:00 = 2100 s; down: offline 900 + 300, fault 300 = 1500 s
    assert seconds(result) == [(3600, H3, 2100.0, 1500.0, 0.0, 1200.0, pytest.approx(2100 / 3600 * 100))]


def test_an_offline_period_that_started_before_the_hour() -> None:
    """Offline since 02:30 (prior), repeated at 03:05, back online at 03:20: one period
    02:30-03:20 (3000 s). It started in the 02:00 hour, so this hour's rollup does not count it."""
    result = run(
        [h(at(H3, 5), "offline", level="critical"), h(at(H3, 20), "online")],
        [prior("offline", at(H2, 30), level="critical")],
    )
    assert periods(result) == [("m1", at(H2, 30), at(H3, 20), 3000.0, "critical", {"open": False})]
    assert changes(result) == [("m1", at(H3, 20), "online", "info", {"from": "offline", "to": "online"})]
    assert counted(result) == [("status_change", "m1", 3600, H3, 1)]
    # only the hour's part of the period is down time: 03:00-03:20
    assert seconds(result) == [(3600, H3, 2400.0, 1200.0, 0.0, 1200.0, pytest.approx(2400 / 3600 * 100))]


def test_an_offline_period_still_open_at_the_end() -> None:
    result = run([h(H3, "online"), h(at(H3, 40), "offline", level="critical")])
    assert periods(result) == [("m1", at(H3, 40), None, None, "critical", {"open": True})]
    row = result.events.filter(pl.col("event_type") == "offline_period").to_dicts()[0]
    assert row["details"] == '{"open":true}'
    assert seconds(result) == [(3600, H3, 2400.0, 1200.0, 0.0, 1200.0, pytest.approx(2400 / 3600 * 100))]


def test_an_offline_period_closed_by_next_up_after_the_hour() -> None:
    """Offline from 03:40, next up at 04:12: 32 minutes = 1920 s. Another machine's next_up is not used."""
    result = run(
        [h(H3, "online"), h(at(H3, 40), "offline", level="critical")],
        [],
        [next_up(at(H4, 5), machine="m2"), next_up(at(H4, 12))],
    )
    assert periods(result) == [("m1", at(H3, 40), at(H4, 12), 1920.0, "critical", {"open": False})]
    # the hour itself still only counts 03:40-04:00 as down
    assert seconds(result) == [(3600, H3, 2400.0, 1200.0, 0.0, 1200.0, pytest.approx(2400 / 3600 * 100))]


def test_an_offline_period_spanning_the_whole_hour() -> None:
    """Offline since 02:30, nothing in the hour, up again at 05:00: 02:30-05:00 = 9000 s."""
    result = run([], [prior("offline", at(H2, 30), level="critical")], [next_up(H5)])
    assert periods(result) == [("m1", at(H2, 30), H5, 9000.0, "critical", {"open": False})]
    assert counted(result) == []
    assert seconds(result) == [(3600, H3, 0.0, 3600.0, 0.0, 3600.0, 0.0)]


def test_periods_of_two_machines() -> None:
    result = run(
        [
            h(at(H3, 10), "offline", machine="m1"),
            h(at(H3, 20), "online", machine="m1"),
            h(at(H3, 30), "offline", machine="m2"),
        ],
        [prior("online", H2, machine="m2")],
        [next_up(at(H4, 1), machine="m2")],
    )
    assert periods(result) == [
        ("m1", at(H3, 10), at(H3, 20), 600.0, "info", {"open": False}),
        ("m2", at(H3, 30), at(H4, 1), 1860.0, "info", {"open": False}),
    ]


# ----- uptime ------------------------------------------------------------------------------------


def test_uptime_excludes_maintenance_counts_degraded_as_up_and_ignores_unobserved_time() -> None:
    """Nothing known before 03:15; online 03:15-03:30, degraded 03:30-03:40, maintenance 03:40-03:50,
    offline 03:50-04:00.
    Hour: up 1500, down 600, maintenance 600 -> 1500 / 2100 = 71.43 %.
    900 s buckets: 03:00 not observed (no row); 03:15 up 900 -> 100 %;
    03:30 up 600 + maintenance 300 -> 100 %; 03:45 maintenance 300 + offline 600 -> 0 %."""
    result = run(
        [
            h(at(H3, 15), "online"),
            h(at(H3, 30), "degraded", level="warning"),
            h(at(H3, 40), "maintenance"),
            h(at(H3, 50), "offline", level="critical"),
        ],
        windows=[900, 3600],
    )
    assert seconds(result) == [
        (900, at(H3, 15), 900.0, 0.0, 0.0, 0.0, 100.0),
        (900, at(H3, 30), 600.0, 0.0, 300.0, 0.0, 100.0),
        (900, at(H3, 45), 0.0, 600.0, 300.0, 600.0, 0.0),
        (3600, H3, 1500.0, 600.0, 600.0, 600.0, pytest.approx(1500 / 2100 * 100)),
    ]
    assert [(r["window_s"], r["bucket_start"], r["bucket_end"], r["count_n"]) for r in health_rows(result)] == [
        (900, at(H3, 15), at(H3, 30), 1),
        (900, at(H3, 30), at(H3, 45), 2),
        (900, at(H3, 45), H4, 1),
        (3600, H3, H4, 4),
    ]


@pytest.mark.parametrize("status", ["fault", "starting", "stopping", "offline"])
def test_every_other_status_is_down(status: str) -> None:
    result = run([h(H3, "online"), h(at(H3, 45), status)])
    offline_s = 900.0 if status == "offline" else 0.0
    assert seconds(result) == [(3600, H3, 2700.0, 900.0, 0.0, offline_s, 75.0)]


def test_only_maintenance_has_no_uptime() -> None:
    result = run([h(H3, "maintenance")])
    assert seconds(result) == [(3600, H3, 0.0, 0.0, 3600.0, 0.0, None)]


def test_until_cuts_the_hour_short() -> None:
    """Online (prior) until 03:30, fault after; data only up to 03:45: up 1800, down 900 -> 66.67 %.
    The 900 s bucket 03:45 is not observed at all."""
    result = run([h(at(H3, 30), "fault", level="error")], [prior("online", H1)], until=at(H3, 45), windows=[900, 3600])
    assert seconds(result) == [
        (900, H3, 900.0, 0.0, 0.0, 0.0, 100.0),
        (900, at(H3, 15), 900.0, 0.0, 0.0, 0.0, 100.0),
        (900, at(H3, 30), 0.0, 900.0, 0.0, 0.0, 0.0),
        (3600, H3, 1800.0, 900.0, 0.0, 0.0, pytest.approx(1800 / 2700 * 100)),
    ]


def test_until_past_the_end_counts_only_up_to_the_end() -> None:
    result = run([], [prior("online", H1)], until=H5)
    assert seconds(result) == [(3600, H3, 3600.0, 0.0, 0.0, 0.0, 100.0)]


def test_messages_without_a_status_count_but_observe_no_time() -> None:
    result = run([h(at(H3, 10), None, 50.0), h(at(H3, 20), None, 60.0)])
    [row] = health_rows(result)
    assert (row["count_n"], row["uptime_pct"]) == (2, None)
    assert row["details"]["up_s"] == 0.0
    assert row["details"]["down_s"] == 0.0
    assert (row["details"]["health_n"], row["details"]["health_avg"]) == (2, 55.0)
    assert result.events.height == 0


# ----- health-score statistics -------------------------------------------------------------------


def test_health_score_statistics_of_the_hour() -> None:
    """Four messages, three with a score (80, 90, 100): n 3, sum 270, sumsq 6400 + 8100 + 10000 = 24500,
    avg 90, min 80, max 100, stddev sqrt(((-10)^2 + 0 + 10^2) / 2) = 10."""
    result = run(
        [
            h(at(H3, 10), "online", 80.0),
            h(at(H3, 20), "online", None),
            h(at(H3, 30), None, 90.0),
            h(at(H3, 40), "online", 100.0),
        ],
        [prior("online", H1)],
    )
    [row] = health_rows(result)
    assert row == {
        "bucket_start": H3,
        "bucket_end": H4,
        "window_s": 3600,
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "m1",
        "event_type": DEVICE_HEALTH,
        "subject": "",
        "count_n": 4,
        "pass_n": None,
        "fail_n": None,
        "fail_rate": None,
        "pass_rate": None,
        "uptime_pct": 100.0,
        "details": {
            "up_s": 3600.0,
            "down_s": 0.0,
            "maintenance_s": 0.0,
            "offline_s": 0.0,
            "health_n": 3,
            "health_sum": 270.0,
            "health_sumsq": 24500.0,
            "health_avg": 90.0,
            "health_min": 80.0,
            "health_max": 100.0,
            "health_stddev": pytest.approx(10.0),
        },
    }


def test_health_stddev_of_one_score_is_null() -> None:
    """900 s buckets: 03:00 has one score (stddev NULL); 03:30 has 90 and 100 (mean 95, stddev sqrt(50))."""
    result = run(
        [h(at(H3, 5), "online", 80.0), h(at(H3, 35), "online", 90.0), h(at(H3, 40), "online", 100.0)],
        windows=[900],
    )
    stats = [
        (r["bucket_start"], r["details"]["health_n"], r["details"]["health_avg"], r["details"]["health_stddev"])
        for r in health_rows(result)
    ]
    assert stats == [
        (H3, 1, 80.0, None),
        (at(H3, 15), 0, None, None),  # observed (online), but no score
        (at(H3, 30), 2, 95.0, pytest.approx(50**0.5)),
        (at(H3, 45), 0, None, None),
    ]


# ----- day rollup of device hours ----------------------------------------------------------------


def test_daily_rollup_combines_device_hours() -> None:
    """03:00 hour: first status online at 03:30 (score 80): up 1800 s, 100 %.
    04:00 hour: prior online since 03:30, offline at 04:00 (score 90) and 04:30 (score 100), never
    back: down 3600 s, 0 %, one transition, one open offline period.
    Day: uptime 1800 / (1800 + 3600) = 33.3 % (not the 50 % average of the hours); scores 80, 90, 100
    -> avg 90, stddev from the summed n, sum and sumsq = sqrt((24500 - 270^2 / 3) / 2) = 10."""
    hour3 = run([h(at(H3, 30), "online", 80.0)])
    hour4 = run(
        [h(H4, "offline", 90.0, level="critical"), h(at(H4, 30), "offline", 100.0, level="critical")],
        [prior("online", at(H3, 30))],
        start=H4,
        end=H5,
    )
    assert seconds(hour3) == [(3600, H3, 1800.0, 0.0, 0.0, 0.0, 100.0)]
    assert seconds(hour4) == [(3600, H4, 0.0, 3600.0, 0.0, 3600.0, 0.0)]
    day = daily_rollup(pl.concat([hour3.rollups, hour4.rollups]))
    assert day.select("bucket_start", "bucket_end", "window_s", "event_type", "count_n", "uptime_pct").rows() == [
        (DAY, NEXT_DAY, 86400, DEVICE_HEALTH, 3, pytest.approx(100 / 3)),
        (DAY, NEXT_DAY, 86400, "offline_period", 1, None),
        (DAY, NEXT_DAY, 86400, "status_change", 1, None),
    ]
    details = [json.loads(d) for d in day["details"]]
    assert details == [
        {
            "up_s": 1800.0,
            "down_s": 3600.0,
            "maintenance_s": 0.0,
            "offline_s": 3600.0,
            "health_n": 3,
            "health_sum": 270.0,
            "health_sumsq": 24500.0,
            "health_avg": 90.0,
            "health_min": 80.0,
            "health_max": 100.0,
            "health_stddev": pytest.approx(10.0),
        },
        {"no_verdict_n": 1},
        {"no_verdict_n": 1},
    ]


# Silence (docs/architecture.md, "Silence is an outage"): more than OFFLINE_AFTER with no message at all
OFFLINE_AFTER = timedelta(minutes=10)


def run_silent(
    health: Sequence[dict[str, Any]],
    priors: Sequence[dict[str, Any]] = (),
    next_seen: Sequence[datetime] = (),
    *,
    now: datetime,
    last_seen: datetime | None = None,
) -> DeviceHealthResult:
    """Hour H3 of machine m1 with the silence rule: `last_seen` its last message before H3, `next_seen`
    its first at or after H4, `now` the clock."""
    prior_frame = pl.DataFrame(list(priors), schema=PRIOR_SCHEMA).with_columns(
        last_seen=pl.lit(last_seen, pl.Datetime("us", "UTC"))
    )
    return device_health(
        pl.DataFrame(list(health), schema=HEALTH_SCHEMA),
        prior_frame,
        pl.DataFrame(schema=NEXT_UP_SCHEMA),
        start=H3,
        end=H4,
        until=H4,
        windows=[3600],
        next_seen=pl.DataFrame(
            [{"tenant_id": "t1", "factory_id": "f1", "machine_id": "m1", "next_seen": t} for t in next_seen],
            schema=NEXT_SEEN_SCHEMA,
        ),
        offline_after=OFFLINE_AFTER,
        now=now,
    )


def beats(first: int, last: int) -> list[dict[str, Any]]:
    """Health scores of m1 every 5 min from H3 + `first` to H3 + `last` minutes."""
    return [h(at(H3, m), None, 0.9) for m in range(first, last + 1, 5)]


def test_a_silence_longer_than_the_threshold_is_offline_from_the_last_message_to_the_next() -> None:
    # online at 03:00, scores to 03:20, nothing until scores from 03:45 to 03:55; the clock reads 04:00
    result = run_silent([h(H3, "online"), *beats(5, 20), *beats(45, 55)], now=H4)
    assert periods(result) == [("m1", at(H3, 20), at(H3, 45), 1500.0, "critical", {"open": False, "no_data": True})]
    assert seconds(result) == [(3600, H3, 2100.0, 1500.0, 0.0, 1500.0, pytest.approx(100 * 2100 / 3600))]
    # a gap of exactly the threshold is none (scores 10 min apart): "more than" 10 min, as the alert
    steady = run_silent([h(H3, "online"), *[h(at(H3, m), None, 0.9) for m in range(10, 60, 10)]], now=H4)
    assert (periods(steady), seconds(steady)[0][2]) == ([], 3600.0)


def test_a_silence_not_yet_known_holds_the_status_and_the_next_message_decides_it() -> None:
    # last message 03:52; at 04:00 (8 min) the status holds to the hour's end
    health = [h(H3, "online"), *beats(5, 50), h(at(H3, 52), None, 0.9)]
    assert seconds(run_silent(health, now=H4)) == [(3600, H3, 3600.0, 0.0, 0.0, 0.0, 100.0)]
    # the next message came at 04:02 (10 min): still none
    assert seconds(run_silent(health, next_seen=[at(H4, 2)], now=at(H4, 30))) == [
        (3600, H3, 3600.0, 0.0, 0.0, 0.0, 100.0)
    ]
    # at 04:03 (11 min): offline from 03:52, the period closed by the next message
    result = run_silent(health, next_seen=[at(H4, 3)], now=at(H4, 30))
    assert seconds(result) == [(3600, H3, 3120.0, 480.0, 0.0, 480.0, pytest.approx(100 * 3120 / 3600))]
    assert periods(result) == [("m1", at(H3, 52), at(H4, 3), 660.0, "critical", {"open": False, "no_data": True})]
    # none yet, but the clock reads 04:03: silent for 11 min, open
    assert periods(run_silent(health, now=at(H4, 3))) == [
        ("m1", at(H3, 52), None, None, "critical", {"open": True, "no_data": True})
    ]


def test_a_silence_begun_before_the_hour_carries_into_it_and_ends_with_the_next_message() -> None:
    # online since 02:00, heartbeats to 02:50, nothing until an `offline` report at 03:30, then `online` at
    # 03:40 and nothing after it (20 min by 04:00): the silence after a status change is not judged (the
    # status holds, as for an agent that reports on change), the heartbeats' silence is
    result = run_silent(
        [h(at(H3, 30), "offline"), h(at(H3, 40), "online")],
        [prior("online", H2)],
        last_seen=at(H2, 50),
        now=H4,
    )
    assert periods(result) == [
        ("m1", at(H2, 50), at(H3, 30), 2400.0, "critical", {"open": False, "no_data": True}),  # begun earlier
        ("m1", at(H3, 30), at(H3, 40), 600.0, "info", {"open": False}),
    ]
    assert seconds(result) == [(3600, H3, 1200.0, 2400.0, 0.0, 2400.0, pytest.approx(100 / 3))]
    # scores every 5 min after 03:40 to 03:55, then nothing by 04:30: offline from 03:55
    result = run_silent(
        [h(at(H3, 30), "offline"), h(at(H3, 40), "online"), *beats(45, 55)],
        [prior("online", H2)],
        last_seen=at(H2, 50),
        now=at(H4, 30),
    )
    assert seconds(result) == [(3600, H3, 900.0, 2700.0, 0.0, 2700.0, pytest.approx(100 / 4))]


def test_an_agent_that_reports_only_status_changes_keeps_each_status_until_the_next() -> None:
    """The textbook uptime: online 03:00, offline 03:20, online 03:35, nothing more by 05:00. Such an agent
    is silent between changes by design; judging its silences offline made the hour 0 % up."""
    result = run_silent([h(H3, "online"), h(at(H3, 20), "offline"), h(at(H3, 35), "online")], now=H5)
    assert periods(result) == [("m1", at(H3, 20), at(H3, 35), 900.0, "info", {"open": False})]
    assert seconds(result) == [(3600, H3, 2700.0, 900.0, 0.0, 900.0, 75.0)]
    # the same, carried from before the hour: online since 02:10 (its last message), nothing by 05:00
    held = run_silent([], [prior("online", at(H2, 10))], last_seen=at(H2, 10), now=H5)
    assert (periods(held), seconds(held)) == ([], [(3600, H3, 3600.0, 0.0, 0.0, 0.0, 100.0)])


def test_silence_adds_nothing_to_a_reported_offline_and_nothing_before_the_first_status() -> None:
    # offline reported at 03:10, then silence: one period, the reported one
    result = run_silent([h(H3, "online"), h(at(H3, 10), "offline")], now=H5)
    assert periods(result) == [("m1", at(H3, 10), None, None, "info", {"open": True})]
    assert seconds(result) == [(3600, H3, 600.0, 3000.0, 0.0, 3000.0, pytest.approx(100 / 6))]
    # scores only, never a status: unobserved, however silent
    assert seconds(run_silent([h(at(H3, 5), None, 0.9)], now=H5))[0][2:6] == (0.0, 0.0, 0.0, 0.0)
    assert periods(run_silent([h(at(H3, 5), None, 0.9)], now=H5)) == []


def test_maintenance_then_silence_is_offline_as_the_alert_says() -> None:
    # a machine in maintenance whose agent goes quiet after 03:30 is offline for the alert; the rollup agrees
    result = run_silent([h(H3, "maintenance"), *beats(5, 30)], now=H5)
    assert seconds(result) == [(3600, H3, 0.0, 1800.0, 1800.0, 1800.0, 0.0)]
