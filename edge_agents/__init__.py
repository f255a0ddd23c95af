"""Edge side: connectors that turn plant data into canonical payloads on Kafka, and the simulator."""
