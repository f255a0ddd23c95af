"""Plant metadata (tenants' timezone, emission factor, time-of-use tariff and shifts; machines'
ideal cycle time) from a YAML file into the database, and back out as the frames the KPI
transform takes. The tables are the truth; the file is how a deployment seeds or bulk-edits them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
import yaml

from analytics_platform.results.frames import read_frame
from analytics_platform.settings import REPO_ROOT
from analytics_platform.transforms.energy_kpis import TARIFF_SCHEMA
from analytics_platform.transforms.machine_kpis import MACHINE_META_SCHEMA, SHIFT_SCHEMA, TENANT_SCHEMA, Plant

DEFAULT_FILE = REPO_ROOT / "analytics_platform" / "config" / "plant.yaml"
_CLOCK = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")
_TENANT_FIELDS = {"timezone", "currency", "emission_factor_kg_per_kwh", "tariff", "shifts"}
_MACHINE_FIELDS = {"tenant_id", "factory_id", "machine_id", "ideal_cycle_time_s", "rated_power_kw", "description"}


class PlantConfigError(ValueError):
    """A plant file entry that cannot be loaded; the message names the entry and field."""


@dataclass(frozen=True)
class PlantConfig:
    """The four tables' rows, each a list of dicts in column order."""

    tenants: list[dict]
    tariffs: list[dict]
    shifts: list[dict]
    machines: list[dict]


def _minute(value: object, where: str) -> int:
    match = _CLOCK.match(str(value))
    if not match or (match.group(1) == "24" and match.group(2) != "00"):
        raise PlantConfigError(f'{where}: expected a local time "HH:MM" (00:00..24:00), got {value!r}')
    return int(match.group(1)) * 60 + int(match.group(2))


def _number(value: object, where: str, *, positive: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PlantConfigError(f"{where} must be a number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise PlantConfigError(f"{where} must be {'positive' if positive else 'zero or more'}, got {value!r}")
    return float(value)


def _bands(entries: object, where: str, name_field: str, *, priced: bool) -> list[dict]:
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise PlantConfigError(f"{where}: expected a list")
    rows = []
    for number, entry in enumerate(entries, 1):
        at = f"{where} entry {number}"
        if not isinstance(entry, dict) or not entry.get(name_field):
            raise PlantConfigError(f"{at}: needs `{name_field}`, `start` and `end`")
        start, end = _minute(entry.get("start"), f"{at} start"), _minute(entry.get("end"), f"{at} end")
        if start == 1440:
            raise PlantConfigError(f"{at}: start 24:00 is the next day's 00:00; write 00:00")
        if start == end:
            raise PlantConfigError(f"{at}: start and end are both {entry.get('start')}")
        row = {name_field: str(entry[name_field]), "start_minute": start, "end_minute": end}
        if priced:
            price = _number(entry.get("price"), f"{at} price")
            if price is None:
                raise PlantConfigError(f"{at}: needs a `price` per kWh")
            row["price"] = price
        rows.append(row)
    return rows


def parse_plant_config(path: Path) -> PlantConfig:
    """The file's tenants and machines, checked: every problem names where it is."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PlantConfigError(f"{path}: cannot read plant metadata ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("tenants"), dict):
        raise PlantConfigError(f"{path}: expected a top-level `tenants:` mapping (and optionally `machines:`)")
    tenants, tariffs, shifts, machines = [], [], [], []
    for tenant, entry in data["tenants"].items():
        where = f"{path} tenant {tenant}"
        if not isinstance(entry, dict):
            raise PlantConfigError(f"{where}: expected a mapping")
        unknown = set(entry) - _TENANT_FIELDS
        if unknown:
            raise PlantConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        zone = str(entry.get("timezone") or "UTC")
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise PlantConfigError(
                f"{where}: unknown timezone {zone!r} (use an IANA name, e.g. Asia/Bangkok)"
            ) from None
        tenants.append(
            {
                "tenant_id": str(tenant),
                "timezone": zone,
                "currency": str(entry.get("currency") or "USD"),
                "emission_factor_kg_per_kwh": _number(
                    entry.get("emission_factor_kg_per_kwh"), f"{where} emission_factor_kg_per_kwh"
                ),
            }
        )
        tariffs += [
            {"tenant_id": str(tenant), **b} for b in _bands(entry.get("tariff"), f"{where} tariff", "band", priced=True)
        ]
        shifts += [
            {"tenant_id": str(tenant), **s}
            for s in _bands(entry.get("shifts"), f"{where} shifts", "shift", priced=False)
        ]
    for number, entry in enumerate(data.get("machines") or [], 1):
        where = f"{path} machine entry {number}"
        if not isinstance(entry, dict) or not entry.get("tenant_id"):
            raise PlantConfigError(f'{where}: needs `tenant_id` ("*" for every tenant)')
        unknown = set(entry) - _MACHINE_FIELDS
        if unknown:
            raise PlantConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        machines.append(
            {
                "tenant_id": str(entry["tenant_id"]),
                "factory_id": str(entry.get("factory_id") or "*"),
                "machine_id": str(entry.get("machine_id") or "*"),
                "ideal_cycle_time_s": _number(
                    entry.get("ideal_cycle_time_s"), f"{where} ideal_cycle_time_s", positive=True
                ),
                "rated_power_kw": _number(entry.get("rated_power_kw"), f"{where} rated_power_kw", positive=True),
                "description": entry.get("description"),
            }
        )
    return PlantConfig(tenants, tariffs, shifts, machines)


def load_plant_config(conn: psycopg.Connection, path: Path = DEFAULT_FILE, *, overwrite: bool = True) -> int:
    """Write the file's metadata; returns rows inserted or updated. With `overwrite` a tenant's
    tariff bands and shifts are replaced by the file's (a band removed from the file goes);
    without it, tenants and machines already in the database are left alone."""
    config = parse_plant_config(path)
    changed = 0
    with conn.transaction(), conn.cursor() as cur:
        for tenant in config.tenants:
            cur.execute(
                "INSERT INTO analytics.plant_tenants (tenant_id, timezone, currency, emission_factor_kg_per_kwh) "
                "VALUES (%(tenant_id)s, %(timezone)s, %(currency)s, %(emission_factor_kg_per_kwh)s) "
                "ON CONFLICT (tenant_id) DO "
                + (
                    "UPDATE SET timezone = EXCLUDED.timezone, currency = EXCLUDED.currency, "
                    "emission_factor_kg_per_kwh = EXCLUDED.emission_factor_kg_per_kwh, updated_at = now()"
                    if overwrite
                    else "NOTHING"
                ),
                tenant,
            )
            if cur.rowcount == 0:
                continue  # kept as it is, with its bands and shifts
            changed += 1
            cur.execute("DELETE FROM analytics.plant_tariff_bands WHERE tenant_id = %s", (tenant["tenant_id"],))
            cur.execute("DELETE FROM analytics.plant_shifts WHERE tenant_id = %s", (tenant["tenant_id"],))
            for band in (b for b in config.tariffs if b["tenant_id"] == tenant["tenant_id"]):
                cur.execute(
                    "INSERT INTO analytics.plant_tariff_bands (tenant_id, band, start_minute, end_minute, price) "
                    "VALUES (%(tenant_id)s, %(band)s, %(start_minute)s, %(end_minute)s, %(price)s)",
                    band,
                )
                changed += 1
            for shift in (s for s in config.shifts if s["tenant_id"] == tenant["tenant_id"]):
                cur.execute(
                    "INSERT INTO analytics.plant_shifts (tenant_id, shift, start_minute, end_minute) "
                    "VALUES (%(tenant_id)s, %(shift)s, %(start_minute)s, %(end_minute)s)",
                    shift,
                )
                changed += 1
        for machine in config.machines:
            cur.execute(
                "INSERT INTO analytics.machine_metadata "
                "(tenant_id, factory_id, machine_id, ideal_cycle_time_s, rated_power_kw, description) "
                "VALUES (%(tenant_id)s, %(factory_id)s, %(machine_id)s, %(ideal_cycle_time_s)s, "
                "%(rated_power_kw)s, %(description)s) ON CONFLICT (tenant_id, factory_id, machine_id) DO "
                + (
                    "UPDATE SET ideal_cycle_time_s = EXCLUDED.ideal_cycle_time_s, "
                    "rated_power_kw = EXCLUDED.rated_power_kw, description = EXCLUDED.description, updated_at = now()"
                    if overwrite
                    else "NOTHING"
                ),
                machine,
            )
            changed += cur.rowcount
    return changed


def read_plant(conn: psycopg.Connection) -> Plant:
    """All plant metadata (a few rows per tenant), wildcard rows included: the transform resolves them."""
    return Plant(
        read_frame(
            conn,
            "SELECT tenant_id, timezone, currency, emission_factor_kg_per_kwh FROM analytics.plant_tenants",
            None,
            TENANT_SCHEMA,
        ),
        read_frame(
            conn,
            # the timezone is the tenant's, resolved (with defaults) by the transform
            "SELECT tenant_id, 'UTC', band, start_minute, end_minute, price FROM analytics.plant_tariff_bands",
            None,
            TARIFF_SCHEMA,
        ),
        read_frame(
            conn, "SELECT tenant_id, shift, start_minute, end_minute FROM analytics.plant_shifts", None, SHIFT_SCHEMA
        ),
        read_frame(
            conn,
            "SELECT tenant_id, factory_id, machine_id, ideal_cycle_time_s, rated_power_kw "
            "FROM analytics.machine_metadata",
            None,
            MACHINE_META_SCHEMA,
        ),
    )
