// The few pieces every view uses: an error box, a busy button, a paged table, a confirmation.

import { clear, duration, h, num, shortId } from "./dom.js";

// A job without a heartbeat for this long is worth a word; the API decides when it is stale.
export const STALLED_AFTER_SECONDS = 10;

export function errorBox() {
  const el = h("div", { class: "error", role: "alert", hidden: true });
  return {
    el,
    show(error) {
      clear(el);
      const code = error.status ? ` (HTTP ${error.status})` : "";
      el.append(h("p", {}, h("strong", {}, "Not done: "), `${error.message}${code}`));
      if (error.activeJobId) {
        el.append(
          h(
            "p",
            {},
            h(
              "a",
              { href: `#/jobs/${error.activeJobId}`, "data-active-job": error.activeJobId },
              `Open the active job ${shortId(error.activeJobId)}`,
            ),
            " to watch, cancel or resume it.",
          ),
        );
        const age = error.body.heartbeat_age_seconds;
        const release = error.body.released_in_seconds;
        if (typeof age === "number" && age > STALLED_AFTER_SECONDS && typeof release === "number") {
          el.append(
            h("p", {}, `Its last heartbeat was ${duration(age)} ago: if its process is gone, it is released in about ${duration(release)}.`),
          );
        }
      }
      el.hidden = false;
    },
    clear() {
      clear(el);
      el.hidden = true;
    },
  };
}

// A click while the button's request is in flight does nothing: one double click, one request.
export async function whileBusy(button, action) {
  if (button.disabled) return undefined;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await action();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

export function pagedTable({ caption, columns, pageSize = 20, load, empty = "None." }) {
  const body = h("tbody");
  const position = h("span", { class: "pager-position", "aria-live": "polite" });
  const previous = h("button", { type: "button", class: "quiet" }, "Previous");
  const next = h("button", { type: "button", class: "quiet" }, "Next");
  const errors = errorBox();
  const table = h(
    "table",
    {},
    h("caption", {}, typeof caption === "function" ? "" : caption),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        columns.map((c) => h("th", { scope: "col", class: c.class }, c.label)),
      ),
    ),
    body,
  );
  const pager = h("div", { class: "pager" }, previous, position, next);
  const el = h("div", { class: "paged" }, h("div", { class: "table-wrap" }, table), pager, errors.el);
  let offset = 0;

  async function show(at, fresh) {
    try {
      const page = await load(pageSize, at, fresh);
      offset = at;
      errors.clear();
      clear(body);
      for (const item of page.items) {
        body.append(
          h(
            "tr",
            {},
            columns.map((c) => h(c.header ? "th" : "td", { class: c.class, scope: c.header ? "row" : null }, c.value(item))),
          ),
        );
      }
      if (page.items.length === 0) {
        body.append(h("tr", {}, h("td", { colspan: columns.length, class: "empty" }, empty)));
      }
      const total = page.total ?? null;
      if (typeof caption === "function") table.caption.textContent = caption(total);
      const last = offset + page.items.length;
      position.textContent =
        page.items.length === 0
          ? ""
          : total === null
            ? `${num(offset + 1)}–${num(last)}`
            : `${num(offset + 1)}–${num(last)} of ${num(total)}`;
      previous.disabled = offset === 0;
      next.disabled = total === null ? page.items.length < pageSize : last >= total;
      pager.hidden = offset === 0 && next.disabled;
    } catch (error) {
      errors.show(error);
    }
  }

  previous.addEventListener("click", () => show(Math.max(0, offset - pageSize), false));
  next.addEventListener("click", () => show(offset + pageSize, false));
  return { el, reload: () => show(offset, true), first: () => show(0, true) };
}

// A modal that states what will happen and does it only on an explicit confirmation.
export function confirmAction({ title, body, confirmLabel, danger = false, action }) {
  const errors = errorBox();
  const heading = h("h2", { id: `dialog-${Date.now()}` }, title);
  const confirm = h("button", { type: "button", class: danger ? "danger" : "primary" }, confirmLabel);
  const cancel = h("button", { type: "button", class: "quiet" }, "Cancel");
  const dialog = h(
    "dialog",
    { "aria-labelledby": heading.id, class: "confirm" },
    heading,
    body,
    errors.el,
    h("div", { class: "actions" }, cancel, confirm),
  );
  cancel.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => dialog.remove());
  dialog.addEventListener("click", (event) => {
    if (event.target instanceof HTMLAnchorElement) dialog.close();
  });
  confirm.addEventListener("click", () =>
    whileBusy(confirm, async () => {
      errors.clear();
      try {
        await action();
        dialog.close();
      } catch (error) {
        errors.show(error);
      }
    }),
  );
  document.body.append(dialog);
  dialog.showModal();
  cancel.focus();
  return dialog;
}
