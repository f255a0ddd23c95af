"""Plant metadata (tenants' timezone, emission factors, time-of-use tariffs and shifts; machines'
ideal cycle time) from a YAML file into the database, and back out as the frames the KPI
transform takes. The tables are the truth; the file is how a deployment seeds or bulk-edits them.

Emission factors and tariffs have versions, each in force from its `valid_from` until the next
one's (analytics.plant_emission_factors; plant_tariff_bands.valid_from, a version = the bands with
one valid_from). A version since forever is stored as valid_from -infinity, not the epoch: it is
exact (no instant is before it, whatever a backfill reaches back to) and it is what the flat file
form means; the frames carry it as NULL, since Python's datetime has no -infinity.

Loading a tenant replaces its whole history with the file's (factors and tariff versions, as its
bands and shifts always were): the file is the history, so a plant edits it, adds a dated version
beside the old ones and reloads; a version deleted from the file is gone from the tables, and an
upsert by valid_from would have kept it without anyone seeing it in the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg
import yaml

from analytics_platform.results.frames import read_frame
from analytics_platform.settings import REPO_ROOT
from analytics_platform.transforms.energy_kpis import FACTOR_SCHEMA, TARIFF_VERSION_SCHEMA
from analytics_platform.transforms.machine_kpis import MACHINE_META_SCHEMA, SHIFT_SCHEMA, TENANT_SCHEMA, Plant

DEFAULT_FILE = REPO_ROOT / "analytics_platform" / "config" / "plant.yaml"
_CLOCK = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")
_TENANT_FIELDS = {
    "timezone",
    "currency",
    "emission_factor_kg_per_kwh",
    "emission_factors",
    "tariff",
    "tariffs",
    "shifts",
}
_FACTOR_FIELDS = {"from", "kg_per_kwh"}
_TARIFF_FIELDS = {"from", "bands"}
_MACHINE_FIELDS = {"tenant_id", "factory_id", "machine_id", "ideal_cycle_time_s", "rated_power_kw", "description"}


class PlantConfigError(ValueError):
    """A plant file entry that cannot be loaded; the message names the entry and field."""


@dataclass(frozen=True)
class PlantConfig:
    """The five tables' rows, each a list of dicts in column order; `valid_from` None = since forever."""

    tenants: list[dict]
    tariffs: list[dict]
    shifts: list[dict]
    machines: list[dict]
    emission_factors: list[dict]


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


def _valid_from(value: object, zone: ZoneInfo, where: str) -> datetime | None:
    """A version's `from`: absent = since forever; a date = local midnight; a date and time = local
    time unless it carries an offset (a local time the clock skips or repeats is read as before the
    change, zoneinfo's fold 0)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        at = value
    elif isinstance(value, date):
        at = datetime(value.year, value.month, value.day)
    else:
        try:
            at = datetime.fromisoformat(str(value))
        except ValueError:
            raise PlantConfigError(
                f"{where}: expected a date (2026-07-01) or a local time (2026-07-01T06:00, or with an offset: "
                f"2026-07-01T06:00+07:00), got {value!r}"
            ) from None
    return (at.replace(tzinfo=zone) if at.tzinfo is None else at).astimezone(UTC)


def _versions(entries: object, where: str, fields: set[str], zone: ZoneInfo) -> list[tuple[datetime | None, str, dict]]:
    """A dated list's entries as (valid_from, where the entry is, entry), in time order (the file's
    order does not matter); two entries starting at one instant are an error."""
    if not isinstance(entries, list):
        raise PlantConfigError(f"{where}: expected a list of versions")
    seen: dict[datetime | None, int] = {}
    out = []
    for number, entry in enumerate(entries, 1):
        at = f"{where} entry {number}"
        if not isinstance(entry, dict):
            raise PlantConfigError(f"{at}: expected a mapping")
        unknown = set(entry) - fields
        if unknown:
            raise PlantConfigError(f"{at}: unknown field(s) {', '.join(sorted(unknown))}")
        valid_from = _valid_from(entry.get("from"), zone, f"{at} from")
        if valid_from in seen:
            shown = "since forever (no `from`)" if valid_from is None else str(valid_from.astimezone(zone))
            raise PlantConfigError(f"{where} entries {seen[valid_from]} and {number} both start at {shown}")
        seen[valid_from] = number
        out.append((valid_from, at, entry))
    return sorted(out, key=lambda item: (item[0] is not None, item[0] or datetime.min.replace(tzinfo=UTC)))


def _emission_factors(tenant: str, entry: dict, where: str, zone: ZoneInfo) -> list[dict]:
    """The flat `emission_factor_kg_per_kwh` (one version since forever) or `emission_factors`."""
    if "emission_factors" not in entry:
        factor = _number(entry.get("emission_factor_kg_per_kwh"), f"{where} emission_factor_kg_per_kwh")
        return [] if factor is None else [{"tenant_id": tenant, "valid_from": None, "kg_per_kwh": factor}]
    if "emission_factor_kg_per_kwh" in entry:
        raise PlantConfigError(f"{where}: give emission_factor_kg_per_kwh or emission_factors, not both")
    rows = []
    for valid_from, at, version in _versions(
        entry["emission_factors"], f"{where} emission_factors", _FACTOR_FIELDS, zone
    ):
        factor = _number(version.get("kg_per_kwh"), f"{at} kg_per_kwh")
        if factor is None:
            raise PlantConfigError(f"{at}: needs `kg_per_kwh`")
        rows.append({"tenant_id": tenant, "valid_from": valid_from, "kg_per_kwh": factor})
    return rows


def _tariffs(tenant: str, entry: dict, where: str, zone: ZoneInfo) -> list[dict]:
    """The flat `tariff` bands (one version since forever) or `tariffs`, versions of bands."""
    if "tariffs" not in entry:
        return [
            {"tenant_id": tenant, "valid_from": None, **b}
            for b in _bands(entry.get("tariff"), f"{where} tariff", "band", priced=True)
        ]
    if "tariff" in entry:
        raise PlantConfigError(f"{where}: give tariff or tariffs, not both")
    rows = []
    for valid_from, at, version in _versions(entry["tariffs"], f"{where} tariffs", _TARIFF_FIELDS, zone):
        if not isinstance(version.get("bands"), list) or not version["bands"]:
            raise PlantConfigError(f"{at}: needs `bands`, a non-empty list of bands")
        rows += [
            {"tenant_id": tenant, "valid_from": valid_from, **b}
            for b in _bands(version["bands"], f"{at} bands", "band", priced=True)
        ]
    return rows


def parse_plant_config(path: Path) -> PlantConfig:
    """The file's tenants and machines, checked: every problem names where it is."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PlantConfigError(f"{path}: cannot read plant metadata ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("tenants"), dict):
        raise PlantConfigError(f"{path}: expected a top-level `tenants:` mapping (and optionally `machines:`)")
    tenants, tariffs, shifts, machines, factors = [], [], [], [], []
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
        tenants.append({"tenant_id": str(tenant), "timezone": zone, "currency": str(entry.get("currency") or "USD")})
        factors += _emission_factors(str(tenant), entry, where, ZoneInfo(zone))
        tariffs += _tariffs(str(tenant), entry, where, ZoneInfo(zone))
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
    return PlantConfig(tenants, tariffs, shifts, machines, factors)


def load_plant_config(conn: psycopg.Connection, path: Path = DEFAULT_FILE, *, overwrite: bool = True) -> int:
    """Write the file's metadata; returns rows inserted or updated. With `overwrite` a tenant's
    emission factors, tariff versions and shifts are replaced by the file's (a version or band removed
    from the file goes: the file is the tenant's history); without it, tenants and machines already
    in the database are left alone."""
    config = parse_plant_config(path)
    changed = 0
    with conn.transaction(), conn.cursor() as cur:
        for tenant in config.tenants:
            cur.execute(
                "INSERT INTO analytics.plant_tenants (tenant_id, timezone, currency) "
                "VALUES (%(tenant_id)s, %(timezone)s, %(currency)s) "
                "ON CONFLICT (tenant_id) DO "
                + (
                    "UPDATE SET timezone = EXCLUDED.timezone, currency = EXCLUDED.currency, updated_at = now()"
                    if overwrite
                    else "NOTHING"
                ),
                tenant,
            )
            if cur.rowcount == 0:
                continue  # kept as it is, with its bands and shifts
            changed += 1
            cur.execute("DELETE FROM analytics.plant_emission_factors WHERE tenant_id = %s", (tenant["tenant_id"],))
            cur.execute("DELETE FROM analytics.plant_tariff_bands WHERE tenant_id = %s", (tenant["tenant_id"],))
            cur.execute("DELETE FROM analytics.plant_shifts WHERE tenant_id = %s", (tenant["tenant_id"],))
            for factor in (f for f in config.emission_factors if f["tenant_id"] == tenant["tenant_id"]):
                cur.execute(
                    "INSERT INTO analytics.plant_emission_factors (tenant_id, valid_from, kg_per_kwh) "
                    "VALUES (%(tenant_id)s, coalesce(%(valid_from)s, '-infinity'::timestamptz), %(kg_per_kwh)s)",
                    factor,
                )
                changed += 1
            for band in (b for b in config.tariffs if b["tenant_id"] == tenant["tenant_id"]):
                cur.execute(
                    "INSERT INTO analytics.plant_tariff_bands "
                    "(tenant_id, valid_from, band, start_minute, end_minute, price) VALUES (%(tenant_id)s, "
                    "coalesce(%(valid_from)s, '-infinity'::timestamptz), %(band)s, %(start_minute)s, %(end_minute)s, "
                    "%(price)s)",
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
    """All plant metadata (a few rows per tenant, every version), wildcard rows included: the
    transform resolves them. A version since forever (-infinity) reads as valid_from NULL."""
    since = "CASE WHEN valid_from = '-infinity' THEN NULL ELSE valid_from END"
    return Plant(
        read_frame(
            conn,
            # the emission factors are versions of their own (below)
            "SELECT tenant_id, timezone, currency, NULL::float8 FROM analytics.plant_tenants",
            None,
            TENANT_SCHEMA,
        ),
        read_frame(
            conn,
            # the timezone is the tenant's, resolved (with defaults) by the transform
            f"SELECT tenant_id, 'UTC', band, start_minute, end_minute, price, {since} "
            "FROM analytics.plant_tariff_bands",
            None,
            TARIFF_VERSION_SCHEMA,
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
        read_frame(
            conn, f"SELECT tenant_id, {since}, kg_per_kwh FROM analytics.plant_emission_factors", None, FACTOR_SCHEMA
        ),
    )
