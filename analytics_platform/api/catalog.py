"""What the API accepts as a KPI name: the KPIs the pipeline computes (transforms/machine_kpis.py
and energy_kpis.py; a test keeps this list equal to what a pipeline run writes) plus avg_<metric>
for each KPI_DRIVERS metric."""

from __future__ import annotations

from collections.abc import Iterable

KPI_NAMES = (
    "availability",
    "performance",
    "quality",
    "oee",
    "load_factor",
    "data_completeness_pct",
    "energy_kwh",
    "energy_cost",
    "carbon_kg",
    "peak_demand_kw",
    "avg_demand_kw",
    "production_count",
    "good_count",
    "sec_kwh_per_unit",
    "production_rate_per_h",
    "run_time_s",
    "idle_time_s",
    "planned_downtime_s",
    "downtime_s",
    "fault_time_s",
)


def known_kpis(drivers: Iterable[str]) -> frozenset[str]:
    return frozenset(KPI_NAMES) | {f"avg_{metric}" for metric in drivers}
