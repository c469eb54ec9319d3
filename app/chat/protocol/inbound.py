"""What clients send: inbound frame types, their validation and limits.

`parse()` turns a decoded JSON value into one typed command or raises ChatError with the
protocol's error code, so handlers only ever see well-formed requests. docs/protocol.md
("Client → server") describes the same.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from .. import textrules
from .errors import ChatError

MAX_ID = 2**63 - 1
EMOJI_MAX = 16
# A frame larger than this is refused unparsed. Generous: a maximal message of
# escaped astral characters is 12 bytes per character.
MAX_FRAME_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class SendMessage:
    message: str


@dataclass(frozen=True, slots=True)
class SendPrivate:
    to: str
    message: str


@dataclass(frozen=True, slots=True)
class EditMessage:
    id: int
    message: str


@dataclass(frozen=True, slots=True)
class DeleteMessage:
    id: int


@dataclass(frozen=True, slots=True)
class React:
    id: int
    emoji: str


@dataclass(frozen=True, slots=True)
class Typing:
    pass


@dataclass(frozen=True, slots=True)
class History:
    before: int | None
    limit: int


@dataclass(frozen=True, slots=True)
class Resume:
    after: int
    private_after: int | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class UserList:
    after: str | None = None


Command = (
    SendMessage
    | SendPrivate
    | EditMessage
    | DeleteMessage
    | React
    | Typing
    | History
    | Resume
    | Ping
    | UserList
)


def decode(text: str | bytes) -> Any:
    """A client frame (or API body) as JSON, or the ChatError that says what is wrong.

    The limit counts UTF-8 bytes, what crosses the wire. Nesting too deep for the parser
    (a few KB of "[[[[…") is invalid JSON like any other, not a crash.
    """
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_FRAME_BYTES:
        raise ChatError("message_too_long", f"Frame is larger than {MAX_FRAME_BYTES} bytes.")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise ChatError("invalid_json", "Frames must be JSON text.") from None


def _unicode(value: str, field: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ChatError("invalid_payload", f'"{field}" is not valid Unicode text.') from None
    if "\x00" in value:
        raise ChatError("invalid_payload", f'"{field}" must not contain NUL characters.')
    control = textrules.first_bidi_control(value)
    if control is not None:
        raise ChatError(
            "invalid_payload",
            f'"{field}" must not contain bidirectional control characters ({control}).',
        )
    return value


def message_text(value: Any, field: str = "message") -> str:
    """A chat text: a non-blank string within CHAT_MAX_MESSAGE_LENGTH characters.

    Bidi controls are removed (invisible, they only reorder the text around them); a text
    with nothing visible left (white space, zero-width and other invisible characters) is
    empty. See textrules.py.
    """
    if not isinstance(value, str):
        raise ChatError("invalid_payload", f'"{field}" must be a string.')
    value = textrules.strip_bidi_controls(value)
    if textrules.is_blank(value):
        raise ChatError("empty_message", "Message is empty (no visible characters).")
    limit = settings.CHAT_MAX_MESSAGE_LENGTH
    if len(value) > limit:
        raise ChatError(
            "message_too_long",
            f"Message is {len(value)} characters long; the limit is {limit}.",
        )
    return _unicode(value, field)


def _id(content: dict, field: str = "id", *, minimum: int = 1, required: bool = True) -> Any:
    value = content.get(field)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_ID:
        raise ChatError("invalid_payload", f'"{field}" must be an integer ≥ {minimum}.')
    return value


def _username(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 150:
        raise ChatError("invalid_payload", '"to" must be a username.')
    return _unicode(value.strip(), "to")


def _emoji(value: Any) -> str:
    """One RGI emoji, in its fully qualified form (textrules.reaction_emoji)."""
    emoji = textrules.reaction_emoji(value) if isinstance(value, str) else None
    if emoji is None or len(emoji) > EMOJI_MAX:
        raise ChatError("invalid_payload", '"emoji" must be a single emoji, such as "👍".')
    return emoji


def _chat_message(content: dict) -> Command:
    text = content.get("message")
    if isinstance(text, str) and (text == "/pm" or text.startswith("/pm ")):
        parts = text[3:].strip().split(maxsplit=1)
        if len(parts) < 2:
            raise ChatError("invalid_payload", "Private messages are written /pm <user> <text>.")
        return SendPrivate(to=_username(parts[0]), message=message_text(parts[1]))
    return SendMessage(message=message_text(text))


def _history(content: dict) -> Command:
    limit = content.get("limit", settings.CHAT_HISTORY_ON_JOIN)
    top = settings.CHAT_HISTORY_MAX_LIMIT
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= top:
        raise ChatError("invalid_payload", f'"limit" must be an integer from 1 to {top}.')
    return History(before=_id(content, "before", required=False), limit=limit)


# Every client frame type, with the parser that makes its command.
PARSERS = {
    "chat_message": _chat_message,
    "private_message": lambda c: SendPrivate(
        to=_username(c.get("to")), message=message_text(c.get("message"))
    ),
    "edit_message": lambda c: EditMessage(id=_id(c), message=message_text(c.get("message"))),
    "delete_message": lambda c: DeleteMessage(id=_id(c)),
    "reaction": lambda c: React(id=_id(c), emoji=_emoji(c.get("emoji"))),
    "typing": lambda c: Typing(),
    "history": _history,
    "resume": lambda c: Resume(
        after=_id(c, "after", minimum=0),
        private_after=_id(c, "private_after", minimum=0, required=False),
    ),
    "ping": lambda c: Ping(),
    "user_list": lambda c: UserList(after=_after_name(c.get("after"))),
}


TYPES = frozenset(PARSERS)


def _after_name(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= 150:
        raise ChatError("invalid_payload", '"after" must be the last username of a page.')
    return value


_CLIENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def client_id(content: Any) -> str | None:
    """The sender's own id for a frame, echoed on its result and its errors (optional)."""
    if not isinstance(content, dict) or content.get("client_id") is None:
        return None
    value = content["client_id"]
    if not isinstance(value, str) or not _CLIENT_ID.fullmatch(value):
        raise ChatError("invalid_payload", '"client_id" must be 1–64 letters, digits or "_.:-".')
    return value


def frame_type(content: Any) -> str | None:
    """The frame's type as the client meant it (the tutorial's bare {"message"} included)."""
    if not isinstance(content, dict):
        return None
    kind = content.get("type")
    if kind is None and "message" in content:
        return "chat_message"
    return kind if isinstance(kind, str) else None


def parse(content: Any) -> Command:
    if not isinstance(content, dict):
        raise ChatError("invalid_payload", 'A frame must be a JSON object with a "type".')
    kind = frame_type(content)
    if kind is None:
        raise ChatError("invalid_payload", 'The frame has no "type".')
    parser = PARSERS.get(kind)
    if parser is None:
        raise ChatError("unknown_type", f"Unknown frame type {kind[:40]!r}.")
    return parser(content)
