// Small DOM helpers: elements are built with `el` and text is always set as text (never as
// HTML), so nothing a server or user sends can become markup.

/**
 * Creates an element. `props`: `class`, `dataset`, `on<event>` handlers, other attributes.
 * @param {string} tag
 * @param {Record<string, unknown>} [props]
 * @param {...unknown} children strings, numbers, nodes, arrays of them; null/false skipped
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = String(value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces the children of `container`. */
export function show(container, ...children) {
  container.replaceChildren();
  append(container, children);
}

/** The element with this id (throws when the page lacks it). */
export function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`no #${id} on the page`);
  return node;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

/** Formatting for tables: times, durations, numbers. */
export const fmt = {
  time: (ms) => timeFormat.format(new Date(ms)),
  dateTime: (ms) => dateTimeFormat.format(new Date(ms)),
  /** "3 min 12 s" for a span of milliseconds. */
  duration(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${s % 60} s`;
    const h = Math.floor(m / 60);
    if (h < 48) return `${h} h ${m % 60} min`;
    return `${Math.floor(h / 24)} d ${h % 24} h`;
  },
  number: (n) => new Intl.NumberFormat().format(n),
  rate: (n) => (n >= 100 ? Math.round(n).toString() : n.toFixed(1)),
};

/** A badge: `kind` is ok, warn, bad or neutral. */
export const badge = (text, kind = "neutral") => el("span", { class: `badge badge-${kind}` }, text);
