// Preview, then confirm and run: a dry run's numbers become the text of the Run button, and the
// real run is started with confirmed_from, so the job itself says whether it matched them.

import { confirmAction, errorBox, whileBusy } from "./components.js";
import { clear, h, jobLink, link, num, plural, setText, when } from "./dom.js";
import { createJobBox, isActive, jobLabel } from "./jobbox.js";
import { failedTable, invalidTable, previewTable } from "./tables.js";

function numberField(id, label, hint, value, min, max) {
  const input = h("input", {
    id,
    type: "number",
    inputmode: "numeric",
    min,
    max,
    value,
    "aria-describedby": `${id}-hint`,
  });
  return {
    input,
    el: h("div", { class: "field" }, h("label", { for: id }, label), input, h("p", { class: "hint", id: `${id}-hint` }, hint)),
  };
}

export function migrateView({ api }) {
  const batch = numberField("opt-batch-size", "Batch size", "1 to 10,000 patients' sessions a batch", "1000", 1, 10000);
  const pause = numberField("opt-pause-ms", "Pause between batches (ms)", "0 to 60,000; spares a busy database", "0", 0, 60000);
  const maxErrors = numberField("opt-max-errors", "Stop after failed sessions", "the job fails when more sessions fail", "1000", 0, 10000000);
  const adaptive = h("input", { id: "opt-adaptive", type: "checkbox", checked: true, "aria-describedby": "opt-adaptive-hint" });
  const adaptiveField = h(
    "div",
    { class: "field check" },
    h("label", { for: "opt-adaptive" }, adaptive, " Adapt batch size to a 0.3 s target"),
    h("p", { class: "hint", id: "opt-adaptive-hint" }, "Each batch then aims at about 0.3 s, starting at the batch size above, and the job waits while the database is unwell. Untick to keep the batch size fixed."),
  );
  // Adaptive, the size is only where batches start: the label says so, and follows the box.
  const batchLabel = batch.el.querySelector("label");
  const sayBatchSize = () => setText(batchLabel, adaptive.checked ? "Starting batch size" : "Batch size");
  adaptive.addEventListener("change", sayBatchSize);
  sayBatchSize();
  const options = h(
    "details",
    { class: "options" },
    h("summary", {}, "Options for the next job"),
    h("div", { class: "fields" }, batch.el, pause.el, maxErrors.el),
    adaptiveField,
  );
  // The API validates these; empty fields are left out so its defaults apply.
  const chosen = () => {
    const params = { adaptive: adaptive.checked };
    for (const [name, field] of [["batch_size", batch], ["pause_ms", pause], ["max_errors", maxErrors]]) {
      if (field.input.value.trim() !== "") params[name] = field.input.value.trim();
    }
    return params;
  };

  const banner = h("div", { class: "notice", hidden: true });

  const startDry = h("button", { type: "button", class: "primary", id: "start-dry-run" }, "Start dry run");
  const dryErrors = errorBox();
  const dryResults = h("div", { class: "results" });
  const dryBox = createJobBox({ api, name: "dry-run", onUpdate: () => updateRun(), onEnd: (job) => dryEnded(job) });

  const runState = h("p", { class: "run-state" });
  const run = h("button", { type: "button", class: "primary", id: "run-migration", disabled: true }, "Run the migration");
  const runErrors = errorBox();
  const runNext = h("p", { class: "next", hidden: true });
  const runBox = createJobBox({ api, name: "run", onUpdate: () => updateRun(), onEnd: (job) => runEnded(job) });

  const heading = h("h1", { tabindex: "-1" }, "Migrate action items into goals");
  const el = h(
    "div",
    { class: "view" },
    heading,
    h(
      "p",
      { class: "lede" },
      "Moves the action items in therapy sessions' notes into treatment goals. Preview with a dry run, " +
        "check its numbers, then confirm the run they describe.",
    ),
    banner,
    h(
      "section",
      { class: "card", "aria-labelledby": "preview-h" },
      h("h2", { id: "preview-h" }, "1. Preview"),
      h("p", {}, "A dry run reads every session and counts what a real run would do. It writes no goals."),
      options,
      h("div", { class: "actions" }, startDry),
      dryErrors.el,
      dryBox.el,
    ),
    h(
      "section",
      { class: "card", "aria-labelledby": "run-h" },
      h("h2", { id: "run-h" }, "2. Confirm and run"),
      runState,
      h("div", { class: "actions" }, run),
      runErrors.el,
      runBox.el,
      runNext,
    ),
    dryResults,
  );

  let dry = null;
  let real = null;
  let resultsFor = null;

  function updateRun() {
    dry = dryBox.current();
    real = runBox.current();
    const busy = (dry && isActive(dry)) || (real && isActive(real));
    startDry.disabled = Boolean(busy);
    const ready = dry && dry.status === "succeeded" && !real;
    run.disabled = !ready;
    if (ready) {
      run.textContent = `Create ${plural(dry.stats.goals_created, "goal", "goals")} for ${plural(dry.patients_with_goals_created, "patient", "patients")} from ${plural(dry.stats.sessions_with_action_items, "session", "sessions")}…`;
      clear(runState).append("Dry run ", jobLink(dry.id), ` of ${when(dry.finished_at)} predicts the numbers on the button; what it found is listed below. Running asks you to confirm them.`);
    } else {
      run.textContent = "Run the migration";
      const why = !dry
        ? "Start a dry run first: the run follows its numbers."
        : isActive(dry)
          ? "Waiting for the dry run to finish."
          : dry.status !== "succeeded"
            ? "The dry run did not finish; resume it or start a new one."
            : "This dry run's migration has been started. Start a new dry run to preview again.";
      clear(runState).append(why);
    }
  }

  function dryEnded(job) {
    updateRun();
    if (job.status !== "succeeded" || resultsFor === job.id) return;
    resultsFor = job.id;
    const tables = [previewTable(api, job, 10), invalidTable(api, job, 10)];
    if (job.stats.errors) tables.push(failedTable(api, job, 10));
    clear(dryResults).append(
      h(
        "section",
        { class: "card", "aria-labelledby": "found-h" },
        h("h2", { id: "found-h" }, "What dry run ", jobLink(job.id), " found"),
        tables.map((t) => t.el),
      ),
    );
    for (const t of tables) t.first();
  }

  function runEnded(job) {
    updateRun();
    clear(runNext).append(
      "Next: ",
      link(`jobs/${job.id}`, "open this run's page"),
      " for its failed sessions, invalid items, audit trail and undo, or ",
      link("verify", "verify the result"),
      ".",
    );
    runNext.hidden = false;
  }

  startDry.addEventListener("click", () =>
    whileBusy(startDry, async () => {
      dryErrors.clear();
      try {
        const job = await api.start({ dry_run: true, ...chosen() });
        resultsFor = null;
        clear(dryResults);
        runBox.reset(); // a new dry run makes the earlier real run history
        runNext.hidden = true;
        dryBox.watch(job);
      } catch (error) {
        dryErrors.show(error);
      }
    }).then(updateRun),
  );

  run.addEventListener("click", () => {
    if (run.disabled || !dry) return;
    const s = dry.stats;
    confirmAction({
      title: "Run the migration?",
      body: h(
        "div",
        { class: "dialog-body" },
        h("p", {}, "This writes to treatment_goals. Dry run ", jobLink(dry.id), ` of ${when(dry.finished_at)} predicts that it will:`),
        h(
          "ul",
          { class: "prediction-list" },
          h("li", {}, "create ", h("strong", { "data-confirm": "goals_created" }, plural(s.goals_created, "goal", "goals")), ` for ${plural(dry.patients_with_goals_created, "patient", "patients")} from ${plural(s.sessions_with_action_items, "session", "sessions")} with action items (${plural(s.sessions_processed, "session", "sessions")} read);`),
          h("li", {}, `skip ${plural(s.goals_skipped_duplicate, "duplicate", "duplicates")} and ${plural(s.goals_skipped_invalid, "invalid item", "invalid items")};`),
          h("li", {}, s.errors ? `leave ${plural(s.errors, "session", "sessions")} that fail untouched (the dry run lists them).` : "find no session that fails."),
        ),
        h("p", {}, "If the data changes before the run, its numbers will differ, and the job will say by how much. It can be undone from its page."),
      ),
      confirmLabel: `Create ${plural(s.goals_created, "goal", "goals")}`,
      action: async () => {
        runErrors.clear();
        const job = await api.start({ dry_run: false, confirmed_from: dry.id, ...chosen() });
        runBox.watch(job);
        updateRun();
      },
    });
  });

  async function load() {
    try {
      const { items } = await api.jobs(50, 0);
      const dryIndex = items.findIndex((j) => j.kind === "migrate" && j.dry_run);
      const latestReal = items.find((j, i) => j.kind === "migrate" && !j.dry_run && (dryIndex < 0 || i < dryIndex));
      if (dryIndex >= 0) dryBox.watch(items[dryIndex]);
      if (latestReal) runBox.watch(latestReal);
      const active = items.find(isActive);
      if (active && active !== items[dryIndex] && active !== latestReal) {
        clear(banner).append(`A ${jobLabel(active).toLowerCase()} is active: `, link(`jobs/${active.id}`, "open it"), " to watch, cancel or resume it.");
        banner.hidden = false;
      }
    } catch (error) {
      dryErrors.show(error);
    }
    updateRun();
  }

  load();
  return {
    el,
    heading,
    title: "Migrate",
    stop() {
      dryBox.stop();
      runBox.stop();
    },
  };
}
