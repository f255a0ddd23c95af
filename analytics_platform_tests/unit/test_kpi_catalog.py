"""The KPI catalogue (transforms/kpi_catalog.py) is exactly what the pipeline writes: the names of
the rows `machine_kpis` (which calls `energy_kpis`) returns, which results/kpis.py copies into
analytics.analytics_kpi unchanged, minus the avg_<driver> KPIs the catalogue derives from KPI_DRIVERS.
A computed KPI without an entry, or an entry never computed, fails here; so does an entry whose unit
or combination rule does not match the rows.

Every KPI is a row whether or not it can be computed (a NULL value carries its reason), so the names
do not depend on the data; the two machines here (one with every input, so that every KPI of its hour
has a value, and one with a single power reading) check that too.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from analytics_platform.transforms import kpi_catalog
from analytics_platform.transforms.energy_kpis import TARIFF_SCHEMA
from analytics_platform.transforms.kpi_catalog import BY_NAME, CATALOGUE
from analytics_platform.transforms.machine_kpis import (
    MACHINE_META_SCHEMA,
    READING_SCHEMA,
    SEEN_SCHEMA,
    SHIFT_SCHEMA,
    STATE_SCHEMA,
    TENANT_SCHEMA,
    KpiInputs,
    KpiOptions,
    Plant,
    fixed_periods,
    machine_kpis,
)

HOUR = datetime(2025, 8, 20, 3, tzinfo=UTC)
DRIVERS = ("outdoor_temp", "outdoor_pressure")
KPI_NAMES = tuple(kpi.name for kpi in CATALOGUE)
known_kpis = kpi_catalog.kpi_names


def frame(rows: list[tuple], schema: dict) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=schema, orient="row")


def inputs() -> KpiInputs:
    def at(minute: int) -> datetime:
        return HOUR + timedelta(minutes=minute)

    full = [
        (at(m), "t1", "f1", "full", metric, value)
        for m in range(0, 60, 5)
        for metric, value in (
            ("power", 40.0 + m),
            ("energy", 1000.0 + m),
            ("count_total", 100.0 + m),
            ("count_good", 90.0 + m),
            ("outdoor_temp", 30.0),
            ("outdoor_pressure", 1010.0),
        )
    ]
    bare = [(at(5), "t1", "f1", "bare", "power", 10.0)]
    return KpiInputs(
        start=HOUR,
        end=HOUR + timedelta(hours=1),
        readings=frame(full + bare, READING_SCHEMA),
        prior=frame([(at(-10), "t1", "f1", "full", "energy", 995.0)], READING_SCHEMA),
        states=frame([(at(30), "t1", "f1", "full", "idle")], STATE_SCHEMA),
        prior_states=frame([(at(-60), "t1", "f1", "full", "running")], STATE_SCHEMA),
        next_seen=frame([], SEEN_SCHEMA),
    )


def plant() -> Plant:
    return Plant(
        tenants=frame([("*", "UTC", "USD", 0.45)], TENANT_SCHEMA),
        tariffs=frame([("*", "UTC", "flat", 0, 1440, 0.2)], TARIFF_SCHEMA),
        shifts=frame([("*", "day", 0, 1440)], SHIFT_SCHEMA),
        machines=frame([("*", "*", "*", 2.0, 75.0)], MACHINE_META_SCHEMA),
    )


@pytest.fixture(scope="module")
def written() -> pl.DataFrame:
    """The KPI rows of an hour and of its day, as the hourly and daily assets compute them."""
    day = HOUR.replace(hour=0)
    periods = pl.concat(
        [
            fixed_periods("hour", HOUR, HOUR + timedelta(hours=1), timedelta(hours=1)),
            fixed_periods("day", day, day + timedelta(days=1), timedelta(days=1)),
        ]
    )
    return machine_kpis(inputs(), periods, plant(), KpiOptions(drivers=DRIVERS))


def test_catalog_lists_every_kpi_the_pipeline_writes_and_nothing_else(written: pl.DataFrame) -> None:
    produced = set(written["kpi"]) - {f"avg_{d}" for d in DRIVERS}
    assert produced == set(KPI_NAMES)
    assert len(KPI_NAMES) == len(set(KPI_NAMES))


def test_every_machine_and_period_gets_every_kpi(written: pl.DataFrame) -> None:
    names = written.group_by("period", "period_start", "machine_id").agg(pl.col("kpi").sort())
    assert sorted(names.select("period", "machine_id").rows()) == [
        ("day", "bare"),
        ("day", "full"),
        ("hour", "bare"),
        ("hour", "full"),
    ]
    for kpis in names["kpi"]:
        assert set(kpis) == known_kpis(DRIVERS)
        assert len(kpis) == len(set(kpis))
    # the machine with every input has a value for every KPI of its hour: each name comes from a computation
    full_hour = written.filter((pl.col("machine_id") == "full") & (pl.col("period") == "hour"))
    assert full_hour.filter(pl.col("value").is_null())["kpi"].to_list() == []


def test_known_kpis_add_one_average_per_driver() -> None:
    assert known_kpis(DRIVERS) == set(KPI_NAMES) | {"avg_outdoor_temp", "avg_outdoor_pressure"}
    assert known_kpis(()) == set(KPI_NAMES)


def test_every_row_carries_its_catalogue_unit(written: pl.DataFrame) -> None:
    units = dict(written.select("kpi", "unit").unique().iter_rows())
    assert len(units) == written["kpi"].n_unique()  # one unit per KPI
    assert units == {kpi.name: kpi.unit for kpi in kpi_catalog.kpis(DRIVERS)}


def test_combination_terms_name_kpis_or_the_kpis_own_details(written: pl.DataFrame) -> None:
    """A term of a combination rule is another KPI or a key of the KPI's own details: what a client
    needs to combine hours into a day must be in the rows it reads."""
    full_hour = written.filter((pl.col("machine_id") == "full") & (pl.col("period") == "hour"))
    details = {name: set(json.loads(text or "{}")) for name, text in full_hour.select("kpi", "details").iter_rows()}
    for kpi in kpi_catalog.kpis(DRIVERS):
        combine = kpi.combine
        terms = [*combine.numerator, *combine.denominator]
        assert all(t in details or t in details[kpi.name] for t in terms), kpi.name
        assert combine.at is None or combine.at in details[kpi.name], kpi.name
        assert combine.weight is None or combine.weight in details[kpi.name], kpi.name
        if combine.kind in ("ratio_of_sums", "from_components"):
            assert combine.numerator, kpi.name
        else:
            assert terms == [], kpi.name
        assert (combine.at is not None) == (combine.kind == "max_with_time"), kpi.name


def test_catalogue_entries_are_unique_and_well_formed() -> None:
    assert len(BY_NAME) == len(CATALOGUE)
    for kpi in kpi_catalog.kpis(DRIVERS):
        low, high = kpi.valid_range
        assert low is None or high is None or low <= high, kpi.name
        assert kpi.label and kpi.description, kpi.name
        assert kpi.format in ("percent", "number"), kpi.name
    # a percent is a ratio: shown x 100, so judged within [0, 1]
    assert {k.name for k in CATALOGUE if k.format == "percent"} == {k.name for k in CATALOGUE if k.unit == "ratio"}
    assert all(k.valid_range == (0.0, 1.0) for k in CATALOGUE if k.unit == "ratio")
    assert kpi_catalog.driver_kpi("outdoor_temp").name == "avg_outdoor_temp"
    assert kpi_catalog.valid_ranges()["data_completeness_pct"] == (0.0, 100.0)
