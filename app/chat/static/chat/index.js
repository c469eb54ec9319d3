// Room index: explain an invalid room name before the form is sent.
const RULE = /^[\p{L}\p{N}\p{M}_-]{1,64}$/u;

const form = document.getElementById("room-form");
const input = document.getElementById("room-name-input");
const error = document.getElementById("room-name-error");

function problem(name) {
  if (!name) return "Type a room name.";
  if ([...name].length > 64) return "A room name has at most 64 characters.";
  if (!RULE.test(name)) return "Only letters, digits, '_' and '-' (no spaces or punctuation).";
  return "";
}

input.addEventListener("input", () => {
  const message = input.value ? problem(input.value.trim()) : "";
  error.textContent = message;
  error.hidden = !message;
  input.setAttribute("aria-invalid", message ? "true" : "false");
});

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const name = input.value.trim().normalize("NFC");
  const message = problem(name);
  error.textContent = message;
  error.hidden = !message;
  if (!message) window.location.assign(`/chat/${encodeURIComponent(name)}/`);
});
