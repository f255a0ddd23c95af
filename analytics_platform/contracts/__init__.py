"""Payload contracts, one module per Kafka topic; see `registry` for how domains plug in."""
