// Who is here: the online list (user_list and presence frames), who is typing, and the
// online pane's toggle on narrow screens.

import { avatar, button, byId, el, svgIcon } from "../dom.js";

const TYPING_SHOW_FOR = 4000;

/** me, send(frame); onPick(name): someone in the list was chosen for a private message. */
export function createPresence({ me, send, onPick }) {
  const usersList = byId("users");
  const typingLine = byId("typing");
  const usersToggle = byId("users-toggle");
  const usersPane = byId("users-pane");

  let online = new Set();
  // A big room's user_list is a page (CHAT_PRESENCE_LIST_MAX names): everyone online, and
  // the last name shown when more can be asked for; null when the list is whole.
  let onlineTotal = null;
  let moreAfter = null;
  const typers = new Map(); // username -> shown until (ms)
  let typingTimer = null;

  function renderUsers() {
    const names = [...online].sort((a, b) => (a === me ? -1 : b === me ? 1 : a.localeCompare(b)));
    usersList.replaceChildren(
      ...names.map((name) => {
        const li = el("li", "user");
        li.dataset.user = name;
        if (!me || name === me) {
          const who = el("span", "user-self");
          who.append(avatar(name), el("span", "user-name", name));
          if (name === me) who.append(el("span", "you", "(you)"));
          li.append(who);
        } else {
          const b = button("user-btn", `${name}: send a private message`, {
            title: `Send ${name} a private message`,
          });
          b.append(avatar(name), el("span", "user-name", name), svgIcon("lock"));
          b.addEventListener("click", () => {
            onPick(name);
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
    byId("users-count").textContent = Math.max(onlineTotal ?? 0, names.length);
    byId("users-toggle-count").textContent = names.length;
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
  byId("users-close").addEventListener("click", () => {
    toggleUsers(false);
    usersToggle.focus();
  });
  usersPane.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && usersPane.classList.contains("is-open")) {
      toggleUsers(false);
      usersToggle.focus();
    }
  });

  return {
    onUserList(frame) {
      const users = Array.isArray(frame.users) ? frame.users : [];
      if (frame.after === undefined) online = new Set(users);
      else for (const name of users) online.add(name);
      onlineTotal = typeof frame.total === "number" ? frame.total : null;
      moreAfter = frame.has_more && users.length ? users[users.length - 1] : null;
      renderUsers();
    },
    // Who came and went since the last one; `total` counts everyone online now.
    onPresence(frame) {
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
    onTyping(frame) {
      if (frame.user === me) return;
      typers.set(frame.user, Date.now() + TYPING_SHOW_FOR);
      renderTyping();
    },
    /** `name` spoke: the indicator drops them at the next renderTyping(). */
    forgetTyper(name) {
      typers.delete(name);
    },
    renderTyping,
    /** The connection dropped: everyone's presence is re-announced on rejoin. */
    clearTyping() {
      typers.clear();
      renderTyping();
    },
  };
}
