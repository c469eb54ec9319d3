// A room page: the chat log, the composer and the online list, spoken over the JSON
// WebSocket protocol of docs/protocol.md. Plain DOM, no framework, no build step.
//
// Rules this file keeps:
// - every piece of user text (names, messages, room names) goes in with textContent;
// - what the user typed stays in the composer until the server echoes it back stored;
// - after a reconnect we `resume` from the last id we saw and merge by id, so nothing
//   shows twice and nothing is missed.

const root = document.getElementById("room");
const ROOM = root.dataset.room;
const ME = root.dataset.user || null;
const IS_STAFF = root.dataset.staff === "1";
const MAX_LENGTH = Number(root.dataset.maxLength) || 2000;
const LOGIN_URL = root.dataset.loginUrl || "/accounts/login/";

const HISTORY_PAGE = 50;
const QUICK_REACTIONS = ["👍", "❤️", "😂", "🎉", "😮", "😢", "👀", "🙏"];
const TYPING_SEND_EVERY = 2000; // the server forwards at most one notice per 2 s anyway
const TYPING_SHOW_FOR = 4000;
const BACKOFF_BASE = 500;
const BACKOFF_CAP = 15000;
const PING_EVERY = 25000;
const PONG_TIMEOUT = 10000;
const SEND_CONFIRM_TIMEOUT = 8000;
const REFUSED = {
  4401: "not_authenticated",
  4403: "forbidden",
  4404: "not_found",
  4409: "name_taken",
  // Too many open sockets for this user or address (or rooms created): retrying at once
  // would only be refused again; the error frame says why.
  4429: "rate_limited",
};

const $ = (id) => document.getElementById(id);
const scroller = $("log-scroller");
const log = $("log");
const usersList = $("users");
const statusBox = $("status");
const statusText = $("status-text");
const reconnectNow = $("reconnect-now");
const typingLine = $("typing");
const notice = $("notice");
const noticeText = $("notice-text");
const loadOlder = $("load-older");
const logStart = $("log-start");
const jumpLatest = $("jump-latest");
const usersToggle = $("users-toggle");
const usersPane = $("users-pane");
const composer = $("composer");
const input = $("message-input");
const sendButton = $("send");
const charCount = $("char-count");
const pmBar = $("pm-target");
const pmName = $("pm-target-name");
const picker = $("reaction-picker");

// --- small DOM helpers ------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function button(className, label, { text, icon, title } = {}) {
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

function svgIcon(name) {
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

function avatar(name) {
  const span = el("span", `avatar ${colorClass(name)}`, [...name][0]?.toUpperCase() ?? "?");
  span.setAttribute("aria-hidden", "true");
  return span;
}

const fmtTime = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const fmtDayTime = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
});
const fmtFull = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "medium" });

function timeEl(iso) {
  const node = el("time", "time");
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return node;
  node.dateTime = iso;
  const today = new Date().toDateString() === d.toDateString();
  node.textContent = (today ? fmtTime : fmtDayTime).format(d);
  node.title = fmtFull.format(d);
  return node;
}

function codePoints(text) {
  return [...text].length;
}

// --- notices and connection state ------------------------------------------------------

const ERROR_CONTEXT = {
  chat_message: "Your message was not sent",
  private_message: "Your private message was not sent",
  edit_message: "Your edit was not saved",
  delete_message: "The message was not deleted",
  reaction: "Your reaction was not saved",
  history: "Older messages could not be loaded",
  resume: "Missed messages could not be loaded",
};

function showNotice(text, { kind = "error", link = null, sticky = false, about = "" } = {}) {
  noticeText.replaceChildren(document.createTextNode(text));
  if (link) {
    const a = el("a", null, link.text);
    a.href = link.href;
    noticeText.append(" ", a);
  }
  notice.dataset.kind = kind;
  notice.dataset.about = about;
  notice.hidden = false;
  clearTimeout(showNotice.timer);
  if (!sticky) showNotice.timer = setTimeout(hideNotice, 12000);
}

function hideNotice() {
  notice.hidden = true;
  noticeText.replaceChildren();
}

$("notice-close").addEventListener("click", () => {
  hideNotice();
  input?.focus();
});

let countdownTimer = null;

function setState(state, text) {
  clearInterval(countdownTimer);
  statusBox.dataset.state = state;
  root.dataset.conn = state;
  statusText.textContent = text;
  reconnectNow.hidden = !(state === "reconnecting" || (state === "offline" && navigator.onLine && !conn.refused));
  composer?.classList.toggle("is-offline", state !== "connected");
}

// --- the log ----------------------------------------------------------------------------

const messages = new Map(); // room message id -> entry {data, li, body, edited, reactions, actions}
const privateSeen = new Set();
let maxId = 0; // the largest room message id seen: where `resume` starts
let maxPrivateId = 0; // the largest private message id seen: where `private_after` starts
let oldestId = null; // the smallest id loaded: where "load older" continues
let hasOlder = false;
let loadingOlder = false;
let joinedOnce = false;
let unread = 0;

function canModify(data) {
  return Boolean(ME) && (data.user === ME || IS_STAFF);
}

function nearBottom() {
  return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
}

function scrollToBottom() {
  scroller.scrollTop = scroller.scrollHeight;
  jumpLatest.hidden = true;
}

function noteIncoming(fromMe, wasNearBottom) {
  if (fromMe || wasNearBottom) scrollToBottom();
  else jumpLatest.hidden = false;
  if (document.hidden && !fromMe) {
    unread += 1;
    document.title = `(${unread}) #${ROOM} · Chat`;
  }
}

function updateTop() {
  loadOlder.hidden = !hasOlder;
  loadOlder.disabled = loadingOlder;
  loadOlder.textContent = loadingOlder ? "Loading…" : "Load older messages";
  logStart.hidden = hasOlder || !joinedOnce;
}

function buildMessage(data) {
  const li = el("li", "msg");
  li.id = `msg-${data.id}`;
  li.dataset.id = data.id;
  li.dataset.user = data.user;
  li.tabIndex = -1;
  if (data.user === ME) li.classList.add("mine");
  li.dataset.group = `room:${data.user}`;
  li.dataset.ts = Date.parse(data.timestamp) || 0;
  const main = el("div", "msg-main");
  const meta = el("div", "meta");
  meta.append(el("span", "author", data.user), timeEl(data.timestamp));
  const text = el("div", "text");
  const body = el("span", "body");
  const edited = el("span", "edited", "(edited)");
  text.append(body, edited);
  const reactions = el("div", "reactions");
  reactions.setAttribute("role", "group");
  reactions.setAttribute("aria-label", "Reactions");
  const actions = el("div", "actions");
  actions.setAttribute("role", "group");
  actions.setAttribute("aria-label", "Message actions");
  main.append(meta, text, reactions);
  li.append(avatar(data.user), main, actions);
  const entry = { data, li, text, body, edited, reactions, actions };
  if (ME) {
    const react = button("icon-btn act-react", "Add reaction", { icon: "react" });
    react.setAttribute("aria-haspopup", "dialog");
    react.addEventListener("click", () => openPicker(entry, react));
    actions.append(react);
    if (canModify(data)) {
      const edit = button("icon-btn act-edit", "Edit message", { icon: "edit" });
      edit.addEventListener("click", () => startEdit(entry));
      const del = button("icon-btn act-delete", "Delete message", { icon: "delete" });
      del.addEventListener("click", () => confirmDelete(entry));
      actions.append(edit, del);
    }
  }
  fillMessage(entry, data);
  return entry;
}

function fillMessage(entry, data) {
  entry.data = data;
  if (entry.body.textContent !== data.message) entry.body.textContent = data.message;
  setEdited(entry, data.edited_at);
  entry.users = new Map(
    Object.entries(data.reactions || {}).map(([emoji, users]) => [emoji, new Set(users)]),
  );
  renderReactions(entry);
  // An edit whose confirmation was lost with the connection shows up in the history.
  if (editing?.entry === entry && editing.sent === data.message) closeEdit(true);
}

function setEdited(entry, editedAt) {
  entry.edited.hidden = !editedAt;
  if (editedAt) {
    const d = new Date(editedAt);
    entry.edited.title = Number.isNaN(d.getTime()) ? "edited" : `Edited ${fmtFull.format(d)}`;
  }
}

// Consecutive messages by the same author within five minutes are drawn as one group
// (avatar and name once); each item still carries its author for screen readers.
const GROUP_WINDOW = 5 * 60 * 1000;

function regroup(li) {
  if (!li) return;
  const prev = li.previousElementSibling;
  const same =
    prev !== null &&
    prev.dataset.group === li.dataset.group &&
    Math.abs(Number(li.dataset.ts) - Number(prev.dataset.ts)) < GROUP_WINDOW;
  li.classList.toggle("cont", same);
}

function regroupAround(li) {
  regroup(li);
  regroup(li.nextElementSibling);
}

function renderReactions(entry) {
  const chips = [];
  for (const [emoji, users] of entry.users) {
    if (!users.size) continue;
    const mine = ME !== null && users.has(ME);
    const names = [...users].sort().join(", ");
    const label = `${emoji} ${users.size}: ${names}. ${mine ? "Remove your reaction" : `React with ${emoji}`}`;
    const chip = ME ? button("chip", label, { title: names }) : el("span", "chip");
    if (!ME) chip.title = names;
    chip.dataset.emoji = emoji;
    chip.append(el("span", "chip-emoji", emoji), el("span", "chip-count", users.size));
    if (ME) {
      chip.setAttribute("aria-pressed", mine ? "true" : "false");
      chip.addEventListener("click", () => send({ type: "reaction", id: entry.data.id, emoji }));
    }
    if (mine) chip.classList.add("is-mine");
    chips.push(chip);
  }
  const focused = entry.reactions.contains(document.activeElement)
    ? document.activeElement.dataset.emoji
    : null;
  entry.reactions.replaceChildren(...chips);
  entry.reactions.hidden = chips.length === 0;
  syncTabStops(entry.li);
  if (focused !== null) {
    // Keep a keyboard user's place: the same chip, or the message's reaction button.
    const again = chips.find((c) => c.dataset.emoji === focused);
    (again || entry.actions.querySelector(".act-react") || entry.li).focus();
  }
}

/** Insert or refresh a room message; the log stays ordered by id. */
function upsert(data) {
  const known = messages.get(data.id);
  if (known) {
    fillMessage(known, data);
    return false;
  }
  const entry = buildMessage(data);
  messages.set(data.id, entry);
  let before = null;
  if (data.id < maxId) {
    for (const node of log.children) {
      if (node.dataset.id && Number(node.dataset.id) > data.id) {
        before = node;
        break;
      }
    }
  }
  log.insertBefore(entry.li, before);
  regroupAround(entry.li);
  if (data.id > maxId) maxId = data.id;
  if (oldestId === null || data.id < oldestId) oldestId = data.id;
  if (!rovingItem) setRoving(entry.li);
  typers.delete(data.user);
  if (data.user === ME) {
    matchPending({ kind: "room", message: data.message, id: data.id, clientId: data.client_id });
  }
  return true;
}

function removeMessage(id) {
  const entry = messages.get(id);
  if (!entry) return;
  if (editing?.entry === entry) closeEdit();
  if (picker.parentElement === entry.li) closePicker(false);
  const hadFocus = entry.li.contains(document.activeElement);
  const after = entry.li.nextElementSibling;
  const next = after || entry.li.previousElementSibling;
  entry.li.remove();
  regroup(after);
  messages.delete(id);
  if (rovingItem === entry.li) setRoving(next, hadFocus);
  else if (hadFocus) (next || input)?.focus();
}

function renderPrivate(frame, outgoing) {
  const key = `${outgoing ? "out" : "in"}:${frame.id}`;
  if (privateSeen.has(key)) return;
  privateSeen.add(key);
  if (frame.id > maxPrivateId) maxPrivateId = frame.id;
  const other = outgoing ? frame.target : frame.user;
  const wasNear = nearBottom();
  const li = el("li", `msg private ${outgoing ? "outgoing" : "incoming"}`);
  li.tabIndex = -1;
  li.dataset.pm = other;
  li.dataset.group = `pm:${outgoing ? "out" : "in"}:${other}`;
  li.dataset.ts = Date.parse(frame.timestamp) || Date.now();
  const main = el("div", "msg-main");
  const meta = el("div", "meta");
  const tag = el("span", "pm-tag");
  tag.append(svgIcon("lock"), document.createTextNode(outgoing ? `You → ${other}` : `${other} → you`));
  meta.append(
    el("span", "sr-only", outgoing ? `Private message to ${other}:` : `Private message from ${other}:`),
    tag,
    timeEl(frame.timestamp),
  );
  tag.setAttribute("aria-hidden", "true");
  const text = el("div", "text");
  text.append(el("span", "body", frame.message));
  main.append(meta, text);
  const actions = el("div", "actions");
  const reply = button(
    "icon-btn act-reply",
    outgoing ? `Write to ${other} again` : `Reply privately to ${other}`,
    { icon: "reply" },
  );
  reply.addEventListener("click", () => setPmTarget(other));
  actions.append(reply);
  li.append(avatar(other), main, actions);
  log.append(li);
  regroup(li);
  if (!rovingItem) setRoving(li);
  else syncTabStops(li);
  noteIncoming(outgoing, wasNear);
  if (outgoing) {
    matchPending({
      kind: "pm",
      to: frame.target,
      message: frame.message,
      id: null,
      clientId: frame.client_id,
    });
  }
  else typers.delete(frame.user);
}

// Keyboard: the log is one tab stop (a "roving" message); arrows move between messages,
// Tab then reaches that message's reactions and actions.
let rovingItem = null;

function syncTabStops(li) {
  const on = li === rovingItem;
  for (const b of li.querySelectorAll("button, textarea")) {
    if (!b.closest(".edit-form, .reaction-picker")) b.tabIndex = on ? 0 : -1;
  }
}

function setRoving(li, focus = false) {
  const target = li || log.lastElementChild;
  const previous = rovingItem;
  rovingItem = target || null;
  if (previous && previous !== target) {
    previous.tabIndex = -1;
    syncTabStops(previous);
  }
  if (!target) return;
  target.tabIndex = 0;
  syncTabStops(target);
  if (focus) target.focus();
}

log.addEventListener("focusin", (event) => {
  const li = event.target.closest(".msg");
  if (li && li !== rovingItem) setRoving(li);
});

log.addEventListener("keydown", (event) => {
  if (!event.target.matches(".msg")) return;
  const items = [...log.children];
  const at = items.indexOf(event.target);
  let next = null;
  if (event.key === "ArrowUp") next = items[at - 1];
  else if (event.key === "ArrowDown") next = items[at + 1];
  else if (event.key === "Home") next = items[0];
  else if (event.key === "End") next = items[items.length - 1];
  else if (event.key === "e") {
    const entry = messages.get(Number(event.target.dataset.id));
    if (entry && canModify(entry.data)) {
      event.preventDefault();
      startEdit(entry);
    }
    return;
  } else return;
  event.preventDefault();
  if (next) setRoving(next, true);
  else if (event.key === "ArrowUp" && hasOlder) requestOlder();
});

// Touch: tapping a message reveals its actions.
log.addEventListener("click", (event) => {
  const li = event.target.closest(".msg");
  if (!li || event.target.closest("button, a, textarea")) return;
  for (const other of log.querySelectorAll(".msg.show-actions")) {
    if (other !== li) other.classList.remove("show-actions");
  }
  li.classList.toggle("show-actions");
});

scroller.addEventListener("scroll", () => {
  if (nearBottom()) jumpLatest.hidden = true;
});
jumpLatest.addEventListener("click", () => {
  scrollToBottom();
  input?.focus();
});

function requestOlder() {
  if (loadingOlder || !hasOlder || !isOpen()) return;
  loadingOlder = true;
  updateTop();
  send({ type: "history", before: oldestId, limit: HISTORY_PAGE });
}
loadOlder.addEventListener("click", requestOlder);

// --- frames from the server -------------------------------------------------------------

function onHistory(frame) {
  const list = Array.isArray(frame.messages) ? frame.messages : [];
  if (frame.reason === "history") {
    const height = scroller.scrollHeight;
    const top = scroller.scrollTop;
    for (const m of list) upsert(m);
    scroller.scrollTop = top + (scroller.scrollHeight - height);
    hasOlder = Boolean(frame.has_more);
    loadingOlder = false;
    updateTop();
    return;
  }
  const wasNear = nearBottom();
  if (frame.reason === "join") {
    conn.attempts = 0; // a real join, not an accept-then-close: the backoff starts over
    setState("connected", "Connected");
    if (joinedOnce) {
      // Reconnected: anything we show inside the fresh window that is not in it was
      // deleted while we were away. Older messages we keep as they are.
      const ids = new Set(list.map((m) => m.id));
      const first = list.length ? list[0].id : Number.POSITIVE_INFINITY;
      for (const id of [...messages.keys()]) {
        if ((list.length ? id >= first : !frame.has_more) && !ids.has(id)) removeMessage(id);
      }
    } else {
      hasOlder = Boolean(frame.has_more);
    }
  }
  let added = 0;
  for (const m of list) if (upsert(m)) added += 1;
  if (frame.reason === "join" && !joinedOnce) {
    joinedOnce = true;
    scrollToBottom();
  } else if (added) {
    noteIncoming(false, wasNear);
  }
  updateTop();
  if (frame.reason === "resume" && frame.has_more && list.length) {
    send({ type: "resume", after: list[list.length - 1].id });
  }
}

const handlers = {
  history: onHistory,
  chat_message(frame) {
    const wasNear = nearBottom();
    if (upsert(frame)) noteIncoming(frame.user === ME, wasNear);
    renderTyping();
  },
  user_list(frame) {
    const users = Array.isArray(frame.users) ? frame.users : [];
    if (frame.after === undefined) online = new Set(users);
    else for (const name of users) online.add(name);
    onlineTotal = typeof frame.total === "number" ? frame.total : null;
    moreAfter = frame.has_more && users.length ? users[users.length - 1] : null;
    renderUsers();
  },
  // Who came and went since the last one; `total` counts everyone online now.
  presence(frame) {
    const joins = Array.isArray(frame.joins) ? frame.joins : [];
    const leaves = Array.isArray(frame.leaves) ? frame.leaves : [];
    // In a big room only the first page of names is listed: newcomers join the list
    // while it is whole, or when they sort within the part already shown.
    for (const name of joins) {
      if (moreAfter === null || name <= moreAfter) online.add(name);
    }
    for (const name of leaves) {
      online.delete(name);
      typers.delete(name);
    }
    if (onlineTotal !== null && typeof frame.total === "number") onlineTotal = frame.total;
    renderUsers();
    renderTyping();
  },
  private_message(frame) {
    renderPrivate(frame, false);
    renderTyping();
  },
  private_message_delivered(frame) {
    renderPrivate(frame, true);
  },
  // Private messages missed while reconnecting (both directions), oldest first.
  private_history(frame) {
    for (const m of frame.messages) {
      if (m.user === ME) renderPrivate({ ...m, target: m.to }, true);
      else renderPrivate(m, false);
    }
    if (frame.has_more) send(resumeFrame());
  },
  message_edited(frame) {
    const entry = messages.get(frame.id);
    if (!entry) return;
    entry.data = { ...entry.data, message: frame.message, edited_at: frame.edited_at };
    entry.body.textContent = frame.message;
    setEdited(entry, frame.edited_at || new Date().toISOString());
    if (editing?.entry === entry && editing.sent === frame.message) closeEdit(true);
  },
  message_deleted(frame) {
    removeMessage(frame.id);
  },
  reaction(frame) {
    const entry = messages.get(frame.id);
    if (!entry) return;
    const users = entry.users.get(frame.emoji) || new Set();
    if (frame.action === "added") users.add(frame.user);
    else users.delete(frame.user);
    entry.users.set(frame.emoji, users);
    if (!users.size) entry.users.delete(frame.emoji);
    renderReactions(entry);
  },
  typing(frame) {
    if (frame.user === ME) return;
    typers.set(frame.user, Date.now() + TYPING_SHOW_FOR);
    renderTyping();
  },
  pong() {},
  error: onError,
};

function onError(frame) {
  const about = frame.for;
  if (frame.code === "overloaded" && typeof frame.retry_after === "number") {
    // Its 1013 close follows; the status line counts down to the next attempt. Whole
    // seconds: up to one more at random, so the refused do not return in step.
    conn.retryAfter = (Math.max(0, frame.retry_after) + Math.random()) * 1000;
    return;
  }
  if (about === "typing") return; // a dropped typing notice is nobody's business
  const ours = !frame.client_id || frame.client_id === pending?.clientId;
  if ((about === "chat_message" || about === "private_message") && ours) releasePending();
  if (about === "edit_message" && editing) {
    editing.sent = null;
    editing.form.classList.remove("is-saving");
    editing.textarea.readOnly = false;
  }
  if (about === "delete_message") {
    for (const li of log.querySelectorAll(".msg.is-deleting")) li.classList.remove("is-deleting");
  }
  if (about === "history") {
    loadingOlder = false;
    updateTop();
  }
  const context = ERROR_CONTEXT[about];
  let text = context ? `${context}: ${frame.message}` : frame.message;
  if (about === "chat_message" || about === "private_message") {
    text += " What you wrote is still in the box.";
  }
  if (frame.code === "not_authenticated") {
    showNotice(`${text} Your session may have ended.`, {
      link: { href: LOGIN_URL, text: "Log in again" },
      sticky: true,
    });
  } else {
    showNotice(text, {
      sticky: ["forbidden", "not_found", "name_taken"].includes(frame.code),
      about: about === "private_message" ? "chat_message" : about || "",
    });
  }
}

// --- presence and typing -------------------------------------------------------------------

let online = new Set();
// A big room's user_list is a page (CHAT_PRESENCE_LIST_MAX names): everyone online, and
// the last name shown when more can be asked for; null when the list is whole.
let onlineTotal = null;
let moreAfter = null;
const typers = new Map(); // username -> shown until (ms)
let typingTimer = null;

function renderUsers() {
  const names = [...online].sort((a, b) => (a === ME ? -1 : b === ME ? 1 : a.localeCompare(b)));
  usersList.replaceChildren(
    ...names.map((name) => {
      const li = el("li", "user");
      li.dataset.user = name;
      if (!ME || name === ME) {
        const who = el("span", "user-self");
        who.append(avatar(name), el("span", "user-name", name));
        if (name === ME) who.append(el("span", "you", "(you)"));
        li.append(who);
      } else {
        const b = button("user-btn", `${name}: send a private message`, {
          title: `Send ${name} a private message`,
        });
        b.append(avatar(name), el("span", "user-name", name), svgIcon("lock"));
        b.addEventListener("click", () => {
          setPmTarget(name);
          if (window.matchMedia("(max-width: 760px)").matches) toggleUsers(false);
        });
        li.append(b);
      }
      return li;
    }),
  );
  if (moreAfter !== null) {
    const rest = Math.max(0, (onlineTotal ?? 0) - names.length);
    const more = button("user-more", `Show more people online (${rest} not listed)`, {
      text: `and ${rest} more…`,
    });
    const after = moreAfter;
    more.addEventListener("click", () => send({ type: "user_list", after }));
    const li = el("li", "user");
    li.append(more);
    usersList.append(li);
  }
  $("users-count").textContent = Math.max(onlineTotal ?? 0, names.length);
  $("users-toggle-count").textContent = names.length;
}

function renderTyping() {
  const now = Date.now();
  for (const [name, until] of typers) if (until <= now) typers.delete(name);
  const names = [...typers.keys()].sort();
  let text = "";
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = "Several people are typing…";
  if (typingLine.textContent !== text) typingLine.textContent = text;
  typingLine.classList.toggle("is-active", Boolean(text));
  clearTimeout(typingTimer);
  if (names.length) {
    const soonest = Math.min(...typers.values());
    typingTimer = setTimeout(renderTyping, Math.max(50, soonest - now + 10));
  }
}

function toggleUsers(force) {
  const open = force ?? usersToggle.getAttribute("aria-expanded") !== "true";
  usersToggle.setAttribute("aria-expanded", String(open));
  usersPane.classList.toggle("is-open", open);
  if (open) usersPane.querySelector("button")?.focus();
}
usersToggle.addEventListener("click", () => toggleUsers());
$("users-close").addEventListener("click", () => {
  toggleUsers(false);
  usersToggle.focus();
});
usersPane.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && usersPane.classList.contains("is-open")) {
    toggleUsers(false);
    usersToggle.focus();
  }
});

// --- the connection ---------------------------------------------------------------------------

const conn = {
  ws: null,
  attempts: 0,
  retryTimer: null,
  pingTimer: null,
  pongTimer: null,
  refused: false,
  stopped: false,
  lastCode: null,
  // Milliseconds the server asked us to wait before the next attempt: the drain's close
  // reason (1012, "retry_after_ms=…") or an `overloaded` refusal's retry_after (1013).
  retryAfter: null,
};

function isOpen() {
  return conn.ws !== null && conn.ws.readyState === WebSocket.OPEN;
}

function send(frame) {
  if (!isOpen()) return false;
  conn.ws.send(JSON.stringify(frame));
  return true;
}

/** What to ask for after a reconnect: room messages and, when logged in, private ones. */
function resumeFrame() {
  return ME ? { type: "resume", after: maxId, private_after: maxPrivateId } : { type: "resume", after: maxId };
}

/** A random id for a sent frame; the server echoes it on the stored message or the error. */
function newClientId() {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  // Protocol 2: joins and leaves come batched, in one `presence` frame per interval.
  return `${scheme}://${location.host}/ws/chat/${encodeURIComponent(ROOM)}/?v=2`;
}

function connect() {
  clearTimeout(conn.retryTimer);
  conn.retryAfter = null;
  if (conn.stopped || isOpen() || conn.ws?.readyState === WebSocket.CONNECTING) return;
  const reconnecting = joinedOnce || conn.attempts > 0;
  setState(reconnecting ? "reconnecting" : "connecting", reconnecting ? "Reconnecting…" : "Connecting…");
  const ws = new WebSocket(socketUrl());
  conn.ws = ws;
  ws.addEventListener("open", () => {
    if (conn.ws !== ws) return;
    conn.refused = false;
    // "Connected" once the server has let us in and sent the room (the join history).
    if (joinedOnce) send(resumeFrame());
    if (loadingOlder) {
      loadingOlder = false;
      updateTop();
    }
    heartbeat();
  });
  ws.addEventListener("message", (event) => {
    if (conn.ws !== ws) return;
    clearTimeout(conn.pongTimer);
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    if (frame && typeof frame.type === "string") handlers[frame.type]?.(frame);
  });
  ws.addEventListener("close", (event) => {
    if (conn.ws !== ws) return;
    const hint = /^retry_after_ms=(\d+)$/.exec(event.reason || "");
    if (hint) conn.retryAfter = Number(hint[1]);
    onClosed(event.code);
  });
}

function onClosed(code) {
  conn.ws = null;
  conn.lastCode = code;
  clearInterval(conn.pingTimer);
  clearTimeout(conn.pongTimer);
  if (pending) {
    releasePending();
    showNotice(
      "The connection dropped while sending. What you wrote is still in the box; if it does not show up once we are back, send it again.",
      { about: "chat_message", sticky: true },
    );
  }
  if (editing?.sent) {
    editing.sent = null;
    editing.form.classList.remove("is-saving");
    editing.textarea.readOnly = false;
  }
  for (const li of log.querySelectorAll(".msg.is-deleting")) li.classList.remove("is-deleting");
  // Everyone's presence is re-announced by the server on rejoin.
  typers.clear();
  renderTyping();
  if (conn.stopped) return;
  if (REFUSED[code]) {
    conn.refused = true;
    setState("offline", "Disconnected: this room refused the connection");
    return;
  }
  if (!navigator.onLine) {
    setState("offline", "Offline: waiting for the network…");
    return;
  }
  scheduleReconnect();
}

function scheduleReconnect() {
  // The server's hint when it gave one (a draining replica spreads its clients' returns;
  // a busy one says when to come back). Otherwise exponential backoff with "full jitter"
  // (anywhere from 0 to the step), so clients that lost the same server do not come back
  // in waves.
  const step = Math.min(BACKOFF_CAP, BACKOFF_BASE * 2 ** conn.attempts);
  const hinted = conn.retryAfter;
  conn.retryAfter = null;
  const delay = hinted !== null ? Math.min(hinted, 4 * BACKOFF_CAP) : Math.random() * step;
  conn.attempts += 1;
  const due = Date.now() + delay;
  const tick = () => {
    const left = Math.ceil((due - Date.now()) / 1000);
    statusText.textContent = left > 1 ? `Reconnecting in ${left} s…` : "Reconnecting…";
  };
  setState("reconnecting", "Reconnecting…");
  tick();
  countdownTimer = setInterval(tick, 500);
  conn.retryTimer = setTimeout(connect, delay);
}

function heartbeat() {
  clearInterval(conn.pingTimer);
  conn.pingTimer = setInterval(() => {
    if (!send({ type: "ping" })) return;
    clearTimeout(conn.pongTimer);
    conn.pongTimer = setTimeout(() => {
      // No answer at all: the path is dead even if the socket has not noticed yet.
      const ws = conn.ws;
      conn.ws = null;
      try {
        ws?.close();
      } catch {
        /* already closing */
      }
      onClosed(1006);
    }, PONG_TIMEOUT);
  }, PING_EVERY);
}

reconnectNow.addEventListener("click", () => {
  conn.attempts = 0;
  conn.refused = false;
  connect();
});
window.addEventListener("online", () => {
  if (!conn.ws) {
    conn.attempts = 0;
    connect();
  }
});
window.addEventListener("offline", () => {
  if (!isOpen()) setState("offline", "Offline: waiting for the network…");
});
window.addEventListener("pagehide", () => {
  conn.stopped = true;
});
window.addEventListener("pageshow", (event) => {
  if (event.persisted) {
    conn.stopped = false;
    connect();
  }
});
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) {
    unread = 0;
    document.title = `#${ROOM} · Chat`;
    if (!conn.ws && !conn.refused && statusBox.dataset.state === "reconnecting") connect();
  }
});

// --- the composer --------------------------------------------------------------------------

// What was sent and not yet echoed back. Kept in the box (read-only) until the server
// stores and echoes it; on an error or a dropped connection it becomes editable again.
let pending = null;
let unconfirmed = null; // released but possibly stored: cleared if its echo still comes
let lastTypingSent = 0;
let lastInput = 0;
let typingSendTimer = null;
let pmTarget = null;
const DRAFT_KEY = `chat-draft:${ROOM}`;

function draftSave() {
  try {
    if (input.value) sessionStorage.setItem(DRAFT_KEY, input.value);
    else sessionStorage.removeItem(DRAFT_KEY);
  } catch {
    /* storage disabled: the draft just does not survive a reload */
  }
}

function autosize() {
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 240)}px`;
}

function refreshComposer() {
  const n = codePoints(input.value);
  const over = n > MAX_LENGTH;
  sendButton.disabled = Boolean(pending) || !input.value.trim() || over;
  charCount.textContent = n > MAX_LENGTH * 0.8 ? `${n} / ${MAX_LENGTH}` : "";
  charCount.classList.toggle("is-over", over);
  input.setAttribute("aria-invalid", over ? "true" : "false");
}

/** Tell the room we are typing: at most once per interval, and once more at the end of
 *  an interval in which we kept typing (so the notice is never more than ~2 s late). */
function noteTyping() {
  const typingInRoom = () =>
    input.value.trim() && !pmTarget && !input.value.startsWith("/pm") && isOpen() && !pending;
  if (!typingInRoom()) return;
  const wait = lastTypingSent + TYPING_SEND_EVERY - Date.now();
  if (wait <= 0) {
    lastTypingSent = Date.now();
    send({ type: "typing" });
  } else if (!typingSendTimer) {
    typingSendTimer = setTimeout(() => {
      typingSendTimer = null;
      if (Date.now() - lastInput < TYPING_SEND_EVERY) noteTyping();
    }, wait + 150);
  }
}

function setPmTarget(name) {
  if (!composer) return;
  pmTarget = name;
  pmBar.hidden = !name;
  pmName.textContent = name || "";
  composer.classList.toggle("is-private", Boolean(name));
  input.placeholder = name ? `Private message to ${name}` : `Message #${ROOM}`;
  $("message-label").textContent = name ? `Private message to ${name}` : `Message #${ROOM}`;
  input.focus();
}

function parseComposer(text) {
  if (text === "/pm" || text.startsWith("/pm ") || text.startsWith("/pm\n")) {
    const rest = text.slice(3).trim();
    const space = rest.search(/\s/);
    if (space < 0) return { error: "Write a private message as /pm name text." };
    return {
      frame: { type: "private_message", to: rest.slice(0, space), message: rest.slice(space).trim() },
    };
  }
  if (pmTarget) return { frame: { type: "private_message", to: pmTarget, message: text } };
  return { frame: { type: "chat_message", message: text } };
}

function submit() {
  if (pending) return;
  const text = input.value;
  if (!text.trim()) return;
  const n = codePoints(text);
  if (n > MAX_LENGTH) {
    showNotice(`Your message is ${n} characters long; the limit is ${MAX_LENGTH}. Shorten it by ${n - MAX_LENGTH}.`);
    return;
  }
  const parsed = parseComposer(text);
  if (parsed.error) {
    showNotice(parsed.error);
    return;
  }
  if (parsed.frame.to === ME) {
    showNotice("That private message would go to yourself. Pick someone else from the online list.");
    return;
  }
  const clientId = newClientId();
  parsed.frame.client_id = clientId;
  if (!send(parsed.frame)) {
    showNotice(
      "Not connected right now. What you wrote is still in the box; press Enter again once connected.",
      { about: "chat_message" },
    );
    return;
  }
  pending = {
    kind: parsed.frame.type === "private_message" ? "pm" : "room",
    to: parsed.frame.to,
    message: parsed.frame.message,
    clientId,
    text,
    afterId: maxId,
    timer: setTimeout(() => {
      releasePending();
      showNotice(
        "The server has not confirmed your message yet. It is still in the box; it clears when it arrives.",
        { about: "chat_message" },
      );
    }, SEND_CONFIRM_TIMEOUT),
  };
  unconfirmed = null;
  input.readOnly = true;
  composer.classList.add("is-sending");
  refreshComposer();
}

function releasePending() {
  if (!pending) return;
  clearTimeout(pending.timer);
  unconfirmed = pending;
  pending = null;
  input.readOnly = false;
  composer.classList.remove("is-sending");
  refreshComposer();
}

function samePending(p, echo) {
  // The server echoes our client_id: then the match is exact.
  if (p && echo.clientId) return p.clientId === echo.clientId;
  return (
    p &&
    p.kind === echo.kind &&
    p.message === echo.message &&
    // What we sent is newer than every message we had seen when we sent it: an older
    // message with the same text (loaded by "load older", say) is not its echo.
    (echo.kind === "room" ? echo.id > p.afterId : p.to === echo.to)
  );
}

/** The server echoed one of our messages: if it is the one in the box, clear the box. */
function matchPending(echo) {
  if (!echo || !composer) return;
  if (samePending(pending, echo)) {
    clearTimeout(pending.timer);
    pending = null;
    input.readOnly = false;
    composer.classList.remove("is-sending");
    input.value = "";
    afterClear();
  } else if (samePending(unconfirmed, echo) && input.value === unconfirmed.text) {
    unconfirmed = null;
    input.value = "";
    afterClear();
  } else {
    return;
  }
  // A message went through: an older "not sent" notice no longer applies.
  if (!notice.hidden && notice.dataset.about === "chat_message") hideNotice();
}

function afterClear() {
  draftSave();
  autosize();
  refreshComposer();
  if (document.activeElement === input || document.activeElement === document.body) input.focus();
}

if (composer) {
  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  input.addEventListener("keydown", (event) => {
    if (event.isComposing || event.keyCode === 229) return; // IME composition (e.g. 中文)
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      submit();
    } else if (event.key === "Escape" && pmTarget) {
      event.preventDefault();
      setPmTarget(null);
    } else if (event.key === "ArrowUp" && !input.value) {
      const mine = [...messages.values()].filter((e) => e.data.user === ME);
      if (mine.length) {
        event.preventDefault();
        startEdit(mine.reduce((a, b) => (a.data.id > b.data.id ? a : b)));
      }
    }
  });
  input.addEventListener("input", () => {
    autosize();
    refreshComposer();
    draftSave();
    lastInput = Date.now();
    noteTyping();
  });
  $("pm-cancel").addEventListener("click", () => setPmTarget(null));
  try {
    input.value = sessionStorage.getItem(DRAFT_KEY) || "";
  } catch {
    input.value = "";
  }
  autosize();
  refreshComposer();
}

// --- edit and delete -------------------------------------------------------------------------

let editing = null; // {entry, form, textarea, sent}

function startEdit(entry) {
  if (!canModify(entry.data)) return;
  if (editing) closeEdit();
  const form = el("form", "edit-form");
  form.setAttribute("aria-label", "Edit message");
  const textarea = el("textarea", "edit-input");
  textarea.value = entry.data.message;
  textarea.rows = Math.min(8, entry.data.message.split("\n").length + 1);
  textarea.setAttribute("aria-label", "Edit message");
  const save = el("button", "btn btn-small", "Save");
  save.type = "submit";
  const cancel = button("btn btn-small btn-ghost", null, { text: "Cancel" });
  const hint = el("span", "hint", "Enter to save · Esc to cancel");
  const row = el("div", "edit-row");
  row.append(save, cancel, hint);
  form.append(textarea, row);
  entry.text.hidden = true;
  entry.text.after(form);
  entry.li.classList.add("is-editing");
  editing = { entry, form, textarea, sent: null };
  const doSave = () => {
    const text = textarea.value;
    if (!text.trim()) {
      showNotice("A message cannot be empty. To remove it, use Delete.");
      return;
    }
    if (codePoints(text) > MAX_LENGTH) {
      showNotice(`The limit is ${MAX_LENGTH} characters; this is ${codePoints(text)}.`);
      return;
    }
    if (text === entry.data.message) {
      closeEdit(true);
      return;
    }
    if (!send({ type: "edit_message", id: entry.data.id, message: text })) {
      showNotice("Not connected right now. Your edit is kept; save again once connected.");
      return;
    }
    editing.sent = text;
    textarea.readOnly = true;
    form.classList.add("is-saving");
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    doSave();
  });
  textarea.addEventListener("keydown", (event) => {
    if (event.isComposing || event.keyCode === 229) return;
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      doSave();
    } else if (event.key === "Escape") {
      event.preventDefault();
      closeEdit(true);
    }
  });
  cancel.addEventListener("click", () => closeEdit(true));
  textarea.focus();
  textarea.setSelectionRange(textarea.value.length, textarea.value.length);
}

function closeEdit(refocus = false) {
  if (!editing) return;
  const { entry, form } = editing;
  editing = null;
  form.remove();
  entry.text.hidden = false;
  entry.li.classList.remove("is-editing");
  if (refocus) (entry.li.isConnected ? entry.li : input)?.focus();
}

function confirmDelete(entry) {
  if (entry.li.querySelector(".confirm-delete")) return;
  const bar = el("div", "confirm-delete");
  bar.setAttribute("role", "group");
  bar.setAttribute("aria-label", "Confirm delete");
  const yes = button("btn btn-small btn-danger", null, { text: "Delete" });
  const no = button("btn btn-small btn-ghost", null, { text: "Keep" });
  bar.append(el("span", null, "Delete this message for everyone?"), yes, no);
  entry.li.querySelector(".msg-main").append(bar);
  const close = () => {
    bar.remove();
    entry.li.focus();
  };
  yes.addEventListener("click", () => {
    if (send({ type: "delete_message", id: entry.data.id })) {
      entry.li.classList.add("is-deleting");
      bar.remove();
    } else {
      showNotice("Not connected right now; try again once connected.");
    }
  });
  no.addEventListener("click", close);
  bar.addEventListener("keydown", (event) => {
    if (event.key === "Escape") close();
  });
  yes.focus();
}

// --- reactions picker -------------------------------------------------------------------------

let pickerFor = null; // {entry, opener}
const pickerGrid = picker.querySelector(".picker-grid");
for (const emoji of QUICK_REACTIONS) {
  const b = button("pick", `React with ${emoji}`, { text: emoji });
  b.dataset.emoji = emoji;
  b.addEventListener("click", () => {
    if (pickerFor) send({ type: "reaction", id: pickerFor.entry.data.id, emoji });
    closePicker(true);
  });
  pickerGrid.append(b);
}

function openPicker(entry, opener) {
  if (pickerFor?.entry === entry) {
    closePicker(true);
    return;
  }
  pickerFor = { entry, opener };
  for (const b of pickerGrid.children) {
    const mine = entry.users.get(b.dataset.emoji)?.has(ME) ?? false;
    b.setAttribute("aria-pressed", mine ? "true" : "false");
  }
  entry.li.append(picker);
  picker.hidden = false;
  opener.setAttribute("aria-expanded", "true");
  picker.scrollIntoView({ block: "nearest" });
  pickerGrid.firstElementChild.focus();
}

function closePicker(refocus) {
  if (!pickerFor) return;
  const { opener } = pickerFor;
  pickerFor = null;
  picker.hidden = true;
  opener.setAttribute("aria-expanded", "false");
  document.body.append(picker);
  if (refocus && opener.isConnected) opener.focus();
}

picker.addEventListener("keydown", (event) => {
  const items = [...pickerGrid.children];
  const at = items.indexOf(document.activeElement);
  if (event.key === "Escape") {
    event.preventDefault();
    closePicker(true);
  } else if (event.key === "ArrowRight" || event.key === "ArrowDown") {
    event.preventDefault();
    items[(at + 1) % items.length].focus();
  } else if (event.key === "ArrowLeft" || event.key === "ArrowUp") {
    event.preventDefault();
    items[(at - 1 + items.length) % items.length].focus();
  } else if (event.key === "Tab") {
    closePicker(false);
  }
});
document.addEventListener("pointerdown", (event) => {
  if (pickerFor && !picker.contains(event.target) && !event.target.closest(".act-react")) {
    closePicker(false);
  }
});

// --- go ---------------------------------------------------------------------------------------

updateTop();
connect();
