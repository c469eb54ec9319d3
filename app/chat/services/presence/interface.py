"""What a presence store is: its methods, what they return, and the rules both stores share.

RedisPresence (redis_store.py) and MemoryPresence (memory_store.py) answer the same
questions the same way, so the tracker and the consumers never ask which one they hold.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings

Entry = tuple[int, str, str]  # (room id, username, connection id)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of who is online, in name order (a user_list frame's content)."""

    users: list[str]
    total: int  # everyone online in the room
    more: bool  # names sort after the page's last one


@dataclass(frozen=True, slots=True)
class Joined(Page):
    first: bool = False  # the user had no other live connection in the room


@dataclass(frozen=True, slots=True)
class Batch:
    """What a room's presence frame says: who changed since the last one, as they are now."""

    joins: list[str]
    leaves: list[str]
    total: int  # everyone online in the room after these changes
    pause: float = 0.0  # seconds before the room's next frame may go (a big room's rate)


class PresenceStore(Protocol):
    async def join(self, room_id: int, username: str, conn: str, limit: int = 0) -> Joined: ...
    async def page(self, room_id: int, after: str | None, limit: int) -> Page: ...
    async def leave(self, room_id: int, username: str, conn: str) -> bool: ...
    async def refresh(self, entries: Iterable[Entry]) -> list[tuple[int, str]]: ...
    async def sweep(self, room_id: int) -> list[str]: ...
    async def users(self, room_id: int) -> list[str]: ...
    async def counts(self, room_ids: Iterable[int]) -> dict[int, int]: ...
    async def linger(self, room_id: int, username: str, conn: str, grace: float) -> None: ...
    async def mark(self, room_id: int, usernames: Iterable[str], hold: float) -> bool: ...
    async def flush(self, room_id: int) -> Batch: ...


def ttl() -> float:
    """Seconds an entry lives unless its process refreshes it."""
    return float(settings.CHAT_PRESENCE_TTL)


def list_max() -> int:
    """Names in the page a newcomer gets."""
    return int(settings.CHAT_PRESENCE_LIST_MAX)


def pause_after(total: int) -> float:
    """How long a room of `total` waits after a frame, so that its presence frames cost
    at most CHAT_PRESENCE_MAX_RATE deliveries a second (0: no longer than the interval)."""
    rate = float(settings.CHAT_PRESENCE_MAX_RATE)
    pause = total / rate if rate > 0 else 0.0
    return pause if pause > float(settings.CHAT_PRESENCE_INTERVAL) else 0.0
