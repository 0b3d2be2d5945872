// The tables a job has: the goals a dry run would create, its invalid items and failed sessions,
// and its audit trail. All read from the API; every cell is text.

import { pagedTable } from "./components.js";
import { h, num, shortId, when } from "./dom.js";

const mono = (text) => h("span", { class: "mono" }, text);

// Endpoints without offset return everything at once; page through them here.
function pagesOf(fetchAll) {
  let items = null;
  return async (limit, offset, fresh) => {
    if (items === null || fresh) items = await fetchAll();
    return { items: items.slice(offset, offset + limit), total: items.length };
  };
}

export function previewTable(api, job, pageSize = 20) {
  return pagedTable({
    pageSize,
    caption: (shown) => `Goals it would create: the first ${num(shown)} of ${num(job.stats.goals_created)}`,
    columns: [
      { label: "Patient", value: (g) => mono(shortId(g.patient_id)), header: true },
      { label: "Session date", value: (g) => when(g.created_at) },
      { label: "Goal", value: (g) => g.description, class: "wide" },
      { label: "Category", value: (g) => g.category ?? "—" },
    ],
    load: pagesOf(async () => (await api.preview(job.id)).items),
    empty: "It would create no goals.",
  });
}

export function invalidTable(api, job, pageSize = 20) {
  return pagedTable({
    pageSize,
    caption: "Invalid items (skipped), with the reason",
    columns: [
      { label: "Session", value: (f) => mono(f.session_id), header: true },
      { label: "Item index", value: (f) => (f.item_index ?? "—"), class: "num" },
      { label: "Reason", value: (f) => f.reason, class: "wide" },
    ],
    load: (limit, offset) => api.issues(job.id, "invalid", limit, offset),
    empty: "No invalid items.",
  });
}

export function failedTable(api, job, pageSize = 20) {
  return pagedTable({
    pageSize,
    caption: "Failed sessions (left untouched), with the database's error",
    columns: [
      { label: "Session", value: (f) => mono(f.session_id), header: true },
      { label: "Error", value: (f) => f.reason, class: "wide" },
    ],
    load: (limit, offset) => api.issues(job.id, "error", limit, offset),
    empty: "No failed sessions.",
  });
}

const limit = (v) => (v === null || v === undefined ? "off" : String(v));

// The pacing entries in words ("throttled: standby replay lag 12.4 s, limit 5 s", "went on after
// 3.5 s", "limits changed: max_replay_lag_seconds 5 → 10"); every other entry as its fields.
function auditDetails(a) {
  const d = a.details || {};
  if (a.action === "throttled") return `${d.sharing ? "sharing" : "throttled"}: ${d.message ?? d.signal}`;
  if (a.action === "throttle_cleared") {
    const waited = typeof d.waited_seconds === "number" ? `${d.waited_seconds.toFixed(1)} s` : "a wait";
    return `went on after ${waited}${d.signal ? ` (${d.signal})` : ""}`;
  }
  if (a.action === "limits") {
    const changes = Object.entries(d).map(([k, v]) => `${k} ${limit(v?.from)} → ${limit(v?.to)}`);
    return `limits changed: ${changes.join(", ")}`;
  }
  return mono(Object.entries(d).map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join(", ") || "—");
}

export function auditTable(api, job, pageSize = 20) {
  return pagedTable({
    pageSize,
    caption: "Audit trail: who did what to this job, and what the system did",
    columns: [
      { label: "When", value: (a) => when(a.at), header: true },
      { label: "Who", value: (a) => a.actor },
      { label: "What", value: (a) => a.action },
      { label: "Details", value: auditDetails, class: "wide" },
    ],
    load: pagesOf(async () => (await api.audit(job.id)).items),
    empty: "No entries.",
  });
}
