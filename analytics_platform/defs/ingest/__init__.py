"""Kafka-draining sensors and the hourly raw assets they fill."""
