// The message log: room and private messages with their reactions, kept in id order and
// merged by id (a resume after a reconnect shows nothing twice), history paging, scrolling,
// the unread count in the title, and keyboard movement between messages.

import { avatar, button, byId, el, fmtFull, svgIcon, timeEl } from "../dom.js";

const HISTORY_PAGE = 50;
// Consecutive messages by the same author within five minutes are drawn as one group
// (avatar and name once); each item still carries its author for screen readers.
const GROUP_WINDOW = 5 * 60 * 1000;

/**
 * me, room, canModify(data), send(frame), isOpen(): the page and the connection.
 * actions: {react(entry, opener), edit(entry), remove(entry), reply(name)}: what a message's
 *   buttons do (the picker, edit.js, the composer).
 * onOwnEcho(echo): one of our messages came back stored (the composer clears its box).
 * onText(entry): a message's text changed (an edit waiting for it may close).
 * onRemove(entry): a message is about to go (an edit or the picker on it closes).
 * forgetTyper(name): `name` spoke, so is no longer typing.
 * focusComposer(): where focus goes when the log has nowhere to put it.
 */
export function createLog({
  me,
  room,
  canModify,
  send,
  isOpen,
  actions,
  onOwnEcho,
  onText,
  onRemove,
  forgetTyper,
  focusComposer,
}) {
  const scroller = byId("log-scroller");
  const log = byId("log");
  const loadOlder = byId("load-older");
  const logStart = byId("log-start");
  const jumpLatest = byId("jump-latest");

  const messages = new Map(); // room message id -> entry {data, li, body, edited, reactions, actions, users}
  const privateSeen = new Set();
  let maxId = 0; // the largest room message id seen: where `resume` starts
  let maxPrivateId = 0; // the largest private message id seen: where `private_after` starts
  let oldestId = null; // the smallest id loaded: where "load older" continues
  let hasOlder = false;
  let loadingOlder = false;
  let joinedOnce = false;
  let unread = 0;
  // Keyboard: the log is one tab stop (a "roving" message); arrows move between messages,
  // Tab then reaches that message's reactions and actions.
  let rovingItem = null;

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
      document.title = `(${unread}) #${room} · Chat`;
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
    if (data.user === me) li.classList.add("mine");
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
    const buttons = el("div", "actions");
    buttons.setAttribute("role", "group");
    buttons.setAttribute("aria-label", "Message actions");
    main.append(meta, text, reactions);
    li.append(avatar(data.user), main, buttons);
    const entry = { data, li, text, body, edited, reactions, actions: buttons };
    if (me) {
      const react = button("icon-btn act-react", "Add reaction", { icon: "react" });
      react.setAttribute("aria-haspopup", "dialog");
      react.addEventListener("click", () => actions.react(entry, react));
      buttons.append(react);
      if (canModify(data)) {
        const edit = button("icon-btn act-edit", "Edit message", { icon: "edit" });
        edit.addEventListener("click", () => actions.edit(entry));
        const del = button("icon-btn act-delete", "Delete message", { icon: "delete" });
        del.addEventListener("click", () => actions.remove(entry));
        buttons.append(edit, del);
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
    onText(entry);
  }

  function setEdited(entry, editedAt) {
    entry.edited.hidden = !editedAt;
    if (editedAt) {
      const d = new Date(editedAt);
      entry.edited.title = Number.isNaN(d.getTime()) ? "edited" : `Edited ${fmtFull.format(d)}`;
    }
  }

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
      const mine = me !== null && users.has(me);
      const names = [...users].sort().join(", ");
      const label = `${emoji} ${users.size}: ${names}. ${mine ? "Remove your reaction" : `React with ${emoji}`}`;
      const chip = me ? button("chip", label, { title: names }) : el("span", "chip");
      if (!me) chip.title = names;
      chip.dataset.emoji = emoji;
      chip.append(el("span", "chip-emoji", emoji), el("span", "chip-count", users.size));
      if (me) {
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
    forgetTyper(data.user);
    if (data.user === me) {
      onOwnEcho({ kind: "room", message: data.message, id: data.id, clientId: data.client_id });
    }
    return true;
  }

  function remove(id) {
    const entry = messages.get(id);
    if (!entry) return;
    onRemove(entry);
    const hadFocus = entry.li.contains(document.activeElement);
    const after = entry.li.nextElementSibling;
    const next = after || entry.li.previousElementSibling;
    entry.li.remove();
    regroup(after);
    messages.delete(id);
    if (rovingItem === entry.li) setRoving(next, hadFocus);
    else if (hadFocus) {
      if (next) next.focus();
      else focusComposer();
    }
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
    const buttons = el("div", "actions");
    const reply = button(
      "icon-btn act-reply",
      outgoing ? `Write to ${other} again` : `Reply privately to ${other}`,
      { icon: "reply" },
    );
    reply.addEventListener("click", () => actions.reply(other));
    buttons.append(reply);
    li.append(avatar(other), main, buttons);
    log.append(li);
    regroup(li);
    if (!rovingItem) setRoving(li);
    else syncTabStops(li);
    noteIncoming(outgoing, wasNear);
    if (outgoing) {
      onOwnEcho({
        kind: "pm",
        to: frame.target,
        message: frame.message,
        id: null,
        clientId: frame.client_id,
      });
    }
    else forgetTyper(frame.user);
  }

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
        actions.edit(entry);
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
    focusComposer();
  });

  function requestOlder() {
    if (loadingOlder || !hasOlder || !isOpen()) return;
    loadingOlder = true;
    updateTop();
    send({ type: "history", before: oldestId, limit: HISTORY_PAGE });
  }
  loadOlder.addEventListener("click", requestOlder);

  // --- frames from the server -----------------------------------------------------------

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
      if (joinedOnce) {
        // Reconnected: anything we show inside the fresh window that is not in it was
        // deleted while we were away. Older messages we keep as they are.
        const ids = new Set(list.map((m) => m.id));
        const first = list.length ? list[0].id : Number.POSITIVE_INFINITY;
        for (const id of [...messages.keys()]) {
          if ((list.length ? id >= first : !frame.has_more) && !ids.has(id)) remove(id);
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
  }

  function onChatMessage(frame) {
    const wasNear = nearBottom();
    if (upsert(frame)) noteIncoming(frame.user === me, wasNear);
  }

  // Private messages missed while reconnecting (both directions), oldest first.
  function onPrivateHistory(frame) {
    for (const m of frame.messages) {
      if (m.user === me) renderPrivate({ ...m, target: m.to }, true);
      else renderPrivate(m, false);
    }
  }

  function onEdited(frame) {
    const entry = messages.get(frame.id);
    if (!entry) return;
    entry.data = { ...entry.data, message: frame.message, edited_at: frame.edited_at };
    entry.body.textContent = frame.message;
    setEdited(entry, frame.edited_at || new Date().toISOString());
    onText(entry);
  }

  function onReaction(frame) {
    const entry = messages.get(frame.id);
    if (!entry) return;
    const users = entry.users.get(frame.emoji) || new Set();
    if (frame.action === "added") users.add(frame.user);
    else users.delete(frame.user);
    entry.users.set(frame.emoji, users);
    if (!users.size) entry.users.delete(frame.emoji);
    renderReactions(entry);
  }

  return {
    onHistory,
    onChatMessage,
    onPrivateHistory,
    onEdited,
    onReaction,
    renderPrivate,
    remove,
    get maxId() {
      return maxId;
    },
    /** Where a `resume` starts: room messages and, when logged in, private ones. */
    resumePoint() {
      return me ? { after: maxId, private_after: maxPrivateId } : { after: maxId };
    },
    /** Our newest message: what ↑ in an empty composer edits. */
    lastOwn() {
      let last = null;
      for (const entry of messages.values()) {
        if (entry.data.user === me && (!last || entry.data.id > last.data.id)) last = entry;
      }
      return last;
    },
    /** A history request dies with its socket or its error: the button works again. */
    historyFailed() {
      if (!loadingOlder) return;
      loadingOlder = false;
      updateTop();
    },
    /** Deletes that were asked for and not confirmed: show those messages normally again. */
    clearDeleting() {
      for (const li of log.querySelectorAll(".msg.is-deleting")) li.classList.remove("is-deleting");
    },
    /** The tab is visible again: nothing is unread. */
    seen() {
      unread = 0;
      document.title = `#${room} · Chat`;
    },
    start: updateTop,
  };
}
