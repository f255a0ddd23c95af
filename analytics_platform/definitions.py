"""The one Dagster `Definitions` of the platform, merged from `defs/*` (nothing else lives here)."""

from analytics_platform.defs import build_definitions
from analytics_platform.settings import get_settings

defs = build_definitions(get_settings())
