// DOM helpers the pages share. User text (names, messages, room names) only ever goes in
// through textContent here: nothing builds HTML from strings.

export const byId = (id) => document.getElementById(id);

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

export function button(className, label, { text, icon, title } = {}) {
  const b = el("button", className);
  b.type = "button";
  if (icon) b.append(svgIcon(icon));
  if (text !== undefined) b.append(document.createTextNode(text));
  if (label) b.setAttribute("aria-label", label);
  if (title || label) b.title = title || label;
  return b;
}

const ICONS = {
  react: "M12 22a10 10 0 1 1 0-20 10 10 0 0 1 0 20zm0-2a8 8 0 1 0 0-16 8 8 0 0 0 0 16zm-4-7h8a4 4 0 0 1-8 0zm1-2a1.5 1.5 0 1 1 0-3 1.5 1.5 0 0 1 0 3zm6 0a1.5 1.5 0 1 1 0-3 1.5 1.5 0 0 1 0 3z",
  edit: "M4 17.25V20h2.75L17.81 8.94l-2.75-2.75L4 17.25zM20.71 7.04a1 1 0 0 0 0-1.41l-2.34-2.34a1 1 0 0 0-1.41 0l-1.83 1.83 3.75 3.75 1.83-1.83z",
  delete: "M6 19a2 2 0 0 0 2 2h8a2 2 0 0 0 2-2V7H6v12zM19 4h-3.5l-1-1h-5l-1 1H5v2h14V4z",
  reply: "M10 9V5l-7 7 7 7v-4.1c5 0 8.5 1.6 11 5.1-1-5-4-10-11-11z",
  lock: "M12 2a5 5 0 0 0-5 5v3H6a2 2 0 0 0-2 2v8a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2v-8a2 2 0 0 0-2-2h-1V7a5 5 0 0 0-5-5zm-3 8V7a3 3 0 1 1 6 0v3H9z",
};

export function svgIcon(name) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  svg.classList.add("icon");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", ICONS[name]);
  svg.append(path);
  return svg;
}

function colorClass(name) {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return `c${h % 8}`;
}

export function avatar(name) {
  const span = el("span", `avatar ${colorClass(name)}`, [...name][0]?.toUpperCase() ?? "?");
  span.setAttribute("aria-hidden", "true");
  return span;
}

const fmtTime = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const fmtDayTime = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
});
export const fmtFull = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "medium" });

export function timeEl(iso) {
  const node = el("time", "time");
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return node;
  node.dateTime = iso;
  const today = new Date().toDateString() === d.toDateString();
  node.textContent = (today ? fmtTime : fmtDayTime).format(d);
  node.title = fmtFull.format(d);
  return node;
}

/** Length as the server counts it: code points, not UTF-16 units. */
export function codePoints(text) {
  return [...text].length;
}
