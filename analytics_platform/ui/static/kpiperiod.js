// The KPI page's monthly energy performance report (ISO 50001): one month of the tenant's calendar,
// per machine and for the factory, from GET /v1/reports/energy-performance. Loaded by index.html;
// app.js calls window.kpiPeriod.mount() with its DOM and API helpers once the KPI page is drawn.

/** The month a range's end falls in, as "YYYY-MM" (UTC). */
function monthOf(date) {
  const d = new Date(date.getTime() - 1);
  return `${d.getUTCFullYear()}-${String(d.getUTCMonth() + 1).padStart(2, "0")}`;
}

/** [start, end) asking the API for that month: UTC midnights of its first day and the next month's
 * first day, which the API reads as local dates in the tenant's calendar. */
function monthRange(month) {
  const [year, m] = month.split("-").map(Number);
  return { start: new Date(Date.UTC(year, m - 1, 1)).toISOString(), end: new Date(Date.UTC(year, m, 1)).toISOString() };
}

function reportTable(ui, items) {
  const sec = (item) => item.indicators.find((i) => i.kpi === "sec_kwh_per_unit");
  const model = (item) => item.baselines.map((b) => `${b.machine_id} v${b.version} (R² ${ui.num(b.r2, 3)}; ${b.drivers.join(", ")})`).join("; ") || "—";
  return ui.table(
    ["Scope", "Energy kWh", "SEC kWh/unit", "Expected kWh", "Deviation kWh", "Deviation", "CUSUM kWh", "Hours compared", "Baseline"],
    items.map((item) => [
      item.machine_id ? `Machine ${item.machine_id}` : `Factory (${item.machines} machines)`,
      ui.num(item.energy_kwh),
      sec(item).value === null ? ui.h("span", { title: sec(item).null_reason || "" }, "—") : ui.num(sec(item).value, 3),
      ui.num(item.expected_kwh),
      ui.num(item.deviation_kwh),
      item.deviation_pct === null ? "—" : `${ui.num(item.deviation_pct, 1)} %`,
      item.cusum_kwh === null ? ui.h("span", { title: item.null_reason || "" }, "—") : ui.num(item.cusum_kwh),
      `${item.hours_compared} / ${item.hours_stored}`,
      model(item),
    ]),
    { id: "energy-report", numeric: [1, 2, 3, 4, 5, 6] },
  );
}

function cusumChart(ui, items, lineage) {
  const charted = items.filter((item) => item.steps.length);
  const steps = charted.length ? charted[0].steps : [];
  const data = [steps.map((s) => Date.parse(s.end) / 1000), ...charted.map((item) => item.steps.map((s) => s.cusum_kwh))];
  const colours = ["#0b5cad", "#a04a00", "#146c2e", "#6b21a8", "#b3161d", "#0f766e", "#4a5565"];
  return ui.chartFigure({
    id: "cusum-chart",
    title: "CUSUM of energy deviations from the baseline (kWh)",
    description: `${steps.length} days; rising = more energy than the active baseline expects, falling = savings.`,
    data,
    points: steps.length * charted.length,
    series: charted.map((item, i) => ({ label: item.machine_id || "factory", stroke: colours[i % colours.length], width: 2, points: { show: true } })),
    yLabel: "kWh",
    lineage: lineage.length ? ui.h("span", {}, ...lineage.map((l) => ui.h("a", { class: "lineage", href: l.url, target: "_blank", rel: "noopener", dataset: { asset: l.asset } }, ` Lineage: ${l.asset} ↗`))) : null,
  });
}

async function load(section, ui, context, month) {
  const body = section.querySelector(".report-body");
  body.replaceChildren(ui.h("p", { class: "loading" }, "Loading…"));
  try {
    const report = await ui.api("/reports/energy-performance", { tenant_id: context.tenant, factory_id: context.factory, period: "month", ...monthRange(month) });
    const items = report.items;
    body.replaceChildren(
      ui.h("p", { class: "muted" }, `${month} in ${report.timezone} (local calendar).`),
      items.length ? reportTable(ui, items) : ui.h("p", { class: "empty" }, "No KPIs stored for this month."),
      cusumChart(ui, items, report.lineage),
    );
    for (const figure of body.querySelectorAll("figure[data-chart-pending]")) if (figure._draw) figure._draw();
  } catch (error) {
    body.replaceChildren(ui.h("p", { class: "empty", role: "alert" }, `Report unavailable: ${error.message}`));
  }
}

/** Draw the report's controls into `section` (an empty <section> on the KPI page). The report is
 * read when asked for (button or month change): the page's own load stays at its 3 API calls. */
function mount(section, ui, context, end) {
  const picker = ui.h("input", { id: "report-month", type: "month", value: monthOf(end), onchange: (e) => e.target.value && load(section, ui, context, e.target.value) });
  const show = ui.h("button", { type: "button", id: "report-show", class: "primary", onclick: () => picker.value && load(section, ui, context, picker.value) }, "Show report");
  section.replaceChildren(
    ui.h("h2", {}, "Energy performance (ISO 50001), per month"),
    ui.h("div", { class: "controls" }, ui.h("div", { class: "field" }, ui.h("label", { for: "report-month" }, "Month"), picker), show),
    ui.h("div", { class: "report-body" }, ui.h("p", { class: "muted" }, "Energy, SEC, the active baseline's expected energy, deviation and CUSUM of a month in the tenant's calendar.")),
  );
}

window.kpiPeriod = { mount, monthRange, monthOf };
