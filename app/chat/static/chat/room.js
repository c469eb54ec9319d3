// A room page: the chat log, the composer and the online list, spoken over the JSON
// WebSocket protocol of docs/protocol.md. Plain DOM and ES modules, no build step.
// This entry only wires the modules in room/ together (docs/ui.md lists them); each owns
// its own state, and they reach each other only through what is passed in here.
//
// Rules the modules keep:
// - every piece of user text (names, messages, room names) goes in with textContent;
// - what the user typed stays in the composer until the server echoes it back stored;
// - after a reconnect we `resume` from the last id we saw and merge by id, so nothing
//   shows twice and nothing is missed.

import { byId } from "./dom.js";
import { createComposer } from "./room/composer.js";
import { createEditor } from "./room/edit.js";
import { createLog } from "./room/log.js";
import { createPicker } from "./room/picker.js";
import { createPresence } from "./room/presence.js";
import { createSocket, socketUrl } from "./room/socket.js";
import { createConnectionStatus, createNotices } from "./room/status.js";

const root = byId("room");
const ROOM = root.dataset.room;
const ME = root.dataset.user || null;
const IS_STAFF = root.dataset.staff === "1";
const MAX_LENGTH = Number(root.dataset.maxLength) || 2000;
const LOGIN_URL = root.dataset.loginUrl || "/accounts/login/";

const input = byId("message-input");
const focusComposer = () => input?.focus();
const canModify = (data) => Boolean(ME) && (data.user === ME || IS_STAFF);
// The modules are made before the socket; they only send once it exists.
const send = (frame) => socket.send(frame);
const isOpen = () => socket.isOpen();

const notices = createNotices({ loginUrl: LOGIN_URL, onDismiss: focusComposer });
const status = createConnectionStatus({ onRetry: () => socket.retryNow() });
const picker = createPicker({ me: ME, send });
const editor = createEditor({ maxLength: MAX_LENGTH, send, notices, canModify, focusComposer });
const presence = createPresence({
  me: ME,
  send,
  onPick: (name) => composer?.setPmTarget(name),
});
const log = createLog({
  me: ME,
  room: ROOM,
  canModify,
  send,
  isOpen,
  actions: {
    react: picker.open,
    edit: editor.start,
    remove: editor.confirmDelete,
    reply: (name) => composer?.setPmTarget(name),
  },
  onOwnEcho: (echo) => composer?.matchPending(echo),
  onText: editor.saved,
  onRemove(entry) {
    editor.closeFor(entry);
    picker.closeFor(entry);
  },
  forgetTyper: presence.forgetTyper,
  focusComposer,
});
// Only a logged-in user has a composer.
const composer = byId("composer")
  ? createComposer({
      me: ME,
      room: ROOM,
      maxLength: MAX_LENGTH,
      send,
      isOpen,
      notices,
      maxId: () => log.maxId,
      lastOwn: log.lastOwn,
      edit: editor.start,
    })
  : null;

function onError(frame) {
  const about = frame.for;
  if (about === "typing") return; // a dropped typing notice is nobody's business
  if (about === "chat_message" || about === "private_message") composer?.failed(frame);
  if (about === "edit_message") editor.failed();
  if (about === "delete_message") log.clearDeleting();
  if (about === "history") log.historyFailed();
  notices.showError(frame);
}

const socket = createSocket({
  url: socketUrl(ROOM),
  handlers: {
    history: log.onHistory,
    chat_message(frame) {
      log.onChatMessage(frame);
      presence.renderTyping();
    },
    user_list: presence.onUserList,
    presence: presence.onPresence,
    private_message(frame) {
      log.renderPrivate(frame, false);
      presence.renderTyping();
    },
    private_message_delivered: (frame) => log.renderPrivate(frame, true),
    private_history: log.onPrivateHistory,
    message_edited: log.onEdited,
    message_deleted: (frame) => log.remove(frame.id),
    reaction: log.onReaction,
    typing: presence.onTyping,
    error: onError,
  },
  resumePoint: log.resumePoint,
  onState: status.show,
  onOpen: log.historyFailed, // a history request does not survive its socket
  onClose() {
    composer?.dropped();
    editor.dropped();
    log.clearDeleting();
    presence.clearTyping();
  },
});

window.addEventListener("online", socket.networkUp);
window.addEventListener("offline", socket.networkDown);
window.addEventListener("pagehide", socket.stop);
window.addEventListener("pageshow", (event) => {
  if (event.persisted) socket.restart();
});
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) {
    log.seen();
    socket.wake();
  }
});

log.start();
socket.connect();
