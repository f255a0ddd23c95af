// Lab analytes as time series, on the quality page: one analyte of one station per window
// (GET /v1/lab/agg) drawn as its mean with the min–max band, beside the spec limits in force at each
// bucket (lower, target, upper). Loaded before app.js, whose quality page calls
// window.labSeries.section(context, ui) with its own helpers (h, api, chartFigure, ...), so there is
// one way of fetching and drawing in the dashboard. The series is fetched when an analyte is chosen
// (or named by `analyte` in the page's URL) after the page has drawn with its own calls, so the
// quality page still loads in three.

const LAB_WINDOWS = [
  [3600, "1 hour"],
  [86400, "day"],
  [300, "5 min"],
  [60, "1 min"],
];
const LIMIT_COLOUR = "#b3161d";
const TARGET_COLOUR = "#146c2e";

/** The quality page's lab-series section: pickers and the chart, filled in on demand. */
function section(context, ui) {
  const { h, api, chartFigure, assetLink, hourKey, colour } = ui;
  const analyteSelect = h(
    "select",
    { id: "lab-series-analyte", name: "analyte" },
    h("option", { value: "" }, "Choose an analyte"),
    context.analytes.map((a) => h("option", { value: a, selected: a === context.analyte }, a)),
  );
  const windowSelect = h(
    "select",
    { id: "lab-series-window", name: "lab_window" },
    LAB_WINDOWS.map(([w, label]) => h("option", { value: w, selected: w === Number(context.window || 3600) }, label)),
  );
  const stationSelect = h("select", { id: "lab-series-station", name: "station", disabled: true });
  const holder = h("div", { id: "lab-series" }, h("p", { class: "muted" }, "Choose an analyte to chart it against its spec limits."));
  let items = [];

  const draw = () => {
    const station = stationSelect.value;
    const rows = items.filter((i) => i.station_id === station);
    const analyte = analyteSelect.value;
    const last = rows.at(-1);
    const unit = rows.find((r) => r.unit)?.unit;
    const figure = chartFigure({
      id: "lab-series-chart",
      title: `${analyte} at ${station || "—"} per ${windowSelect.selectedOptions[0].textContent}${unit ? ` (${unit})` : ""}`,
      description: `${rows.length} buckets with lab results: mean with the min–max band, and the spec limits in force at each bucket.`,
      data: [
        rows.map((r) => Date.parse(r.bucket_start) / 1000),
        rows.map((r) => r.avg),
        rows.map((r) => r.min),
        rows.map((r) => r.max),
        rows.map((r) => r.lower_limit),
        rows.map((r) => r.target),
        rows.map((r) => r.upper_limit),
      ],
      points: rows.length,
      series: [
        { label: "mean", stroke: colour, width: 2, points: { show: true } },
        { label: "min", stroke: "rgba(11, 92, 173, 0.4)", width: 1 },
        { label: "max", stroke: "rgba(11, 92, 173, 0.4)", width: 1 },
        { label: "lower limit", stroke: LIMIT_COLOUR, width: 1, dash: [6, 4], paths: stepped() },
        { label: "target", stroke: TARGET_COLOUR, width: 1, dash: [2, 4], paths: stepped() },
        { label: "upper limit", stroke: LIMIT_COLOUR, width: 1, dash: [6, 4], paths: stepped() },
      ],
      bands: [{ series: [3, 2], fill: "rgba(11, 92, 173, 0.15)" }],
      extra: { analyte, station, window: windowSelect.value },
      yLabel: unit || analyte,
      lineage: last ? assetLink("lab_window_aggregates", hourKey(last.bucket_start)) : null,
    });
    holder.replaceChildren(figure);
    if (figure._draw) figure._draw();
  };

  const load = async () => {
    const analyte = analyteSelect.value;
    if (!analyte) return;
    remember({ analyte, lab_window: windowSelect.value });
    holder.replaceChildren(h("p", { class: "loading" }, "Loading…"));
    const body = await api("/lab/agg", {
      tenant_id: context.tenant,
      factory_id: context.factory,
      analyte,
      window_s: windowSelect.value,
      start: context.range.start,
      end: context.range.end,
      limit: 10000,
    });
    items = body.items;
    const stations = [...new Set(items.map((i) => i.station_id))].sort();
    const keep = stations.includes(stationSelect.value) ? stationSelect.value : stations[0] || "";
    stationSelect.replaceChildren(...stations.map((s) => h("option", { value: s, selected: s === keep }, s)));
    stationSelect.disabled = stations.length < 2;
    draw();
    if (body.next_cursor) holder.append(h("p", { class: "muted" }, `Showing the first ${body.count} buckets; narrow the range or widen the window.`));
  };
  const failed = (error) => holder.replaceChildren(h("p", { class: "empty" }, `Could not load the lab series — ${error.message || error}`));
  analyteSelect.addEventListener("change", () => load().catch(failed));
  windowSelect.addEventListener("change", () => load().catch(failed));
  stationSelect.addEventListener("change", draw);
  if (context.analyte) setTimeout(() => load().catch(failed), 0);

  return h(
    "section",
    { class: "lab-series" },
    h("h2", {}, "Lab analyte over time"),
    h(
      "form",
      { class: "controls", onsubmit: (event) => event.preventDefault() },
      h("label", {}, "Analyte ", analyteSelect),
      h("label", {}, "Station ", stationSelect),
      h("label", {}, "Window ", windowSelect),
    ),
    holder,
  );
}

/** The choice in the page's address, so the view can be shared or reloaded, without a new render
 * (replaceState fires no hashchange: the page's own data is not fetched again). */
function remember(changes) {
  const [path, query = ""] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query);
  for (const [name, value] of Object.entries(changes)) params.set(name, value);
  history.replaceState(history.state, "", `#${path}?${params}`);
}

/** Limits change only at a bucket: drawn as steps, not slopes between buckets. */
function stepped() {
  return uPlot.paths && uPlot.paths.stepped ? uPlot.paths.stepped({ align: 1 }) : undefined;
}

window.labSeries = { section };
