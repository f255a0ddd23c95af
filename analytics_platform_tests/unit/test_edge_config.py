"""The agent's config file: every error names its place in the file, `${VAR}` comes from the
environment (an unset one is an error naming it), `edge-agent check` answers 0 / 2, and the Kafka
section becomes exactly the librdkafka properties a secured cluster needs."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from edge_agents.cli import main
from edge_agents.config import ConfigError, KafkaConfig, load_config, parse_config

SIM = {"type": "simulator", "name": "sim"}


def errors(document: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    return str(caught.value).splitlines()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_good_file_loads_with_its_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        agent_id: line-3
        kafka: {brokers: "k1:9092", topic_prefix: "plant."}
        sources:
          - type: modbus
            name: plc-1
            identity: {tenant_id: t1, factory_id: f1, machine_id: mc-01}
            registers:
              - {address: 40001, type: float32, word_order: little, metric: temp, sensor_id: s-1, scale: 0.1}
          - {type: http, name: webhook, port: 0, token: abc}
        """,
    )
    config = load_config(path)
    assert config.agent_id == "line-3"
    assert [(s.name, s.type) for s in config.sources] == [("plc-1", "modbus"), ("webhook", "http")]
    register = config.sources[0].registers[0]
    assert (register.address, register.type, register.word_order, register.scale) == (40001, "float32", "little", 0.1)
    http = config.sources[1]
    assert (http.host, http.port, http.token, http.max_batch) == ("127.0.0.1", 0, "abc", 10000)
    assert (config.queue.when_full, config.queue.max_bytes) == ("drop_oldest", 500 * 1024 * 1024)
    assert (config.backpressure.high, config.backpressure.low) == (1000, 500)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        pytest.param(
            {
                "sources": [
                    SIM,
                    {
                        "type": "modbus",
                        "name": "plc",
                        "registers": [{"address": 1, "type": "float64", "metric": "temp", "sensor_id": "s-1"}],
                    },
                ]
            },
            ["sources[1].registers[0].type: Input should be 'uint16', 'int16', 'uint32', 'int32' or 'float32'"],
            id="register-type",
        ),
        pytest.param({"agent_id": "a"}, ["sources: Field required"], id="no-sources"),
        pytest.param(
            {"sources": []}, ["sources: List should have at least 1 item after validation, not 0"], id="empty-sources"
        ),
        pytest.param(
            {"sources": [SIM, {**SIM, "rate": 5}, {"type": "http", "name": "h"}]},
            ["sources: source names must be unique; repeated: ['sim']"],
            id="duplicate-names",
        ),
        pytest.param(
            {"sources": [SIM], "backpressure": {"high": 10, "low": 10}},
            ["backpressure: low (10) must be below high (10)"],
            id="low-not-below-high",
        ),
        pytest.param(
            {"sources": [{"type": "serial", "name": "s"}]},
            [
                "sources[0]: Input tag 'serial' found using 'type' does not match any of the expected tags: "
                "'mqtt', 'sparkplug', 'opcua', 'modbus', 'http', 'simulator'"
            ],
            id="unknown-source-type",
        ),
        pytest.param(
            {"sources": [{**SIM, "colour": "red"}]}, ["sources[0].colour: Extra inputs are not permitted"], id="typo"
        ),
        pytest.param(
            {
                "queue": {"when_full": "block"},
                "sources": [{"type": "mqtt", "name": "m", "mappings": [{"topic": "plant/#/temp"}]}],
            },
            [
                "queue.when_full: Input should be 'drop_oldest' or 'stop_accepting'",
                "sources[0].mappings[0].topic: '#' is only allowed as the last level",
            ],
            id="every-error-at-once",
        ),
        pytest.param(
            {"sources": [{"type": "http", "name": "h", "port": 70000, "max_batch": 0}]},
            [
                "sources[0].port: Input should be less than or equal to 65535",
                "sources[0].max_batch: Input should be greater than or equal to 1",
            ],
            id="http-limits",
        ),
        pytest.param(
            {"sources": [SIM], "kafka": {"security_protocol": "SASL_SSL"}},
            ["kafka: security_protocol SASL_* needs sasl_mechanism"],
            id="sasl-without-mechanism",
        ),
        pytest.param(
            {"sources": [SIM], "kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}},
            ["kafka: sasl_mechanism PLAIN needs sasl_username and sasl_password"],
            id="sasl-without-credentials",
        ),
        pytest.param(
            {"sources": [SIM], "kafka": {"rebuild_backoff_s": 5, "rebuild_backoff_max_s": 2}},
            ["kafka: rebuild_backoff_max_s (2.0) must not be below rebuild_backoff_s (5.0)"],
            id="backoff-max-below-first",
        ),
        pytest.param(
            {"sources": [SIM], "kafka": {"stall_timeout_s": 0, "stats_interval_ms": -1}},
            [
                "kafka.stall_timeout_s: Input should be greater than 0",
                "kafka.stats_interval_ms: Input should be greater than or equal to 0",
            ],
            id="stall-settings",
        ),
        pytest.param(
            ["sources"],
            ["the config file must be a YAML mapping (agent_id, kafka, queue, sources, ...)"],
            id="not-a-mapping",
        ),
    ],
)
def test_errors_name_their_place_in_the_file(document: Any, expected: list[str]) -> None:
    assert errors(document) == expected


def test_unset_variable_is_an_error_naming_it_and_its_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGE_TEST_SASL_PASSWORD", raising=False)
    monkeypatch.delenv("EDGE_TEST_TOKEN", raising=False)
    document = {
        "kafka": {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_username": "edge",
            "sasl_password": "${EDGE_TEST_SASL_PASSWORD}",
        },
        "sources": [{"type": "http", "name": "h", "token": "${EDGE_TEST_TOKEN}"}],
    }
    assert errors(document) == ["kafka.sasl_password: environment variable EDGE_TEST_SASL_PASSWORD is not set"]
    monkeypatch.setenv("EDGE_TEST_SASL_PASSWORD", "pw-from-env")
    assert errors(document) == ["sources[0].token: environment variable EDGE_TEST_TOKEN is not set"]
    monkeypatch.setenv("EDGE_TEST_TOKEN", "tok")
    config = parse_config(document)
    assert (config.kafka.sasl_password, config.sources[0].token) == ("pw-from-env", "tok")


def test_default_applies_only_when_the_variable_is_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("EDGE_TEST_PORT", raising=False)
    monkeypatch.delenv("EDGE_TEST_HOST", raising=False)
    path = write(
        tmp_path,
        """
        kafka: {brokers: "${EDGE_TEST_HOST:-127.0.0.1}:9092"}
        sources:
          - {type: http, name: h, port: "${EDGE_TEST_PORT:-9000}", token: "${EDGE_TEST_EMPTY:-}"}
        """,
    )
    monkeypatch.delenv("EDGE_TEST_EMPTY", raising=False)
    config = load_config(path)
    assert (config.kafka.brokers, config.sources[0].port, config.sources[0].token) == (
        "127.0.0.1:9092",
        9000,
        None,
    )  # empty token = none
    monkeypatch.setenv("EDGE_TEST_PORT", "9100")
    monkeypatch.setenv("EDGE_TEST_HOST", "kafka.plant.local")
    config = load_config(path)
    assert (config.kafka.brokers, config.sources[0].port) == ("kafka.plant.local:9092", 9100)


def test_load_config_names_the_file_when_it_cannot_read_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such file$"):
        load_config(missing)
    broken = write(tmp_path, "sources: [\n")
    with pytest.raises(ConfigError, match=r"agent\.yaml: not valid YAML: "):
        load_config(broken)


def test_check_prints_ok_and_returns_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path,
        """
        agent_id: edge-7
        kafka: {brokers: "k1:9092,k2:9092"}
        sources:
          - {type: simulator, name: sim}
          - {type: http, name: webhook}
        """,
    )
    assert main(["check", "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: OK — agent edge-7, sources: sim (simulator), webhook (http); Kafka k1:9092,k2:9092\n"
    assert err == ""


def test_check_prints_every_error_and_returns_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path,
        """
        backpressure: {high: 100, low: 200}
        sources:
          - type: modbus
            name: plc
            registers:
              - {address: 1, type: int64, metric: temp, sensor_id: s-1}
        """,
    )
    assert main(["check", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}: invalid configuration",
        "backpressure: low (200) must be below high (100)",
        "sources[0].registers[0].type: Input should be 'uint16', 'int16', 'uint32', 'int32' or 'float32'",
    ]


def test_check_reports_a_missing_metrics_catalogue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    catalogue = tmp_path / "metrics.yaml"
    path = write(tmp_path, f"contract: {{metrics_catalog: {catalogue}}}\nsources: [{{type: simulator, name: sim}}]\n")
    assert main(["check", "--config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}: invalid configuration",
        f"contract: METRICS_CATALOG file {catalogue} does not exist",
    ]


def test_producer_config_for_sasl_ssl_with_tls() -> None:
    kafka = KafkaConfig(
        brokers="k1:9093,k2:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="edge-line-3",
        sasl_password="s3cret",
        tls={
            "ca_location": "/etc/edge/ca.pem",
            "certificate_location": "/etc/edge/client.pem",
            "key_location": "/etc/edge/client.key",
            "key_password": "keypw",
        },
        extra={"client.id": "edge-line-3", "ssl.endpoint.identification.algorithm": "https"},
    )
    config = kafka.producer_config()
    security = {k: v for k, v in config.items() if k.split(".")[0] in ("security", "sasl", "ssl")}
    assert security == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "edge-line-3",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/edge/ca.pem",
        "ssl.certificate.location": "/etc/edge/client.pem",
        "ssl.key.location": "/etc/edge/client.key",
        "ssl.key.password": "keypw",
        "ssl.endpoint.identification.algorithm": "https",
    }
    assert config["bootstrap.servers"] == "k1:9093,k2:9093"
    assert (config["enable.idempotence"], config["acks"]) == (True, "all")
    assert config["client.id"] == "edge-line-3"


def test_producer_config_plaintext_has_no_credentials() -> None:
    config = KafkaConfig().producer_config()
    assert config["security.protocol"] == "PLAINTEXT"
    assert config["enable.idempotence"] is True
    assert not [k for k in config if k.startswith(("sasl.", "ssl."))]


def test_producer_rebuild_settings_and_their_defaults() -> None:
    """The stall watchdog and the rebuild backoff (docs/edge.md, "When the broker is replaced")."""
    kafka = KafkaConfig()
    assert (kafka.stall_timeout_s, kafka.rebuild_backoff_s, kafka.rebuild_backoff_max_s) == (30.0, 1.0, 60.0)
    assert kafka.producer_config()["statistics.interval.ms"] == 1000
    tuned = KafkaConfig(stall_timeout_s=5, rebuild_backoff_s=2, rebuild_backoff_max_s=2, stats_interval_ms=0)
    assert (tuned.stall_timeout_s, tuned.rebuild_backoff_s, tuned.rebuild_backoff_max_s) == (5.0, 2.0, 2.0)
    assert tuned.producer_config()["statistics.interval.ms"] == 0


def test_a_bad_opcua_node_id_is_caught_by_check() -> None:
    document = {
        "sources": [
            {
                "name": "plc",
                "type": "opcua",
                "endpoint": "opc.tcp://127.0.0.1:4840",
                "nodes": [
                    {"node_id": "ns=2;i=7", "metric": "temp", "sensor_id": "s"},
                    {"node_id": "ns=x;q=1", "metric": "temp", "sensor_id": "s"},
                ],
            }
        ]
    }
    with pytest.raises(ConfigError) as error:
        parse_config(document)
    [line] = str(error.value).splitlines()
    assert line.startswith("sources[0].nodes[1].node_id: not an OPC-UA node id (")
    assert line.endswith("); e.g. ns=2;i=7 or ns=2;s=Press.Temperature")
