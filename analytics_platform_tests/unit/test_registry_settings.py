"""Domain registry and binding, the metrics catalogue and list-valued settings from the environment."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from analytics_platform.contracts.base import ContractConfig
from analytics_platform.contracts.catalog import PACKAGED_CATALOG, MetricCatalog
from analytics_platform.contracts.device import DeviceHealthContract
from analytics_platform.contracts.lab import LabContract
from analytics_platform.contracts.registry import (
    ConfigError,
    bind_domains,
    contract_config,
    load_known_metrics,
    registry,
)
from analytics_platform.contracts.sensor import SensorContract
from analytics_platform.contracts.sweep import SweepContract
from analytics_platform.settings import PlatformSettings

METRICS_YAML = PACKAGED_CATALOG
KNOWN_DOMAINS = "['device', 'lab', 'sensor', 'sweep']"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the environment: start every test from none of their variables."""
    for name in PlatformSettings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)


def bindings_of(settings: PlatformSettings) -> list[tuple[str, tuple[str, ...]]]:
    return [(b.domain, b.topics) for b in bind_domains(settings)]


def bindings(**settings: object) -> list[tuple[str, tuple[str, ...]]]:
    return bindings_of(PlatformSettings(**settings))


# ----- registry ----------------------------------------------------------------------------------


def test_registry_discovers_the_four_contracts() -> None:
    contracts = registry().contracts
    assert sorted(contracts) == ["device", "lab", "sensor", "sweep"]
    assert {d: (type(c), c.default_topic, c.raw_table) for d, c in contracts.items()} == {
        "device": (DeviceHealthContract, "device.health", "raw_device_health"),
        "lab": (LabContract, "lab.results", "raw_lab_results"),
        "sensor": (SensorContract, "sensors.device.readings", "raw_sensor_readings"),
        "sweep": (SweepContract, "sensors.sweep.readings", "raw_sweep_readings"),
    }


def test_registry_get_and_unknown_domain() -> None:
    assert registry().get("lab").domain == "lab"
    with pytest.raises(ValueError) as excinfo:
        registry().get("nope")
    assert str(excinfo.value) == "unknown domain 'nope' (known: device, lab, sensor, sweep)"


def test_registry_refuses_a_domain_twice() -> None:
    from analytics_platform.contracts.base import Registry

    own = Registry()
    own.register(LabContract())
    with pytest.raises(ValueError) as excinfo:
        own.register(LabContract())
    assert str(excinfo.value) == "domain 'lab' registered twice"


# ----- bind_domains ------------------------------------------------------------------------------


def test_defaults_bind_every_domain_to_its_default_topic() -> None:
    result = bind_domains(PlatformSettings())
    assert [(b.domain, b.topics) for b in result] == [
        ("sensor", ("sensors.device.readings",)),
        ("device", ("device.health",)),
        ("lab", ("lab.results",)),
        ("sweep", ("sensors.sweep.readings",)),
    ]
    assert all(b.contract is registry().contracts[b.domain] for b in result)


def test_topic_prefix_is_applied_to_every_topic() -> None:
    assert bindings(kafka_topic_prefix="plant7.") == [
        ("sensor", ("plant7.sensors.device.readings",)),
        ("device", ("plant7.device.health",)),
        ("lab", ("plant7.lab.results",)),
        ("sweep", ("plant7.sensors.sweep.readings",)),
    ]


def test_domains_enabled_picks_a_subset_in_its_order() -> None:
    assert bindings(domains_enabled=["lab", "sensor"]) == [
        ("lab", ("lab.results",)),
        ("sensor", ("sensors.device.readings",)),
    ]


def test_kafka_topics_narrows_and_renames() -> None:
    assert bindings(
        kafka_topics=["lab.results", "sensor:plant7.readings", "sensor:line2.readings"],
        kafka_topic_prefix="p.",
    ) == [
        # only domains with a topic are bound; custom names keep their domain and get the prefix
        ("sensor", ("p.plant7.readings", "p.line2.readings")),
        ("lab", ("p.lab.results",)),
    ]


def test_a_default_topic_name_can_be_given_to_another_domain_explicitly() -> None:
    assert bindings(kafka_topics=["device:sensors.device.readings"]) == [("device", ("sensors.device.readings",))]


def test_unknown_domain_in_domains_enabled() -> None:
    with pytest.raises(ConfigError) as excinfo:
        bind_domains(PlatformSettings(domains_enabled=["sensor", "bogus"]))
    assert str(excinfo.value) == f"DOMAINS_ENABLED names unknown domain(s) ['bogus']; known: {KNOWN_DOMAINS}"


def test_unknown_topic_in_kafka_topics() -> None:
    with pytest.raises(ConfigError) as excinfo:
        bind_domains(PlatformSettings(kafka_topics=["plant7.readings"]))
    assert str(excinfo.value) == (
        "KAFKA_TOPICS entry 'plant7.readings' is not a known topic; "
        f"write it as '<domain>:plant7.readings' (domains: {KNOWN_DOMAINS})"
    )


def test_topic_of_a_disabled_domain() -> None:
    with pytest.raises(ConfigError) as excinfo:
        bind_domains(PlatformSettings(domains_enabled=["sensor"], kafka_topics=["lab.results"]))
    assert str(excinfo.value) == (
        "KAFKA_TOPICS entry 'lab.results' feeds domain 'lab', which is not in DOMAINS_ENABLED"
    )


def test_custom_topic_of_a_disabled_domain() -> None:
    with pytest.raises(ConfigError) as excinfo:
        bind_domains(PlatformSettings(domains_enabled=["sensor", "device"], kafka_topics=["sweep:s.x"]))
    assert str(excinfo.value) == "KAFKA_TOPICS entry 'sweep:s.x' feeds domain 'sweep', which is not in DOMAINS_ENABLED"


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# ----- metrics catalogue -------------------------------------------------------------------------


def test_repo_metrics_catalogue() -> None:
    metrics = load_known_metrics(METRICS_YAML)
    assert isinstance(metrics, frozenset)
    assert {"temp", "power", "energy", "humidity", "pressure", "vibration"} <= metrics
    assert "flux_capacitance" not in metrics


def test_catalogue_names_are_the_mapping_keys(tmp_path: Path) -> None:
    path = tmp_path / "metrics.yaml"
    path.write_text('metrics:\n  temp: {unit: "degC"}\n  42: {unit: "x"}\n  co2: {}\n')
    assert load_known_metrics(path) == frozenset({"temp", "42", "co2"})


def test_missing_catalogue_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as excinfo:
        load_known_metrics(path)
    assert str(excinfo.value) == f"METRICS_CATALOG file {path} does not exist"


@pytest.mark.parametrize("text", ["", "metrics: []\n", "metrics: {}\n", "other: {temp: {}}\n"])
def test_catalogue_without_a_metrics_mapping(tmp_path: Path, text: str) -> None:
    path = tmp_path / "metrics.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as excinfo:
        load_known_metrics(path)
    assert str(excinfo.value) == f"METRICS_CATALOG file {path} has no `metrics:` mapping"


def test_contract_config_from_settings(tmp_path: Path) -> None:
    path = tmp_path / "metrics.yaml"
    path.write_text("metrics:\n  temp: {}\n")
    start = datetime(2025, 1, 1, tzinfo=UTC)
    config = contract_config(PlatformSettings(metrics_catalog=path, contract_max_future_s=30, partitions_start=start))
    assert config == ContractConfig(
        catalog=MetricCatalog(frozenset({("*", "temp")}), {"*": "reject"}), max_future_s=30, partitions_start=start
    )


# ----- settings from the environment -------------------------------------------------------------


def test_default_settings() -> None:
    settings = PlatformSettings()
    assert settings.domains_enabled == ["sensor", "device", "lab", "sweep"]
    assert settings.kafka_topics == []
    assert settings.kafka_topic_prefix == ""
    assert settings.windows == [60, 300, 3600]
    assert settings.contract_max_future_s == 600
    assert settings.partitions_start == datetime(2024, 1, 1, tzinfo=UTC)
    assert settings.reject_ratio_max == 0.05
    assert settings.metrics_catalog == METRICS_YAML


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("lab,sensor", ["lab", "sensor"]),
        (" lab , sensor ,", ["lab", "sensor"]),
        ('["lab", "sensor"]', ["lab", "sensor"]),
        ('  ["device"]  ', ["device"]),
        ("", []),
    ],
)
def test_domains_enabled_from_the_environment(monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[str]) -> None:
    monkeypatch.setenv("DOMAINS_ENABLED", raw)
    assert PlatformSettings().domains_enabled == expected


def test_kafka_topics_from_the_environment_comma_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_TOPICS", "lab.results,sensor:plant7.readings")
    monkeypatch.setenv("KAFKA_TOPIC_PREFIX", "x.")
    settings = PlatformSettings()
    assert settings.kafka_topics == ["lab.results", "sensor:plant7.readings"]
    assert bindings_of(settings) == [("sensor", ("x.plant7.readings",)), ("lab", ("x.lab.results",))]


def test_kafka_topics_from_the_environment_json_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_TOPICS", '["device.health", "sweep:plant7.sweeps"]')
    monkeypatch.setenv("DOMAINS_ENABLED", "device,sweep")
    settings = PlatformSettings()
    assert settings.kafka_topics == ["device.health", "sweep:plant7.sweeps"]
    assert settings.domains_enabled == ["device", "sweep"]
    assert bindings_of(settings) == [("device", ("device.health",)), ("sweep", ("plant7.sweeps",))]


@pytest.mark.parametrize(("raw", "expected"), [("60,300", [60, 300]), ("[15, 60]", [15, 60]), ("86400", [86400])])
def test_windows_from_the_environment(monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[int]) -> None:
    monkeypatch.setenv("WINDOWS", raw)
    assert PlatformSettings().windows == expected


@pytest.mark.parametrize("raw", ["", "60,0", "-300", "[60, -1]"])
def test_windows_must_be_positive_and_at_least_one(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("WINDOWS", raw)
    with pytest.raises(ValueError, match="WINDOWS must be one or more positive numbers of seconds"):
        PlatformSettings()


def test_lowercase_variable_names_are_read_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("domains_enabled", "lab")
    assert PlatformSettings().domains_enabled == ["lab"]


def test_naive_partitions_start_is_taken_as_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTITIONS_START", "2025-03-01T00:00:00")
    assert PlatformSettings().partitions_start == datetime(2025, 3, 1, tzinfo=UTC)


def test_kafka_topics_with_an_unknown_domain_or_twice_the_same_topic() -> None:
    with pytest.raises(ConfigError) as excinfo:
        bind_domains(PlatformSettings(kafka_topics=["bogus:t"]))
    assert str(excinfo.value) == (
        "KAFKA_TOPICS entry 'bogus:t' names unknown domain 'bogus'; known: ['device', 'lab', 'sensor', 'sweep']"
    )
    bindings = bind_domains(PlatformSettings(kafka_topics=["lab.results", "lab.results"]))
    assert [(b.domain, b.topics) for b in bindings] == [("lab", ("lab.results",))]
