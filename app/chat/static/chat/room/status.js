// What the page tells the user about itself: notices (errors, mostly) and the connection
// state next to the room name.

import { byId, el } from "../dom.js";

const ERROR_CONTEXT = {
  chat_message: "Your message was not sent",
  private_message: "Your private message was not sent",
  edit_message: "Your edit was not saved",
  delete_message: "The message was not deleted",
  reaction: "Your reaction was not saved",
  history: "Older messages could not be loaded",
  resume: "Missed messages could not be loaded",
};

/** The notice above the composer; `about` says which action it concerns. */
export function createNotices({ loginUrl, onDismiss = () => {} }) {
  const notice = byId("notice");
  const noticeText = byId("notice-text");
  let timer = null;

  function show(text, { kind = "error", link = null, sticky = false, about = "" } = {}) {
    noticeText.replaceChildren(document.createTextNode(text));
    if (link) {
      const a = el("a", null, link.text);
      a.href = link.href;
      noticeText.append(" ", a);
    }
    notice.dataset.kind = kind;
    notice.dataset.about = about;
    notice.hidden = false;
    clearTimeout(timer);
    if (!sticky) timer = setTimeout(hide, 12000);
  }

  function hide() {
    notice.hidden = true;
    noticeText.replaceChildren();
  }

  /** Hide the notice if it is about `about`: it no longer applies. */
  function settle(about) {
    if (!notice.hidden && notice.dataset.about === about) hide();
  }

  /** An `error` frame, explained. */
  function showError(frame) {
    const about = frame.for;
    const context = ERROR_CONTEXT[about];
    let text = context ? `${context}: ${frame.message}` : frame.message;
    if (about === "chat_message" || about === "private_message") {
      text += " What you wrote is still in the box.";
    }
    if (frame.code === "not_authenticated") {
      show(`${text} Your session may have ended.`, {
        link: { href: loginUrl, text: "Log in again" },
        sticky: true,
      });
    } else {
      show(text, {
        sticky: ["forbidden", "not_found", "name_taken"].includes(frame.code),
        about: about === "private_message" ? "chat_message" : about || "",
      });
    }
  }

  byId("notice-close").addEventListener("click", () => {
    hide();
    onDismiss();
  });

  return { show, hide, settle, showError };
}

const STATE_TEXT = {
  connecting: "Connecting…",
  reconnecting: "Reconnecting…",
  connected: "Connected",
};
const OFFLINE_TEXT = {
  refused: "Disconnected: this room refused the connection",
  network: "Offline: waiting for the network…",
};

/** The status line: shows what socket.js reports through its onState. */
export function createConnectionStatus({ onRetry }) {
  const root = byId("room");
  const box = byId("status");
  const text = byId("status-text");
  const retry = byId("reconnect-now");
  const composer = byId("composer");
  let countdown = null;

  function show(state, { reason, due, refused = false } = {}) {
    clearInterval(countdown);
    box.dataset.state = state;
    root.dataset.conn = state;
    text.textContent = state === "offline" ? OFFLINE_TEXT[reason] : STATE_TEXT[state];
    retry.hidden = !(state === "reconnecting" || (state === "offline" && navigator.onLine && !refused));
    composer?.classList.toggle("is-offline", state !== "connected");
    if (state === "reconnecting" && due !== undefined) {
      const tick = () => {
        const left = Math.ceil((due - Date.now()) / 1000);
        text.textContent = left > 1 ? `Reconnecting in ${left} s…` : "Reconnecting…";
      };
      tick();
      countdown = setInterval(tick, 500);
    }
  }

  retry.addEventListener("click", onRetry);
  return { show };
}
