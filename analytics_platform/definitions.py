"""The one Dagster `Definitions` of the platform, merged from `defs/*`.

Every process that loads the code location (code server, run workers) imports this module first, so
it is where such a process sets up its logs and tracing (LOG_LEVEL, LOG_FORMAT, OTEL_*)."""

from analytics_platform import observability
from analytics_platform.defs import build_definitions
from analytics_platform.settings import get_settings

observability.setup_process("analytics-dagster", get_settings())
defs = build_definitions(get_settings())
