// The KPI page's forecast (issue 25): tomorrow's peak demand and energy per machine and for the
// factory with their prediction band, and the factory's daily peak demand, actual days beside the
// forecast band. From GET /v1/forecasts (the latest issue, day rows), which app.js reads with the
// page's other calls; it then calls window.forecast.section() with its DOM helpers. A factory's peak
// demand is the sum of its machines' peaks (an upper bound of its coincident peak), for the actual
// days as for the forecast, so the two are comparable.

const DAY_MS = 86400000;
const FACTORY = "*";

/** UTC midnight starting the day after `now` (ms). */
function tomorrowStart(now) {
  const d = new Date(now);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1);
}

/** The forecast day to show: the day starting at the next UTC midnight ("tomorrow"), else
 * (an issue older than its horizon) its first day; the page says which date it is. */
function targetDay(starts, now) {
  const tomorrow = tomorrowStart(now);
  return starts.find((s) => Date.parse(s) === tomorrow) ?? starts[0];
}

/** Per day start (ms): the sum of the machines' daily peak demand, from the KPI page's day rows. */
function actualPeaks(kpiItems) {
  const sums = new Map();
  for (const row of kpiItems) {
    if (row.kpi !== "peak_demand_kw" || row.value === null || row.machine_id === null) continue;
    if (Date.parse(row.period_end) - Date.parse(row.period_start) !== DAY_MS) continue;
    const at = Date.parse(row.period_start);
    sums.set(at, (sums.get(at) || 0) + row.value);
  }
  return sums;
}

function peakChart(ui, days, kpiItems, lineage) {
  const factory = days.filter((d) => d.machine_id === FACTORY && d.kpi === "peak_demand_kw");
  const forecast = new Map(factory.map((d) => [Date.parse(d.target_start), d]));
  const actual = actualPeaks(kpiItems);
  const xs = [...new Set([...actual.keys(), ...forecast.keys()])].sort((a, b) => a - b);
  const pick = (field) => xs.map((x) => forecast.get(x)?.[field] ?? null);
  const data = [xs.map((x) => x / 1000), xs.map((x) => actual.get(x) ?? null), pick("value"), pick("upper"), pick("lower")];
  const level = factory.length ? Math.round(factory[0].level * 100) : 90;
  return ui.chartFigure({
    id: "forecast-chart",
    title: "Factory peak demand per day (kW): actual and forecast",
    description: `${actual.size} actual days (sum of the machines' peaks), ${forecast.size} forecast days with their ${level} % band.`,
    data,
    points: actual.size + forecast.size,
    extra: { forecastDays: String(forecast.size), actualDays: String(actual.size) },
    series: [
      { label: "actual", stroke: "#0b5cad", width: 2, points: { show: true } },
      { label: "forecast", stroke: "#a04a00", width: 2, dash: [6, 4], points: { show: true } },
      { label: `upper (${level} %)`, stroke: "#a04a0066", width: 1 },
      { label: `lower (${level} %)`, stroke: "#a04a0066", width: 1 },
    ],
    bands: [{ series: [3, 4], fill: "#a04a0022" }],
    yLabel: "kW",
    lineage,
  });
}

/** The forecast section of the KPI page. `page`: the /v1/forecasts answer (null when it failed);
 * `kpiItems`: the page's /v1/kpi rows; `now`: the clock (ms), for "tomorrow". */
function section(ui, page, kpiItems, context, now = Date.now()) {
  const root = ui.h("section", { id: "forecast" }, ui.h("h2", {}, "Forecast: peak demand and energy"));
  if (page === null) {
    root.append(ui.h("p", { class: "empty", role: "alert" }, "Forecasts are unavailable right now."));
    return root;
  }
  const days = page.items.filter((d) => d.period === "day");
  if (!days.length) {
    root.append(ui.h("p", { class: "empty" }, `No forecast issued for ${context.factory} yet: it needs 7 days of hourly KPIs.`));
    return root;
  }
  const issued = days[0].issued_at;
  const partition = new Date(Date.parse(issued) - DAY_MS).toISOString().slice(0, 10);
  const lineage = ui.assetLink("energy_forecasts", partition);
  const target = targetDay([...new Set(days.map((d) => d.target_start))].sort(), now);
  const row = (machine, kpi) => days.find((d) => d.machine_id === machine && d.kpi === kpi && d.target_start === target);
  const machines = [...new Set(days.map((d) => d.machine_id))].sort((a, b) => (a === FACTORY ? -1 : b === FACTORY ? 1 : a.localeCompare(b)));
  const band = (r) => (r ? `${ui.num(r.lower)} – ${ui.num(r.upper)}` : "—");
  const peak = row(FACTORY, "peak_demand_kw");
  const level = Math.round(days[0].level * 100);
  const day = target.slice(0, 10);
  root.append(
    ui.h(
      "p",
      { id: "forecast-peak", class: "panel", dataset: peak ? { value: String(peak.value), lower: String(peak.lower), upper: String(peak.upper), day } : { day } },
      peak
        ? [`Peak demand ${day} (UTC day, factory ${context.factory}): `, ui.h("strong", {}, `${ui.num(peak.value)} kW`), `, ${level} % band ${band(peak)} kW.`]
        : `No factory forecast for ${day}.`,
    ),
    ui.h("p", { class: "muted" }, `Issued ${issued.slice(0, 10)} from the KPIs up to then (model ${days[0].model}). `, lineage),
    ui.table(
      ["Scope", "Peak demand kW", `Band (${level} %)`, "Energy kWh", `Band (${level} %)`],
      machines.map((m) => {
        const p = row(m, "peak_demand_kw");
        const e = row(m, "energy_kwh");
        return [m === FACTORY ? `Factory ${context.factory}` : `Machine ${m}`, p ? ui.num(p.value) : "—", band(p), e ? ui.num(e.value) : "—", band(e)];
      }),
      { id: "forecast-tomorrow", numeric: [1, 3] },
    ),
    peakChart(ui, days, kpiItems, lineage),
  );
  return root;
}

window.forecast = { section, targetDay, actualPeaks };
