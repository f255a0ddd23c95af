"""Resources shared by every definition, built from the environment (see docs/configuration.md)."""

from __future__ import annotations

import os

import dagster as dg

from analytics_platform.resources import KafkaResource, PostgresResource
from analytics_platform.settings import PlatformSettings


def build_resources(settings: PlatformSettings, *, secrets_from_env: bool = True) -> dict[str, dg.ConfigurableResource]:
    """`db` and `kafka`. Secrets stay `EnvVar`s (resolved at run time, never stored in the
    definitions or shown in the UI) unless `secrets_from_env=False` (tests pass explicit URLs)."""
    if secrets_from_env:
        url = dg.EnvVar("DATABASE_URL")
        password = dg.EnvVar("KAFKA_SASL_PASSWORD") if os.environ.get("KAFKA_SASL_PASSWORD") else None
    else:
        url = settings.database_url.get_secret_value()
        password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
    return {
        "db": PostgresResource(url=url),
        "kafka": KafkaResource(
            brokers=settings.kafka_brokers,
            security_protocol=settings.kafka_security_protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_username=settings.kafka_sasl_username,
            sasl_password=password,
            ssl_ca_location=settings.kafka_ssl_ca_location,
        ),
    }
