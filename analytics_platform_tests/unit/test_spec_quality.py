"""Spec limits: which limit applies (factory before '*', then the latest valid_from at or before the
time), lab result verdicts, sweep batch statistics and verdicts, and their pass/fail rollups."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from analytics_platform.transforms.event_rollups import EVENT_SCHEMA, rollup_events
from analytics_platform.transforms.spec_quality import (
    LAB_SCHEMA,
    LIMIT_SCHEMA,
    SWEEP_SCHEMA,
    applicable_limits,
    lab_results,
    sweep_batches,
)

JAN = datetime(2025, 1, 1, tzinfo=UTC)
JUN = datetime(2025, 6, 1, tzinfo=UTC)
AUG = datetime(2025, 8, 1, tzinfo=UTC)
SEP = datetime(2025, 9, 1, tzinfo=UTC)
H3 = datetime(2025, 8, 20, 3, tzinfo=UTC)
H4 = H3 + timedelta(hours=1)
ITEM_SCHEMA = {"time": LAB_SCHEMA["time"], "tenant_id": pl.String(), "factory_id": pl.String(), "analyte": pl.String()}


def at(base: datetime, minutes: int = 0, seconds: int = 0) -> datetime:
    return base + timedelta(minutes=minutes, seconds=seconds)


def limit(
    name: str,
    lower: float | None,
    upper: float | None,
    target: float | None = None,
    *,
    valid_from: datetime = JAN,
    factory: str = "*",
    scope: str = "analyte",
    tenant: str = "t1",
) -> dict[str, Any]:
    return {
        "tenant_id": tenant,
        "factory_id": factory,
        "scope": scope,
        "name": name,
        "lower_limit": lower,
        "upper_limit": upper,
        "target": target,
        "valid_from": valid_from,
    }


def limits(*rows: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=LIMIT_SCHEMA)


def lab(
    time: datetime,
    value: float | None,
    *,
    analyte: str = "ph",
    station: str = "st1",
    factory: str = "f1",
    key: str | None = None,
) -> dict[str, Any]:
    return {
        "time": time,
        "tenant_id": "t1",
        "factory_id": factory,
        "station_id": station,
        "sample_id": "s-1",
        "analyte": analyte,
        "value": value,
        "unit": "pH",
        "dedup_key": key or f"lab-{time:%H%M%S}-{analyte}",
    }


def labs(*rows: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=LAB_SCHEMA)


def sweep(
    time: datetime,
    values: list[float],
    *,
    metric: str = "thickness",
    batch: str = "b1",
    machine: str = "m1",
    key: str | None = None,
) -> dict[str, Any]:
    return {
        "time": time,
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": machine,
        "metric": metric,
        "batch_id": batch,
        "unit": "mm",
        "reading_values": values,
        "dedup_key": key or f"sweep-{batch}",
    }


def sweeps(*rows: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=SWEEP_SCHEMA)


def items(*rows: tuple[datetime, str, str]) -> pl.DataFrame:
    """(time, factory, analyte) rows of tenant t1."""
    return pl.DataFrame([(t, "t1", f, a) for t, f, a in rows], schema=ITEM_SCHEMA, orient="row")


def bounds(frame: pl.DataFrame) -> list[tuple]:
    return frame.select("lower_limit", "upper_limit", "target").rows()


def verdicts(events: pl.DataFrame) -> list[tuple]:
    """(event_key, value, passed, level) per event."""
    return events.select("event_key", "value", "passed", "level").rows()


# ----- applicable_limits -------------------------------------------------------------------------


def test_the_factory_limit_wins_over_the_tenant_wide_one() -> None:
    """f1 has its own limit (valid since January); '*' has a newer one (June). f1 keeps its own;
    f2 gets the latest '*' limit valid at its time."""
    spec = limits(
        limit("ph", 6.0, 8.0, 7.0),
        limit("ph", 5.0, 9.0, 7.5, factory="f1"),
        limit("ph", 6.5, 7.5, 7.0, valid_from=JUN),
    )
    frame = items((H3, "f1", "ph"), (H3, "f2", "ph"), (at(JUN, -1), "f2", "ph"), (at(JUN, -1), "f1", "ph"))
    result = applicable_limits(frame, spec, "analyte", "analyte")
    assert result.columns == ["time", "tenant_id", "factory_id", "analyte", "lower_limit", "upper_limit", "target"]
    assert bounds(result) == [(5.0, 9.0, 7.5), (6.5, 7.5, 7.0), (6.0, 8.0, 7.0), (5.0, 9.0, 7.5)]


def test_the_latest_valid_from_at_or_before_the_time_wins() -> None:
    spec = limits(
        limit("ph", 0.0, 10.0, factory="f1"),
        limit("ph", 0.0, 5.0, factory="f1", valid_from=AUG),
        limit("ph", 0.0, 1.0, factory="f1", valid_from=SEP),  # not valid yet in August
    )
    frame = items(
        (H3, "f1", "ph"),  # August 20: the August limit
        (AUG, "f1", "ph"),  # exactly at valid_from: that limit applies
        (at(AUG, 0, -1), "f1", "ph"),  # one second before: the January limit
        (at(JAN, 0, -1), "f1", "ph"),  # before every limit: none
        (SEP, "f1", "ph"),
    )
    assert bounds(applicable_limits(frame, spec, "analyte", "analyte")) == [
        (0.0, 5.0, None),
        (0.0, 5.0, None),
        (0.0, 10.0, None),
        (None, None, None),
        (0.0, 1.0, None),
    ]


def test_a_limit_without_valid_from_always_applies_and_is_the_oldest() -> None:
    """valid_from NULL ('-infinity' in SQL) applies at any time, and any dated limit valid at the
    time is more recent; the factory's own undated limit still wins over a dated '*' one."""
    spec = limits(
        limit("ph", 0.0, 10.0, valid_from=None),
        limit("ph", 0.0, 5.0, valid_from=AUG),
        limit("brix", 1.0, 2.0, valid_from=AUG),
        limit("brix", 3.0, 4.0, factory="f1", valid_from=None),
    )
    frame = items(
        (datetime(1990, 1, 1, tzinfo=UTC), "f1", "ph"),
        (at(AUG, 0, -1), "f1", "ph"),
        (H3, "f1", "ph"),
        (H3, "f1", "brix"),
        (H3, "f2", "brix"),
    )
    assert bounds(applicable_limits(frame, spec, "analyte", "analyte")) == [
        (0.0, 10.0, None),
        (0.0, 10.0, None),
        (0.0, 5.0, None),
        (3.0, 4.0, None),
        (1.0, 2.0, None),
    ]


def test_a_factory_limit_not_valid_yet_falls_back_to_the_tenant_wide_one() -> None:
    spec = limits(limit("ph", 6.0, 8.0), limit("ph", 5.0, 9.0, factory="f1", valid_from=SEP))
    assert bounds(applicable_limits(items((H3, "f1", "ph")), spec, "analyte", "analyte")) == [(6.0, 8.0, None)]


def test_limits_of_another_tenant_factory_scope_or_name_do_not_apply() -> None:
    spec = limits(
        limit("ph", 1.0, 2.0, tenant="t2"),
        limit("ph", 3.0, 4.0, factory="f9"),
        limit("ph", 5.0, 6.0, scope="metric"),
        limit("brix", 7.0, 8.0),
    )
    assert bounds(applicable_limits(items((H3, "f1", "ph")), spec, "analyte", "analyte")) == [(None, None, None)]


def test_applicable_limits_keeps_every_row_in_order() -> None:
    spec = limits(limit("ph", 6.0, 8.0), limit("ph", 5.0, 9.0, factory="f1"), limit("brix", 1.0, 2.0))
    frame = items((H3, "f2", "ph"), (H3, "f1", "ph"), (H3, "f1", "ph"), (H3, "f1", "fat"), (H3, "f1", "brix"))
    result = applicable_limits(frame, spec, "analyte", "analyte")
    assert result.select("factory_id", "analyte", "lower_limit", "upper_limit").rows() == [
        ("f2", "ph", 6.0, 8.0),
        ("f1", "ph", 5.0, 9.0),
        ("f1", "ph", 5.0, 9.0),
        ("f1", "fat", None, None),
        ("f1", "brix", 1.0, 2.0),
    ]


# ----- lab_results -------------------------------------------------------------------------------


def test_no_lab_results_give_no_events() -> None:
    result = lab_results(labs(), limits(limit("ph", 6.0, 8.0)))
    assert result.height == 0
    assert result.schema == pl.Schema(EVENT_SCHEMA)


def test_a_lab_result_event_has_every_event_column() -> None:
    [row] = lab_results(labs(lab(at(H3, 5), 7.5, key="k1")), limits(limit("ph", 6.0, 8.0, 7.0))).to_dicts()
    details = json.loads(row.pop("details"))
    assert row == {
        "time": at(H3, 5),
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "st1",  # the station
        "event_type": "lab_result",
        "event_key": "k1",
        "domain": "lab",
        "level": "pass",
        "value": 7.5,
        "passed": True,
        "end_time": None,
        "duration_s": None,
        "subject": "ph",  # rolled up per analyte
    }
    assert details == {
        "analyte": "ph",
        "sample_id": "s-1",
        "unit": "pH",
        "lower_limit": 6.0,
        "upper_limit": 8.0,
        "target": 7.0,
        "deviation_from_target": 0.5,
    }


def test_lab_verdicts_with_inclusive_bounds() -> None:
    results = labs(
        lab(at(H3, 1), 6.0, key="a"),  # on the lower bound: pass
        lab(at(H3, 2), 8.0, key="b"),  # on the upper bound: pass
        lab(at(H3, 3), 5.99, key="c"),
        lab(at(H3, 4), 8.01, key="d"),
        lab(at(H3, 5), 7.0, key="e"),
    )
    assert verdicts(lab_results(results, limits(limit("ph", 6.0, 8.0, 7.0)))) == [
        ("a", 6.0, True, "pass"),
        ("b", 8.0, True, "pass"),
        ("c", 5.99, False, "fail"),
        ("d", 8.01, False, "fail"),
        ("e", 7.0, True, "pass"),
    ]


def test_a_missing_bound_is_unbounded() -> None:
    spec = limits(limit("brix", None, 12.0), limit("fat", 3.0, None))
    results = labs(
        lab(at(H3, 1), -1000.0, analyte="brix", key="a"),  # no lower bound
        lab(at(H3, 2), 12.5, analyte="brix", key="b"),
        lab(at(H3, 3), 1e9, analyte="fat", key="c"),  # no upper bound
        lab(at(H3, 4), 2.9, analyte="fat", key="d"),
    )
    assert verdicts(lab_results(results, spec)) == [
        ("a", -1000.0, True, "pass"),
        ("b", 12.5, False, "fail"),
        ("c", 1e9, True, "pass"),
        ("d", 2.9, False, "fail"),
    ]


def test_a_lab_result_without_a_limit_has_no_verdict() -> None:
    [row] = lab_results(labs(lab(H3, 7.0, analyte="salt", key="k")), limits(limit("ph", 6.0, 8.0))).to_dicts()
    assert (row["passed"], row["level"], row["value"]) == (None, "no_limit", 7.0)
    assert json.loads(row["details"]) == {
        "analyte": "salt",
        "sample_id": "s-1",
        "unit": "pH",
        "lower_limit": None,
        "upper_limit": None,
        "target": None,
        "deviation_from_target": None,
    }


def test_lab_results_without_any_limits() -> None:
    results = labs(lab(at(H3, 1), 1.0, key="a"), lab(at(H3, 2), 2.0, key="b"))
    assert verdicts(lab_results(results, limits())) == [("a", 1.0, None, "no_limit"), ("b", 2.0, None, "no_limit")]


def test_lab_events_are_sorted_by_station_and_time() -> None:
    results = labs(
        lab(at(H3, 30), 7.0, station="st2", key="a"),
        lab(at(H3, 20), 7.0, station="st1", key="b"),
        lab(at(H3, 10), 7.0, station="st2", key="c"),
        lab(at(H3, 10), 7.0, station="st1", key="d"),
    )
    result = lab_results(results, limits(limit("ph", 6.0, 8.0)))
    assert result.select("machine_id", "time", "event_key").rows() == [
        ("st1", at(H3, 10), "d"),
        ("st1", at(H3, 20), "b"),
        ("st2", at(H3, 10), "c"),
        ("st2", at(H3, 30), "a"),
    ]


def test_a_result_without_a_limit_is_counted_but_not_in_the_rates() -> None:
    """ph limit valid from 03:30: 03:40 passes, 03:50 fails, 03:10 (before the limit) has no verdict.
    count 3, pass 1, fail 1: rates 1 / 2 each, not 1 / 3."""
    spec = limits(limit("ph", 6.0, 8.0, valid_from=at(H3, 30)))
    results = labs(lab(at(H3, 10), 7.0), lab(at(H3, 40), 7.0), lab(at(H3, 50), 9.0))
    events = lab_results(results, spec)
    assert events["level"].to_list() == ["no_limit", "pass", "fail"]
    rollup = rollup_events(events, [3600], H3, H4)
    assert rollup.select("machine_id", "subject", "count_n", "pass_n", "fail_n", "fail_rate", "pass_rate").rows() == [
        ("st1", "ph", 3, 1, 1, 0.5, 0.5)
    ]
    assert json.loads(rollup["details"][0]) == {"no_verdict_n": 1}


# ----- sweep_batches -----------------------------------------------------------------------------


def test_no_sweeps_give_no_events() -> None:
    result = sweep_batches(sweeps(), limits(limit("thickness", 0.0, 5.0, scope="metric")))
    assert result.height == 0
    assert result.schema == pl.Schema(EVENT_SCHEMA)


def test_a_sweep_batch_within_its_limits_passes() -> None:
    """1, 2, 3: n 3, mean 2, min 1, max 3, stddev sqrt((1 + 0 + 1) / 2) = 1."""
    spec = limits(limit("thickness", 0.0, 5.0, 2.5, scope="metric"))
    [row] = sweep_batches(sweeps(sweep(at(H3, 5), [1.0, 2.0, 3.0], key="k1")), spec).to_dicts()
    details = json.loads(row.pop("details"))
    assert row == {
        "time": at(H3, 5),
        "tenant_id": "t1",
        "factory_id": "f1",
        "machine_id": "m1",
        "event_type": "sweep_batch",
        "event_key": "k1",
        "domain": "sweep",
        "level": "pass",
        "value": 2.0,  # the mean
        "passed": True,
        "end_time": None,
        "duration_s": None,
        "subject": "",
    }
    assert details == {
        "metric": "thickness",
        "batch_id": "b1",
        "unit": "mm",
        "n": 3,
        "mean": 2.0,
        "min": 1.0,
        "max": 3.0,
        "stddev": 1.0,
        "out_of_spec_n": 0,
        "lower_limit": 0.0,
        "upper_limit": 5.0,
        "target": 2.5,
    }


def test_a_sweep_batch_fails_if_any_reading_is_outside() -> None:
    """4, 5 (on the upper bound: inside), 5.5 and -0.1 (outside): 2 out of spec, mean 14.4 / 4 = 3.6."""
    spec = limits(limit("thickness", 0.0, 5.0, scope="metric"))
    [row] = sweep_batches(sweeps(sweep(H3, [4.0, 5.0, 5.5, -0.1])), spec).to_dicts()
    details = json.loads(row["details"])
    assert (row["passed"], row["level"], row["value"]) == (False, "fail", pytest.approx(3.6))
    assert (details["n"], details["out_of_spec_n"], details["min"], details["max"]) == (4, 2, -0.1, 5.5)


def test_the_mean_and_stddev_of_huge_finite_readings_are_finite() -> None:
    """Two readings of 1e308 (a sensor's full-scale sentinel passes the contract: it is finite):
    the textbook mean is 1e308 and the stddev 0; summing first overflowed to mean inf, stddev NaN."""
    batches = sweeps(sweep(at(H3, 1), [1e308, 1e308], key="a"), sweep(at(H3, 2), [-1e308, 1e308, 1e308], key="b"))
    rows = sweep_batches(batches, limits()).to_dicts()
    stats = [(r["value"], json.loads(r["details"])["stddev"]) for r in rows]
    # b: mean 1e308 / 3; stddev sqrt(((4/3)² + 2 (2/3)²) / 2) 1e308 = sqrt(4/3) 1e308
    assert stats == [(1e308, 0.0), (pytest.approx(1e308 / 3), pytest.approx(1e308 * (4 / 3) ** 0.5))], (
        "a sweep batch of finite readings got a non-finite mean or stddev"
    )


def test_one_reading_outside_fails_the_batch() -> None:
    spec = limits(limit("thickness", 0.0, 5.0, scope="metric"))
    [row] = sweep_batches(sweeps(sweep(H3, [1.0, 1.0, 1.0, 5.01, 1.0])), spec).to_dicts()
    assert (row["passed"], row["level"], json.loads(row["details"])["out_of_spec_n"]) == (False, "fail", 1)


def test_a_sweep_batch_without_a_limit_has_no_verdict() -> None:
    spec = limits(limit("thickness", 0.0, 5.0), limit("width", 0.0, 5.0, scope="metric"))  # neither applies
    [row] = sweep_batches(sweeps(sweep(H3, [100.0, 200.0])), spec).to_dicts()
    details = json.loads(row["details"])
    assert (row["passed"], row["level"], row["value"]) == (None, "no_limit", 150.0)
    assert (details["out_of_spec_n"], details["lower_limit"], details["upper_limit"], details["target"]) == (
        None,
        None,
        None,
        None,
    )
    assert details["n"] == 2


def test_a_sweep_limit_with_one_bound() -> None:
    spec = limits(limit("thickness", 1.0, None, scope="metric"), limit("width", None, 2.0, scope="metric"))
    batches = sweeps(
        sweep(at(H3, 1), [1.0, 1e9], key="a"),  # no upper bound: pass
        sweep(at(H3, 2), [0.5, 1e9], key="b"),  # 0.5 below 1: fail
        sweep(at(H3, 3), [-1e9, 2.0], metric="width", key="c"),  # no lower bound: pass
        sweep(at(H3, 4), [2.5, 0.0], metric="width", key="d"),
    )
    result = sweep_batches(batches, spec)
    assert result.select("event_key", "passed", "level").rows() == [
        ("a", True, "pass"),
        ("b", False, "fail"),
        ("c", True, "pass"),
        ("d", False, "fail"),
    ]
    assert [json.loads(d)["out_of_spec_n"] for d in result["details"]] == [0, 1, 0, 1]


def test_a_sweep_batch_of_one_reading_has_a_null_stddev() -> None:
    spec = limits(limit("thickness", 0.0, 5.0, scope="metric"))
    details = json.loads(sweep_batches(sweeps(sweep(H3, [2.5])), spec)["details"][0])
    assert (details["n"], details["mean"], details["min"], details["max"], details["stddev"]) == (
        1,
        2.5,
        2.5,
        2.5,
        None,
    )


def test_sweep_limits_follow_factory_and_valid_from() -> None:
    spec = limits(
        limit("thickness", 0.0, 1.0, scope="metric"),
        limit("thickness", 0.0, 10.0, scope="metric", factory="f1", valid_from=AUG),
        limit("thickness", 0.0, 3.0, scope="metric", factory="f1", valid_from=SEP),
    )
    # 20 August, factory f1: the f1 limit of August (0..10), not the '*' one (0..1) nor September's
    [row] = sweep_batches(sweeps(sweep(H3, [5.0, 9.0])), spec).to_dicts()
    details = json.loads(row["details"])
    assert (row["passed"], details["lower_limit"], details["upper_limit"]) == (True, 0.0, 10.0)


def test_sweep_events_are_sorted_by_machine_time_and_key() -> None:
    spec = limits(limit("thickness", 0.0, 5.0, scope="metric"))
    batches = sweeps(
        sweep(at(H3, 20), [1.0], machine="m2", key="a"),
        sweep(at(H3, 10), [1.0], machine="m1", key="c"),
        sweep(at(H3, 10), [1.0], machine="m1", key="b"),
        sweep(at(H3, 5), [1.0], machine="m2", key="d"),
    )
    assert sweep_batches(batches, spec).select("machine_id", "time", "event_key").rows() == [
        ("m1", at(H3, 10), "b"),
        ("m1", at(H3, 10), "c"),
        ("m2", at(H3, 5), "d"),
        ("m2", at(H3, 20), "a"),
    ]


def test_sweep_rollup_counts_batches_without_a_limit_but_not_in_the_rates() -> None:
    """thickness passes and fails once; 'width' has no limit: count 3, pass 1, fail 1, rates 0.5."""
    spec = limits(limit("thickness", 0.0, 5.0, scope="metric"))
    batches = sweeps(
        sweep(at(H3, 1), [1.0, 2.0], batch="b1"),
        sweep(at(H3, 2), [1.0, 6.0], batch="b2"),
        sweep(at(H3, 3), [9.0], metric="width", batch="b3"),
    )
    events = sweep_batches(batches, spec)
    assert verdicts(events) == [
        ("sweep-b1", 1.5, True, "pass"),
        ("sweep-b2", 3.5, False, "fail"),
        ("sweep-b3", 9.0, None, "no_limit"),
    ]
    rollup = rollup_events(events, [3600], H3, H4)
    assert rollup.select("event_type", "count_n", "pass_n", "fail_n", "fail_rate", "pass_rate").rows() == [
        ("sweep_batch", 3, 1, 1, 0.5, 0.5)
    ]
    assert json.loads(rollup["details"][0]) == {"no_verdict_n": 1}


def test_a_result_in_another_unit_than_its_limit_gets_no_verdict() -> None:
    """Moisture limits 11.5..13.5 in %: a station reporting 124 g/kg (12.4 %, in spec) or 0.124 (a
    fraction) must not be failed, nor a sweep at 147.2 / 150.8 degF (64 / 66 degC) against degC limits; a result without
    a unit, or a limit without one, is judged as before (the unit is assumed to match)."""
    spec = limits(limit("moisture", 11.5, 13.5, 12.5)).with_columns(unit=pl.lit("%"))
    results = labs(
        lab(at(H3, 1), 12.4, analyte="moisture", key="a") | {"unit": "%"},
        lab(at(H3, 2), 124.0, analyte="moisture", key="b") | {"unit": "g/kg"},
        lab(at(H3, 3), 0.124, analyte="moisture", key="c") | {"unit": "fraction"},
        lab(at(H3, 4), 14.0, analyte="moisture", key="d") | {"unit": None},
    )
    assert verdicts(lab_results(results, spec)) == [
        ("a", 12.4, True, "pass"),
        ("b", 124.0, None, "unit_mismatch"),
        ("c", 0.124, None, "unit_mismatch"),
        ("d", 14.0, False, "fail"),
    ]
    assert verdicts(lab_results(results, limits(limit("moisture", 11.5, 13.5, 12.5)))) == [
        ("a", 12.4, True, "pass"),  # a limit without a unit judges every result
        ("b", 124.0, False, "fail"),
        ("c", 0.124, False, "fail"),
        ("d", 14.0, False, "fail"),
    ]

    sweep_spec = limits(limit("temp", 63.0, 67.0, scope="metric")).with_columns(unit=pl.lit("degC"))
    batches = sweeps(
        sweep(H3, [64.0, 66.0], metric="temp", key="c1") | {"unit": "degC"},
        sweep(at(H3, 1), [147.2, 150.8], metric="temp", batch="b2", key="f1") | {"unit": "degF"},
    )
    rows = sweep_batches(batches, sweep_spec)
    assert verdicts(rows) == [("c1", 65.0, True, "pass"), ("f1", 149.0, None, "unit_mismatch")]
    assert json.loads(rows["details"][1])["out_of_spec_n"] is None
    # one unit as people type it: case, surrounding spaces; a blank unit is none
    typed = limits(limit("nitrate", 0.0, 50.0, 25.0)).with_columns(unit=pl.lit("mg/L"))
    spelled = labs(
        lab(at(H3, 1), 40.0, analyte="nitrate", key="n1") | {"unit": "mg/l"},
        lab(at(H3, 2), 60.0, analyte="nitrate", key="n2") | {"unit": " MG/L "},
        lab(at(H3, 3), 10.0, analyte="nitrate", key="n3") | {"unit": ""},
        lab(at(H3, 4), 10.0, analyte="nitrate", key="n4") | {"unit": "ppm"},
    )
    assert verdicts(lab_results(spelled, typed)) == [
        ("n1", 40.0, True, "pass"),
        ("n2", 60.0, False, "fail"),
        ("n3", 10.0, True, "pass"),
        ("n4", 10.0, None, "unit_mismatch"),
    ]
    # no verdict: counted, kept out of the pass / fail rates
    [rollup] = rollup_events(rows, [3600], H3, H4).to_dicts()
    assert (rollup["count_n"], rollup["pass_n"], rollup["fail_n"], rollup["fail_rate"]) == (2, 1, 0, 0.0)
