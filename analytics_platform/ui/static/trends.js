// Trends on the machine chart (GET /v1/trends): a "Show trend" button under the chart fetches the
// newest trend judgement of the chart's series for each stored window and draws each Theil–Sen line
// (intercept + slope × hours since the window's start) over its window on the chart, with the
// Mann–Kendall verdict written out beside it. On demand, so the machine page still loads with its
// three /v1 calls. app.js calls window.plantTrends.control(...) from its machine view (one hook).
// Text from the API is always set as text, never parsed as HTML.

(() => {
  const COLOUR = { increasing: "#a04a00", decreasing: "#1d4ed8", stable: "#4a5565" };
  const ARROW = { increasing: "↗", decreasing: "↘", stable: "→" };

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(name, String(value));
    }
    for (const child of children.flat()) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return node;
  }

  const number = (value) => Number(value).toLocaleString("en-US", { maximumSignificantDigits: 3 });

  /** The newest judgement per window length, longest window first. */
  function newestPerWindow(items) {
    const newest = new Map();
    for (const t of items) {
      const seen = newest.get(t.window_hours);
      if (!seen || seen.window_end < t.window_end) newest.set(t.window_hours, t);
    }
    return [...newest.values()].sort((a, b) => b.window_hours - a.window_hours);
  }

  function describe(t) {
    if (t.slope_per_hour === null) return `${t.window_hours} h: too few hourly points to judge (${t.n})`;
    const verdict = t.direction === "stable" ? "no significant trend" : t.direction;
    const sign = t.slope_per_hour > 0 ? "+" : "";
    return `${t.window_hours} h: ${ARROW[t.direction]} ${verdict}, slope ${sign}${number(t.slope_per_hour)}${t.unit ? ` ${t.unit}` : ""}/h, Mann–Kendall p = ${number(t.p_value)} (${t.n} points)`;
  }

  /** A uPlot draw hook painting each judgement's Theil–Sen line over its own window. */
  function lineHook(trends) {
    return (u) => {
      const ctx = u.ctx;
      for (const t of trends) {
        if (t.slope_per_hour === null) continue;
        const from = Date.parse(t.window_start) / 1000;
        const to = Date.parse(t.window_end) / 1000;
        const at = (seconds) => t.intercept + t.slope_per_hour * ((seconds - from) / 3600);
        ctx.save();
        ctx.beginPath();
        ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height);
        ctx.clip(); // a window reaching before the chart's range is cut at its edge
        ctx.strokeStyle = COLOUR[t.direction];
        ctx.lineWidth = 2 * devicePixelRatio;
        ctx.setLineDash([8 * devicePixelRatio, 4 * devicePixelRatio]);
        ctx.beginPath();
        ctx.moveTo(u.valToPos(from, "x", true), u.valToPos(at(from), "y", true));
        ctx.lineTo(u.valToPos(to, "x", true), u.valToPos(at(to), "y", true));
        ctx.stroke();
        ctx.restore();
      }
    };
  }

  // the lines shown on the current machine page, kept so a live chart's redraw gets them again
  let shown = null;

  function attach() {
    const u = shown && shown.plot();
    if (!u || !shown.trends.length || u._trendLines) return;
    u._trendLines = true;
    u.hooks.draw = [...(u.hooks.draw || []), lineHook(shown.trends)];
    u.redraw(false);
    u.root.closest("figure").dataset.trends = String(shown.trends.filter((t) => t.slope_per_hour !== null).length);
  }

  /**
   * The trend control of a machine chart. `api(path, params)` is the dashboard's API client,
   * `where` the machine, `plot()` the chart's uPlot instance (once drawn).
   */
  function control({ api, where, metric, sensor, end, plot }) {
    shown = null;
    const output = el("p", { class: "muted", id: "trend-summary", "aria-live": "polite" });
    const button = el("button", { type: "button", id: "show-trend" }, "Show trend");
    button.addEventListener("click", async () => {
      button.disabled = true;
      output.textContent = "Loading trend…";
      try {
        // the judgements of the windows ending in the last two hours before the chart's end
        const body = await api("/trends", {
          ...where,
          source: "metric",
          name: metric,
          sensor_id: sensor,
          start: new Date(end.getTime() - 2 * 3600 * 1000).toISOString(),
          end: new Date(end.getTime() + 1).toISOString(),
          limit: 100,
        });
        const trends = newestPerWindow(body.items);
        output.replaceChildren(...(trends.length ? trends.map((t) => el("span", { class: "trend", dataset: { direction: t.direction } }, describe(t), el("br"))) : ["No trend judged for this series in the two hours before the chart's end."]));
        shown = { trends, plot };
        attach();
      } catch (error) {
        output.textContent = `Trend unavailable — ${error.message}`;
      } finally {
        button.disabled = false;
      }
    });
    return el("div", { class: "trend-control" }, button, output);
  }

  window.plantTrends = { control, redraw: attach, describe, newestPerWindow };
})();
