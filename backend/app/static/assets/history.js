// Every job, migrate and rollback, newest first, however it was started (page, API, command line).

import { pagedTable } from "./components.js";
import { between, duration, h, jobLink, num, when } from "./dom.js";
import { isActive, jobLabel } from "./jobbox.js";

export function statsSummary(job) {
  const s = job.stats || {};
  if (job.kind === "rollback") {
    return job.dry_run
      ? `would delete ${num(s.goals_deleted)} · would keep ${num(s.goals_kept_modified)}`
      : `${num(s.goals_deleted)} deleted · ${num(s.goals_kept_modified)} kept`;
  }
  const created = job.dry_run ? `would create ${num(s.goals_created)}` : `${num(s.goals_created)} created`;
  return `${created} · ${num(s.goals_skipped_duplicate)} duplicates · ${num(s.goals_skipped_invalid)} invalid · ${num(s.errors)} failed`;
}

function statusCell(job) {
  const cell = [h("span", { class: `badge status-${job.status}` }, job.status)];
  if (job.rolled_back_by) cell.push(" ", h("span", { class: "badge rolled-back" }, "rolled back"));
  if (job.prediction && job.prediction.matched === true) cell.push(" ", h("span", { class: "badge" }, "as predicted"));
  if (job.prediction && job.prediction.matched === false) cell.push(" ", h("span", { class: "badge warn" }, "differs from prediction"));
  return cell;
}

export function historyView({ api }) {
  const heading = h("h1", { tabindex: "-1" }, "History");
  const table = pagedTable({
    caption: "Jobs, newest first",
    columns: [
      { label: "Job", value: (j) => jobLink(j.id), header: true },
      { label: "Kind", value: (j) => [jobLabel(j), j.target_job_id ? [" of ", jobLink(j.target_job_id)] : ""] },
      { label: "Status", value: statusCell },
      { label: "Started by", value: (j) => j.requested_by },
      { label: "Created", value: (j) => when(j.created_at), class: "num" },
      { label: "Took", value: (j) => (j.started_at ? duration(between(j.started_at, j.finished_at)) + (isActive(j) ? " so far" : "") : "—"), class: "num" },
      { label: "Statistics", value: statsSummary, class: "wide" },
    ],
    pageSize: 20,
    load: async (limit, offset) => {
      const page = await api.jobs(limit, offset);
      return { items: page.items, total: typeof page.total === "number" ? page.total : null };
    },
    empty: "No jobs yet.",
  });
  const refresh = h("button", { type: "button", class: "secondary" }, "Refresh");
  refresh.addEventListener("click", () => table.reload());
  const el = h(
    "div",
    { class: "view" },
    heading,
    h("p", { class: "lede" }, "Every migration and rollback job, whether started here, through the API or from the command line. Open a job for its failed sessions, invalid items, audit trail and undo."),
    h("section", { class: "card", "aria-label": "Jobs" }, h("div", { class: "actions" }, refresh), table.el),
  );
  table.first();
  return { el, heading, title: "History", stop() {} };
}
