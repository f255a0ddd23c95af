"""Event assets and their day rollups (built in definitions.py); the rollups' key is declared here."""

import dagster as dg

DAILY_EVENT_ROLLUPS = dg.AssetKey("daily_event_rollups")
