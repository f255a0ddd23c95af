"""Calendar periods in a tenant's local time (local days, ISO weeks, months, years) and the ISO 50001 energy
performance arithmetic (expected energy, deviation, CUSUM) over them.

Stored KPIs stop at the day (a UTC day); an energy manager reads months in the plant's own
calendar, and the month in Berlin that holds the spring DST change is 743 hours long, not 744.
So a calendar period is found from local dates and turned into UTC instants here, and the stored
hours whose start lies in it are combined (kpi_catalog.combine). Pure functions: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

# "local_day": the plant's own day, local midnight to local midnight (23 or 25 hours on the days its clocks
# change); the stored days are UTC days
CalendarKind = Literal["local_day", "week", "month", "year"]
CALENDAR_KINDS: tuple[CalendarKind, ...] = ("local_day", "week", "month", "year")


@dataclass(frozen=True)
class CalendarPeriod:
    """One calendar period: its UTC bounds and its local name (2026-W10, 2026-03, 2026)."""

    start: datetime
    end: datetime
    label: str


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The instant a local day begins. Where midnight itself is skipped by a DST change, the
    local time is read with the offset before it, which lands on the change: the day's start."""
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def _first_day(kind: CalendarKind, day: date) -> date:
    if kind == "local_day":
        return day
    if kind == "week":
        return day - timedelta(days=day.weekday())  # ISO weeks start on Monday
    if kind == "month":
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def _next_first_day(kind: CalendarKind, first: date) -> date:
    if kind == "local_day":
        return first + timedelta(days=1)
    if kind == "week":
        return first + timedelta(days=7)
    if kind == "month":
        return date(first.year + (first.month == 12), first.month % 12 + 1, 1)
    return date(first.year + 1, 1, 1)


def _label(kind: CalendarKind, first: date) -> str:
    if kind == "local_day":
        return first.isoformat()
    if kind == "week":
        year, week, _ = first.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{first:%Y-%m}" if kind == "month" else f"{first:%Y}"


def calendar_periods(kind: CalendarKind, start: datetime, end: datetime, timezone: str) -> list[CalendarPeriod]:
    """The whole periods of `kind` whose first local day lies in [local date of start, local date
    of end), in the tenant's `timezone`. Reading the bounds as local dates makes both
    2026-03-01T00:00Z and local midnight ask for March, whatever side of UTC the plant is on."""
    zone = ZoneInfo(timezone)
    first_day, last_day = start.astimezone(zone).date(), end.astimezone(zone).date()
    first = _first_day(kind, first_day)
    if first < first_day:
        first = _next_first_day(kind, first)
    out = []
    while first < last_day:
        following = _next_first_day(kind, first)
        out.append(CalendarPeriod(local_midnight(first, zone), local_midnight(following, zone), _label(kind, first)))
        first = following
    return out


def local_days(start: datetime, end: datetime, timezone: str) -> list[CalendarPeriod]:
    """The local days that tile [start, end) (the first and last cut to it): the steps of a
    report's CUSUM."""
    zone = ZoneInfo(timezone)
    day = start.astimezone(zone).date()
    out = []
    while True:
        day_start, day_end = local_midnight(day, zone), local_midnight(day + timedelta(days=1), zone)
        if day_start >= end:
            return out
        if day_end > start:
            out.append(CalendarPeriod(max(day_start, start), min(day_end, end), day.isoformat()))
        day += timedelta(days=1)


@dataclass(frozen=True)
class HourEnergy:
    """One stored machine-hour for the report: its actual kWh and the active baseline's expected
    kWh (None when the hour cannot be compared: no energy, a missing driver, or an hour the
    baseline excludes, with fault or maintenance time)."""

    start: datetime
    actual: float | None
    expected: float | None


@dataclass(frozen=True)
class Step:
    """Actual and expected energy over one step of a report (hours compared only), its deviation
    and the cumulative sum of deviations from the report's start up to the step's end."""

    start: datetime
    end: datetime
    label: str
    actual_kwh: float
    expected_kwh: float
    deviation_kwh: float
    deviation_pct: float | None
    cusum_kwh: float
    hours: int


def percent(deviation: float, expected: float) -> float | None:
    """Deviation as a percentage of the expected energy; None when nothing was expected."""
    return deviation / expected * 100.0 if expected > 0 else None


def cusum(hours: Iterable[HourEnergy], steps: Iterable[CalendarPeriod]) -> list[Step]:
    """Per step, the comparable hours' actual and expected kWh, their deviation (actual -
    expected: positive is energy used above the baseline) and the running CUSUM. A step with no
    comparable hour keeps the CUSUM flat (deviation 0, hours 0)."""
    compared = sorted((h for h in hours if h.actual is not None and h.expected is not None), key=lambda h: h.start)
    out, running, at = [], 0.0, 0
    for step in steps:
        inside = []
        while at < len(compared) and compared[at].start < step.end:
            if compared[at].start >= step.start:
                inside.append(compared[at])
            at += 1
        actual = sum(h.actual for h in inside)
        expected = sum(h.expected for h in inside)
        deviation = actual - expected
        running += deviation
        out.append(
            Step(
                step.start,
                step.end,
                step.label,
                actual,
                expected,
                deviation,
                percent(deviation, expected),
                running,
                len(inside),
            )
        )
    return out
