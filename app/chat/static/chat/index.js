// Room index: explain an invalid room name before it is submitted, and keep the online
// counts live by polling GET /api/rooms (app/chat/ui_api.py) while the tab is visible.
// Room names are user text: they go in with textContent only.

import { byId, el } from "./dom.js";

const root = byId("index");
const ROOMS_URL = root.dataset.roomsUrl;
const AUTHENTICATED = root.dataset.authenticated === "1";
const REFRESH_MS = 5000;
const NAME_MAX = Number(root.dataset.nameMax) || 64;
// The server's rule (app/chat/names.py): Python's Unicode \w (letters, digits and "_")
// plus "-". Combining marks are not \w there, so they are not allowed here either.
const ALLOWED = /^[\p{L}\p{N}_-]$/u;

const form = byId("room-form");
const input = byId("room-name-input");
const feedback = byId("room-name-feedback");
const list = byId("room-list");
const empty = byId("rooms-empty");
const datalist = byId("room-names");
const updated = byId("rooms-updated");

const known = new Set([...list.querySelectorAll(".room-item")].map((li) => li.dataset.room));

function describe(ch) {
  if (ch === " ") return "space";
  if (/\s/u.test(ch)) return "blank";
  return `“${ch}”`;
}

/** Why `name` is not a valid room name, or "" when it is. */
function problem(name) {
  if (!name) return "Type a room name.";
  const chars = [...name];
  const bad = [...new Set(chars.filter((ch) => !ALLOWED.test(ch)))];
  if (bad.length) {
    const shown = bad.slice(0, 5).map(describe).join(", ");
    return `Not allowed in a room name: ${shown}. Use letters, digits, “_” or “-”.`;
  }
  if (chars.length > NAME_MAX) {
    return `Too long: ${chars.length} characters; a room name has at most ${NAME_MAX}.`;
  }
  return "";
}

function show(text, kind) {
  feedback.textContent = text;
  feedback.dataset.kind = kind;
  input.setAttribute("aria-invalid", kind === "error" ? "true" : "false");
}

function check() {
  const raw = input.value;
  if (!raw) {
    show("", "");
    return;
  }
  const name = raw.normalize("NFC");
  const why = problem(name);
  if (why) show(why, "error");
  else if (known.has(name)) show(`Opens #${name}.`, "ok");
  else if (AUTHENTICATED) show(`#${name} does not exist yet: opening it creates it.`, "ok");
  else show(`#${name} does not exist yet. Log in to create it.`, "warn");
}

input.addEventListener("input", check);

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const name = input.value.normalize("NFC");
  const why = problem(name);
  if (why) {
    show(why, "error");
    input.focus();
    return;
  }
  window.location.assign(`/chat/${encodeURIComponent(name)}/`);
});

// --- live online counts ---------------------------------------------------------------

function roomItem(room) {
  const li = el("li", room.staff_only ? "room-item room-staff" : "room-item");
  li.dataset.room = room.name;
  const a = el("a", "room-link");
  a.href = room.url;
  const hash = el("span", "room-hash", "#");
  hash.setAttribute("aria-hidden", "true");
  a.append(hash, el("span", "room-name", room.name));
  if (room.staff_only) {
    const badge = el("span", "badge badge-staff", "staff only");
    badge.title = "Only staff can see and open this room";
    a.append(badge);
  }
  const count = el("span", "online-count");
  const dot = el("span", "dot");
  dot.setAttribute("aria-hidden", "true");
  count.append(dot, el("span", "n"), " online");
  a.append(count);
  li.append(a);
  return li;
}

function apply(rooms) {
  const items = new Map([...list.querySelectorAll(".room-item")].map((li) => [li.dataset.room, li]));
  const wanted = new Set(rooms.map((r) => r.name));
  for (const [name, li] of items) {
    if (!wanted.has(name)) li.remove();
  }
  let previous = null;
  for (const room of rooms) {
    let li = items.get(room.name);
    if (!li) {
      li = roomItem(room);
      const option = el("option");
      option.value = room.name;
      datalist.append(option);
    }
    // Keep the server's order (by name) without re-creating rows.
    const expected = previous ? previous.nextElementSibling : list.firstElementChild;
    if (expected !== li) list.insertBefore(li, expected);
    previous = li;
    const count = li.querySelector(".online-count");
    const n = count.querySelector(".n");
    if (n.textContent !== String(room.online)) n.textContent = String(room.online);
    count.classList.toggle("is-active", room.online > 0);
  }
  known.clear();
  for (const name of wanted) known.add(name);
  empty.hidden = rooms.length > 0;
}

let timer = null;
let failures = 0;

async function refresh() {
  clearTimeout(timer);
  if (document.hidden) return;
  try {
    const response = await fetch(ROOMS_URL, {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
      cache: "no-store",
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    apply(body.rooms);
    failures = 0;
    updated.textContent = "Online counts update live.";
    root.dataset.refreshed = String(Date.now());
  } catch {
    failures += 1;
    updated.textContent = "Online counts could not be refreshed; retrying…";
  }
  timer = setTimeout(refresh, Math.min(60000, REFRESH_MS * 2 ** Math.min(failures, 4)));
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden) refresh();
});

timer = setTimeout(refresh, REFRESH_MS);
check();
