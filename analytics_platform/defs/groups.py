"""The asset groups of the Dagster UI, one per area of the platform.

Here rather than in a concept folder because a group spans folders: `analytics` holds the window
aggregates and the event assets, `energy` the KPIs, baselines and anomalies.
"""

INGEST_GROUP = "ingest"
ANALYTICS_GROUP = "analytics"
ENERGY_GROUP = "energy"
