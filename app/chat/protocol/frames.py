"""Every frame the server sends to a client, each built by one function here.

A builder is registered under the frame type it makes (BUILDERS), so the list of outbound
types that docs/protocol.md and the metrics are checked against is the code's own. Builders
return plain dicts and do no I/O; a frame meant for many sockets is serialized once, by
services/delivery.py, not once per recipient.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ..models import Message, PrivateMessage
    from ..services.presence import Batch, Page

# frame type -> the one function that builds it
BUILDERS: dict[str, Callable[..., Any]] = {}
F = TypeVar("F", bound=Callable[..., Any])


def _builds(kind: str) -> Callable[[F], F]:
    """Register a builder (unchanged: no wrapper on the call) as the maker of `kind`."""

    def register(builder: F) -> F:
        assert kind not in BUILDERS, f"two builders of {kind!r}"
        BUILDERS[kind] = builder
        return builder

    return register


def iso(value: datetime | None) -> str | None:
    """A timestamp as the wire carries it: ISO 8601, UTC, milliseconds, a `Z`."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- Room messages ----------------------------------------------------------------


@_builds("chat_message")
def chat_message_frame(
    msg: Message, room_name: str, username: str, reactions: dict[str, list[str]] | None = None
) -> dict:
    """A stored room message: live, in `history` pages and as the HTTP API's object."""
    return {
        "type": "chat_message",
        "id": msg.id,
        "room": room_name,
        "user": username,
        "message": msg.body,
        "timestamp": iso(msg.created_at),
        "edited_at": iso(msg.edited_at),
        "reactions": reactions or {},
    }


@_builds("message_edited")
def message_edited_frame(msg: Message) -> dict:
    return {
        "type": "message_edited",
        "id": msg.id,
        "message": msg.body,
        "edited_at": iso(msg.edited_at),
    }


@_builds("message_deleted")
def message_deleted_frame(message_id: int) -> dict:
    return {"type": "message_deleted", "id": message_id}


@_builds("reaction")
def reaction_frame(
    message_id: int, emoji: str, username: str, *, removed: bool, count: int
) -> dict:
    return {
        "type": "reaction",
        "id": message_id,
        "emoji": emoji,
        "user": username,
        "action": "removed" if removed else "added",
        "count": count,
    }


@_builds("typing")
def typing_frame(username: str) -> dict:
    return {"type": "typing", "user": username}


@_builds("history")
def history_frame(messages: list[dict], has_more: bool, reason: str) -> dict:
    return {"type": "history", "messages": messages, "has_more": has_more, "reason": reason}


# --- Private messages -------------------------------------------------------------


@_builds("private_message")
def private_message_frame(pm: PrivateMessage, sender: str, recipient: str) -> dict:
    return {
        "type": "private_message",
        "id": pm.id,
        "user": sender,
        "to": recipient,
        "message": pm.body,
        "timestamp": iso(pm.created_at),
    }


@_builds("private_message_delivered")
def private_message_delivered_frame(
    message_id: int, target: str, message: str, timestamp: str | None
) -> dict:
    """The sender's receipt, on every connection of the sender."""
    return {
        "type": "private_message_delivered",
        "id": message_id,
        "target": target,
        "message": message,
        "timestamp": timestamp,
    }


@_builds("private_history")
def private_history_frame(messages: list[dict], has_more: bool) -> dict:
    return {"type": "private_history", "messages": messages, "has_more": has_more}


# --- Presence ---------------------------------------------------------------------


@_builds("user_list")
def user_list_frame(page: Page, *, after: str | None = None) -> dict:
    """Who is online, in name order: one page (a Page from services/presence/) of at most
    CHAT_PRESENCE_LIST_MAX names, after `after`.

    A room of thousands would otherwise send every newcomer thousands of names. When more
    remain, `has_more` is set and `total` counts everyone online; the client asks
    `{"type": "user_list", "after": <last name>}` for the next page."""
    frame: dict = {"type": "user_list", "users": page.users}
    if after is not None:
        frame["after"] = after
    if page.more or after is not None:
        frame["total"] = page.total
    if page.more:
        frame["has_more"] = True
    return frame


@_builds("presence")
def presence_frame(batch: Batch) -> dict:
    """A room's joins and leaves since its last presence frame (services/presence/)."""
    return {"type": "presence", "joins": batch.joins, "leaves": batch.leaves, "total": batch.total}


@_builds("user_join")
def user_join_frame(username: str) -> dict:
    return {"type": "user_join", "user": username}


@_builds("user_leave")
def user_leave_frame(username: str) -> dict:
    return {"type": "user_leave", "user": username}


def legacy_presence_frames(frame: dict) -> list[dict]:
    """A `presence` frame's news as protocol 1's one frame per user (versions.py)."""
    return [user_join_frame(name) for name in frame["joins"]] + [
        user_leave_frame(name) for name in frame["leaves"]
    ]


# --- Replies ----------------------------------------------------------------------


@_builds("pong")
def pong_frame() -> dict:
    return {"type": "pong"}


@_builds("error")
def error_frame(
    code: str, message: str, for_type: str | None = None, client_id: str | None = None
) -> dict:
    """A refusal (errors.py): `for` names the client frame's type, `client_id` echoes its id."""
    frame = {"type": "error", "code": code, "message": message}
    if for_type:
        frame["for"] = for_type[:40]
    if client_id:
        frame["client_id"] = client_id
    return frame


# Every frame type the server sends.
TYPES = frozenset(BUILDERS)
