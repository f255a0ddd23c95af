"""The result checks judge every KPI by its catalogue range (transforms/kpi_catalog.py):
config/checks.yaml may override a range per deployment, but a KPI without a yaml entry is judged
too. Before, the ranges lived only in checks.yaml, and a KPI missing there was silently never
judged (the first test reproduces that: it failed until the catalogue supplied the range)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from analytics_platform.contracts.catalog import LIMITS_SCHEMA
from analytics_platform.data_quality import result_contracts
from analytics_platform.data_quality.config import ResultRanges, load_checks_config
from analytics_platform.settings import REPO_ROOT
from analytics_platform.transforms.kpi_catalog import CATALOGUE

H3 = datetime(2025, 8, 20, 3, tzinfo=UTC)
H4 = H3 + timedelta(hours=1)
LIMITS = pl.DataFrame([("*", "outdoor_temp", -80.0, 70.0, "degC")], schema=LIMITS_SCHEMA, orient="row")
COLUMNS = pl.DataFrame(
    list(result_contracts.KPI.columns.items()),
    schema={"column_name": pl.String(), "data_type": pl.String()},
    orient="row",
)


def kpi(name: str, value: float, unit: str = "ratio", machine: str = "mc-01") -> tuple:
    return (H3, H4, "hour", "t1", "f1", machine, name, value, unit, None, None)


def out_of_range(rows: list[tuple], ranges: ResultRanges) -> list[tuple[str, str]]:
    """(machine, kpi) of every row the result_ranges check finds below or above its range."""
    frame = pl.DataFrame(rows, schema=result_contracts.KPI.schema, orient="row")
    (outcome,) = [o for o in result_contracts.kpi_outcomes(frame, COLUMNS, ranges, LIMITS) if o.name == "result_ranges"]
    return sorted(
        (o["machine_id"], o["kpi"])
        for f in outcome.metadata.get("failures", [])
        if f["column_A"] != "period_s__slack" and f["column_B"] != "period_s__slack"
        for o in f["offending"]
    )


def test_a_kpi_missing_from_checks_yaml_is_judged_by_its_catalogue_range() -> None:
    rows = [
        kpi("oee", 1.5),  # above 1
        kpi("load_factor", -0.1),  # below 0
        kpi("energy_kwh", -2.0, "kWh"),  # a meter cannot count backwards
        kpi("data_completeness_pct", 100.5, "%"),
        kpi("quality", 0.97, machine="mc-02"),  # in range
        kpi("production_rate_per_h", 1296.0, "units/h", machine="mc-02"),
    ]
    assert out_of_range(rows, ResultRanges()) == [
        ("mc-01", "data_completeness_pct"),
        ("mc-01", "energy_kwh"),
        ("mc-01", "load_factor"),
        ("mc-01", "oee"),
    ]


def test_checks_yaml_overrides_the_catalogue_range() -> None:
    rows = [kpi("oee", 0.95), kpi("performance", 1.2, machine="mc-02")]
    assert out_of_range(rows, ResultRanges()) == [("mc-02", "performance")]
    # a deployment that tightens OEE and lets performance exceed 1 (its ideal cycle times are rough)
    tightened = ResultRanges(kpi={"oee": (0.0, 0.9), "performance": (0.0, None)})
    assert out_of_range(rows, tightened) == [("mc-01", "oee")]


def test_the_packaged_checks_yaml_judges_every_catalogue_kpi() -> None:
    """Every bounded side of every entry is enforced with the packaged configuration (one row per
    check run: a failure's metadata lists at most five offending rows)."""
    ranges = load_checks_config(REPO_ROOT / "analytics_platform" / "config" / "checks.yaml").result_ranges
    judged = 0
    for entry in CATALOGUE:
        low, high = entry.valid_range
        for bound, step in ((low, -1.0), (high, 1.0)):
            if bound is not None:
                row = kpi(entry.name, bound + step, entry.unit if entry.unit != "s" else "")
                assert out_of_range([row], ranges) == [("mc-01", entry.name)]
                judged += 1
    assert judged == len(CATALOGUE) + 6  # every entry has a minimum; six have a maximum too
