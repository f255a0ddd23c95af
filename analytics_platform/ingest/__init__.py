"""Kafka -> landing -> raw: the drain engine and its database side (no Dagster here)."""
