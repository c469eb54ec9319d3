// The composer: sending (room and private messages, /pm), the draft, the character count,
// and our typing notices. What was sent stays in the box (read-only) until the server
// stores and echoes it; on an error or a dropped connection it becomes editable again.

import { byId, codePoints } from "../dom.js";

const TYPING_SEND_EVERY = 2000; // the server forwards at most one notice per 2 s anyway
const SEND_CONFIRM_TIMEOUT = 8000;

/** A random id for a sent frame; the server echoes it on the stored message or the error. */
function newClientId() {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Only for a page with the composer form (a logged-in user).
 * me, room, maxLength; send(frame), isOpen(); notices (status.js);
 * maxId(): the newest room message seen; lastOwn(): our newest message entry;
 * edit(entry): open it in the inline editor.
 */
export function createComposer({ me, room, maxLength, send, isOpen, notices, maxId, lastOwn, edit }) {
  const composer = byId("composer");
  const input = byId("message-input");
  const sendButton = byId("send");
  const charCount = byId("char-count");
  const pmBar = byId("pm-target");
  const pmName = byId("pm-target-name");
  const draftKey = `chat-draft:${room}`;

  let pending = null;
  let unconfirmed = null; // released but possibly stored: cleared if its echo still comes
  let lastTypingSent = 0;
  let lastInput = 0;
  let typingSendTimer = null;
  let pmTarget = null;

  function draftSave() {
    try {
      if (input.value) sessionStorage.setItem(draftKey, input.value);
      else sessionStorage.removeItem(draftKey);
    } catch {
      /* storage disabled: the draft just does not survive a reload */
    }
  }

  function autosize() {
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, 240)}px`;
  }

  function refresh() {
    const n = codePoints(input.value);
    const over = n > maxLength;
    sendButton.disabled = Boolean(pending) || !input.value.trim() || over;
    charCount.textContent = n > maxLength * 0.8 ? `${n} / ${maxLength}` : "";
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
    pmTarget = name;
    pmBar.hidden = !name;
    pmName.textContent = name || "";
    composer.classList.toggle("is-private", Boolean(name));
    input.placeholder = name ? `Private message to ${name}` : `Message #${room}`;
    byId("message-label").textContent = name ? `Private message to ${name}` : `Message #${room}`;
    input.focus();
  }

  function parse(text) {
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
    if (n > maxLength) {
      notices.show(`Your message is ${n} characters long; the limit is ${maxLength}. Shorten it by ${n - maxLength}.`);
      return;
    }
    const parsed = parse(text);
    if (parsed.error) {
      notices.show(parsed.error);
      return;
    }
    if (parsed.frame.to === me) {
      notices.show("That private message would go to yourself. Pick someone else from the online list.");
      return;
    }
    const clientId = newClientId();
    parsed.frame.client_id = clientId;
    if (!send(parsed.frame)) {
      notices.show(
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
      afterId: maxId(),
      timer: setTimeout(() => {
        release();
        notices.show(
          "The server has not confirmed your message yet. It is still in the box; it clears when it arrives.",
          { about: "chat_message" },
        );
      }, SEND_CONFIRM_TIMEOUT),
    };
    unconfirmed = null;
    input.readOnly = true;
    composer.classList.add("is-sending");
    refresh();
  }

  function release() {
    if (!pending) return;
    clearTimeout(pending.timer);
    unconfirmed = pending;
    pending = null;
    input.readOnly = false;
    composer.classList.remove("is-sending");
    refresh();
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
    if (!echo) return;
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
    notices.settle("chat_message");
  }

  function afterClear() {
    draftSave();
    autosize();
    refresh();
    if (document.activeElement === input || document.activeElement === document.body) input.focus();
  }

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
      const last = lastOwn();
      if (last) {
        event.preventDefault();
        edit(last);
      }
    }
  });
  input.addEventListener("input", () => {
    autosize();
    refresh();
    draftSave();
    lastInput = Date.now();
    noteTyping();
  });
  byId("pm-cancel").addEventListener("click", () => setPmTarget(null));
  try {
    input.value = sessionStorage.getItem(draftKey) || "";
  } catch {
    input.value = "";
  }
  autosize();
  refresh();

  return {
    matchPending,
    setPmTarget,
    /** An `error` frame about a chat or private message: give ours back, editable. */
    failed(frame) {
      if (!frame.client_id || frame.client_id === pending?.clientId) release();
    },
    /** The connection dropped: what was being sent becomes editable again. */
    dropped() {
      if (!pending) return;
      release();
      notices.show(
        "The connection dropped while sending. What you wrote is still in the box; if it does not show up once we are back, send it again.",
        { about: "chat_message", sticky: true },
      );
    },
  };
}
