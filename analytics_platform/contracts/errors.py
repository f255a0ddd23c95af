"""The error every configuration check of the contracts (and of the platform around them) raises,
and the one way a YAML configuration file is read into it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the variable to fix."""


def load_yaml(path: Path, variable: str) -> Any:
    """The parsed YAML of `path`; a missing or malformed file is a ConfigError naming `variable`,
    the setting that points at it. Shape checks are the caller's: each file has its own."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{variable} file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{variable} file {path} is not valid YAML: {exc}") from None
