"""Trend judgements per series and per hourly KPI (built in definitions.py); their key is declared here."""

import dagster as dg

SERIES_TRENDS = dg.AssetKey("series_trends")
