"""Machine KPIs per hour and per day (built in definitions.py); their keys are declared here."""

import dagster as dg

HOURLY_KPIS = dg.AssetKey("hourly_machine_kpis")
DAILY_KPIS = dg.AssetKey("daily_machine_kpis")
