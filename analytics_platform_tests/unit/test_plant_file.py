"""The plant file's dated forms of emission factors and tariffs: `from` is the tenant's local time
unless it carries an offset (a date: local midnight), entries in any order; a bad entry is one line
naming the file, tenant and entry, and nothing is loaded."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from analytics_platform.results.plant import PlantConfigError, parse_plant_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plant.yaml"
    path.write_text(text)
    return path


DATED = """
tenants:
  t1:
    timezone: Asia/Bangkok
    emission_factors:
      - {from: "2026-07-01T00:00", kg_per_kwh: 0.40}
      - {kg_per_kwh: 0.45}
      - {from: "2027-01-01T06:00+00:00", kg_per_kwh: 0.38}
    tariffs:
      - {bands: [{band: flat, start: "00:00", end: "24:00", price: 0.10}]}
      - from: 2027-01-01
        bands:
          - {band: peak, start: "09:00", end: "22:00", price: 0.20}
          - {band: off_peak, start: "22:00", end: "09:00", price: 0.12}
  t2:
    emission_factor_kg_per_kwh: 0.3
    tariff:
      - {band: flat, start: "00:00", end: "24:00", price: 0.5}
"""


def test_the_dated_forms_are_local_times_unless_they_carry_an_offset(tmp_path: Path) -> None:
    config = parse_plant_config(write(tmp_path, DATED))
    assert config.emission_factors == [
        {"tenant_id": "t1", "valid_from": None, "kg_per_kwh": 0.45},
        {"tenant_id": "t1", "valid_from": datetime(2026, 6, 30, 17, tzinfo=UTC), "kg_per_kwh": 0.40},
        {"tenant_id": "t1", "valid_from": datetime(2027, 1, 1, 6, tzinfo=UTC), "kg_per_kwh": 0.38},
        {"tenant_id": "t2", "valid_from": None, "kg_per_kwh": 0.3},
    ]
    assert [(t["tenant_id"], t["valid_from"], t["band"], t["price"]) for t in config.tariffs] == [
        ("t1", None, "flat", 0.10),
        ("t1", datetime(2026, 12, 31, 17, tzinfo=UTC), "peak", 0.20),  # a date: local midnight
        ("t1", datetime(2026, 12, 31, 17, tzinfo=UTC), "off_peak", 0.12),
        ("t2", None, "flat", 0.5),
    ]


@pytest.mark.parametrize(
    ("tenant", "message"),
    [
        (
            "emission_factor_kg_per_kwh: 0.4, emission_factors: [{kg_per_kwh: 0.4}]",
            "tenant t1: give emission_factor_kg_per_kwh or emission_factors, not both",
        ),
        (
            'emission_factors: [{from: "2026-07-01", kg_per_kwh: 0.4}, {from: "2026-07-01T00:00", kg_per_kwh: 0.3}]',
            "tenant t1 emission_factors entries 1 and 2 both start at 2026-07-01 00:00:00+07:00",
        ),
        (
            "emission_factors: [{kg_per_kwh: 0.4}, {kg_per_kwh: 0.3}]",
            "tenant t1 emission_factors entries 1 and 2 both start at since forever (no `from`)",
        ),
        (
            'emission_factors: [{from: "2026-07-01", kg_per_kwh: -0.4}]',
            "tenant t1 emission_factors entry 1 kg_per_kwh must be zero or more, got -0.4",
        ),
        (
            'emission_factors: [{from: "2026-07-01", kg_per_kwh: 0.4, unit: kg}]',
            "tenant t1 emission_factors entry 1: unknown field(s) unit",
        ),
        (
            'emission_factors: [{from: "2026-07-01"}]',
            "tenant t1 emission_factors entry 1: needs `kg_per_kwh`",
        ),
        (
            'emission_factors: [{from: "next july", kg_per_kwh: 0.4}]',
            "tenant t1 emission_factors entry 1 from: expected a date (2026-07-01) or a local time "
            "(2026-07-01T06:00, or with an offset: 2026-07-01T06:00+07:00), got 'next july'",
        ),
        (
            'tariffs: [{from: "2027-01-01", bands: []}]',
            "tenant t1 tariffs entry 1: needs `bands`, a non-empty list of bands",
        ),
        (
            'tariff: [{band: a, start: "00:00", end: "24:00", price: 1}], tariffs: []',
            "tenant t1: give tariff or tariffs, not both",
        ),
        (
            'tariffs: [{from: "2027-01-01", bands: [{band: a, start: "00:00", end: "24:00", price: 1}], x: 1}]',
            "tenant t1 tariffs entry 1: unknown field(s) x",
        ),
    ],
)
def test_a_bad_dated_entry_is_one_line_naming_the_tenant_and_entry(tmp_path: Path, tenant: str, message: str) -> None:
    path = write(tmp_path, f"tenants:\n  t1: {{timezone: Asia/Bangkok, {tenant}}}\n")
    with pytest.raises(PlantConfigError) as error:
        parse_plant_config(path)
    assert str(error.value) == f"{path} {message}"
    assert "\n" not in str(error.value)


def test_a_local_from_the_clock_skips_or_repeats_is_read_with_the_offset_before_the_change(tmp_path: Path) -> None:
    """Berlin's clocks go 02:00 -> 03:00 on 29 March 2026 (02:30 never happens) and 03:00 -> 02:00 on 25
    October (02:30 happens twice). Both are read with the offset in force before the change (zoneinfo's fold
    0): 02:30+01:00 = 01:30Z in March, the first 02:30 (+02:00) = 00:30Z in October; one line in the docs,
    here so a change of library or parsing cannot move a version silently by an hour."""
    text = """
tenants:
  t1:
    timezone: Europe/Berlin
    emission_factors:
      - {from: "2026-03-29T02:30", kg_per_kwh: 0.40}
      - {from: "2026-10-25T02:30", kg_per_kwh: 0.38}
"""
    config = parse_plant_config(write(tmp_path, text))
    assert [f["valid_from"] for f in config.emission_factors] == [
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
    ]
