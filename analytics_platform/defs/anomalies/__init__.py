"""Anomalies per hour (built in definitions.py); their key is declared here."""

import dagster as dg

READING_ANOMALIES = dg.AssetKey("reading_anomalies")
