"""Energy and peak-demand forecasts (built in definitions.py); their key is declared here."""

import dagster as dg

ENERGY_FORECASTS = dg.AssetKey("energy_forecasts")
