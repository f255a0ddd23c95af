"""Dagster resources: the database and the Kafka cluster, configured from the environment."""

from analytics_platform.resources.db import PostgresResource
from analytics_platform.resources.kafka import KafkaResource

__all__ = ["KafkaResource", "PostgresResource"]
