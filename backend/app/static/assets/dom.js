// Building the page from API data without ever parsing that data as HTML: every value goes in
// as a text node or an attribute, so a description like `<img onerror=…>` stays text.

export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = String(value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "href" && !String(value).startsWith("#/")) {
      throw new Error("only in-page links are built from data");
    } else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, ...children);
  return el;
}

export function append(el, ...children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function setText(el, value) {
  const text = value === null || value === undefined ? "" : String(value);
  if (el.textContent !== text) el.textContent = text;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

const numbers = new Intl.NumberFormat("en-US");
const dates = new Intl.DateTimeFormat("en-GB", { dateStyle: "medium", timeStyle: "medium" });
const times = new Intl.DateTimeFormat("en-GB", { timeStyle: "short" });

export const num = (n) => (n === null || n === undefined ? "—" : numbers.format(n));

export const percent = (p) => (p === null || p === undefined ? "—" : `${p.toFixed(1)}%`);

export const when = (iso) => (iso ? dates.format(new Date(iso)) : "—");

export const clock = (date) => times.format(date);

export const shortId = (id) => (id ? String(id).slice(0, 8) : "—");

export function plural(n, one, many) {
  return `${num(n)} ${n === 1 ? one : many}`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function between(startIso, endIso) {
  if (!startIso) return null;
  const end = endIso ? new Date(endIso) : new Date();
  return (end - new Date(startIso)) / 1000;
}

export function link(path, text, props = {}) {
  return h("a", { href: `#/${path}`, ...props }, text);
}

export function jobLink(id, props = {}) {
  return link(`jobs/${id}`, shortId(id), { title: `job ${id}`, ...props });
}
