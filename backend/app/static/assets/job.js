// One job's page: its live box, its settings, and for a migration the goals it would create, its
// invalid items and failed sessions; its audit trail; and for a finished real run, the undo.

import { confirmAction, errorBox, whileBusy } from "./components.js";
import { between, clear, duration, h, jobLink, num, plural, setText, shortId, when } from "./dom.js";
import { createJobBox, isActive, jobLabel } from "./jobbox.js";
import { auditTable, failedTable, invalidTable, previewTable } from "./tables.js";
import { paceChart } from "./chart.js";
import { limitsSection } from "./limits.js";

const RESUMABLE = new Set(["cancelled", "interrupted", "failed"]);
const CHART_EVERY_MS = 5000;

// "Adaptive (now 2,740 per batch), from 1,000" or "Fixed batches of 1,000": what sizes batches now.
function batchSizeText(job) {
  if (!job.adaptive) return `Fixed batches of ${num(job.batch_size)}`;
  const now = job.current_batch_size ? `now ${num(job.current_batch_size)} per batch` : "no batch yet";
  return `Adaptive (${now}), from ${num(job.batch_size)}`;
}

const DETAILS = [
  ["requested_by", "Started by", (j) => j.requested_by],
  ["created_at", "Created", (j) => when(j.created_at)],
  ["started_at", "Started", (j) => when(j.started_at)],
  ["finished_at", "Finished", (j) => when(j.finished_at)],
  ["took", "Took", (j) => (j.started_at ? duration(between(j.started_at, j.finished_at)) : "—")],
  ["batch_size", "Batches", batchSizeText],
  ["pause_ms", "Pause between batches", (j) => `${num(j.pause_ms)} ms`],
  ["max_errors", "Stop after failed sessions", (j) => num(j.max_errors)],
];
const LINKS = [
  ["target_job_id", "Rolls back"],
  ["rolled_back_by", "Rolled back by"],
  ["confirmed_from", "Confirmed from dry run"],
];

function undoSection(api, target, onDone) {
  const preview = h("button", { type: "button", class: "secondary", id: "preview-rollback" }, "Preview rollback");
  const commit = h("button", { type: "button", class: "danger", id: "run-rollback", hidden: true }, "Roll back");
  const outcome = h("p", { class: "outcome", hidden: true });
  const errors = errorBox();
  const box = createJobBox({ api, name: "rollback", onEnd: ended });
  // What the rollback takes back: this run, and the later runs that relied on its goals once the
  // admin chose to roll them back together; or this run alone, migrating again afterwards.
  let targets = [target.id];
  let keepLaterRuns = false;
  let previewed = null;
  const runs = () => (targets.length === 1 ? "this run" : `these ${targets.length} runs`);

  function ended(job) {
    if (job.status !== "succeeded") return;
    const s = job.stats;
    outcome.hidden = false;
    if (job.dry_run) {
      previewed = job;
      clear(outcome).append(`The preview says: delete ${plural(s.goals_deleted, "goal", "goals")} ${runs()} created, and keep ${plural(s.goals_kept_modified, "goal", "goals")} that clinicians have changed since.`);
      commit.textContent = `Delete ${plural(s.goals_deleted, "goal", "goals")}…`;
      commit.hidden = false;
    } else {
      clear(outcome).append(`Rolled back: ${plural(s.goals_deleted, "goal", "goals")} deleted, ${plural(s.goals_kept_modified, "goal", "goals")} kept because clinicians changed them.`);
      if (keepLaterRuns) {
        outcome.append(" The later runs' items have no goal now: ", h("a", { href: "#/" }, "run a migration again"), " to create them (Verify counts them).");
      }
      commit.hidden = true;
      preview.hidden = true;
      onDone();
    }
  }

  async function startPreview() {
    errors.clear();
    outcome.hidden = true;
    commit.hidden = true;
    box.watch(await api.rollbackJobs(targets, true));
  }

  // The API refuses a rollback that would strand later runs: say why, and offer both ways out.
  function offerWaysOut(error) {
    const later = error.body.later_job_ids;
    errors.show(error);
    const together = h("button", { type: "button", class: "secondary", id: "rollback-together" }, `Preview rolling back together with ${plural(later.length, "later run", "later runs")}`);
    const alone = h("button", { type: "button", class: "quiet", id: "rollback-alone" }, "Roll back this run alone, then migrate again");
    together.addEventListener("click", () =>
      whileBusy(together, async () => {
        targets = [target.id, ...later];
        keepLaterRuns = false;
        try {
          await startPreview();
        } catch (e) {
          errors.show(e);
        }
      }),
    );
    alone.addEventListener("click", () => {
      keepLaterRuns = true;
      errors.clear();
      commit.hidden = false;
      commit.click();
    });
    errors.el.append(
      h("p", {}, "Later runs: ", ...later.flatMap((id, i) => [i ? ", " : "", jobLink(id)])),
      h("div", { class: "actions" }, together, alone),
    );
  }

  preview.addEventListener("click", () =>
    whileBusy(preview, async () => {
      try {
        await startPreview();
      } catch (error) {
        errors.show(error);
      }
    }),
  );
  commit.addEventListener("click", () => {
    if (!previewed) return;
    const s = previewed.stats;
    confirmAction({
      title: targets.length === 1 ? "Roll back this migration?" : `Roll back these ${targets.length} migrations?`,
      body: h(
        "div",
        { class: "dialog-body" },
        h("p", {}, `This deletes ${plural(s.goals_deleted, "goal", "goals")} that ${targets.length === 1 ? `job ${shortId(target.id)}` : targets.map(shortId).join(", ")} created and nobody has changed since.`),
        h("p", {}, `${plural(s.goals_kept_modified, "goal", "goals")} that clinicians changed are kept. The numbers come from rollback preview ${shortId(previewed.id)}; if goals changed since, the rollback's own numbers will say so.`),
        keepLaterRuns ? h("p", {}, "Later runs counted these goals as duplicates: their items will have no goal until a migration runs again.") : "",
      ),
      confirmLabel: `Delete ${plural(s.goals_deleted, "goal", "goals")}`,
      danger: true,
      action: async () => {
        errors.clear();
        commit.hidden = true;
        outcome.hidden = true;
        try {
          box.watch(await api.rollbackJobs(targets, false, keepLaterRuns));
        } catch (error) {
          if (!Array.isArray(error.body.later_job_ids)) {
            commit.hidden = false;
            throw error;
          }
          offerWaysOut(error);
        }
      },
    });
  });

  const el = h(
    "section",
    { class: "card", "aria-labelledby": "undo-h" },
    h("h2", { id: "undo-h" }, "Undo this run"),
    h("p", {}, "A rollback deletes the goals this run created, except those that clinicians have changed since: those are kept. Preview it first; it runs as its own job."),
    h("div", { class: "actions" }, preview, commit),
    errors.el,
    box.el,
    outcome,
  );
  return { el, stop: () => box.stop() };
}

export function jobView({ api }, id) {
  const heading = h("h1", { tabindex: "-1" }, `Job ${shortId(id)}`);
  const fullId = h("p", { class: "lede mono" }, id);
  const errors = errorBox();
  const details = h("dl", { class: "details" });
  const values = {};
  for (const [key, label] of [...DETAILS, ...LINKS]) {
    values[key] = h("dd", {});
    details.append(h("div", { "data-detail": key }, h("dt", {}, label), values[key]));
  }
  const extra = h("div", { class: "job-sections" });
  let undo = null;
  let sectionsFor = "";
  let tables = [];
  let audit = null;
  let limits = null;
  let chart = null;
  let chartAt = 0;
  let waitSeen = "";

  function redrawChart(force) {
    if (!chart || (!force && Date.now() - chartAt < CHART_EVERY_MS)) return;
    chartAt = Date.now();
    chart.reload().catch((error) => errors.show(error));
  }

  // A wait that begins or ends is a new audit entry and a new shaded period: show both at once.
  function followWaits(job) {
    const wait = job.throttle ? `${job.throttle.signal}@${job.throttle.since}` : "";
    if (wait === waitSeen) return false;
    waitSeen = wait;
    if (audit) audit.reload();
    return true;
  }

  const box = createJobBox({
    api,
    onUpdate(job) {
      showDetails(job);
      if (!isActive(job)) return;
      const waitChanged = followWaits(job);
      if (sectionsFor === "") showSections(job);
      else redrawChart(waitChanged);
      if (limits) limits.update(job);
    },
    onEnd: (job) => showSections(job),
  });
  const el = h(
    "div",
    { class: "view" },
    heading,
    fullId,
    errors.el,
    h("section", { class: "card", "aria-label": "Status" }, box.el, details),
    extra,
  );

  function showDetails(job) {
    setText(heading, `${jobLabel(job)} ${shortId(job.id)}`);
    document.title = `${jobLabel(job)} ${shortId(job.id)} · Goal migration`;
    for (const [key, , value] of DETAILS) setText(values[key], value(job));
    for (const [key] of LINKS) {
      // A rollback may take back several jobs (target_job_ids); older APIs name one.
      const refs = key === "target_job_id" && job.target_job_ids ? job.target_job_ids : [job[key]].filter(Boolean);
      if (values[key].dataset.refs !== refs.join()) {
        values[key].dataset.refs = refs.join();
        clear(values[key]).append(refs.flatMap((ref, i) => (i ? [", ", jobLink(ref)] : [jobLink(ref)])));
      }
      values[key].parentElement.hidden = refs.length === 0;
    }
  }

  function showSections(job) {
    const key = isActive(job) ? "active" : job.status;
    if (key === sectionsFor) {
      for (const table of tables) table.reload();
      return;
    }
    sectionsFor = key;
    if (undo) undo.stop();
    undo = null;
    tables = [];
    audit = null;
    limits = null;
    clear(extra);
    chart = paceChart(api, job);
    extra.append(chart.el);
    redrawChart(true);
    if ((isActive(job) || RESUMABLE.has(job.status)) && !job.rolled_back_by) {
      const changed = (fresh) => {
        box.watch(fresh); // a stopped job's sections reload when it is watched again
        if (audit && isActive(fresh)) audit.reload();
      };
      limits = limitsSection(api, job, changed);
      extra.append(limits.el);
    }
    const titled = [];
    if (job.kind === "migrate") {
      if (!job.dry_run && !isActive(job) && !job.rolled_back_by) {
        undo = undoSection(api, job, () => reload());
        extra.append(undo.el);
      }
      if (job.dry_run && job.status === "succeeded") titled.push(["Goals it would create", previewTable(api, job)]);
      titled.push(["Failed sessions", failedTable(api, job)], ["Invalid items", invalidTable(api, job)]);
    }
    audit = auditTable(api, job);
    titled.push(["Audit trail", audit]);
    for (const [title, table] of titled) {
      extra.append(h("section", { class: "card", "aria-label": title }, table.el));
      table.first();
      tables.push(table);
    }
  }

  async function reload() {
    try {
      box.watch(await api.job(id));
    } catch (error) {
      errors.show(error);
    }
  }

  reload();
  return {
    el,
    heading,
    title: `Job ${shortId(id)}`,
    stop() {
      box.stop();
      if (undo) undo.stop();
    },
  };
}
