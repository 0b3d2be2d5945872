// A job's pace over time, from its batch rows (GET /timeline): sessions per second and batch size
// as two lines, the times it waited on the database's health shaded. Drawn here as SVG (no chart
// library), and the same numbers in a table for screen readers and for copying.

import { clear, h, num } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const W = 640;
const H = 180;
const PAD = { left: 56, right: 56, top: 12, bottom: 28 };
const SLICES = 60;

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  for (const child of children) el.append(child);
  return el;
}

const capitalized = (word) => word[0].toUpperCase() + word.slice(1);
const hms = (ms) => new Date(ms).toLocaleTimeString("en-GB", { hour12: false });

function overlaps(slice, waits) {
  const from = Date.parse(slice.start);
  const to = from + slice.seconds * 1000;
  return waits.some((w) => Date.parse(w.from) < to && (w.to === null ? Infinity : Date.parse(w.to)) > from);
}

function draw(timeline, unit) {
  const slices = timeline.slices;
  const waits = timeline.throttled;
  const starts = slices.map((x) => Date.parse(x.start));
  const t0 = Math.min(...starts, ...waits.map((w) => Date.parse(w.from)));
  const ends = slices.map((x, i) => starts[i] + x.seconds * 1000);
  const t1 = Math.max(...ends, ...waits.map((w) => (w.to ? Date.parse(w.to) : Date.now())), t0 + 1000);
  const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * (W - PAD.left - PAD.right);
  const topRate = Math.max(1, ...slices.map((v) => v.rate_per_second));
  const topSize = Math.max(1, ...slices.map((v) => v.batch_size || 0));
  const yRate = (v) => H - PAD.bottom - (v / topRate) * (H - PAD.top - PAD.bottom);
  const ySize = (v) => H - PAD.bottom - (v / topSize) * (H - PAD.top - PAD.bottom);
  const middle = (i) => x(starts[i] + slices[i].seconds * 500);
  // A path through the middle of each slice; a slice without a value (no batch ran in it, so it
  // has no batch size) breaks the line rather than drawing a size nobody used across the gap.
  const line = (y, key) => {
    let d = "";
    let gap = true;
    slices.forEach((v, i) => {
      if (v[key] === null || v[key] === undefined) {
        gap = true;
        return;
      }
      d += `${gap ? "M" : "L"}${middle(i).toFixed(1)},${y(v[key]).toFixed(1)} `;
      gap = false;
    });
    return d.trim();
  };
  const svg = s(
    "svg",
    {
      viewBox: `0 0 ${W} ${H}`,
      role: "img",
      "aria-label": `Rate up to ${num(Math.round(topRate))} ${unit} per second, batch size up to ${num(topSize)}; ${waits.length} wait${waits.length === 1 ? "" : "s"} on the database's health`,
      class: "pace-svg",
    },
  );
  for (const w of waits) {
    const from = x(Date.parse(w.from));
    const to = x(w.to ? Date.parse(w.to) : t1);
    svg.append(
      s("rect", { class: "throttled", x: from.toFixed(1), y: PAD.top, width: Math.max(to - from, 2).toFixed(1), height: H - PAD.top - PAD.bottom },
        s("title", {}, `${w.message} (${hms(Date.parse(w.from))}–${w.to ? hms(Date.parse(w.to)) : "now"})`)),
    );
  }
  svg.append(
    s("line", { class: "axis", x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom }),
    s("path", { class: "rate", d: line(yRate, "rate_per_second") }),
    s("path", { class: "size", d: line(ySize, "batch_size") }),
    s("text", { class: "label rate-label", x: PAD.left - 6, y: PAD.top + 8, "text-anchor": "end" }, num(Math.round(topRate))),
    s("text", { class: "label rate-label", x: PAD.left - 6, y: H - PAD.bottom, "text-anchor": "end" }, "0"),
    s("text", { class: "label size-label", x: W - PAD.right + 6, y: PAD.top + 8 }, num(topSize)),
    s("text", { class: "label size-label", x: W - PAD.right + 6, y: H - PAD.bottom }, "0"),
    s("text", { class: "label", x: PAD.left, y: H - 8 }, hms(t0)),
    s("text", { class: "label", x: W - PAD.right, y: H - 8, "text-anchor": "end" }, hms(t1)),
  );
  return svg;
}

export function paceChart(api, job) {
  const unit = job.kind === "rollback" ? "goals" : "sessions";
  const plot = h("div", { class: "pace-plot" });
  const legend = h(
    "p",
    { class: "pace-legend" },
    h("span", { class: "key rate" }, `${unit} per second (left)`),
    h("span", { class: "key size" }, "batch size (right)"),
    h("span", { class: "key throttled" }, "waiting on the database's health, or sharing it"),
  );
  const body = h("tbody");
  const table = h(
    "table",
    { class: "pace-table" },
    h("caption", {}, `The job's pace by slice of time: ${unit} per second, mean batch size, and whether it waited`),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "From"), ...[`${capitalized(unit)} per second`, "Batch size", "Batches"].map((t) => h("th", { scope: "col", class: "num" }, t)), h("th", { scope: "col" }, "Waited"))),
    body,
  );
  const empty = h("p", { class: "muted" }, "No batch has committed yet.");
  const el = h(
    "section",
    { class: "card", "aria-labelledby": "pace-h", "data-chart": "" },
    h("h2", { id: "pace-h" }, "Pace"),
    empty,
    plot,
    legend,
    h("details", { class: "pace-numbers" }, h("summary", {}, "The numbers"), table),
  );

  async function reload() {
    const timeline = await api.timeline(job.id, SLICES);
    const any = timeline.slices.length > 0;
    empty.hidden = any;
    plot.hidden = !any;
    legend.hidden = !any;
    clear(plot);
    clear(body);
    if (!any) return;
    plot.append(draw(timeline, unit));
    for (const slice of timeline.slices) {
      body.append(
        h(
          "tr",
          {},
          h("th", { scope: "row" }, hms(Date.parse(slice.start))),
          h("td", { class: "num" }, num(Math.round(slice.rate_per_second))),
          h("td", { class: "num" }, slice.batch_size === null ? "—" : num(slice.batch_size)),
          h("td", { class: "num" }, num(slice.batches)),
          h("td", {}, overlaps(slice, timeline.throttled) ? "yes" : "no"),
        ),
      );
    }
  }

  return { el, reload };
}
