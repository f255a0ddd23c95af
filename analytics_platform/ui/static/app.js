// The plant dashboard: a client of the public /v1 API and nothing else. Every page fetches its data
// in at most three calls, renders, and then marks <main data-ready> with the time it took, which the
// browser test reads. Text from the API is always set as text (never parsed as HTML).

const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content || "";
const DAGSTER = meta("dagster-ui").replace(/\/$/, "");
const REFRESH_S = Math.max(1, Number(meta("refresh-s")) || 15);
// a machine chart whose range ends now re-reads its buckets this often (the open bucket moves)
const LIVE_S = Math.max(1, Number(meta("live-s")) || 5);
// what aggChart draws (the band and the line): a third of each bucket's bytes
const AGG_FIELDS = "avg,min,max";
const WINDOWS = [
  [60, "1 min"],
  [300, "5 min"],
  [3600, "1 hour"],
  [86400, "day"],
];
const RANGES = [
  ["1h", 3600],
  ["6h", 6 * 3600],
  ["24h", 86400],
  ["7d", 7 * 86400],
];
const SEVERITY_COLOUR = { info: "#1d4ed8", warning: "#a04a00", critical: "#b3161d" };
const SERIES_COLOURS = ["#0b5cad", "#a04a00", "#146c2e", "#6b21a8", "#b3161d", "#0f766e", "#4a5565"];
// Which KPIs the KPI page's cards show. What a KPI is (label, unit, format, whether it adds up over
// machines) comes from GET /v1/kpi/catalog, fetched once per page load (state.kpiCatalog).
const CARD_KPIS = ["availability", "performance", "quality", "sec_kwh_per_unit", "load_factor", "peak_demand_kw", "energy_cost", "carbon_kg", "energy_kwh"];
const FACTORY_KPIS = ["energy_kwh", "energy_cost", "carbon_kg", "production_count"];

const state = {
  key: sessionStorage.getItem("ap.key") || localStorage.getItem("ap.key") || "",
  admin: sessionStorage.getItem("ap.admin"),
  seq: 0,
  timer: null,
  charts: [],
  fleetCache: null,
  machineCache: {},
  kpiCatalog: null,
};

// ---------------------------------------------------------------------------------------------
// DOM and formatting helpers
// ---------------------------------------------------------------------------------------------
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const pad = (n) => String(n).padStart(2, "0");
function utc(value) {
  if (!value) return "—";
  const d = new Date(value);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(
    d.getUTCMinutes(),
  )}:${pad(d.getUTCSeconds())}`;
}
function num(value, digits = 2) {
  if (value === null || value === undefined) return "—";
  return Number(value).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}
function pct(value) {
  return value === null || value === undefined ? "—" : `${(100 * value).toFixed(1)} %`;
}
function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.round(seconds);
  if (Math.abs(s) < 120) return `${s} s`;
  if (Math.abs(s) < 7200) return `${Math.round(s / 60)} min`;
  if (Math.abs(s) < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}
/** A KPI's value as its catalogue entry says: a percent, or a number with its digits and unit. */
function kpiValue(kpi, value) {
  if (kpi.format === "percent") return pct(value);
  return `${num(value, kpi.digits)}${kpi.unit ? ` ${kpi.unit}` : ""}`;
}
function inputTime(date) {
  return `${date.getUTCFullYear()}-${pad(date.getUTCMonth() + 1)}-${pad(date.getUTCDate())}T${pad(
    date.getUTCHours(),
  )}:${pad(date.getUTCMinutes())}`;
}
function hourKey(value) {
  const d = new Date(value);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}-${pad(d.getUTCHours())}:00`;
}
function dayKey(value) {
  const d = new Date(value);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
}
/** The Dagster UI page of the asset (and partition) that produced what is shown. */
function assetLink(asset, partition, label) {
  let url = `${DAGSTER}/assets/${encodeURIComponent(asset)}`;
  if (partition) url += `?view=partitions&partition=${encodeURIComponent(partition).replace(/%3A/g, ":")}`;
  return h(
    "a",
    { class: "lineage", href: url, target: "_blank", rel: "noopener", dataset: { asset, partition: partition || "" } },
    label || `Lineage: ${asset}${partition ? ` (${partition})` : ""} ↗`,
  );
}
function badge(kind, text) {
  return h("span", { class: `badge ${kind}` }, text || kind);
}

// ---------------------------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

async function api(path, params = {}, options = {}) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") query.set(name, value);
  }
  const url = `/v1${path}${query.toString() ? `?${query}` : ""}`;
  const response = await fetch(url, {
    method: options.method || "GET",
    headers: { "X-API-Key": state.key, Accept: "application/json", ...(options.body ? { "Content-Type": "application/json" } : {}) },
    body: options.body ? JSON.stringify(options.body) : undefined,
  });
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = { detail: text };
  }
  if (!response.ok) {
    let detail = body && body.detail;
    if (Array.isArray(detail)) detail = detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
    throw new ApiError(response.status, detail || `HTTP ${response.status}`);
  }
  return body;
}

// ---------------------------------------------------------------------------------------------
// Routing, page life cycle and timing
// ---------------------------------------------------------------------------------------------
function parseRoute() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, params: new URLSearchParams(query) };
}
function href(path, params = {}) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) if (value !== null && value !== undefined && value !== "") query.set(name, value);
  const encoded = path
    .split("/")
    .map((p) => encodeURIComponent(p))
    .join("/");
  return `#${encoded}${query.toString() ? `?${query}` : ""}`;
}

function showBanner(message) {
  const banner = document.getElementById("banner");
  banner.textContent = message || "";
  banner.hidden = !message;
}

function setNav(active) {
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  navLinks();
}

/** The factory pages' links carry the factory last looked at. */
function navLinks() {
  const context = JSON.parse(localStorage.getItem("ap.context") || "null");
  const params = context ? { tenant: context.tenant, factory: context.factory } : {};
  document.querySelector('[data-nav="kpis"]').setAttribute("href", href("/kpis", params));
  document.querySelector('[data-nav="quality"]').setAttribute("href", href("/quality", params));
}

function remember(tenant, factory) {
  localStorage.setItem("ap.context", JSON.stringify({ tenant, factory }));
  navLinks();
}

function resetPage() {
  clearInterval(state.timer);
  state.timer = null;
  for (const chart of state.charts) chart.destroy();
  state.charts = [];
}

async function render() {
  const seq = ++state.seq;
  const started = performance.now();
  resetPage();
  showBanner("");
  const main = document.getElementById("main");
  main.removeAttribute("data-ready");
  document.getElementById("sign-out").hidden = !state.key;
  document.getElementById("key-label").textContent = state.key ? `key ${state.key.split("_").slice(0, 2).join("_")}` : "";
  if (!state.key) {
    setNav(null);
    return finish(seq, started, "login", loginView());
  }
  const { parts, params } = parseRoute();
  const page = parts[0] || "overview";
  setNav(page === "machine" ? "overview" : page);
  const views = { overview: overviewView, machine: machineView, kpis: kpiView, quality: qualityView };
  const view = views[page];
  try {
    if (!view) throw new ApiError(404, `no page ${page}`);
    const content = await view(parts.slice(1), params, seq);
    if (content === null || seq !== state.seq) return; // redirected or superseded
    finish(seq, started, page, content);
  } catch (error) {
    if (seq !== state.seq) return;
    if (error instanceof ApiError && error.status === 401) {
      signOut(`The API refused the key: ${error.message}`);
      return;
    }
    const message = error instanceof ApiError ? `${error.status}: ${error.message}` : String(error.message || error);
    showBanner(`Could not load this page — ${message}`);
    finish(seq, started, page, h("p", { class: "empty" }, "No data."));
  }
}

function finish(seq, started, page, content) {
  const main = document.getElementById("main");
  main.replaceChildren(content);
  // charts are created once their container is in the page (they need its width)
  for (const pending of main.querySelectorAll("[data-chart-pending]")) pending._draw();
  const elapsed = performance.now() - started;
  main.dataset.page = page;
  main.dataset.renderMs = elapsed.toFixed(1);
  main.dataset.sinceNavigationMs = performance.now().toFixed(1);
  main.dataset.ready = String(seq);
  document.title = `${main.querySelector("h1")?.textContent || "Plant analytics"} · Plant analytics`;
}

function signOut(message) {
  sessionStorage.removeItem("ap.key");
  localStorage.removeItem("ap.key");
  sessionStorage.removeItem("ap.admin");
  state.key = "";
  state.admin = null;
  state.fleetCache = null;
  render().then(() => showBanner(message || ""));
}

// ---------------------------------------------------------------------------------------------
// Charts (uPlot, vendored): a time axis in UTC and an accessible description
// ---------------------------------------------------------------------------------------------
/**
 * A chart figure. `data` is uPlot's aligned columns; `points` is what the test counts (the
 * buckets drawn), `extra` more data-* attributes; `hooks` uPlot hooks (e.g. anomaly markers).
 */
function chartFigure({ id, title, description, data, series, bands, points, extra = {}, lineage, hooks, yLabel }) {
  const holder = h("div", { class: "plot" });
  const figure = h(
    "figure",
    { class: "chart", id, role: "group", "aria-label": `${title}: ${description}`, dataset: { points: String(points), ...extra } },
    h("figcaption", {}, h("strong", {}, title), lineage),
    holder,
    h("p", { class: "muted" }, description),
  );
  if (!points) {
    holder.append(h("p", { class: "empty" }, "No data in this range."));
    return figure;
  }
  figure.dataset.chartPending = "1";
  figure._draw = () => {
    delete figure.dataset.chartPending;
    const width = Math.max(320, holder.clientWidth || 900);
    const chart = new uPlot(
      {
        width,
        height: 300,
        tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
        series: [{ label: "time (UTC)", value: (u, v) => (v === null ? "—" : utc(v * 1000)) }, ...series],
        bands,
        axes: [{ values: utcTicks, space: 70 }, { label: yLabel || "", size: 60 }],
        hooks: hooks || {},
        legend: { live: true },
        cursor: { focus: { prox: 16 } },
      },
      data,
      holder,
    );
    state.charts.push(chart);
  };
  return figure;
}

/** Tick labels in UTC, 24-hour: the day (MM-DD) once the range spans days, the time within a day. */
function utcTicks(u, splits) {
  const span = u.scales.x.max - u.scales.x.min;
  return splits.map((v) => {
    const text = utc(v * 1000);
    if (span <= 2 * 86400) return text.slice(11, 16);
    return text.slice(11, 16) === "00:00" ? text.slice(5, 10) : text.slice(5, 16);
  });
}

// ---------------------------------------------------------------------------------------------
// Login
// ---------------------------------------------------------------------------------------------
function loginView() {
  const input = h("input", { id: "api-key", name: "api-key", type: "password", autocomplete: "off", required: true, size: 40 });
  const rememberBox = h("input", { id: "remember", type: "checkbox" });
  const form = h(
    "form",
    {
      onsubmit: (event) => {
        event.preventDefault();
        state.key = input.value.trim();
        (rememberBox.checked ? localStorage : sessionStorage).setItem("ap.key", state.key);
        render();
      },
    },
    h("label", { for: "api-key" }, "API key"),
    input,
    h("p", { class: "muted" }, "Create one with: analytics-platform api-keys create --name <you> [--tenant <id>]"),
    h("div", {}, rememberBox, " ", h("label", { for: "remember" }, "Remember on this device")),
    h("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  return h("section", { class: "panel login" }, h("h1", {}, "Sign in"), form);
}

// ---------------------------------------------------------------------------------------------
// Overview: tenants → factories → machines, auto-refreshing
// ---------------------------------------------------------------------------------------------
async function overviewView(_parts, _params, seq) {
  const fleet = await api("/fleet");
  rememberFleet(fleet);
  const section = h("section", {});
  const fill = (data) => {
    // a refresh replaces the tables: keep the keyboard user's place (the focused link) across it
    const focused = section.contains(document.activeElement) ? document.activeElement.getAttribute("href") : null;
    section.replaceChildren(...overviewContent(data));
    if (focused) section.querySelector(`a[href="${CSS.escape(focused)}"]`)?.focus();
  };
  fill(fleet);
  state.timer = setInterval(async () => {
    if (seq !== state.seq) return;
    try {
      const data = await api("/fleet");
      if (seq !== state.seq) return;
      rememberFleet(data);
      fill(data);
      showBanner("");
    } catch (error) {
      if (seq === state.seq) showBanner(`Refresh failed — ${error.message}; retrying in ${REFRESH_S} s`);
    }
  }, REFRESH_S * 1000);
  return section;
}

function rememberFleet(fleet) {
  state.admin = fleet.failing_checks === null ? "no" : "yes";
  sessionStorage.setItem("ap.admin", state.admin);
  state.fleetCache = fleet;
  state.machineCache = Object.fromEntries(fleet.machines.map((m) => [`${m.tenant_id}/${m.factory_id}/${m.machine_id}`, m]));
  const first = fleet.machines[0];
  if (first && !localStorage.getItem("ap.context")) remember(first.tenant_id, first.factory_id);
}

function overviewContent(fleet) {
  const machines = fleet.machines;
  const online = machines.filter((m) => m.status === "online").length;
  const open = machines.reduce((n, m) => n + m.open_anomalies, 0);
  const checks = fleet.failing_checks;
  const stats = h(
    "div",
    { class: "summary" },
    stat("Machines online", `${online} / ${machines.length}`, "stat-online"),
    stat("Open anomalies", open, "stat-anomalies"),
    stat("Failing checks", checks === null ? "admin key only" : checks.length, "stat-checks"),
  );
  const out = [
    h("h1", {}, "Plant overview"),
    h(
      "p",
      { class: "updated", "aria-live": "polite", id: "updated", dataset: { asOf: fleet.as_of } },
      `Status at ${utc(fleet.as_of)} UTC · refreshes every ${REFRESH_S} s · offline after ${duration(fleet.offline_after_s)} of silence`,
    ),
    stats,
  ];
  if (checks && checks.length) {
    out.push(
      h("h2", {}, "Failing data-contract checks"),
      table(
        ["Check", "Asset", "Partition", "Severity", "Since", "Lineage"],
        checks.map((c) => [
          c.check || c.summary,
          c.asset || "—",
          c.partition || "—",
          badge(c.severity),
          utc(c.opened_at),
          c.asset ? assetLink(c.asset, c.partition && c.partition !== "live" ? c.partition : null, "Open in Dagster ↗") : "—",
        ]),
        { id: "failing-checks" },
      ),
    );
  }
  if (!machines.length) out.push(h("p", { class: "empty" }, "No machine has sent data in the last 7 days."));
  const tenants = groupBy(machines, (m) => m.tenant_id);
  for (const [tenant, rows] of tenants) {
    out.push(h("h2", {}, `Tenant ${tenant}`));
    for (const [factory, list] of groupBy(rows, (m) => m.factory_id)) {
      out.push(
        h(
          "h3",
          {},
          `Factory ${factory} `,
          h("a", { href: href("/kpis", { tenant, factory }) }, `KPIs of ${factory}`),
          " · ",
          h("a", { href: href("/quality", { tenant, factory }) }, `Quality of ${factory}`),
        ),
        table(
          ["Machine", "Status", "Last seen", "Freshness", "Run state", "Health", "Metrics", "Open anomalies", "Lineage"],
          list.map((m) => [
            h("a", { href: href(`/machine/${m.tenant_id}/${m.factory_id}/${m.machine_id}`) }, m.machine_id),
            badge(m.status, m.status === "online" ? "● online" : "○ offline"),
            utc(m.last_seen),
            duration(m.freshness_s),
            m.run_state || m.device_status || "—",
            num(m.health_score),
            m.metrics.map((s) => s.metric).join(", ") || "—",
            m.open_anomalies ? h("span", {}, `${m.open_anomalies} `, severityBadge(m.max_open_severity)) : "0",
            m.last_reading_at ? assetLink("raw_sensor_readings", hourKey(m.last_reading_at), "raw readings ↗") : "—",
          ]),
          { class: "machines", dataset: { tenant, factory } },
        ),
      );
    }
  }
  return out;
}

function stat(label, value, id) {
  return h("div", { class: "stat", id }, h("div", { class: "value" }, String(value)), h("div", { class: "label" }, label));
}

function severityBadge(severity) {
  if (!severity) return "";
  const label = severity >= 3 ? "critical" : severity === 2 ? "warning" : "info";
  return badge(label, `sev ${severity} ${label}`);
}

function groupBy(items, keyOf) {
  const groups = new Map();
  for (const item of items) {
    const key = keyOf(item);
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(item);
  }
  return groups;
}

function table(headers, rows, attrs = {}) {
  const numeric = new Set(attrs.numeric || []);
  delete attrs.numeric;
  return h(
    "table",
    attrs,
    h("thead", {}, h("tr", {}, headers.map((name, i) => h("th", { scope: "col", class: numeric.has(i) ? "num" : null }, name)))),
    h(
      "tbody",
      {},
      rows.length
        ? rows.map((cells) => h("tr", {}, cells.map((cell, i) => h("td", { class: numeric.has(i) ? "num" : null }, cell))))
        : h("tr", {}, h("td", { colspan: headers.length, class: "empty" }, "None.")),
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// Machine: aggregates with band and average, anomaly events with severity, resolve
// ---------------------------------------------------------------------------------------------
function rangeFrom(params, defaultSeconds) {
  const end = params.get("end") ? new Date(params.get("end")) : new Date();
  const start = params.get("start") ? new Date(params.get("start")) : new Date(end.getTime() - defaultSeconds * 1000);
  if (Number.isNaN(start.getTime()) || Number.isNaN(end.getTime())) throw new ApiError(422, "start/end in the address are not times");
  return { start, end };
}

async function machineView(parts, params) {
  const [tenant, factory, machine] = parts;
  if (!machine) throw new ApiError(404, "which machine? open one from the overview");
  remember(tenant, factory);
  const { start, end } = rangeFrom(params, 86400);
  const window = Number(params.get("window") || 300);
  const where = { tenant_id: tenant, factory_id: factory, machine_id: machine };
  const machineKey = `${tenant}/${factory}/${machine}`;
  const cached = state.machineCache[machineKey];
  const range = { start: start.toISOString(), end: end.toISOString() };
  const [fleet, events] = await Promise.all([
    cached ? Promise.resolve(null) : api("/fleet", where),
    api("/anomaly-events", { ...where, ...range, limit: 500 }),
  ]);
  const status = fleet ? fleet.machines[0] : cached;
  if (!status) throw new ApiError(404, `machine ${tenant}/${factory}/${machine} has sent nothing in the last 7 days`);
  state.machineCache = { [machineKey]: status }; // its metrics, while the user changes window or range
  const metrics = status.metrics.map((m) => m.metric);
  const metric = params.get("metric") || metrics[0];
  let agg = { items: [] };
  if (metric) {
    agg = await api("/agg", { ...where, metric, window_s: window, start: start.toISOString(), end: end.toISOString(), fields: AGG_FIELDS, limit: 10000 });
  }
  const sensors = [...new Set(agg.items.map((b) => b.sensor_id))].sort();
  const sensor = sensors.includes(params.get("sensor")) ? params.get("sensor") : sensors[0];
  const buckets = agg.items.filter((b) => b.sensor_id === sensor);
  const go = (changes) => {
    const next = { metric, window, sensor, start: start.toISOString(), end: end.toISOString(), ...changes };
    location.hash = href(`/machine/${tenant}/${factory}/${machine}`, next);
  };

  const controls = h(
    "form",
    {
      class: "controls",
      "aria-label": "Chart settings",
      onsubmit: (event) => {
        event.preventDefault();
        const form = new FormData(event.target);
        go({
          metric: form.get("metric"),
          sensor: form.get("sensor"),
          start: new Date(`${form.get("start")}:00Z`).toISOString(),
          end: new Date(`${form.get("end")}:00Z`).toISOString(),
        });
      },
    },
    h(
      "div",
      { class: "field" },
      h("label", { for: "metric" }, "Metric"),
      h("select", { id: "metric", name: "metric", onchange: (e) => go({ metric: e.target.value, sensor: null }) }, metrics.map((m) => h("option", { value: m, selected: m === metric }, m))),
    ),
    h(
      "div",
      { class: "field" },
      h("label", { for: "sensor" }, "Sensor"),
      h("select", { id: "sensor", name: "sensor", onchange: (e) => go({ sensor: e.target.value }) }, sensors.map((s) => h("option", { value: s, selected: s === sensor }, s))),
    ),
    h(
      "fieldset",
      {},
      h("legend", {}, "Window"),
      WINDOWS.map(([seconds, label]) =>
        h("button", { type: "button", "aria-pressed": String(seconds === window), dataset: { window: String(seconds) }, onclick: () => go({ window: seconds }) }, label),
      ),
    ),
    h(
      "fieldset",
      {},
      h("legend", {}, "Range"),
      RANGES.map(([label, seconds]) =>
        h("button", { type: "button", dataset: { range: label }, onclick: () => go({ end: new Date().toISOString(), start: new Date(Date.now() - seconds * 1000).toISOString() }) }, `last ${label}`),
      ),
    ),
    h("div", { class: "field" }, h("label", { for: "start" }, "From (UTC)"), h("input", { id: "start", name: "start", type: "datetime-local", value: inputTime(start), required: true })),
    h("div", { class: "field" }, h("label", { for: "end" }, "To (UTC)"), h("input", { id: "end", name: "end", type: "datetime-local", value: inputTime(end), required: true })),
    h("button", { type: "submit", class: "primary" }, "Apply"),
  );

  const marked = events.items.filter((e) => e.metric === metric && (!e.sensor_id || e.sensor_id === sensor));
  const chart = aggChart(buckets, marked, { metric, sensor, window, agg });
  // a range that ends now (no end in the address, or the end within one bucket of now) follows the clock
  const live = metric && (!params.get("end") || Date.now() - end.getTime() < window * 1000);
  if (live) followMachineChart(chart, { where, metric, sensor, window, span: end.getTime() - start.getTime() });
  // trends.js: the series' trend lines on demand (GET /v1/trends), drawn over this chart
  const plot = () => state.charts.find((u) => document.getElementById("agg-chart")?.contains(u.root));
  const trend = metric && globalThis.plantTrends ? globalThis.plantTrends.control({ api, where, metric, sensor, end, plot }) : null;
  return h(
    "section",
    {},
    h("h1", {}, `Machine ${machine}`),
    h(
      "p",
      {},
      `Tenant ${tenant} · factory ${factory} · `,
      badge(status.status, status.status === "online" ? "● online" : "○ offline"),
      ` · last seen ${utc(status.last_seen)} UTC · run state ${status.run_state || "—"}`,
    ),
    controls,
    chart,
    trend,
    eventList(events.items, marked, range),
  );
}

/**
 * Short polling of a live machine chart: every LIVE_S seconds, while the page is shown, re-read the
 * buckets of [now - span, now) and the anomaly events of that range, and redraw the chart in place.
 * Two small requests per tick; the provisional buckets (not yet final) are drawn dashed.
 */
function followMachineChart(figure, { where, metric, sensor, window, span }) {
  const seq = state.seq;
  let current = figure;
  state.timer = setInterval(async () => {
    if (seq !== state.seq) return;
    const end = new Date();
    const range = { start: new Date(end.getTime() - span).toISOString(), end: end.toISOString() };
    try {
      const [agg, events] = await Promise.all([
        api("/agg", { ...where, metric, window_s: window, ...range, fields: AGG_FIELDS, limit: 10000 }),
        api("/anomaly-events", { ...where, ...range, limit: 500 }),
      ]);
      if (seq !== state.seq) return;
      const buckets = agg.items.filter((b) => b.sensor_id === sensor || !sensor);
      const marked = events.items.filter((e) => e.metric === metric && (!e.sensor_id || e.sensor_id === sensor));
      const next = aggChart(buckets, marked, { metric, sensor: sensor || buckets[0]?.sensor_id, window, agg });
      const old = state.charts.find((chart) => current.contains(chart.root));
      if (old) {
        old.destroy();
        state.charts = state.charts.filter((chart) => chart !== old);
      }
      current.replaceWith(next);
      current = next;
      if (next._draw) next._draw();
      globalThis.plantTrends?.redraw(); // the trend lines shown, onto the redrawn chart
      next.dataset.refreshedAt = end.toISOString();
    } catch (error) {
      if (seq === state.seq) showBanner(`Live refresh failed — ${error.message}; retrying in ${LIVE_S} s`);
    }
  }, LIVE_S * 1000);
}

function aggChart(buckets, marked, { metric, sensor, window, agg }) {
  const xs = buckets.map((b) => Date.parse(b.bucket_start) / 1000);
  // the final average, and the provisional one (from the last final bucket on, so the line joins)
  const firstLive = buckets.findIndex((b) => b.provisional);
  const finalAvg = buckets.map((b) => (b.provisional ? null : b.avg));
  const liveAvg = buckets.map((b, i) => (b.provisional || (firstLive > 0 && i === firstLive - 1) ? b.avg : null));
  const data = [xs, buckets.map((b) => b.min), buckets.map((b) => b.max), finalAvg, liveAvg];
  const provisional = buckets.filter((b) => b.provisional).length;
  const drawn = [];
  const markers = {
    draw: [
      (u) => {
        const ctx = u.ctx;
        drawn.length = 0;
        const left = u.bbox.left;
        const right = u.bbox.left + u.bbox.width;
        for (const e of marked) {
          // the event's span, shaded in its severity colour, and its peak marked
          const from = Math.max(left, u.valToPos(Date.parse(e.start_time) / 1000, "x", true));
          const to = Math.min(right, u.valToPos(Date.parse(e.end_time) / 1000, "x", true));
          const x = u.valToPos(Date.parse(e.peak_time) / 1000, "x", true);
          if (to < left || from > right) continue;
          const colour = SEVERITY_COLOUR[e.severity_label];
          ctx.save();
          ctx.fillStyle = `${colour}26`;
          ctx.fillRect(from, u.bbox.top, Math.max(to - from, 2 * devicePixelRatio), u.bbox.height);
          ctx.restore();
          if (x < left || x > right) {
            drawn.push(e.event_id);
            continue;
          }
          const y = e.observed === null ? u.bbox.top + 10 : u.valToPos(e.observed, "y", true);
          ctx.save();
          ctx.strokeStyle = colour;
          ctx.fillStyle = e.status === "open" ? colour : "#ffffff";
          ctx.lineWidth = 2 * devicePixelRatio;
          ctx.setLineDash([4 * devicePixelRatio, 4 * devicePixelRatio]);
          ctx.beginPath();
          ctx.moveTo(x, u.bbox.top);
          ctx.lineTo(x, u.bbox.top + u.bbox.height);
          ctx.stroke();
          ctx.setLineDash([]);
          ctx.beginPath();
          ctx.arc(x, y, 6 * devicePixelRatio, 0, 2 * Math.PI);
          ctx.fill();
          ctx.stroke();
          ctx.restore();
          drawn.push(e.event_id);
        }
        u.root.closest("figure").dataset.eventsDrawn = String(drawn.length);
      },
    ],
  };
  const last = buckets.at(-1);
  const source = agg.source ? ` (${agg.source}${agg.source_window_s && agg.source_window_s !== window ? ` from ${agg.source_window_s} s` : ""})` : "";
  return chartFigure({
    id: "agg-chart",
    title: `${metric || "no metric"} · ${sensor || "—"} · ${WINDOWS.find(([s]) => s === window)?.[1] || `${window} s`} buckets${source}`,
    description: `${buckets.length} buckets: min–max band and average line; ${plural(provisional, "provisional bucket", "provisional buckets")} (not yet final) dashed; ${plural(marked.length, "anomaly event", "anomaly events")} shaded, peaks marked (filled = open, hollow = resolved).`,
    data,
    points: buckets.length,
    extra: { events: String(marked.length), window: String(window), provisional: String(provisional), lastBucket: buckets.at(-1)?.bucket_start || "" },
    series: [
      { label: "min", stroke: "#7fa6d6", width: 1 },
      { label: "max", stroke: "#7fa6d6", width: 1 },
      { label: "avg", stroke: "#0b5cad", width: 2 },
      { label: "avg (provisional)", stroke: "#6f9fd8", width: 2, dash: [5, 4] },
    ],
    bands: [{ series: [2, 1], fill: "rgba(11, 92, 173, 0.15)" }],
    hooks: markers,
    yLabel: metric,
    lineage: last ? assetLink("sensor_window_aggregates", hourKey(last.bucket_start)) : null,
  });
}

/** The event's span: "2025-08-20 03:00:00 – 03:12:00 (12 min)"; the end's date only when it differs. */
function span(e) {
  const from = utc(e.start_time);
  const to = utc(e.end_time);
  const seconds = (Date.parse(e.end_time) - Date.parse(e.start_time)) / 1000;
  return `${from} – ${to.slice(0, 10) === from.slice(0, 10) ? to.slice(11) : to} (${duration(seconds)})`;
}

const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

function rowCount(e) {
  return e.open_anomalies > 0 && e.open_anomalies < e.anomalies ? `${e.anomalies} (${e.open_anomalies} open)` : String(e.anomalies);
}

/** Anomaly events (consecutive anomalous samples of one series), newest first, with a Resolve action
 * that resolves every row of the event with one note. */
function eventList(items, marked, range) {
  const legend = h(
    "p",
    { class: "legend-sev" },
    "Severity: ",
    badge("info"),
    badge("warning"),
    badge("critical"),
    ` · ${marked.length} of ${items.length} on this chart`,
  );
  const rows = items.map((e) => {
    const cell = h("td", {});
    // not_confirmed: flagged live, then not found when its hour was judged (closed, nobody resolved it)
    const shown = { open: ["critical", "open"], not_confirmed: ["not-confirmed", "not confirmed"] }[e.status];
    const status = h("td", {}, shown ? badge(...shown) : badge("resolved", "resolved"));
    const count = h("td", { class: "num" }, rowCount(e));
    if (e.status === "open") cell.append(resolveButton(e, range, { cell, status, count }));
    return h(
      "tr",
      { dataset: { eventId: String(e.event_id) } },
      h("td", {}, span(e)),
      h("td", {}, e.machine_id),
      h("td", {}, `${e.sensor_id || "—"} / ${e.metric || "—"}`),
      h("td", {}, `${e.anomaly_type} / ${e.methods.join(", ")}`),
      h("td", {}, badge(e.severity_label, `${e.severity_label} (${e.severity})`)),
      count,
      status,
      h("td", { class: "num" }, `${num(e.observed)} / ${num(e.expected)}`),
      cell,
      h("td", {}, assetLink("reading_anomalies", hourKey(e.start_time), "Dagster ↗")),
    );
  });
  const headers = ["Start – end (UTC)", "Machine", "Sensor / metric", "Type / methods", "Peak severity", "Anomalies", "Status", "Peak observed / expected", "Action", "Lineage"];
  return h(
    "section",
    { "aria-labelledby": "events-title" },
    h("h2", { id: "events-title" }, `Anomaly events (${items.length})`),
    legend,
    h(
      "table",
      { id: "anomaly-events" },
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headers.length, class: "empty" }, "No anomaly events in this range."))),
    ),
  );
}

function resolveButton(e, range, cells) {
  const button = h("button", { type: "button", "aria-expanded": "false" }, `Resolve event #${e.event_id}`);
  button.addEventListener("click", () => {
    button.hidden = true;
    const id = `note-${e.event_id}`;
    const textarea = h("textarea", { id, name: "note", required: true, maxlength: 4000 });
    const error = h("p", { role: "alert", class: "muted" });
    const form = h(
      "form",
      {
        class: "resolve-form",
        onsubmit: async (event) => {
          event.preventDefault();
          const note = textarea.value.trim();
          if (!note) {
            error.textContent = "Write what was found or done.";
            return;
          }
          try {
            // the event is looked for in the range it was listed from
            const resolved = await api(`/anomaly-events/${e.event_id}/resolve`, range, { method: "POST", body: { note } });
            Object.assign(e, resolved);
            cells.status.replaceChildren(badge("resolved", "resolved"));
            cells.count.textContent = rowCount(e);
            cells.cell.replaceChildren(h("span", { role: "status" }, `Resolved (${plural(resolved.anomalies, "anomaly", "anomalies")}): ${note}`));
            for (const chart of state.charts) chart.redraw(false);
          } catch (failure) {
            error.textContent = `Not resolved — ${failure.message}`;
          }
        },
      },
      h("label", { for: id }, `Resolution note for event #${e.event_id} (${e.anomalies === 1 ? "its anomaly" : `all its ${e.anomalies} anomalies`})`),
      textarea,
      h("div", {}, h("button", { type: "submit", class: "primary" }, "Save resolution"), " ", h("button", { type: "button", onclick: () => { form.remove(); button.hidden = false; button.focus(); } }, "Cancel")),
      error,
    );
    cells.cell.append(form);
    textarea.focus();
  });
  return button;
}

// ---------------------------------------------------------------------------------------------
// Context (tenant and factory) for the factory pages
// ---------------------------------------------------------------------------------------------
/** Without a tenant and factory in the address, pick the last used one (or the fleet's first) and
 * go there: the page then loads with its own calls only. */
async function needContext(page, params) {
  const tenant = params.get("tenant");
  const factory = params.get("factory");
  if (tenant && factory) {
    remember(tenant, factory);
    return { tenant, factory };
  }
  let context = JSON.parse(localStorage.getItem("ap.context") || "null");
  if (!context) {
    const fleet = state.fleetCache || (await api("/fleet"));
    rememberFleet(fleet);
    const first = fleet.machines[0];
    if (!first) throw new ApiError(404, "no machine has sent data yet; nothing to show");
    context = { tenant: first.tenant_id, factory: first.factory_id };
  }
  location.replace(href(`/${page}`, { tenant: context.tenant, factory: context.factory }));
  return null;
}

function rangeControls(page, context, params, start, end, extra = {}) {
  const go = (changes) => {
    location.hash = href(`/${page}`, { tenant: context.tenant, factory: context.factory, ...extra, start: start.toISOString(), end: end.toISOString(), ...changes });
  };
  const form = h(
    "form",
    {
      class: "controls",
      "aria-label": "Range",
      onsubmit: (event) => {
        event.preventDefault();
        const data = new FormData(event.target);
        go({ start: new Date(`${data.get("start")}:00Z`).toISOString(), end: new Date(`${data.get("end")}:00Z`).toISOString() });
      },
    },
    h("div", { class: "field" }, h("label", { for: "start" }, "From (UTC)"), h("input", { id: "start", name: "start", type: "datetime-local", value: inputTime(start), required: true })),
    h("div", { class: "field" }, h("label", { for: "end" }, "To (UTC)"), h("input", { id: "end", name: "end", type: "datetime-local", value: inputTime(end), required: true })),
    h("button", { type: "submit", class: "primary" }, "Apply"),
  );
  return { form, go };
}

// ---------------------------------------------------------------------------------------------
// KPIs: cards per machine and factory, trends, baseline vs. actual
// ---------------------------------------------------------------------------------------------
async function kpiView(_parts, params) {
  const context = await needContext("kpis", params);
  if (!context) return null;
  const period = params.get("period") === "shift" ? "shift" : "day";
  const { start, end } = rangeFrom(params, 14 * 86400);
  const where = { tenant_id: context.tenant, factory_id: context.factory, start: start.toISOString(), end: end.toISOString() };
  const [kpis, deviation, catalog, forecasts] = await Promise.all([
    api("/kpi", { ...where, period, limit: 10000 }),
    api("/baseline-deviation", { ...where, period: period === "day" ? "day" : "hour", limit: 10000 }),
    state.kpiCatalog || api("/kpi/catalog").then((c) => new Map(c.items.map((k) => [k.name, k]))),
    api("/forecasts", { tenant_id: context.tenant, factory_id: context.factory, period: "day", limit: 1000 }).catch(() => null),
  ]);
  state.kpiCatalog = catalog;
  const trendKpi = catalog.has(params.get("kpi")) ? params.get("kpi") : "oee";
  const { form, go } = rangeControls("kpis", context, params, start, end, { period, kpi: trendKpi });
  const periodPicker = h(
    "fieldset",
    {},
    h("legend", {}, "Period"),
    ["day", "shift"].map((p) => h("button", { type: "button", "aria-pressed": String(p === period), dataset: { period: p }, onclick: () => go({ period: p }) }, p)),
  );
  form.prepend(periodPicker);

  const byMachine = groupBy(kpis.items, (k) => k.machine_id);
  const cards = [];
  const latestPeriods = [];
  for (const [machine, rows] of byMachine) {
    const latest = rows.reduce((a, b) => (a.period_start > b.period_start ? a : b)).period_start;
    latestPeriods.push(latest);
    const values = Object.fromEntries(rows.filter((r) => r.period_start === latest).map((r) => [r.kpi, r]));
    cards.push(kpiCard(`Machine ${machine}`, latest, values, period, machine, context, catalog));
  }
  // only what adds up over machines is summed (the catalogue's combination rule)
  const additive = FACTORY_KPIS.filter((name) => catalog.get(name)?.combine.kind === "sum");
  const factoryTotals = {};
  for (const name of additive) {
    const rows = kpis.items.filter((k) => k.kpi === name && latestPeriods.includes(k.period_start) && k.value !== null);
    if (rows.length) factoryTotals[name] = rows.reduce((s, r) => s + r.value, 0);
  }
  const header = h("h1", {}, `KPIs · ${context.tenant} / ${context.factory}`);
  const factoryCard = h(
    "article",
    { class: "panel card", id: "factory-card" },
    h("h3", {}, `Factory ${context.factory} (sum of machines, latest ${period})`),
    h(
      "dl",
      {},
      additive.flatMap((name) => [h("dt", {}, catalog.get(name).label), h("dd", { dataset: { kpi: name } }, name in factoryTotals ? kpiValue(catalog.get(name), factoryTotals[name]) : "—")]),
    ),
    h("p", { class: "muted" }, "OEE, SEC, load factor and peak demand are per machine: they do not add up."),
  );
  return h(
    "section",
    {},
    header,
    form,
    h("h2", {}, `Latest ${period} per machine`),
    h("div", { class: "cards" }, factoryCard, cards.length ? cards : h("p", { class: "empty" }, "No KPIs in this range.")),
    kpiTrend(kpis.items, catalog, trendKpi, period, go),
    deviationSection(deviation.items, period),
    window.forecast?.section({ h, num, table, chartFigure, assetLink }, forecasts, kpis.items, context),
    energyReport(context, end),
  );
}

/** The monthly ISO 50001 report (kpiperiod.js draws it, with these helpers). */
function energyReport(context, end) {
  const section = h("section", { id: "energy-performance" });
  window.kpiPeriod?.mount(section, { h, api, num, table, chartFigure }, context, end);
  return section;
}

function kpiCard(title, periodStart, values, period, machine, context, catalog) {
  const value = (name) => {
    const row = values[name];
    if (!row) return "—";
    if (row.value === null) return h("span", { title: row.null_reason || "" }, `— (${row.null_reason || "undefined"})`);
    return kpiValue(catalog.get(name), row.value);
  };
  const rows = CARD_KPIS.filter((name) => catalog.has(name));
  return h(
    "article",
    { class: "panel card", dataset: { machine } },
    h("h3", {}, title),
    h("p", { class: "muted" }, `${period} starting ${utc(periodStart)} UTC`),
    h("p", {}, "OEE ", h("span", { class: "oee", dataset: { kpi: "oee" } }, value("oee"))),
    h("dl", {}, rows.flatMap((name) => [h("dt", {}, catalog.get(name).label), h("dd", { dataset: { kpi: name } }, value(name))])),
    assetLink("daily_machine_kpis", dayKey(periodStart)),
    h("span", {}, " · "),
    h("a", { href: href(`/machine/${context.tenant}/${context.factory}/${machine}`) }, "machine view"),
  );
}

function kpiTrend(items, catalog, kpi, period, go) {
  const { label, format } = catalog.get(kpi);
  const percent = format === "percent";
  const rows = items.filter((k) => k.kpi === kpi);
  const periods = [...new Set(rows.map((r) => r.period_start))].sort();
  const machines = [...new Set(rows.map((r) => r.machine_id))].sort();
  const lookup = new Map(rows.map((r) => [`${r.machine_id}|${r.period_start}`, r.value]));
  const scale = percent ? 100 : 1;
  const data = [periods.map((p) => Date.parse(p) / 1000), ...machines.map((m) => periods.map((p) => (lookup.get(`${m}|${p}`) ?? null) === null ? null : lookup.get(`${m}|${p}`) * scale))];
  const points = data.slice(1).reduce((n, s) => n + s.filter((v) => v !== null).length, 0);
  const picker = h(
    "div",
    { class: "field" },
    h("label", { for: "trend-kpi" }, "Trend of"),
    h("select", { id: "trend-kpi", onchange: (e) => go({ kpi: e.target.value }) }, [...catalog.values()].map((k) => h("option", { value: k.name, selected: k.name === kpi }, k.label))),
  );
  const last = periods.at(-1);
  return h(
    "section",
    {},
    h("h2", {}, "Trend"),
    picker,
    chartFigure({
      id: "kpi-chart",
      title: `${label} per ${period}${percent ? " (%)" : ""}`,
      description: `${points} values of ${machines.length} machines over ${periods.length} periods.`,
      data,
      points,
      series: machines.map((m, i) => ({ label: m, stroke: SERIES_COLOURS[i % SERIES_COLOURS.length], width: 2, points: { show: true } })),
      yLabel: label,
      lineage: last ? assetLink("daily_machine_kpis", dayKey(last)) : null,
    }),
  );
}

function deviationSection(items, period) {
  const machines = [...new Set(items.map((d) => d.machine_id))].sort();
  const periods = [...new Set(items.map((d) => d.period_start))].sort();
  const get = (m, p, field) => items.find((d) => d.machine_id === m && d.period_start === p)?.[field] ?? null;
  const series = [];
  const data = [periods.map((p) => Date.parse(p) / 1000)];
  machines.forEach((m, i) => {
    const colour = SERIES_COLOURS[i % SERIES_COLOURS.length];
    series.push({ label: `${m} actual`, stroke: colour, width: 2, points: { show: true } });
    data.push(periods.map((p) => get(m, p, "actual_kwh")));
    series.push({ label: `${m} baseline`, stroke: colour, width: 2, dash: [6, 4] });
    data.push(periods.map((p) => get(m, p, "predicted_kwh")));
  });
  const asset = period === "day" ? "daily_machine_kpis" : "hourly_machine_kpis";
  const last = periods.at(-1);
  return h(
    "section",
    {},
    h("h2", {}, "Energy: baseline vs. actual"),
    chartFigure({
      id: "baseline-chart",
      title: `Actual vs. baseline energy per ${period === "day" ? "day" : "hour"} (kWh)`,
      description: `${items.length} periods with a baseline; dashed = what the active baseline expected.`,
      data,
      points: items.length,
      series,
      yLabel: "kWh",
      lineage: last ? assetLink(asset, period === "day" ? dayKey(last) : hourKey(last)) : assetLink("energy_baseline_models", null),
    }),
    table(
      ["Period (UTC)", "Machine", "Actual kWh", "Baseline kWh", "Deviation kWh", "Deviation", "Severity"],
      items.map((d) => [utc(d.period_start), d.machine_id, num(d.actual_kwh), num(d.predicted_kwh), num(d.deviation_kwh), d.deviation_pct === null ? "—" : `${num(d.deviation_pct, 1)} %`, badge(d.severity === "normal" ? "normal" : d.severity, d.severity)]),
      { id: "deviation", numeric: [2, 3, 4, 5] },
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// Quality: lab vs. spec, sweep fail rates, rejects, alert log
// ---------------------------------------------------------------------------------------------
async function qualityView(_parts, params) {
  const context = await needContext("quality", params);
  if (!context) return null;
  const { start, end } = rangeFrom(params, 7 * 86400);
  const range = { start: start.toISOString(), end: end.toISOString() };
  const admin = state.admin !== "no";
  const [quality, rejects, alerts] = await Promise.all([
    api("/quality", { tenant_id: context.tenant, factory_id: context.factory, ...range }),
    admin ? api("/rejects", range) : Promise.resolve(null),
    api("/alerts", { tenant_id: admin ? null : context.tenant, ...range, limit: 200 }),
  ]);
  const { form } = rangeControls("quality", context, params, start, end, { analyte: params.get("analyte"), lab_window: params.get("lab_window") });
  const lastHour = quality.hourly.at(-1)?.bucket_start;
  return h(
    "section",
    {},
    h("h1", {}, `Quality · ${context.tenant} / ${context.factory}`),
    form,
    h("h2", {}, "Lab results vs. spec limits"),
    table(
      ["Analyte", "Results", "Pass", "Fail", "Pass rate", "Lower", "Target", "Upper", "Unit"],
      quality.lab.map((a) => [
        a.analyte,
        a.count,
        a.pass_count,
        a.fail_count,
        h("span", { class: "rate" }, h("meter", { min: 0, max: 1, low: 0.8, high: 0.95, optimum: 1, value: a.pass_rate ?? 0, "aria-label": `${a.analyte} pass rate` }), a.pass_rate === null ? "no limit" : pct(a.pass_rate)),
        num(a.lower_limit),
        num(a.target),
        num(a.upper_limit),
        a.unit || "—",
      ]),
      { id: "lab", numeric: [1, 2, 3, 5, 6, 7] },
    ),
    h("p", {}, assetLink("lab_result_quality", lastHour ? hourKey(lastHour) : null)),
    // labseries.js: one analyte per window against its limits, fetched on demand
    window.labSeries?.section(
      { tenant: context.tenant, factory: context.factory, analytes: quality.lab.map((a) => a.analyte), analyte: params.get("analyte"), window: params.get("lab_window"), range },
      { h, api, chartFigure, assetLink, hourKey, colour: SERIES_COLOURS[0] },
    ),
    h("h2", {}, "Sweep batches"),
    table(
      ["Machine", "Batches", "Pass", "Fail", "Fail rate"],
      quality.sweep.map((s) => [s.machine_id, s.count, s.pass_count, s.fail_count, s.fail_rate === null ? "no limit" : pct(s.fail_rate)]),
      { id: "sweep", numeric: [1, 2, 3, 4] },
    ),
    qualityChart(quality.hourly),
    h("h2", {}, "Rejected messages"),
    rejects === null
      ? h("p", { class: "empty", id: "rejects" }, "Rejected messages may belong to any tenant: they need an admin API key.")
      : table(
          ["Topic", "Reason", "Count", "First", "Last", "Newest detail", "Partition / offset"],
          rejects.items.map((r) => [r.topic, r.reason, r.count, utc(r.first_at), utc(r.last_at), r.last_detail, `${r.last_partition} / ${r.last_offset}`]),
          { id: "rejects", numeric: [2] },
        ),
    rejects === null ? null : h("p", {}, assetLink("kafka_landing", null, "Lineage: kafka_landing (every message as it arrived) ↗")),
    h("h2", {}, "Alert log"),
    table(
      ["Time (UTC)", "Rule", "Severity", "Transition", "Title", "Channel", "Delivery", "Link"],
      alerts.items.map((a) => [utc(a.created_at), a.rule_name, badge(a.severity), a.transition, a.title, a.channel, a.status, a.link ? h("a", { href: a.link, target: "_blank", rel: "noopener" }, "Dagster ↗") : "—"]),
      { id: "alert-log" },
    ),
    alerts.next_cursor ? h("p", { class: "muted" }, `Showing the newest ${alerts.count}; narrow the range for older ones.`) : null,
  );
}

function qualityChart(hourly) {
  const hours = [...new Set(hourly.map((b) => b.bucket_start))].sort();
  const rate = (kind, hour) => {
    const row = hourly.find((b) => b.event_type === kind && b.bucket_start === hour);
    return row && row.fail_rate !== null ? row.fail_rate * 100 : null;
  };
  const last = hours.at(-1);
  return chartFigure({
    id: "quality-chart",
    title: "Fail rate per hour (%)",
    description: `${hours.length} hours with lab or sweep verdicts.`,
    data: [hours.map((x) => Date.parse(x) / 1000), hours.map((x) => rate("lab_result", x)), hours.map((x) => rate("sweep_batch", x))],
    points: hours.length,
    series: [
      { label: "lab results", stroke: SERIES_COLOURS[0], width: 2, points: { show: true } },
      { label: "sweep batches", stroke: SERIES_COLOURS[1], width: 2, points: { show: true } },
    ],
    yLabel: "% failed",
    lineage: last ? assetLink("sweep_batch_quality", hourKey(last)) : null,
  });
}

// ---------------------------------------------------------------------------------------------
document.getElementById("sign-out").addEventListener("click", () => signOut("Signed out."));
window.addEventListener("hashchange", render);
window.addEventListener("resize", () => {
  for (const chart of state.charts) chart.setSize({ width: Math.max(320, chart.root.parentElement.clientWidth), height: 300 });
});
render();
