"""The embedded local stack: PostgreSQL + a Kafka-protocol broker + the platform's services."""
