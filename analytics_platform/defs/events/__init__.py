"""Event assets, their day rollups and the lab results' window aggregates (built in definitions.py);
the keys of the last two are declared here."""

import dagster as dg

DAILY_EVENT_ROLLUPS = dg.AssetKey("daily_event_rollups")
LAB_WINDOW_AGGREGATES = dg.AssetKey("lab_window_aggregates")
