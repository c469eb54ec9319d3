// Editing and deleting a message in place: an inline editor (Enter saves, Esc cancels) and
// an inline delete confirmation (no browser dialogs).

import { button, codePoints, el } from "../dom.js";

/**
 * maxLength; send(frame); notices (status.js); canModify(data);
 * focusComposer(): where focus goes when the edited message is gone.
 */
export function createEditor({ maxLength, send, notices, canModify, focusComposer }) {
  let editing = null; // {entry, form, textarea, sent}

  function start(entry) {
    if (!canModify(entry.data)) return;
    if (editing) close();
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
        notices.show("A message cannot be empty. To remove it, use Delete.");
        return;
      }
      if (codePoints(text) > maxLength) {
        notices.show(`The limit is ${maxLength} characters; this is ${codePoints(text)}.`);
        return;
      }
      if (text === entry.data.message) {
        close(true);
        return;
      }
      if (!send({ type: "edit_message", id: entry.data.id, message: text })) {
        notices.show("Not connected right now. Your edit is kept; save again once connected.");
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
        close(true);
      }
    });
    cancel.addEventListener("click", () => close(true));
    textarea.focus();
    textarea.setSelectionRange(textarea.value.length, textarea.value.length);
  }

  function close(refocus = false) {
    if (!editing) return;
    const { entry, form } = editing;
    editing = null;
    form.remove();
    entry.text.hidden = false;
    entry.li.classList.remove("is-editing");
    if (!refocus) return;
    if (entry.li.isConnected) entry.li.focus();
    else focusComposer();
  }

  /** The save was refused or lost: the editor is editable again. */
  function unlock() {
    editing.sent = null;
    editing.form.classList.remove("is-saving");
    editing.textarea.readOnly = false;
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
    const dismiss = () => {
      bar.remove();
      entry.li.focus();
    };
    yes.addEventListener("click", () => {
      if (send({ type: "delete_message", id: entry.data.id })) {
        // log.js clears the mark if the delete fails or the connection drops.
        entry.li.classList.add("is-deleting");
        bar.remove();
      } else {
        notices.show("Not connected right now; try again once connected.");
      }
    });
    no.addEventListener("click", dismiss);
    bar.addEventListener("keydown", (event) => {
      if (event.key === "Escape") dismiss();
    });
    yes.focus();
  }

  return {
    start,
    close,
    confirmDelete,
    /** The entry's text changed: if it is what we saved, the edit is done. */
    saved(entry) {
      if (editing?.entry === entry && editing.sent === entry.data.message) close(true);
    },
    /** The entry is going away: so does its editor. */
    closeFor(entry) {
      if (editing?.entry === entry) close();
    },
    /** An `error` frame about an edit. */
    failed() {
      if (editing) unlock();
    },
    /** The connection dropped while a save was on its way. */
    dropped() {
      if (editing?.sent) unlock();
    },
  };
}
