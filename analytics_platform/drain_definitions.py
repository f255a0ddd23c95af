"""A code location holding only drain sensors: one per shard in DRAIN_SHARDS_HERE.

Scale-out: the Helm chart runs one of these code servers per drain shard, so each shard's Kafka
reads, parsing and COPY run in its own pod instead of the main code server. The sensors report
materialisations and check results of assets defined in the main location (`analytics_platform`);
Dagster stores runless asset events by key, so lineage and partitions show up there. The main
location then runs with DRAIN_SHARDS_HERE=none.
"""

import dagster as dg

from analytics_platform import observability
from analytics_platform.defs.ingest.definitions import drain_sensors
from analytics_platform.defs.resources import build_resources
from analytics_platform.settings import get_settings

observability.setup_process("analytics-drain-sensors", get_settings())
defs = dg.Definitions(sensors=drain_sensors(get_settings()), resources=build_resources(get_settings()))
