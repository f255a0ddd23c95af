"""What a contract declares about its domain (raw table, Kafka key, raw checks) and how domains are
registered from outside the package (DOMAIN_MODULES), for the platform and for the edge agent."""

from __future__ import annotations

import pytest

from analytics_platform.contracts.errors import ConfigError
from analytics_platform.contracts.registry import registry
from analytics_platform.contracts.storage import column_definitions, create_statements
from analytics_platform.data_quality.checks import raw_check_names
from analytics_platform.settings import PlatformSettings
from analytics_platform_tests.extra_domains.energy_meter import CONTRACT as ENERGY_METER
from edge_agents.config import ContractConfigModel, parse_config

MODULE = "analytics_platform_tests.extra_domains.energy_meter"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PlatformSettings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def test_domain_modules_add_a_domain_after_the_packaged_ones() -> None:
    contracts = registry([MODULE]).contracts
    assert list(contracts) == ["sensor", "device", "lab", "sweep", "energy_meter"]
    assert contracts["energy_meter"] is ENERGY_METER
    assert all(contracts[d] is c for d, c in registry().contracts.items())  # the same objects everywhere
    assert list(registry().contracts) == ["sensor", "device", "lab", "sweep"]


def test_a_module_that_cannot_be_imported_or_has_no_contract_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"DOMAIN_MODULES names 'no.such.module', which cannot be imported"):
        registry(["no.such.module"])
    with pytest.raises(ConfigError, match=r"DOMAIN_MODULES module 'analytics_platform_tests.extra_domains' defines no"):
        registry(["analytics_platform_tests.extra_domains"])


def test_settings_enable_every_registered_domain_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert PlatformSettings().domains_enabled == ["sensor", "device", "lab", "sweep"]
    monkeypatch.setenv("DOMAIN_MODULES", MODULE)
    settings = PlatformSettings()
    assert settings.domain_modules == [MODULE]
    assert settings.domains_enabled == ["sensor", "device", "lab", "sweep", "energy_meter"]
    assert "domains_enabled" not in settings.model_fields_set
    assert PlatformSettings(domains_enabled=["lab"]).domains_enabled == ["lab"]


def test_kafka_keys_come_from_the_contracts_key_fields() -> None:
    contracts = registry([MODULE]).contracts
    payload = {"tenant_id": "t1", "factory_id": "f1", "machine_id": "mc-01", "station_id": "lab-01"}
    assert {d: c.kafka_key(payload | {"meter_id": "em-01"}) for d, c in contracts.items()} == {
        "sensor": "t1-f1-mc-01",
        "device": "t1-f1-mc-01",
        "sweep": "t1-f1-mc-01",
        "lab": "t1-f1-lab-01",
        "energy_meter": "t1-f1-em-01",
    }


def test_raw_columns_come_from_the_payload_schema() -> None:
    assert column_definitions(ENERGY_METER) == [
        ("time", "timestamptz NOT NULL"),
        ("tenant_id", "text NOT NULL"),
        ("factory_id", "text NOT NULL"),
        ("meter_id", "text NOT NULL"),
        ("energy_kwh", "double precision NOT NULL"),
        ("power_kw", "double precision NOT NULL"),
        ("event_id", "text"),
        ("schema_version", "smallint NOT NULL"),
        ("dedup_key", "text NOT NULL"),
        ("topic", "text NOT NULL"),
        ("kafka_partition", "integer NOT NULL"),
        ("kafka_offset", "bigint NOT NULL"),
        ("ingested_at", "timestamptz NOT NULL DEFAULT statement_timestamp()"),
    ]
    sensor = dict(column_definitions(registry().get("sensor")))
    assert (sensor["payload"], sensor["unit"], sensor["uncatalogued"]) == (
        "jsonb",
        "text",
        "boolean NOT NULL DEFAULT false",
    )
    sweep = dict(column_definitions(registry().get("sweep")))
    assert (sweep["reading_values"], sweep["n"], sweep["batch_id"]) == (
        "double precision[] NOT NULL",
        "integer NOT NULL",
        "text",
    )


def test_an_older_table_gains_only_its_missing_columns_and_the_hypertable_follows_the_declaration() -> None:
    lab = registry().get("lab")
    existing = frozenset(name for name, _ in column_definitions(lab) if name != "machine_id")
    statements = create_statements(lab, existing)
    assert [s for s in statements if s.startswith("ALTER TABLE")] == [
        "ALTER TABLE analytics.raw_lab_results ADD COLUMN IF NOT EXISTS machine_id text",
        # and the standard columns' defaults are the declaration's (ingested_at's changed: sql/26's note)
        "ALTER TABLE analytics.raw_lab_results ALTER COLUMN ingested_at SET DEFAULT statement_timestamp()",
    ]
    assert (
        "SELECT analytics.make_timeseries('analytics.raw_lab_results', 'time', INTERVAL '1 day', "
        "'tenant_id, factory_id', 'time DESC', INTERVAL '7 days', INTERVAL '90 days')"
    ) in statements


def test_raw_checks_are_the_four_plus_what_the_contract_declares() -> None:
    assert {d: raw_check_names(c)[4:] for d, c in registry([MODULE]).contracts.items()} == {
        "sensor": ("values_in_range", "units_match", "completeness"),
        "device": (),
        "lab": (),
        "sweep": ("values_in_range", "units_match"),
        "energy_meter": (),
    }
    assert raw_check_names(ENERGY_METER) == ("keys_not_null", "time_in_partition", "values_finite", "reject_ratio")

    class Typo(type(ENERGY_METER)):  # type: ignore[misc]
        quality_checks = ("completness",)

    with pytest.raises(ConfigError, match=r"domain 'energy_meter' declares unknown raw check\(s\) \['completness'\]"):
        raw_check_names(Typo())

    class NoRange(type(ENERGY_METER)):  # type: ignore[misc]
        quality_checks = ("values_in_range",)

    with pytest.raises(ConfigError, match="without a range_column"):
        raw_check_names(NoRange())


def test_the_edge_agent_reads_domain_modules_and_refuses_an_unknown_mqtt_domain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert ContractConfigModel().domains() == ["sensor", "device", "lab", "sweep"]
    monkeypatch.setenv("DOMAIN_MODULES", MODULE)
    assert ContractConfigModel().domains()[-1] == "energy_meter"
    assert ContractConfigModel(domain_modules=f" {MODULE} ,").domain_modules == [MODULE]
    mqtt = {"type": "mqtt", "name": "m", "mappings": [{"topic": "meters/{meter_id}", "domain": "energy_meter"}]}
    assert parse_config({"sources": [mqtt]}).sources[0].mappings[0].domain == "energy_meter"
    monkeypatch.delenv("DOMAIN_MODULES")
    with pytest.raises(Exception, match=r"unknown domain 'energy_meter'"):
        parse_config({"sources": [mqtt]})
