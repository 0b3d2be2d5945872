// One job, watched: status, a <progress> bar, the figures, the statistics, what to do when it is
// stuck, and Cancel / Resume. Polling updates text in place, so nothing around it moves or resets.

import { errorBox, STALLED_AFTER_SECONDS, whileBusy } from "./components.js";
import { between, clear, duration, h, jobLink, num, percent, plural, setText, when } from "./dom.js";
import { poll } from "./poll.js";

const ACTIVE = new Set(["queued", "running", "cancelling"]);
const RESUMABLE = new Set(["cancelled", "interrupted", "failed"]);

export const isActive = (job) => ACTIVE.has(job.status);

const MIGRATE_STATS = [
  ["sessions_processed", "Sessions read", "Sessions read"],
  ["sessions_with_action_items", "With action items", "With action items"],
  ["goals_created", "Goals created", "Goals to create"],
  ["goals_skipped_duplicate", "Duplicates skipped", "Duplicates to skip"],
  ["goals_skipped_invalid", "Invalid items skipped", "Invalid items to skip"],
  ["errors", "Failed sessions", "Failed sessions"],
];
const ROLLBACK_STATS = [
  ["goals_deleted", "Goals deleted", "Goals to delete"],
  ["goals_kept_modified", "Kept: changed since", "To keep: changed since"],
];

export function statLabels(job) {
  const rows = job.kind === "rollback" ? ROLLBACK_STATS : MIGRATE_STATS;
  return rows.map(([key, real, dry]) => [key, job.dry_run ? dry : real]);
}

export function jobLabel(job) {
  if (job.kind === "rollback") return job.dry_run ? "Rollback preview" : "Rollback";
  return job.dry_run ? "Dry run" : "Migration";
}

// Field names are read tolerantly: the API may name a rollback's units goals_* in future.
export function progressOf(job) {
  const p = job.progress || {};
  const pick = (...names) => {
    for (const name of names) if (p[name] !== undefined) return p[name];
    return null;
  };
  return {
    total: pick("sessions_total", "goals_total", "total"),
    processed: pick("sessions_processed", "goals_processed", "processed"),
    percent: pick("percent"),
    rate: pick("rate_per_second"),
    eta: pick("eta_seconds"),
    unit: job.kind === "rollback" ? "goals" : "sessions",
  };
}

export function statusText(job) {
  const label = jobLabel(job);
  const took = job.started_at && job.finished_at ? ` in ${duration(between(job.started_at, job.finished_at))}` : "";
  const words = {
    queued: "queued",
    running: "running",
    cancelling: "stopping at the next batch boundary",
    cancelled: "cancelled",
    succeeded: `finished${took}`,
    failed: "failed",
    interrupted: "interrupted",
  };
  return `${label} ${words[job.status] || job.status}${job.rolled_back_by ? ", then rolled back" : ""}`;
}

function releaseHint(job) {
  const release = job.released_in_seconds;
  return typeof release === "number" ? ` That happens in about ${duration(release)} unless a heartbeat comes.` : "";
}

export function explanation(job) {
  const age = typeof job.heartbeat_age_seconds === "number" ? job.heartbeat_age_seconds : null;
  const stalled = age !== null && age > STALLED_AFTER_SECONDS;
  const realMigration = job.kind === "migrate" && !job.dry_run;
  switch (job.status) {
    case "queued":
      return stalled
        ? `Queued ${duration(age)} ago and not picked up: the process that started it may have stopped. ` +
            `Once its heartbeat is stale the job is marked interrupted; then Resume it.${releaseHint(job)}`
        : "Waiting for a worker to pick it up.";
    case "running":
      return stalled
        ? `No heartbeat for ${duration(age)}: the process running this job may have stopped. Once the ` +
            `heartbeat is stale the job is marked interrupted, and Resume continues from its last ` +
            `committed batch.${releaseHint(job)}`
        : "";
    case "cancelling":
      return stalled
        ? `No heartbeat for ${duration(age)}: the process may be gone. The job will be marked ` +
            `interrupted; nothing committed is lost.${releaseHint(job)}`
        : "It stops at the next batch boundary; the batches already committed stay.";
    case "cancelled":
      return (
        "Stopped on request; the batches already committed stay. Resume continues where it stopped" +
        (realMigration && !job.rolled_back_by ? ", or undo what it created." : ".")
      );
    case "failed":
      return `${job.error || "The job failed."} Fix the cause, then Resume: it continues from the last committed batch.`;
    case "interrupted":
      return `${job.error || "The process running it stopped."} Resume continues where it stopped; nothing is lost or doubled.`;
    case "succeeded": {
      const errors = job.stats && job.stats.errors;
      return errors
        ? `${plural(errors, "session", "sessions")} failed and ${errors === 1 ? "was" : "were"} left as they were; the job's page lists them with the database's error.`
        : "";
    }
    default:
      return "";
  }
}

// What a running job waits on, in words: "Waiting: standby replay lag 12.4 s, limit 5 s, since 14:02:31".
export function throttleText(job) {
  const t = job.throttle;
  if (!t || !isActive(job)) return "";
  const since = new Date(t.since).toLocaleTimeString("en-GB", { hour12: false });
  return `${t.sharing ? "Sharing the database with others at work" : "Waiting"}: ${t.message}, since ${since}`;
}

export function predictionNodes(job) {
  const p = job.prediction;
  if (!p) return [];
  const dry = jobLink(p.dry_run_id);
  if (p.matched === null || p.matched === undefined) {
    return ["Confirmed from dry run ", dry, "; compared with its prediction when it ends."];
  }
  if (p.matched) return ["Matched the prediction of dry run ", dry, " exactly."];
  const labels = Object.fromEntries(statLabels({ ...job, dry_run: false }));
  const changes = Object.entries(p.differences || {}).map(
    ([key, diff]) => `${labels[key] || key} ${diff > 0 ? "+" : "−"}${num(Math.abs(diff))}`,
  );
  return [
    "Differed from the prediction of dry run ",
    dry,
    ` (the data changed in between): ${changes.join(", ")}.`,
  ];
}

let boxes = 0;

export function createJobBox({ api, name = "job", onUpdate = () => {}, onEnd = () => {} }) {
  const id = `job-box-${++boxes}`;
  const status = h("p", { class: "job-status", id: `${id}-status`, role: "status", "aria-live": "polite" });
  const meta = h("p", { class: "job-meta" });
  const waiting = h("p", { class: "job-throttle", role: "status", "aria-live": "polite", hidden: true });
  const bar = h("progress", { max: "100", value: "0", "aria-labelledby": `${id}-status` });
  const figures = {};
  const figure = (key, label) => {
    figures[key] = h("dd", { "data-figure": key });
    return h("div", {}, h("dt", {}, label), figures[key]);
  };
  const figureList = h(
    "dl",
    { class: "figures" },
    figure("processed", "Processed"),
    figure("percent", "Done"),
    figure("rate", "Rate"),
    figure("eta", "Time left"),
    figure("heartbeat", "Last heartbeat"),
  );
  const statList = h("dl", { class: "stats" });
  const note = h("p", { class: "job-note", hidden: true });
  const prediction = h("p", { class: "job-prediction", hidden: true });
  const errors = errorBox();
  const cancel = h("button", { type: "button", class: "secondary", hidden: true }, "Cancel job");
  const resume = h("button", { type: "button", class: "secondary", hidden: true }, "Resume job");
  const el = h(
    "div",
    { class: "job", "data-box": name, hidden: true },
    h("div", { class: "job-head" }, status, h("div", { class: "job-actions" }, cancel, resume)),
    waiting,
    meta,
    bar,
    figureList,
    statList,
    prediction,
    note,
    errors.el,
  );

  let job = null;
  let poller = null;
  let statsFor = "";
  let predictionKey = "";
  let pollFailed = false;

  function renderStats() {
    const kind = `${job.kind}:${job.dry_run}`;
    if (kind !== statsFor) {
      statsFor = kind;
      clear(statList);
      for (const [key, label] of statLabels(job)) {
        statList.append(h("div", { class: "stat" }, h("dt", {}, label), h("dd", { "data-stat": key })));
      }
    }
    for (const dd of statList.querySelectorAll("dd")) {
      setText(dd, num(job.stats ? job.stats[dd.dataset.stat] : null));
    }
  }

  function render() {
    el.hidden = false;
    el.dataset.status = job.status;
    el.dataset.jobId = job.id;
    setText(status, statusText(job));
    const words = throttleText(job);
    setText(waiting, words);
    waiting.hidden = !words;
    el.dataset.throttle = job.throttle && isActive(job) ? job.throttle.signal : "";
    clear(meta).append(
      `${jobLabel(job)} `,
      jobLink(job.id),
      ` · started by ${job.requested_by || "—"} · ${when(job.created_at)}`,
    );
    const p = progressOf(job);
    const pct = p.percent ?? (job.status === "succeeded" ? 100 : null);
    if (pct === null) bar.removeAttribute("value");
    else bar.value = pct;
    setText(bar, percent(pct));
    setText(figures.processed, p.total === null ? `${num(p.processed)} ${p.unit}` : `${num(p.processed)} of ${num(p.total)} ${p.unit}`);
    setText(figures.percent, percent(pct));
    setText(figures.rate, p.rate === null ? "—" : `${num(Math.round(p.rate))} ${p.unit}/s`);
    setText(figures.eta, p.eta === null ? "—" : `about ${duration(p.eta)}`);
    const age = job.heartbeat_age_seconds;
    setText(figures.heartbeat, isActive(job) && typeof age === "number" ? `${age.toFixed(1)} s ago` : "—");
    renderStats();
    const text = explanation(job);
    setText(note, text);
    note.hidden = !text;
    const nodes = predictionNodes(job);
    const key = JSON.stringify(job.prediction || null);
    if (key !== predictionKey) {
      predictionKey = key;
      clear(prediction).append(...nodes);
    }
    prediction.hidden = nodes.length === 0;
    cancel.hidden = !(job.status === "queued" || job.status === "running");
    resume.hidden = !(RESUMABLE.has(job.status) && !job.rolled_back_by);
  }

  function follow() {
    if (poller || !isActive(job)) return;
    poller = poll(() => api.job(job.id), {
      onData(fresh) {
        if (pollFailed) errors.clear();
        pollFailed = false;
        job = fresh;
        render();
        onUpdate(job);
      },
      isDone: (fresh) => !isActive(fresh),
      onDone() {
        poller = null;
        onEnd(job);
      },
      onError(error) {
        pollFailed = true;
        errors.show(error);
      },
    });
  }

  function stop() {
    if (poller) poller.stop();
    poller = null;
  }

  function watch(fresh) {
    stop();
    errors.clear();
    job = fresh;
    render();
    onUpdate(job);
    if (isActive(job)) follow();
    else queueMicrotask(() => onEnd(job));
  }

  cancel.addEventListener("click", () =>
    whileBusy(cancel, async () => {
      errors.clear();
      try {
        watch(await api.cancel(job.id));
      } catch (error) {
        errors.show(error);
      }
    }),
  );
  resume.addEventListener("click", () =>
    whileBusy(resume, async () => {
      errors.clear();
      try {
        watch(await api.resume(job.id));
      } catch (error) {
        errors.show(error);
      }
    }),
  );

  function reset() {
    stop();
    errors.clear();
    job = null;
    el.hidden = true;
  }

  return { el, watch, stop, reset, current: () => job };
}
