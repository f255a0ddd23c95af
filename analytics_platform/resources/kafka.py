"""The Kafka cluster the drains read from (a real cluster, or the devstack's Tansu broker)."""

from __future__ import annotations

from typing import Any

import dagster as dg


class KafkaResource(dg.ConfigurableResource):
    """librdkafka client settings; SASL/TLS options pass straight through to confluent-kafka."""

    brokers: str
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_ca_location: str | None = None

    def client_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"bootstrap.servers": self.brokers}
        optional = {
            "security.protocol": self.security_protocol,
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
            "ssl.ca.location": self.ssl_ca_location,
        }
        config.update({k: v for k, v in optional.items() if v})
        return config
