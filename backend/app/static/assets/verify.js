// The verification numbers, and one plain sentence: every item accounted for, or what is not.

import { errorBox, whileBusy } from "./components.js";
import { clear, h, jobLink, num, plural, setText, when } from "./dom.js";

// The verdict is the API's, on the data: every item accounted for exactly when a real run now
// would create no goal. The last real run's counters are a second, cheaper check beside it.
export function verdict(v) {
  const items = plural(v.total_action_items, "action item", "action items");
  const sessions = plural(v.sessions_with_action_items, "session", "sessions");
  const out = [];
  if (v.all_items_accounted) {
    out.push(`Every action item is accounted for: a real run now would create no goal (${items} in ${sessions}: each a goal, a duplicate or invalid).`);
  } else {
    out.push(
      `Not every action item is accounted for: ${plural(v.goals_missing, "goal is", "goals are")} missing for ${plural(v.sessions_missing_goals, "session", "sessions")} of ${plural(v.patients_missing_goals, "patient", "patients")}, for example session `,
      ...v.missing_session_ids.flatMap((id, i) => [i ? ", " : "", h("code", {}, id)]),
      ". ",
      h("a", { href: "#/" }, "Preview with a dry run, then run it"),
      " to create them.",
    );
  }
  if (!v.last_real_run_id) {
    out.push(" No real run has succeeded yet (rolled-back runs are not judged).");
  } else if (v.counters_agree) {
    out.push(" The counters of the last real run ", jobLink(v.last_real_run_id), " agree.");
  } else {
    out.push(" The counters of the last real run ", jobLink(v.last_real_run_id), " do not account for the data as it is now (it changed since, failed sessions, or goals removed).");
  }
  if (v.duplicate_pairs) {
    out.push(` ${plural(v.duplicate_pairs, "migrated goal has", "migrated goals have")} a clinician's goal with the same patient and description beside them (written while their batch ran): keep one of each pair.`);
  }
  return out;
}

const FIELDS = [
  ["sessions_with_action_items", "Sessions with action items"],
  ["total_action_items", "Action items in the sessions"],
  ["goals_total", "Goals in treatment_goals"],
  ["goals_from_migrations", "Goals created by migrations"],
  ["goals_missing", "Goals missing (a real run now would create them)"],
  ["duplicate_pairs", "Migrated goals beside a clinician's identical goal"],
  ["last_real_run_accounted", "Accounted for by the last real run"],
];

export function verifyView({ api }) {
  const heading = h("h1", { tabindex: "-1" }, "Verify");
  const sentence = h("p", { class: "verdict", "aria-live": "polite" });
  const values = {};
  const list = h(
    "dl",
    { class: "numbers" },
    FIELDS.map(([key, label]) => {
      values[key] = h("dd", { "data-number": key }, "—");
      return h("div", {}, h("dt", {}, label), values[key]);
    }),
  );
  const lastRun = h("dd", {}, "—");
  const checkedAt = h("dd", {}, "—");
  list.append(h("div", {}, h("dt", {}, "Last real run"), lastRun), h("div", {}, h("dt", {}, "Checked at"), checkedAt));
  const again = h("button", { type: "button", class: "secondary" }, "Check again");
  const errors = errorBox();

  async function check() {
    errors.clear();
    try {
      const v = await api.verify();
      for (const [key] of FIELDS) setText(values[key], num(v[key]));
      clear(lastRun).append(v.last_real_run_id ? jobLink(v.last_real_run_id) : "none yet");
      setText(checkedAt, when(v.checked_at));
      clear(sentence).append(...verdict(v));
      sentence.dataset.verdict = v.all_items_accounted ? "accounted" : "not-accounted";
    } catch (error) {
      errors.show(error);
    }
  }

  again.addEventListener("click", () => whileBusy(again, check));
  const el = h(
    "div",
    { class: "view" },
    heading,
    h("p", { class: "lede" }, "Whether treatment_goals holds every action item, judged on the data: the migration's rules re-run without writing anything. Beside it, the migration guide's verification numbers and the last real run's counters."),
    h("section", { class: "card", "aria-label": "Verification" }, sentence, list, h("div", { class: "actions" }, again), errors.el),
  );
  check();
  return { el, heading, title: "Verify", stop() {} };
}
