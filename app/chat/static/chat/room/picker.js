// The reaction picker: a small dialog of quick reactions, opened from a message's ☺
// button; arrow keys move, Esc closes, and focus returns to where it came from.

import { button, byId } from "../dom.js";

const QUICK_REACTIONS = ["👍", "❤️", "😂", "🎉", "😮", "😢", "👀", "🙏"];

/** me; send(frame). */
export function createPicker({ me, send }) {
  const picker = byId("reaction-picker");
  const grid = picker.querySelector(".picker-grid");
  let pickerFor = null; // {entry, opener}

  for (const emoji of QUICK_REACTIONS) {
    const b = button("pick", `React with ${emoji}`, { text: emoji });
    b.dataset.emoji = emoji;
    b.addEventListener("click", () => {
      if (pickerFor) send({ type: "reaction", id: pickerFor.entry.data.id, emoji });
      close(true);
    });
    grid.append(b);
  }

  function open(entry, opener) {
    if (pickerFor?.entry === entry) {
      close(true);
      return;
    }
    pickerFor = { entry, opener };
    for (const b of grid.children) {
      const mine = entry.users.get(b.dataset.emoji)?.has(me) ?? false;
      b.setAttribute("aria-pressed", mine ? "true" : "false");
    }
    entry.li.append(picker);
    picker.hidden = false;
    opener.setAttribute("aria-expanded", "true");
    picker.scrollIntoView({ block: "nearest" });
    grid.firstElementChild.focus();
  }

  function close(refocus) {
    if (!pickerFor) return;
    const { opener } = pickerFor;
    pickerFor = null;
    picker.hidden = true;
    opener.setAttribute("aria-expanded", "false");
    document.body.append(picker);
    if (refocus && opener.isConnected) opener.focus();
  }

  picker.addEventListener("keydown", (event) => {
    const items = [...grid.children];
    const at = items.indexOf(document.activeElement);
    if (event.key === "Escape") {
      event.preventDefault();
      close(true);
    } else if (event.key === "ArrowRight" || event.key === "ArrowDown") {
      event.preventDefault();
      items[(at + 1) % items.length].focus();
    } else if (event.key === "ArrowLeft" || event.key === "ArrowUp") {
      event.preventDefault();
      items[(at - 1 + items.length) % items.length].focus();
    } else if (event.key === "Tab") {
      close(false);
    }
  });
  document.addEventListener("pointerdown", (event) => {
    if (pickerFor && !picker.contains(event.target) && !event.target.closest(".act-react")) {
      close(false);
    }
  });

  return {
    open,
    /** The entry is going away: the picker on it closes. */
    closeFor(entry) {
      if (picker.parentElement === entry.li) close(false);
    },
  };
}
