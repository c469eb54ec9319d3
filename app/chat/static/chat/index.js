// Room index: explain an invalid room name before it is submitted, and keep the online
// counts live by polling GET /api/rooms (app/chat/ui_api.py) while the tab is visible.
// Room names are user text: they go in with textContent only.

const root = document.getElementById("index");
const ROOMS_URL = root.dataset.roomsUrl;
const AUTHENTICATED = root.dataset.authenticated === "1";
const REFRESH_MS = 5000;
const NAME_MAX = Number(root.dataset.nameMax) || 64;
// The server's rule (app/chat/names.py): Python's Unicode \w (letters, digits and "_")
// plus "-". Combining marks are not \w there, so they are not allowed here either.
const ALLOWED = /^[\p{L}\p{N}_-]$/u;

const form = document.getElementById("room-form");
const input = document.getElementById("room-name-input");
const feedback = document.getElementById("room-name-feedback");
const list = document.getElementById("room-list");
const empty = document.getElementById("rooms-empty");
const datalist = document.getElementById("room-names");
const updated = document.getElementById("rooms-updated");

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
  const li = document.createElement("li");
  li.className = room.staff_only ? "room-item room-staff" : "room-item";
  li.dataset.room = room.name;
  const a = document.createElement("a");
  a.className = "room-link";
  a.href = room.url;
  const hash = document.createElement("span");
  hash.className = "room-hash";
  hash.setAttribute("aria-hidden", "true");
  hash.textContent = "#";
  const name = document.createElement("span");
  name.className = "room-name";
  name.textContent = room.name;
  a.append(hash, name);
  if (room.staff_only) {
    const badge = document.createElement("span");
    badge.className = "badge badge-staff";
    badge.title = "Only staff can see and open this room";
    badge.textContent = "staff only";
    a.append(badge);
  }
  const count = document.createElement("span");
  count.className = "online-count";
  const dot = document.createElement("span");
  dot.className = "dot";
  dot.setAttribute("aria-hidden", "true");
  const n = document.createElement("span");
  n.className = "n";
  count.append(dot, n, " online");
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
      const option = document.createElement("option");
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
