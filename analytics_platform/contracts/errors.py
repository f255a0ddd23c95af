"""The error every configuration check of the contracts (and of the platform around them) raises."""


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the variable to fix."""
