// The verification numbers, and one plain sentence: every item accounted for, or what is not.

import { errorBox, whileBusy } from "./components.js";
import { clear, h, jobLink, num, plural, setText, when } from "./dom.js";

export function verdict(v) {
  const total = v.total_action_items;
  if (v.all_items_accounted) {
    return [
      "Every action item is accounted for: the last real run ",
      jobLink(v.last_real_run_id),
      ` created a goal for it, or skipped it as a duplicate or as invalid (${plural(total, "action item", "action items")} in ${plural(v.sessions_with_action_items, "session", "sessions")}).`,
    ];
  }
  if (!v.last_real_run_id) {
    return [`Not every action item is accounted for: no real run has succeeded yet, so none of the ${plural(total, "action item", "action items")} has been migrated.`];
  }
  const accounted = v.last_real_run_accounted;
  if (typeof accounted === "number" && accounted !== total) {
    const gap = total - accounted;
    return [
      "Not every action item is accounted for: the last real run ",
      jobLink(v.last_real_run_id),
      ` accounts for ${num(accounted)} of the ${plural(total, "action item", "action items")} now in the sessions ` +
        `(${num(Math.abs(gap))} ${gap > 0 ? "not accounted for" : "fewer now than it counted"}). ` +
        "The data may have changed since, or the run was partly undone: preview with a new dry run.",
    ];
  }
  return [
    "Not every action item is accounted for: the last real run ",
    jobLink(v.last_real_run_id),
    " had failed sessions; its page lists them with the database's error.",
  ];
}

const FIELDS = [
  ["sessions_with_action_items", "Sessions with action items"],
  ["total_action_items", "Action items in the sessions"],
  ["goals_total", "Goals in treatment_goals"],
  ["goals_from_migrations", "Goals created by migrations"],
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
    h("p", { class: "lede" }, "The migration guide's verification queries, answered by the API: what is in the sessions' notes, what is in treatment_goals, and whether the last real run accounts for every item."),
    h("section", { class: "card", "aria-label": "Verification" }, sentence, list, h("div", { class: "actions" }, again), errors.el),
  );
  check();
  return { el, heading, title: "Verify", stop() {} };
}
