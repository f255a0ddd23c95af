"""Energy baselines (built in definitions.py); their key is declared here."""

import dagster as dg

BASELINE_MODELS = dg.AssetKey("energy_baseline_models")
