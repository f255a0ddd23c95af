"""The window aggregates of sensor readings (built in definitions.py); their key is declared here."""

import dagster as dg

WINDOW_AGGREGATES = dg.AssetKey("sensor_window_aggregates")
