"""The chat's WebSocket protocol (docs/protocol.md) as a client speaks it, without I/O.

Every client of the project shares this: the stack tests' ChatClient and the benchmark's
agents over asyncio `websockets` (aio.py), the Locust users over websocket-client and
gevent (chatload/client.py). Nothing here reads a socket or imports a WebSocket library,
because the Locust image has websocket-client only and its users must not be asyncio.

A transport owns the socket and feeds a `Session`: `opened()` when the socket is up,
`receive(frame, now)` for each frame, `closed(code, reason)` when it ends; whatever these
return is the next frame to send or the delay before reconnecting. Subclasses keep and
measure what they need in the `on_*` hooks.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

VERSION = 2  # batched `presence` frames; 1 (no `v`) is deprecated
# Closes after which a client comes back and resumes: going away, dropped, server error,
# restart (drain), try again later, read too slowly.
COME_BACK = frozenset({1001, 1006, 1011, 1012, 1013, 4008})
DRAIN_HINT = re.compile(r"retry_after_ms=(\d+)")
# Error frames that refuse a connection and say when to try again (then 1013 or 4429).
REFUSALS = frozenset({"overloaded", "rate_limited"})
# Handshake answers whose Retry-After says when to try again: every replica busy (503,
# `overloaded`, before the upgrade), a proxy's per-address limit (429).
RETRY_STATUSES = frozenset({429, 503})
# Seconds a client waits at most, whatever a Retry-After says: the project's servers ask
# for seconds, and a proxy's hour would strand a client the site may be ready for.
RETRY_AFTER_CAP = 60.0

# --- URLs, handshake, frames -------------------------------------------------------------


def with_version(url: str, version: int | None = VERSION) -> str:
    """`url` asking for protocol `version` (None: as given, protocol 1 on the project)."""
    if version is None:
        return url
    return f"{url}{'&' if '?' in url else '?'}v={version}"


def room_url(base: str, room: str, version: int | None = VERSION) -> str:
    """The room's socket URL from a site's base URL (http(s):// or ws(s)://)."""
    base = base.rstrip("/")
    if base.startswith("http"):
        base = "ws" + base[4:]
    return with_version(f"{base}/ws/chat/{room}/", version)


def auth_headers(token: str | None) -> dict[str, str]:
    """A non-browser client authenticates with a bearer token (anonymous without one)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def encode(frame: dict[str, Any]) -> str:
    """As a browser's JSON.stringify sends it: UTF-8, no escapes (size limits are bytes)."""
    return json.dumps(frame, ensure_ascii=False)


def decode(data: str | bytes) -> dict[str, Any]:
    """A received frame; ValueError when it is not a JSON object."""
    frame = json.loads(data)
    if not isinstance(frame, dict):
        raise ValueError("frame is not a JSON object")
    return frame


def chat_message(text: str) -> dict[str, Any]:
    return {"type": "chat_message", "message": text}


def private_message(to: str, text: str) -> dict[str, Any]:
    return {"type": "private_message", "to": to, "message": text}


def resume(after: int) -> dict[str, Any]:
    return {"type": "resume", "after": after}


def next_page(history: dict[str, Any]) -> dict[str, Any] | None:
    """The `resume` that asks for the rest of a capped `resume` reply, or None when it
    was the last page. Forward pages keep the oldest messages: go on after the page's
    last id, not after the newest id seen (live messages may be newer than the page)."""
    page = history.get("messages") or ()
    if history.get("reason") == "resume" and history.get("has_more") and page:
        return resume(page[-1]["id"])
    return None


# --- when to come back ---------------------------------------------------------------------


def drain_hint(reason: str | None) -> float | None:
    """Seconds from a draining server's 1012 close reason, `retry_after_ms=<n>`."""
    found = DRAIN_HINT.fullmatch(reason or "")
    return int(found.group(1)) / 1000 if found else None


def retry_after(frame: dict[str, Any]) -> float | None:
    """Seconds a refusal (`overloaded` before 1013, `rate_limited` before 4429) asks a
    client to wait; None for any other frame."""
    if frame.get("type") != "error" or frame.get("code") not in REFUSALS:
        return None
    value = frame.get("retry_after")
    if isinstance(value, int | float):
        return max(0.0, float(value))
    return 1.0 if frame.get("code") == "overloaded" else None


def handshake_retry_after(status: int, headers: Mapping[str, str]) -> float | None:
    """Seconds a refused handshake's `Retry-After` asks a client to wait (whole seconds,
    or an HTTP date), for the statuses that mean "come back later"; None otherwise."""
    if status not in RETRY_STATUSES:
        return None
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), "").strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_CAP)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(max(0.0, when - time.time()), RETRY_AFTER_CAP)


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before connecting again: the server's hint when it gave one, else
    exponential backoff with jitter (`jitter` 1 is full jitter, 0.5 equal jitter), so
    clients that lost the same server do not come back in waves."""

    base: float = 0.5
    cap: float = 15.0
    jitter: float = 1.0  # the share of each step drawn at random
    floor: float = 0.0  # added to every step
    hint_jitter: float = 0.0  # at most this much is added to a drain's hint
    retry_jitter: float = 1.0  # and to a refusal's retry_after, as the browser does

    def step(self, attempt: int) -> float:
        span = min(self.cap, self.base * 2 ** min(attempt, 60))  # no float overflow
        return self.floor + span * (1 - self.jitter) + random.uniform(0, span * self.jitter)

    def delay(
        self, attempt: int, code: int | None = None, reason: str = "", after: float | None = None
    ) -> float:
        """Seconds before the next attempt, after a close (`code`, `reason`) or a refusal's
        `retry_after` (`after`)."""
        if after is not None:
            return after + random.uniform(0, self.retry_jitter)
        hint = drain_hint(reason) if code == 1012 else None
        if hint is not None:
            return hint + random.uniform(0, self.hint_jitter)
        return self.step(attempt)


BROWSER = Backoff()  # as room.js (socket.js): 0.5 s doubling up to 15 s, full jitter

# --- one client's side of a room ---------------------------------------------------------


class Session:
    """One client of one room across its connections, as the browser keeps it: the last
    message id seen (what a reconnect resumes after), who is online (with `users=True`),
    whether this connection has joined, a refusal's retry_after, the backoff attempts.

    `now` is whatever clock the transport reads (monotonic ns, epoch seconds): it is only
    passed on to the hooks. A frame without a `type` is a chat message (the tutorial
    floor of the benchmark sends `{"message": …}`).
    """

    __slots__ = (
        "attempt",
        "backoff",
        "come_back",
        "connections",
        "joined",
        "joined_once",
        "last_id",
        "refused_for",
        "resuming",
        "users",
    )

    def __init__(
        self,
        backoff: Backoff | None = None,
        *,
        users: bool = False,
        come_back: frozenset[int] | None = COME_BACK,
    ) -> None:
        self.backoff = backoff or BROWSER
        self.come_back = come_back  # None: reconnect after any close
        self.users: set[str] | None = set() if users else None
        self.last_id = 0
        self.connections = 0
        self.attempt = 0
        self.joined = False  # this connection has its `user_list`
        self.joined_once = False  # every later connection is a reconnect that resumes
        self.resuming = False
        self.refused_for: float | None = None

    # --- driven by the transport ------------------------------------------------------

    def opened(self) -> dict[str, Any] | None:
        """A socket is up: the `resume` to send when this is a reconnect."""
        self.connections += 1
        self.joined = False
        self.refused_for = None
        if not self.joined_once:
            return None
        self.resuming = True
        return resume(self.last_id)

    def receive(self, frame: dict[str, Any], now: Any) -> dict[str, Any] | None:
        """Take in one frame; the frame to send in answer (the next `resume` page)."""
        self.on_frame(frame, now)
        kind = frame.get("type", "chat_message")
        if kind == "chat_message":
            self._saw(frame)
            self.on_message(frame, now, True)
        elif kind == "history":
            return self._history(frame, now)
        elif kind == "user_list":
            self._roster(frame)
            if not self.joined:
                self.joined, self.attempt = True, 0
                self.on_joined(now)  # joined_once still says whether this is a rejoin
                self.joined_once = True
            self.on_users(frame, now)
        elif kind in ("presence", "user_join", "user_leave"):
            self._roster(frame)
            self.on_users(frame, now)
        elif kind == "error":
            if not self.joined:
                self.refused_for = retry_after(frame)
            self.on_error(frame, now)
        else:
            self.on_other(frame, now)
        return None

    def closed(self, code: int | None, reason: str = "") -> float | None:
        """The socket ended: seconds to wait before connecting again, None to stay away."""
        code = code or 1006
        if not self.joined:
            self.attempt += 1
        refused_for, self.refused_for, self.joined = self.refused_for, None, False
        if refused_for is None and self.come_back is not None and code not in self.come_back:
            return None
        return self.backoff.delay(self.attempt, code, reason, refused_for)

    def failed(self, retry_after: float | None = None) -> float:
        """A handshake failed (refused, timed out): seconds before the next attempt;
        `retry_after` is what a refusal's Retry-After asked for (handshake_retry_after),
        honoured as a refusal frame's `retry_after` is."""
        self.attempt += 1
        refused_for, self.refused_for = self.refused_for, None
        after = retry_after if retry_after is not None else refused_for
        return self.backoff.delay(self.attempt, after=after)

    # --- hooks -----------------------------------------------------------------------

    def on_frame(self, frame: dict[str, Any], now: Any) -> None:
        """Every frame, before anything else."""

    def on_message(self, message: dict[str, Any], now: Any, live: bool) -> None:
        """A room message: live, or one of a `history` frame's (`live` False)."""

    def on_history(self, frame: dict[str, Any], now: Any) -> None:
        """A `history` frame (join, history or resume reply), after its messages."""

    def on_resumed(self, now: Any) -> None:
        """The last page of the `resume` a reconnect sent has arrived."""

    def on_joined(self, now: Any) -> None:
        """This connection's `user_list`: the join is over."""

    def on_users(self, frame: dict[str, Any], now: Any) -> None:
        """`user_list`, `presence` (protocol 2) or `user_join`/`user_leave` (protocol 1)."""

    def on_error(self, frame: dict[str, Any], now: Any) -> None:
        """An `error` frame."""

    def on_other(self, frame: dict[str, Any], now: Any) -> None:
        """Any other frame (private messages, edits, reactions, typing, pong …)."""

    # --- state -----------------------------------------------------------------------

    def _saw(self, message: dict[str, Any]) -> None:
        message_id = message.get("id")
        if isinstance(message_id, int) and message_id > self.last_id:
            self.last_id = message_id

    def _history(self, frame: dict[str, Any], now: Any) -> dict[str, Any] | None:
        for message in frame.get("messages") or ():
            self._saw(message)
            self.on_message(message, now, False)
        self.on_history(frame, now)
        if frame.get("reason") != "resume" or not self.resuming:
            return None  # a reply to a request of the caller's own: it pages itself
        following = next_page(frame)
        if following is None:
            self.resuming = False
            self.on_resumed(now)
        return following

    def _roster(self, frame: dict[str, Any]) -> None:
        users = self.users
        if users is None:
            return
        kind = frame["type"]
        if kind == "user_list":
            if "after" not in frame:  # a first page replaces, a later one adds
                users.clear()
            users.update(frame.get("users", ()))
        elif kind == "presence":
            users.update(frame.get("joins", ()))
            users.difference_update(frame.get("leaves", ()))
        elif kind == "user_join":
            users.add(frame["user"])
        else:
            users.discard(frame["user"])
