"""The dashboard in a real browser: Playwright (the `playwright` wheel, which ships playwright-core
and its driver) drives Debian's Chromium headless against the API process serving the plant that
support/dashboard.py built through the real pipeline.

Every page is opened fresh (a full load, as a user arriving from a link) and must: render without a
console error, make at most three /v1 calls (the KPI page four on a fresh load, with its forecast),
touch no origin but the API's (it works offline), draw the number of points the known data
implies, and link each chart to the Dagster asset and partition that produced it. Each page's
first-render time (navigation start to data drawn) and its call count are recorded in
`<shots>/timings.json`, with a screenshot of the page: `.run/dashboard/` by default,
`docs/dashboard/` when DASHBOARD_SHOTS_DIR says so (`make dashboard-screenshots`).
Speed is recorded, not asserted.

The plant is shared by the module; the resolve test writes (it resolves one anomaly event) and runs last.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Request, expect, sync_playwright

from analytics_platform.defs import build_definitions
from analytics_platform.results.anomalies import AnomalyOptions
from analytics_platform.results.live_detection import judge_committed
from analytics_platform.settings import REPO_ROOT
from analytics_platform.transforms import kpi_catalog
from analytics_platform_tests.support.dashboard import (
    DAGSTER_UI_URL,
    EXPECTED,
    MC01,
    Event,
    Plant,
    at,
    running_api,
)
from analytics_platform_tests.support.dashboard import (
    plant as plant,  # the module-scoped fixture, re-exported for pytest
)
from analytics_platform_tests.support.readings import drain
from analytics_platform_tests.support.stack import domain_topic, produce

pytestmark = pytest.mark.browser

SHOTS = Path(os.environ.get("DASHBOARD_SHOTS_DIR") or REPO_ROOT / ".run" / "dashboard")
DAY_RANGE = "start=2025-08-20T00:00:00Z&end=2025-08-21T00:00:00Z"
MACHINE = f"#/machine/{'/'.join(MC01)}"
WINDOWS = {60: "1 min", 300: "5 min", 3600: "1 hour", 86400: "day"}
MAX_CALLS = 3
TIMINGS: dict[str, dict[str, Any]] = {}


def chromium_path() -> str:
    """Debian's Chromium (the `chromium` package; `make test` installs it). Playwright downloads no
    browser of its own here."""
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(found).exists():
        pytest.fail("the dashboard browser tests need Chromium: apt-get install chromium (or make chromium)")
    return found


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    # --no-sandbox: CI runs as root, where Chromium refuses its sandbox
    browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=["--no-sandbox"])
    yield browser
    browser.close()


@pytest.fixture(scope="module", autouse=True)
def timings_file() -> Iterator[None]:
    yield
    if TIMINGS:
        SHOTS.mkdir(parents=True, exist_ok=True)
        (SHOTS / "timings.json").write_text(json.dumps(TIMINGS, indent=2, sort_keys=True) + "\n")


@dataclass
class Tab:
    """One browser page with what it did: console errors, /v1 calls, requests to other origins."""

    page: Page
    base: str
    errors: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    def open(self, route: str, name: str | None = None) -> dict[str, Any]:
        """Load /ui<route> afresh and wait for the page to say its data is drawn; the /v1 calls and
        the time from navigation start to that moment are returned (and recorded under `name`)."""
        self.page.goto("about:blank")  # a full load even when the address is the current one
        self.calls.clear()
        self.page.goto(f"{self.base}/ui{route}")
        return self.ready(name)

    def ready(self, name: str | None = None) -> dict[str, Any]:
        main = self.page.locator("main[data-ready]")
        main.wait_for(timeout=60_000)
        result = {
            "page": main.get_attribute("data-page"),
            "first_render_ms": float(main.get_attribute("data-since-navigation-ms") or "nan"),
            "render_ms": float(main.get_attribute("data-render-ms") or "nan"),
            "api_calls": len(self.calls),
            "calls": [re.sub(r"\?.*", "", c.split("/v1", 1)[1]) for c in self.calls],
        }
        if name:
            TIMINGS[name] = result
            SHOTS.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
        return result

    def navigate(self, action) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        """Do something that changes the route in the page (a click) and wait for the new render."""
        self.calls.clear()
        before = self.page.locator("main").get_attribute("data-ready")
        action()
        self.page.wait_for_function(
            "before => { const m = document.querySelector('main');"
            " return m.dataset.ready && m.dataset.ready !== before }",
            arg=before,
            timeout=60_000,
        )
        return self.ready()

    def chart(self, chart_id: str) -> dict[str, str | None]:
        figure = self.page.locator(f"figure#{chart_id}")
        return {
            "points": figure.get_attribute("data-points"),
            "events": figure.get_attribute("data-events"),  # anomaly events marked on the chart
            "drawn": figure.get_attribute("data-events-drawn"),  # ... of which drawn in the plot
            "lineage": figure.locator("figcaption a.lineage").get_attribute("href")
            if figure.locator("figcaption a.lineage").count()
            else None,
        }

    def rows(self, table: str) -> list[list[str]]:
        """The cells' text of each body row of the table(s) `table` selects."""
        return self.page.eval_on_selector_all(
            f"{table} tbody tr",
            "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))",
        )


def new_tab(browser: Browser, plant: Plant, key: str | None, base: str | None = None) -> Tab:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US", timezone_id="UTC")
    if key:
        # signed in as a user who typed the key (about:blank, between loads, has no storage)
        context.add_init_script(
            f"if (location.protocol.startsWith('http')) sessionStorage.setItem('ap.key', {json.dumps(key)})"
        )
    page = context.new_page()
    tab = Tab(page, base or plant.api_url)

    def console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            tab.errors.append(f"{message.type}: {message.text}")

    def request(req: Request) -> None:
        if not req.url.startswith(tab.base) and not req.url.startswith("data:"):
            tab.foreign.append(req.url)
        elif "/v1/" in req.url:
            tab.calls.append(req.url)

    page.on("console", console)
    page.on("pageerror", lambda error: tab.errors.append(f"pageerror: {error}"))
    page.on("request", request)
    return tab


@pytest.fixture
def tab(browser: Browser, plant: Plant) -> Iterator[Tab]:
    """A page signed in with the admin key; after the test: no console error, nothing fetched from
    another origin (no CDN: the dashboard works offline)."""
    tab = new_tab(browser, plant, plant.admin_key)
    yield tab
    tab.page.context.close()
    assert tab.errors == []
    assert tab.foreign == []


def reading(machine: tuple[str, str, str], moment: datetime, value: float) -> bytes:
    tenant, factory, machine_id = machine
    return json.dumps(
        {
            "time": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tenant_id": tenant,
            "factory_id": factory,
            "machine_id": machine_id,
            "sensor_id": "s-temp",
            "metric": "temp",
            "value": value,
        }
    ).encode()


def send_live(plant: Plant, readings: dict[tuple[str, str, str], datetime]) -> None:
    """Produce one reading per machine at its time and drain it, as the drain sensor would."""
    messages = [("-".join(m), reading(m, moment, 50.0)) for m, moment in readings.items()]
    produce(plant.settings.kafka_brokers, domain_topic(plant.settings, "sensor"), messages)
    with dg.instance_for_test() as instance:
        drain(build_definitions(plant.settings, secrets_from_env=False), instance, ["sensor"])


@pytest.fixture(scope="module")
def recent(plant: Plant) -> dict[tuple[str, str, str], datetime]:
    """The plant's other machines in the fleet's look-back: mc-02 last sent two hours ago (offline:
    silent for longer than 600 s), t2's mc-99 a minute ago (online)."""
    now = datetime.now(UTC).replace(microsecond=0)
    readings = {("t1", "f1", "mc-02"): now - timedelta(hours=2), ("t2", "f9", "mc-99"): now - timedelta(minutes=1)}
    send_live(plant, readings)
    return readings


def pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def num(value: float) -> str:
    """app.js's num(): en-US, at most 2 decimals, no trailing zeros."""
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def span(event: Event) -> str:
    """app.js's span() of an event: start – end (the end's date only when it differs) (duration)."""
    seconds = round((event.end - event.start).total_seconds())
    assert seconds < 7200, "duration() shows hours from 2 h on: not needed by the plant's events"
    length = f"{seconds} s" if seconds < 120 else f"{round(seconds / 60)} min"
    end = f"{event.end:%H:%M:%S}" if event.end.date() == event.start.date() else f"{event.end:%Y-%m-%d %H:%M:%S}"
    return f"{event.start:%Y-%m-%d %H:%M:%S} – {end} ({length})"


# ------------------------------------------------------------------------------------------------
# Overview
# ------------------------------------------------------------------------------------------------
def test_overview_lists_tenants_factories_machines_with_live_status(
    tab: Tab, recent: dict[tuple[str, str, str], datetime]
) -> None:
    loaded = tab.open("#/", "overview")
    assert loaded["calls"] == ["/fleet"]
    assert tab.page.locator("main h2").all_inner_texts() == ["Tenant t1", "Tenant t2"]
    rows = tab.rows("main table.machines")  # every factory's table, in order
    by_machine = {r[0]: r for r in rows}
    assert sorted(by_machine) == ["mc-01", "mc-02", "mc-99"]
    assert by_machine["mc-01"][1] == "● online"
    assert by_machine["mc-02"][1] == "○ offline"
    assert by_machine["mc-99"][1] == "● online"
    # open anomalies, counted in anomaly events with their highest severity: mc-01's two (EXPECTED.anomaly_events),
    # mc-02's and mc-99's one each (EXPECTED.spec_events), every one severity 3; the fleet's total is 4
    assert by_machine["mc-01"][7] == "2 sev 3 critical"
    assert by_machine["mc-02"][7] == "1 sev 3 critical"
    assert by_machine["mc-99"][7] == "1 sev 3 critical"
    assert tab.page.locator("#stat-online .value").inner_text() == "2 / 3"
    assert tab.page.locator("#stat-anomalies .value").inner_text() == "4"
    assert tab.page.locator("#stat-checks .value").inner_text() == "0"
    # factories are grouped under their tenant, with links to their KPI and quality pages
    tables = tab.page.locator("main table.machines")
    assert [(t.get_attribute("data-tenant"), t.get_attribute("data-factory")) for t in tables.all()] == [
        ("t1", "f1"),
        ("t2", "f9"),
    ]
    assert tab.page.get_by_role("link", name="KPIs of f1").get_attribute("href") == "#/kpis?tenant=t1&factory=f1"
    # lineage: each machine links to the raw partition of its newest reading
    link = tab.page.locator("table.machines tr", has_text="mc-02").get_by_role("link", name="raw readings ↗")
    assert link.get_attribute("href") == (
        f"{DAGSTER_UI_URL}/assets/raw_sensor_readings?view=partitions&partition="
        f"{recent[('t1', 'f1', 'mc-02')]:%Y-%m-%d-%H}:00"
    )


def test_overview_refreshes_itself_and_shows_a_new_machine(browser: Browser, plant: Plant, tmp_path: Path) -> None:
    """The overview re-reads /v1/fleet every UI_REFRESH_S without a reload: a machine that starts
    sending while the page is open appears (real message → drain → raw table → API → page)."""
    with running_api(plant.database, plant.settings, tmp_path / "api.log", {"UI_REFRESH_S": "1"}) as url:
        tab = new_tab(browser, plant, plant.admin_key, base=url)
        try:
            tab.page.goto(f"{url}/ui#/")
            tab.ready()
            assert "mc-07" not in tab.page.locator("main").inner_text()
            first = tab.page.locator("#updated").get_attribute("data-as-of")
            send_live(plant, {("t1", "f1", "mc-07"): datetime.now(UTC).replace(microsecond=0)})
            row = tab.page.locator("table.machines tr", has_text="mc-07")
            row.wait_for(timeout=60_000)  # the next refresh, a second or so later
            assert row.locator("td").nth(1).inner_text() == "● online"
            assert tab.page.locator("#updated").get_attribute("data-as-of") != first
            assert tab.page.locator("main[data-ready]").count() == 1  # the same page load throughout
            assert tab.errors == [] and tab.foreign == []
        finally:
            tab.page.context.close()


def test_a_tenant_key_sees_its_tenant_only_and_no_platform_data(browser: Browser, plant: Plant) -> None:
    tab = new_tab(browser, plant, plant.tenant_key)
    try:
        tab.open("#/")
        assert tab.page.locator("main h2").all_inner_texts() == ["Tenant t1"]
        assert tab.page.locator("#stat-checks .value").inner_text() == "admin key only"
        loaded = tab.open(f"#/quality?tenant=t1&factory=f1&{DAY_RANGE}")
        # rejected messages are not asked for (they would be a 403): the page says why instead
        assert loaded["calls"] == ["/quality", "/alerts"]
        assert tab.page.locator("#rejects").inner_text() == (
            "Rejected messages may belong to any tenant: they need an admin API key."
        )
        assert tab.errors == [] and tab.foreign == []
    finally:
        tab.page.context.close()


def test_a_refused_key_returns_to_sign_in_with_the_reason(browser: Browser, plant: Plant) -> None:
    tab = new_tab(browser, plant, "apk_000000000000_not-a-real-key")
    try:
        tab.page.goto(f"{plant.api_url}/ui#/")
        tab.page.locator("main[data-page=login]").wait_for()
        assert tab.page.locator("#banner").inner_text() == "The API refused the key: invalid API key"
        # the browser reports the 401 itself; nothing else may go wrong
        assert [e for e in tab.errors if "status of 401" not in e] == []
        # signing in with a good key from the form
        tab.page.get_by_label("API key").fill(plant.admin_key)
        tab.navigate(lambda: tab.page.get_by_role("button", name="Sign in").click())
        assert tab.page.locator("main").get_attribute("data-page") == "overview"
    finally:
        tab.page.context.close()


# ------------------------------------------------------------------------------------------------
# Machine view
# ------------------------------------------------------------------------------------------------
def test_machine_chart_has_one_point_per_bucket_for_every_window(tab: Tab) -> None:
    loaded = tab.open(f"{MACHINE}?metric=temp&sensor=s-temp&window=60&{DAY_RANGE}", "machine")
    assert sorted(loaded["calls"]) == ["/agg", "/anomaly-events", "/fleet"]
    chart = tab.chart("agg-chart")
    assert chart["points"] == str(EXPECTED.agg_buckets[MC01][60])
    # every anomaly event of mc-01 is on s-temp/temp: each is marked on the chart and drawn in it
    assert chart["events"] == chart["drawn"] == str(len(EXPECTED.anomaly_events)) == "2"
    assert (
        chart["lineage"]
        == f"{DAGSTER_UI_URL}/assets/sensor_window_aggregates?view=partitions&partition=2025-08-20-03:00"
    )
    for window, label in WINDOWS.items():
        switched = tab.navigate(lambda label=label: tab.page.get_by_role("button", name=label, exact=True).click())
        # the machine's metrics are known already
        assert sorted(switched["calls"]) == ["/agg", "/anomaly-events"]
        assert tab.chart("agg-chart")["points"] == str(EXPECTED.agg_buckets[MC01][window])
        assert tab.chart("agg-chart")["events"] == str(len(EXPECTED.anomaly_events))
        assert tab.page.get_by_role("button", name=label, exact=True).get_attribute("aria-pressed") == "true"
    assert len(tab.rows("#anomaly-events")) == len(EXPECTED.anomaly_events)


def test_machine_chart_draws_the_series_trend_on_demand(tab: Tab, plant: Plant) -> None:
    """trends.js: the page loads with its three calls; "Show trend" makes one more (/v1/trends) and
    draws the newest judgement's Theil–Sen line on the chart, its verdict written out below."""
    plant.database.query(
        """INSERT INTO analytics.analytics_trend (window_end, window_start, window_hours, tenant_id, factory_id,
               machine_id, source, sensor_id, name, unit, n, slope_per_hour, intercept, mk_s, mk_var_s, mk_z, p_value,
               confidence, direction, first_time, last_time)
           VALUES ('2025-08-21T00:00Z', '2025-08-20T00:00Z', 24, 't1', 'f1', 'mc-01', 'metric', 's-temp', 'temp',
                   NULL, 4, 0.125, 60, 6, 8.667, 1.699, 0.0894, 0.9106, 'stable', '2025-08-20T01:00Z',
                   '2025-08-20T04:00Z')
           RETURNING 1"""
    )
    try:
        loaded = tab.open(f"{MACHINE}?metric=temp&sensor=s-temp&window=300&{DAY_RANGE}")
        assert sorted(loaded["calls"]) == ["/agg", "/anomaly-events", "/fleet"]  # not fetched until asked
        tab.calls.clear()
        tab.page.get_by_role("button", name="Show trend").click()
        tab.page.locator("figure#agg-chart[data-trends='1']").wait_for(timeout=60_000)
        assert tab.page.locator("#trend-summary").inner_text().strip() == (
            "24 h: → no significant trend, slope +0.125/h, Mann–Kendall p = 0.0894 (4 points)"
        )
        assert [re.sub(r"\?.*", "", c.split("/v1", 1)[1]) for c in tab.calls] == ["/trends"]
    finally:
        plant.database.query("DELETE FROM analytics.analytics_trend RETURNING 1")


def test_machine_range_picker_narrows_the_chart(tab: Tab) -> None:
    tab.open(f"{MACHINE}?metric=temp&window=300&{DAY_RANGE}")
    tab.page.get_by_label("From (UTC)").fill("2025-08-20T02:00")
    tab.page.get_by_label("To (UTC)").fill("2025-08-20T03:00")
    tab.navigate(lambda: tab.page.get_by_role("button", name="Apply").click())
    assert tab.chart("agg-chart")["points"] == "12"  # 02:00 .. 02:55, five-minute buckets
    # both events (03:12, 03:41) are after the range: none marked, none listed
    assert (tab.chart("agg-chart")["events"], tab.chart("agg-chart")["drawn"]) == ("0", "0")
    assert tab.rows("#anomaly-events") == [["No anomaly events in this range."]]


def test_anomaly_events_are_listed_with_their_severity(tab: Tab, plant: Plant) -> None:
    tab.open(f"{MACHINE}?metric=temp&window=60&{DAY_RANGE}")
    ids = [
        e["event_id"]
        for e in plant.get(
            "/v1/anomaly-events", tenant_id="t1", machine_id="mc-01", start=at(0).isoformat(), end=at(24).isoformat()
        ).json()["items"]
    ]
    # newest first; each row: span, machine, sensor / metric, type / methods, peak severity, anomalies, status,
    # peak observed / expected, action, lineage
    expected = [
        [
            span(e),
            MC01[2],
            "s-temp / temp",
            f"temperature / {', '.join(e.methods)}",
            f"{e.label} ({e.severity})",
            str(e.anomalies),
            "open",
            f"{num(e.observed)} / {num(e.expected)}",
            f"Resolve event #{event_id}",
            "Dagster ↗",
        ]
        for e, event_id in zip(sorted(EXPECTED.anomaly_events, key=lambda e: e.start, reverse=True), ids, strict=True)
    ]
    assert tab.rows("#anomaly-events") == expected
    assert [
        int(i)
        for i in tab.page.eval_on_selector_all("#anomaly-events tbody tr", "rows => rows.map(r => r.dataset.eventId)")
    ] == ids
    link = tab.page.locator("#anomaly-events tbody tr").first.get_by_role("link", name="Dagster ↗")
    assert link.get_attribute("href") == (
        f"{DAGSTER_UI_URL}/assets/reading_anomalies?view=partitions&partition=2025-08-20-03:00"
    )
    # the peak severity's badge, and the status badge ('open' is shown in the critical colour): both events peak
    # at severity 3, so the table holds critical badges only; the warning colour is the legend's badge above it
    colours = "els => [...new Set(els.map(e => e.className + ' ' + getComputedStyle(e).backgroundColor))].sort()"
    assert tab.page.eval_on_selector_all(
        "#anomaly-events .badge.critical, #anomaly-events .badge.warning", colours
    ) == ["badge critical rgb(179, 22, 29)"]
    assert tab.page.eval_on_selector_all(".legend-sev .badge.critical, .legend-sev .badge.warning", colours) == [
        "badge critical rgb(179, 22, 29)",
        "badge warning rgb(160, 74, 0)",
    ]


# ------------------------------------------------------------------------------------------------
# KPIs
# ------------------------------------------------------------------------------------------------
def test_kpi_page_cards_trend_and_baseline(tab: Tab) -> None:
    loaded = tab.open(f"#/kpis?tenant=t1&factory=f1&period=day&{DAY_RANGE}", "kpis")
    # labels, units and formats come from the KPI catalogue, fetched once per page load
    # ... and the factory's latest forecast (issue 25), in the same parallel batch
    assert sorted(loaded["calls"]) == ["/baseline-deviation", "/forecasts", "/kpi", "/kpi/catalog"]
    card = tab.page.locator("article[data-machine='mc-01']")
    day = EXPECTED.kpi_day
    shown = {
        k: card.locator(f"[data-kpi='{k}']").inner_text() for k in ("oee", "availability", "performance", "quality")
    }
    assert shown == {k: pct(day[k]) for k in ("oee", "availability", "performance", "quality")}
    assert card.locator("[data-kpi='peak_demand_kw']").inner_text() == "80 kW"
    assert card.locator("[data-kpi='load_factor']").inner_text() == pct(day["load_factor"])
    assert card.locator("[data-kpi='energy_kwh']").inner_text() == "20 kWh"
    # factory totals add only what adds up
    factory = tab.page.locator("#factory-card")
    assert factory.locator("[data-kpi='energy_kwh']").inner_text() == "20 kWh"
    assert factory.locator("[data-kpi='production_count']").inner_text().startswith("972")
    trend = tab.chart("kpi-chart")
    assert trend["points"] == "1"  # one day, one machine with an OEE
    assert trend["lineage"] == f"{DAGSTER_UI_URL}/assets/daily_machine_kpis?view=partitions&partition=2025-08-20"
    # no baseline was trained on this data (it needs weeks of days): the chart says so, not a blank
    assert tab.chart("baseline-chart")["points"] == "0"
    assert tab.page.locator("figure#baseline-chart .empty").inner_text() == "No data in this range."
    assert tab.page.locator("figure#baseline-chart a.lineage").get_attribute("href") == (
        f"{DAGSTER_UI_URL}/assets/energy_baseline_models"
    )


def forecast_row(issued: datetime, day: int, tenant: str, machine: str, kpi: str, band: tuple) -> tuple:
    start = issued + timedelta(days=day - 1)
    value, lower, upper = band
    unit = "kW" if kpi == "peak_demand_kw" else "kWh"
    return (issued, "day", start, start + timedelta(days=1), day, tenant, "f1", machine, kpi, value, lower, upper, unit)


def test_kpi_page_shows_tomorrows_peak_demand_forecast_with_its_band(tab: Tab, plant: Plant) -> None:
    """An issue of today (UTC) for t1/f1, and one of t2 under the same names that must not show:
    tomorrow is its day 2; the chart has the actual day beside the 7 forecast days."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    bands = {
        ("t1", "*", "peak_demand_kw"): (123.5, 110.0, 140.25),
        ("t1", "*", "energy_kwh"): (2000.0, 1900.0, 2100.0),
        ("t1", "mc-01", "peak_demand_kw"): (80.0, 75.5, 86.0),
        ("t1", "mc-01", "energy_kwh"): (20.0, 18.0, 22.0),
        ("t2", "*", "peak_demand_kw"): (999.0, 998.0, 1000.0),
    }
    rows = [forecast_row(today, d, *key, band) for key, band in bands.items() for d in range(1, 8)]
    with plant.database.connect() as conn:
        conn.cursor().executemany(
            "INSERT INTO analytics.analytics_forecast (issued_at, period, target_start, target_end, horizon_day, "
            "tenant_id, factory_id, machine_id, kpi, value, lower, upper, unit, level, model) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 0.9, 'test')",
            rows,
        )
    try:
        loaded = tab.open(f"#/kpis?tenant=t1&factory=f1&period=day&{DAY_RANGE}", "kpis-forecast")
        assert "/forecasts" in loaded["calls"]
        tomorrow = (today + timedelta(days=1)).strftime("%Y-%m-%d")
        peak = tab.page.locator("#forecast-peak")
        assert [peak.get_attribute(f"data-{k}") for k in ("value", "lower", "upper", "day")] == [
            "123.5",
            "110",
            "140.25",
            tomorrow,
        ]
        said = f"Peak demand {tomorrow} (UTC day, factory f1): 123.5 kW, 90 % band 110 – 140.25 kW."
        assert peak.inner_text() == said
        assert tab.rows("#forecast-tomorrow") == [
            ["Factory f1", "123.5", "110 – 140.25", "2,000", "1,900 – 2,100"],
            ["Machine mc-01", "80", "75.5 – 86", "20", "18 – 22"],
        ]
        chart = tab.chart("forecast-chart")
        assert chart["points"] == "8"  # the range's one actual day and the 7 forecast days
        partition = (today - timedelta(days=1)).strftime("%Y-%m-%d")
        assert chart["lineage"] == f"{DAGSTER_UI_URL}/assets/energy_forecasts?view=partitions&partition={partition}"
        assert tab.errors == []
    finally:
        with plant.database.connect() as conn:
            conn.execute("DELETE FROM analytics.analytics_forecast WHERE model = 'test'")


def test_kpi_trend_picker_and_shift_period(tab: Tab, plant: Plant) -> None:
    tab.open(f"#/kpis?tenant=t1&factory=f1&period=day&{DAY_RANGE}")
    options = tab.page.locator("#trend-kpi option")
    assert options.evaluate_all("os => os.map(o => [o.value, o.textContent])") == [
        [kpi.name, kpi.label] for kpi in kpi_catalog.kpis(plant.settings.kpi_drivers)
    ]
    tab.navigate(lambda: tab.page.get_by_label("Trend of").select_option("energy_cost"))
    assert tab.page.locator("figure#kpi-chart figcaption strong").inner_text() == "Energy cost per day"
    assert tab.chart("kpi-chart")["points"] == "1"
    shift = tab.navigate(lambda: tab.page.get_by_role("button", name="shift", exact=True).click())
    assert sorted(shift["calls"]) == ["/baseline-deviation", "/forecasts", "/kpi"]  # the catalogue is kept
    assert tab.page.get_by_role("button", name="shift", exact=True).get_attribute("aria-pressed") == "true"


# ------------------------------------------------------------------------------------------------
# Quality
# ------------------------------------------------------------------------------------------------
def test_quality_page_lab_sweep_and_alert_log(tab: Tab) -> None:
    loaded = tab.open(f"#/quality?tenant=t1&factory=f1&{DAY_RANGE}", "quality")
    assert sorted(loaded["calls"]) == ["/alerts", "/quality", "/rejects"]
    lab = {r[0]: r for r in tab.rows("#lab")}
    assert {a: (int(r[1]), int(r[2]), int(r[3])) for a, r in lab.items()} == EXPECTED.lab
    assert lab["Moisture"][4] == "50.0 %" and lab["Moisture"][5:8] == ["11.5", "12.5", "13.5"]
    assert lab["pH"][4] == "100.0 %"
    assert lab["Ash"][4] == "no limit"
    sweep = tab.rows("#sweep")
    assert sweep == [["mc-01", "2", "1", "1", "50.0 %"]]
    assert tab.chart("quality-chart")["points"] == "1"  # the one hour with verdicts, 03:00
    assert tab.chart("quality-chart")["lineage"] == (
        f"{DAGSTER_UI_URL}/assets/sweep_batch_quality?view=partitions&partition=2025-08-20-03:00"
    )
    log = tab.rows("#alert-log")
    assert len(log) == sum(EXPECTED.alert_log.values())
    per_rule: dict[str, int] = {}
    for row in log:
        per_rule[row[1]] = per_rule.get(row[1], 0) + 1
        assert row[6] == "unconfigured"
    assert per_rule == EXPECTED.alert_log


def test_quality_page_charts_a_lab_analyte_per_hour_against_its_limits(tab: Tab) -> None:
    """Moisture at lab-f1 per hour: the 03:00 bucket of [12.0, 14.0] beside t1's limits 11.5..13.5. The
    series is fetched after the page's own three calls (labseries.js), when the URL names an analyte."""
    loaded = tab.open(f"#/quality?tenant=t1&factory=f1&{DAY_RANGE}&analyte=Moisture")
    assert sorted(c for c in loaded["calls"] if c != "/lab/agg") == ["/alerts", "/quality", "/rejects"]
    chart = tab.page.locator("figure#lab-series-chart[data-points='1']")
    chart.wait_for(timeout=60_000)
    assert [re.sub(r"\?.*", "", c.split("/v1", 1)[1]) for c in tab.calls].count("/lab/agg") == 1
    assert chart.get_attribute("data-analyte") == "Moisture" and chart.get_attribute("data-station") == "lab-f1"
    assert tab.chart("lab-series-chart")["lineage"] == (
        f"{DAGSTER_UI_URL}/assets/lab_window_aggregates?view=partitions&partition=2025-08-20-03:00"
    )
    assert tab.page.locator("#lab-series-analyte").input_value() == "Moisture"
    # another analyte from the picker: pH's one result of the hour
    tab.page.locator("#lab-series-analyte").select_option("pH")
    tab.page.locator("figure#lab-series-chart[data-analyte='pH'][data-points='1']").wait_for(timeout=60_000)
    # the choice is in the address (for a reload or a link), set without reloading the page's data
    assert "analyte=pH" in tab.page.url and "lab_window=3600" in tab.page.url
    assert tab.page.locator("main[data-ready]").count() == 1


def test_quality_page_rejects_per_topic_and_reason(tab: Tab, plant: Plant) -> None:
    now = datetime.now(UTC)
    start, end = (
        (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:00Z"),
        (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:00Z"),
    )
    tab.open(f"#/quality?tenant=t1&factory=f1&start={start}&end={end}", "quality-rejects")
    rows = tab.rows("#rejects")
    got = {(r[0], r[1]): int(r[2]) for r in rows}
    assert got == {(plant.topic(domain), reason): n for (domain, reason), n in EXPECTED.rejects.items()}
    assert [int(r[2]) for r in rows] == sorted((int(r[2]) for r in rows), reverse=True)
    assert tab.rows("#lab") == [["None."]]


def test_every_chart_links_to_the_dagster_asset_that_produced_it(tab: Tab) -> None:
    pages = {
        f"{MACHINE}?metric=temp&window=300&{DAY_RANGE}": {"sensor_window_aggregates", "reading_anomalies"},
        f"#/kpis?tenant=t1&factory=f1&period=day&{DAY_RANGE}": {"daily_machine_kpis", "energy_baseline_models"},
        f"#/quality?tenant=t1&factory=f1&{DAY_RANGE}": {"lab_result_quality", "sweep_batch_quality", "kafka_landing"},
    }
    for route, assets in pages.items():
        tab.open(route)
        for figure in tab.page.locator("figure.chart").all():
            assert figure.locator("figcaption a.lineage").count() == 1, figure.get_attribute("id")
        linked = set(tab.page.eval_on_selector_all("a.lineage", "links => links.map(a => a.dataset.asset)"))
        assert linked == assets
        for href in tab.page.eval_on_selector_all("a.lineage", "links => links.map(a => a.href)"):
            assert href.startswith(f"{DAGSTER_UI_URL}/assets/")


# ------------------------------------------------------------------------------------------------
# Accessibility
# ------------------------------------------------------------------------------------------------
CONTRAST = """() => {
  const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const channel = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
  const lum = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  const background = el => { for (; el; el = el.parentElement) { const c = rgb(getComputedStyle(el).backgroundColor);
                                if (c.length === 3 || c[3] > 0) return c.slice(0, 3); } return [255, 255, 255]; };
  const bad = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!node.textContent.trim() || !el.offsetParent || el.closest('.uplot')) continue;
    const style = getComputedStyle(el);
    const a = lum(rgb(style.color)), b = lum(background(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const large = parseFloat(style.fontSize) >= 24 || (parseFloat(style.fontSize) >= 18.66 && +style.fontWeight >= 700);
    if (ratio < (large ? 3 : 4.5)) bad.push(`${node.textContent.trim().slice(0, 30)}: ${ratio.toFixed(2)}`);
  }
  return bad;
}"""


def test_text_contrast_meets_wcag_aa_on_every_page(tab: Tab) -> None:
    for route in (
        "#/",
        f"{MACHINE}?metric=temp&{DAY_RANGE}",
        f"#/kpis?tenant=t1&factory=f1&{DAY_RANGE}",
        f"#/quality?tenant=t1&factory=f1&{DAY_RANGE}",
    ):
        tab.open(route)
        assert tab.page.evaluate(CONTRAST) == [], route


def test_keyboard_only_navigation_with_visible_focus(tab: Tab) -> None:
    tab.open("#/")
    keyboard = tab.page.keyboard
    keyboard.press("Tab")
    assert tab.page.evaluate("document.activeElement.textContent") == "Skip to content"
    focused = []
    for _ in range(4):
        keyboard.press("Tab")
        focused.append(tab.page.evaluate("document.activeElement.textContent"))
    assert focused == ["Plant analytics", "Overview", "KPIs", "Quality"]
    outline = tab.page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"  # the focus ring is visible
    keyboard.press("Shift+Tab")
    tab.navigate(lambda: keyboard.press("Enter"))
    assert tab.page.locator("main").get_attribute("data-page") == "kpis"
    # a machine, its window buttons and the range form are reachable and operable by keyboard
    tab.open(f"{MACHINE}?metric=temp&window=3600&{DAY_RANGE}")
    tab.page.get_by_role("button", name="5 min", exact=True).focus()
    tab.navigate(lambda: keyboard.press("Enter"))
    assert tab.chart("agg-chart")["points"] == str(EXPECTED.agg_buckets[MC01][300])


# ------------------------------------------------------------------------------------------------
# Resolve (writes: last in the module)
# ------------------------------------------------------------------------------------------------
def test_resolve_round_trips_through_the_api_by_keyboard(tab: Tab, plant: Plant) -> None:
    tab.open(f"{MACHINE}?metric=temp&window=60&{DAY_RANGE}")
    first = tab.page.locator("#anomaly-events tbody tr").first
    event_id = int(first.get_attribute("data-event-id"))
    button = first.get_by_role("button", name=f"Resolve event #{event_id}")
    button.focus()
    tab.page.keyboard.press("Enter")
    note = "Spike from a loose thermocouple; re-seated at 10:20"
    assert tab.page.evaluate("document.activeElement.id") == f"note-{event_id}"
    tab.page.keyboard.type(note)
    tab.page.keyboard.press("Tab")
    with tab.page.expect_response(re.compile(rf"/v1/anomaly-events/{event_id}/resolve\?")) as answer:
        tab.page.keyboard.press("Enter")
    assert answer.value.status == 200
    # the event is looked for in the page's range
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(answer.value.url).query)
    assert query == {"start": ["2025-08-20T00:00:00.000Z"], "end": ["2025-08-21T00:00:00.000Z"]}
    # the row changes once the page has read the answer's body: wait for it (expect polls the DOM). The first
    # row is the newest event, 03:41's (one 'spec' row)
    event = max(EXPECTED.anomaly_events, key=lambda e: e.start)
    expect(first.locator("td").nth(6)).to_have_text("resolved")
    assert first.locator("td").nth(5).inner_text() == str(event.anomalies)
    assert first.locator("td").nth(8).inner_text() == f"Resolved (1 anomaly): {note}"
    assert first.get_by_role("button").count() == 0
    stored = plant.get(f"/v1/anomaly-events/{event_id}", start=at(0).isoformat(), end=at(24).isoformat()).json()
    assert (stored["status"], stored["anomalies"], stored["open_anomalies"]) == ("resolved", 1, 0)
    ((row_status, row_note, row_by),) = [(r["status"], r["resolution_note"], r["resolved_by"]) for r in stored["rows"]]
    assert (row_status, row_note) == ("resolved", note)
    assert re.fullmatch(r"dashboard-admin \(key \w+\)", row_by)
    assert datetime.fromisoformat(stored["start_time"]) == event.start
    # a fresh load shows it resolved, from the API, still marked on the chart (hollow)
    reloaded = tab.open(f"{MACHINE}?metric=temp&window=60&{DAY_RANGE}", "machine-resolved")
    assert sorted(reloaded["calls"]) == ["/agg", "/anomaly-events", "/fleet"]
    row = tab.page.locator(f"#anomaly-events tbody tr[data-event-id='{event_id}']")
    assert row.locator("td").nth(6).inner_text() == "resolved"
    assert row.locator("td").nth(8).inner_text() == ""
    assert row.get_by_role("button").count() == 0
    assert tab.page.locator("#anomaly-events tbody tr").count() == len(EXPECTED.anomaly_events)
    chart = tab.chart("agg-chart")
    assert chart["events"] == chart["drawn"] == "2"
    # and the overview counts one open anomaly event less: mc-01's 03:12 one is left (severity 3), 4 - 1 in all
    tab.open("#/")
    mc01 = tab.page.locator("table.machines tr", has_text="mc-01")
    assert mc01.locator("td").nth(7).inner_text() == "1 sev 3 critical"
    assert tab.page.locator("#stat-anomalies .value").inner_text() == "3"


def test_a_live_machine_chart_draws_new_provisional_buckets_without_a_reload(
    browser: Browser, plant: Plant, tmp_path: Path
) -> None:
    """A machine chart whose range ends now re-reads /v1/agg and /v1/anomaly-events every UI_LIVE_S: a
    reading that arrives while the page is open shows up as a new provisional (not yet materialised,
    drawn dashed) bucket of the same page load (real message → drain → raw table → /v1/agg's
    provisional path → page), and, being below t1's temp spec (63..67, config/spec_limits.yaml), as
    an anomaly event marked on the chart once the live judge (the `live_anomalies` sensor's pass) ran."""
    machine = ("t1", "f1", "mc-08")
    now = datetime.now(UTC).replace(microsecond=0)
    send_live(plant, {machine: now - timedelta(minutes=2)})
    # the live judge's first pass starts its position now: what came before is the hour's business
    with plant.database.connect(plant.database.pipeline_url) as conn:
        judge_committed(conn, AnomalyOptions())
    with running_api(plant.database, plant.settings, tmp_path / "api.log", {"UI_LIVE_S": "1"}) as url:
        tab = new_tab(browser, plant, plant.admin_key, base=url)
        try:
            start = (now - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
            tab.page.goto(f"{url}/ui#/machine/{'/'.join(machine)}?metric=temp&sensor=s-temp&window=60&start={start}")
            tab.ready()
            figure = tab.page.locator("figure#agg-chart")
            # one bucket so far, not materialised by any run: provisional; no anomaly judged
            assert (figure.get_attribute("data-points"), figure.get_attribute("data-provisional")) == ("1", "1")
            assert figure.get_attribute("data-events") == "0"
            send_live(plant, {machine: datetime.now(UTC).replace(microsecond=0)})
            # the next refresh (about a second later) draws the second bucket, provisional too
            live = tab.page.locator('figure#agg-chart[data-points="2"][data-provisional="2"][data-refreshed-at]')
            live.wait_for(timeout=60_000)
            assert tab.page.locator("main[data-ready]").count() == 1  # the same page load throughout
            assert "2 provisional buckets (not yet final) dashed" in live.get_attribute("aria-label")
            assert live.get_attribute("data-events") == "0"
            # the live judge flags the new reading (50 < 63: spec, severity 3); the chart marks it
            with plant.database.connect(plant.database.pipeline_url) as conn:
                assert judge_committed(conn, AnomalyOptions()).flagged == 1
            marked = tab.page.locator('figure#agg-chart[data-points="2"][data-events="1"][data-events-drawn="1"]')
            marked.wait_for(timeout=60_000)
            assert tab.page.locator("main[data-ready]").count() == 1
            assert tab.errors == [] and tab.foreign == []
        finally:
            tab.page.context.close()
