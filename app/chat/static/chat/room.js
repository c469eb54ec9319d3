// A room: the chat log, the composer and the online list over the JSON WebSocket
// protocol (docs/protocol.md). Every piece of user text is inserted with textContent.
const root = document.getElementById("room");
const ROOM = root.dataset.room;
const ME = root.dataset.user || null;

const log = document.getElementById("log");
const usersList = document.getElementById("users");
const statusLine = document.getElementById("status");
const typingLine = document.getElementById("typing");
const notice = document.getElementById("notice");
const composer = document.getElementById("composer");
const input = document.getElementById("message-input");

const seen = new Map(); // message id -> <li>
let lastId = 0;
let socket = null;
let attempts = 0;
let lastTypingSent = 0;
const typers = new Map();
let online = new Set();

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function setStatus(text, state) {
  statusLine.textContent = text;
  statusLine.dataset.state = state;
}

function showNotice(text) {
  notice.textContent = text;
  notice.hidden = false;
  clearTimeout(showNotice.timer);
  showNotice.timer = setTimeout(() => { notice.hidden = true; }, 6000);
}

function time(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function renderMessage(m) {
  if (seen.has(m.id)) return;
  const li = el("li", "msg");
  li.dataset.id = m.id;
  const head = el("div", "meta");
  head.append(el("span", "author", m.user), el("time", "time", time(m.timestamp)));
  if (m.edited_at) head.append(el("span", "edited", "(edited)"));
  li.append(head, el("div", "body", m.message));
  // Keep the log ordered by id whatever order frames arrive in.
  let after = null;
  for (const [id, node] of seen) if (id < m.id && (!after || id > Number(after.dataset.id))) after = node;
  if (after) after.after(li); else log.prepend(li);
  seen.set(m.id, li);
  lastId = Math.max(lastId, m.id);
  li.scrollIntoView({ block: "end" });
}

function renderPrivate(frame, outgoing) {
  const li = el("li", outgoing ? "msg private outgoing" : "msg private incoming");
  const who = outgoing ? `to ${frame.target}` : `from ${frame.user}`;
  const head = el("div", "meta");
  head.append(el("span", "author", `Private ${who}`), el("time", "time", time(frame.timestamp)));
  li.append(head, el("div", "body", frame.message));
  log.append(li);
  li.scrollIntoView({ block: "end" });
}

function renderUsers() {
  usersList.replaceChildren(...[...online].sort().map((name) => {
    const li = el("li", "user");
    const button = el("button", "link", name);
    button.type = "button";
    button.title = `Private message to ${name}`;
    button.addEventListener("click", () => {
      if (!input || name === ME) return;
      input.value = `/pm ${name} `;
      input.focus();
    });
    li.append(button);
    return li;
  }));
}

function renderTyping() {
  const now = Date.now();
  for (const [name, until] of typers) if (until < now) typers.delete(name);
  const names = [...typers.keys()];
  typingLine.textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
}
setInterval(renderTyping, 1000);

const handlers = {
  history(frame) { frame.messages.forEach(renderMessage); },
  chat_message: renderMessage,
  user_list(frame) { online = new Set(frame.users); renderUsers(); },
  user_join(frame) { online.add(frame.user); renderUsers(); },
  user_leave(frame) { online.delete(frame.user); renderUsers(); },
  private_message(frame) { renderPrivate(frame, false); },
  private_message_delivered(frame) { renderPrivate(frame, true); },
  message_edited(frame) {
    const li = seen.get(frame.id);
    if (!li) return;
    li.querySelector(".body").textContent = frame.message;
    if (!li.querySelector(".edited")) li.querySelector(".meta").append(el("span", "edited", "(edited)"));
  },
  message_deleted(frame) { seen.get(frame.id)?.remove(); seen.delete(frame.id); },
  typing(frame) { typers.set(frame.user, Date.now() + 3000); renderTyping(); },
  reaction() {},
  pong() {},
  error(frame) { showNotice(frame.message); },
};

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/ws/chat/${encodeURIComponent(ROOM)}/`);
  setStatus(attempts ? "reconnecting…" : "connecting…", "connecting");
  socket.addEventListener("open", () => {
    attempts = 0;
    setStatus("connected", "connected");
    if (lastId) socket.send(JSON.stringify({ type: "resume", after: lastId }));
  });
  socket.addEventListener("message", (event) => {
    let frame;
    try { frame = JSON.parse(event.data); } catch { return; }
    handlers[frame.type]?.(frame);
  });
  socket.addEventListener("close", (event) => {
    if (event.code >= 4400 && event.code < 4500) {
      setStatus("offline", "offline");
      return; // refused for a reason the error frame gave; retrying would not help
    }
    attempts += 1;
    const delay = Math.min(30000, 500 * 2 ** attempts) * (0.5 + Math.random() / 2);
    setStatus(`reconnecting in ${Math.round(delay / 1000)} s…`, "reconnecting");
    setTimeout(connect, delay);
  });
}

if (composer) {
  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value;
    if (!text.trim()) return;
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      showNotice("Not connected: your message is kept; send again when connected.");
      return;
    }
    socket.send(JSON.stringify({ type: "chat_message", message: text }));
    input.value = "";
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });
  input.addEventListener("input", () => {
    const now = Date.now();
    if (now - lastTypingSent > 2000 && socket?.readyState === WebSocket.OPEN) {
      lastTypingSent = now;
      socket.send(JSON.stringify({ type: "typing" }));
    }
  });
}

connect();
