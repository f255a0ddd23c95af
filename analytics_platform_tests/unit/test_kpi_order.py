"""KPIs are the same bits whatever order the readings arrive in and on every run.

A backfill reads the same readings as the live run, in whatever order the table returns them; a
period's KPIs add many segment parts (float addition is not associative), and Polars' joins and
group-bys return rows in no fixed order. Before the sums were ordered, the day's good count, cost,
OEE and quality and the hours' average drivers differed in their last bits between two runs on one
input and between two orders of the same readings (bench/kpi_ml.py: 80 day and 131 shift rows of
two base runs; here 1-3 rows of 8 machines)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from analytics_platform.transforms.machine_kpis import (
    READING_SCHEMA,
    SEEN_SCHEMA,
    STATE_SCHEMA,
    KpiInputs,
    fixed_periods,
    machine_kpis,
)
from analytics_platform_tests.unit.test_machine_kpis import DAY, NEXT, frame, plant

MACHINES = [f"mc-{m:02d}" for m in range(8)]


def day_of_readings() -> tuple[pl.DataFrame, list[tuple], list[tuple]]:
    """A day of 8 machines: power every 30 s, energy and the production counters every minute (7 s
    past it, so every hour's edge cuts an interval), an outdoor temperature; irregular values."""
    rng = np.random.default_rng(7)
    rows, prior, after = [], [], []
    for machine in MACHINES:
        energy, total, good = 1000.0, 0.0, 0.0
        before = DAY - timedelta(minutes=1)
        prior += [(before, "t1", "f1", machine, m, v) for m, v in (("energy", energy), ("count_total", 0.0))]
        prior += [(before, "t1", "f1", machine, "count_good", 0.0), (before, "t1", "f1", machine, "power", 40.0)]
        for second in range(0, 86_400, 30):
            at = DAY + timedelta(seconds=second)
            rows.append((at, "t1", "f1", machine, "power", float(rng.uniform(10, 90))))
            if second % 60 == 0:
                energy += float(rng.uniform(0.1, 1.7))
                total += float(rng.integers(0, 30))
                good = min(total, good + float(rng.integers(0, 30)))
                late = at + timedelta(seconds=7)
                rows += [(late, "t1", "f1", machine, m, v) for m, v in (("energy", energy), ("count_total", total))]
                rows += [
                    (late, "t1", "f1", machine, "count_good", good),
                    (at, "t1", "f1", machine, "outdoor_temp", float(rng.normal(20, 3))),
                ]
        closing = NEXT + timedelta(seconds=7)
        after += [(closing, "t1", "f1", machine, m, v) for m, v in (("energy", energy + 0.3), ("count_total", total))]
        after += [(closing, "t1", "f1", machine, "count_good", good), (NEXT, "t1", "f1", machine, "power", 40.0)]
    return frame(rows, READING_SCHEMA), prior, after


@pytest.fixture(scope="module")
def day() -> tuple[pl.DataFrame, list[tuple], list[tuple]]:
    return day_of_readings()


def kpis_of(readings: pl.DataFrame, prior: list[tuple], after: list[tuple]) -> pl.DataFrame:
    inputs = KpiInputs(
        start=DAY,
        end=NEXT,
        readings=readings,
        prior=frame(prior, READING_SCHEMA),
        states=frame([], STATE_SCHEMA),
        prior_states=frame([(DAY - timedelta(hours=2), "t1", "f1", m, "running") for m in MACHINES], STATE_SCHEMA),
        next_seen=frame([("t1", "f1", m, NEXT) for m in MACHINES], SEEN_SCHEMA),
        next_readings=frame(after, READING_SCHEMA),
    )
    periods = pl.concat(
        [fixed_periods("day", DAY, NEXT, timedelta(days=1)), fixed_periods("hour", DAY, NEXT, timedelta(hours=1))]
    )
    return machine_kpis(inputs, periods, plant())


def test_every_run_gives_the_same_bits(day) -> None:
    first = kpis_of(*day)
    assert first.filter(pl.col("period") == "day")["machine_id"].unique().sort().to_list() == MACHINES
    assert first.filter(pl.col("period") == "hour")["period_start"].n_unique() == 24
    for _ in range(3):
        assert_frame_equal(kpis_of(*day), first, check_exact=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_any_order_of_the_readings_gives_the_same_bits(day, seed: int) -> None:
    readings, prior, after = day
    shuffled = readings.sample(fraction=1.0, shuffle=True, seed=seed)
    assert not shuffled.equals(readings)
    assert_frame_equal(kpis_of(shuffled, prior, after), kpis_of(readings, prior, after), check_exact=True)
