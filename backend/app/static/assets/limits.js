// The health limits of an active or stopped job, and a form to change them (POST /limits, audited).
// Empty means "leave as it is"; 0 turns a numeric limit off, as the API says.

import { errorBox, whileBusy } from "./components.js";
import { h, num, setText } from "./dom.js";

const NUMERIC = [
  ["max_replay_lag_seconds", "Standby replay lag (s)", 0.1],
  ["max_replay_lag_bytes", "Standby or slot lag (bytes)", 1],
  ["max_archive_backlog", "WAL archive backlog (segments)", 1],
  ["max_lock_wait_seconds", "Others' wait on the job's locks (s)", 0.05],
  ["max_batch_slowdown", "Batch slowdown (× median)", 0.1],
  ["share_above_sessions", "Share above this many other sessions", 1],
];

// A job from before limits existed has none stored (null): it runs by the service's defaults.
function shown(job, name) {
  if (!job.limits) return "the service's default";
  const value = job.limits[name];
  if (typeof value === "boolean") return value ? "on" : "off";
  return value === null || value === undefined ? "off" : num(value);
}
const vacuumOf = (job) => (job.limits ? job.limits.yield_to_autovacuum : true);

export function limitsSection(api, job, onChanged) {
  const errors = errorBox();
  const fields = {};
  const rows = NUMERIC.map(([name, label, step]) => {
    const id = `limit-${name}`;
    fields[name] = h("input", { id, name, type: "number", min: 0, step, inputmode: "decimal", placeholder: shown(job, name) });
    return h("div", { class: "field" }, h("label", { for: id }, label), fields[name], h("p", { class: "hint", "data-limit": name }));
  });
  // The box is sent only when the admin changed it from what it last showed.
  let vacuumFrom = vacuumOf(job);
  const vacuum = h("input", { id: "limit-yield_to_autovacuum", type: "checkbox", checked: vacuumFrom });
  const vacuumNow = h("p", { class: "hint", "data-limit": "yield_to_autovacuum" });
  const save = h("button", { type: "submit", class: "secondary", id: "save-limits" }, "Change limits");
  const form = h(
    "form",
    { class: "limits", novalidate: true },
    h("div", { class: "fields" }, ...rows),
    h("div", { class: "field check" }, h("label", { for: "limit-yield_to_autovacuum" }, vacuum, " Wait for autovacuum on the two tables (an anti-wraparound one is always waited for)"), vacuumNow),
    h("div", { class: "actions" }, save),
  );

  // The values in force, as each poll brings them (the API or the command line may change them
  // too); only text changes, so what the admin is typing stays.
  function update(fresh) {
    job = fresh;
    for (const [name] of NUMERIC) {
      fields[name].placeholder = shown(fresh, name);
      setText(form.querySelector(`[data-limit="${name}"]`), `now ${shown(fresh, name)}`);
    }
    setText(vacuumNow, `now ${shown(fresh, "yield_to_autovacuum")}`);
  }

  function changed(fresh) {
    update(fresh);
    for (const [name] of NUMERIC) fields[name].value = "";
    vacuumFrom = vacuumOf(fresh);
    vacuum.checked = vacuumFrom;
  }

  update(job);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    whileBusy(save, async () => {
      errors.clear();
      const params = {};
      for (const [name] of NUMERIC) if (fields[name].value.trim() !== "") params[name] = fields[name].value.trim();
      if (vacuum.checked !== vacuumFrom) params.yield_to_autovacuum = vacuum.checked;
      try {
        const fresh = await api.changeLimits(job.id, params);
        changed(fresh);
        onChanged(fresh);
      } catch (error) {
        errors.show(error);
      }
    });
  });

  const el = h(
    "section",
    { class: "card", "aria-labelledby": "limits-h", "data-limits": "" },
    h("h2", { id: "limits-h" }, "Health limits"),
    h("p", {}, "The job waits between batches while one of these is exceeded, and shares the database (one batch at a time, resting as long) while others are at work. A change applies within a few seconds and is kept in the audit trail. 0 turns a limit off."),
    form,
    errors.el,
  );
  return { el, update };
}
