"""Who is online in each room: per-connection entries with a TTL, in Redis or in memory.

Every connection of a logged-in user is an entry that expires after CHAT_PRESENCE_TTL
unless its process refreshes it, so a replica that dies without running disconnect()
leaves no ghost beyond the TTL. Two tabs are one user: `join` reports whether the user
was already present, `leave` whether the user's last connection just went.

What consumers and other services call is here; the rest is one idea per module:

- interface.py: the PresenceStore protocol, what it returns (Page, Joined, Batch), and
  the settings-derived rules both stores share;
- redis_store.py: the store across replicas (Lua scripts, names index, batching claim);
- memory_store.py: the store of a single process (`make run` without REDIS_URL);
- tracking.py: each event loop's Tracker (heartbeats, sweeps, grace timers, frames).
"""

from __future__ import annotations

from django.conf import settings

from ... import runtime
from .interface import Batch, Joined, Page, PresenceStore
from .memory_store import MemoryPresence
from .redis_store import RedisPresence
from .tracking import Tracker

__all__ = [
    "Batch",
    "Joined",
    "Page",
    "PresenceStore",
    "Tracker",
    "arrive",
    "depart",
    "store",
    "tracker",
]

_memory = MemoryPresence()
_redis = RedisPresence()


def store() -> PresenceStore:
    """Redis when REDIS_URL is set (every replica's view), else this process's memory."""
    return _redis if settings.REDIS_URL else _memory


def tracker() -> Tracker:
    """This loop's tracker (kept in chat/runtime.py)."""
    resources = runtime.current()
    found = resources.tracker
    if found is None:
        found = resources.tracker = Tracker(store)
    return found


# --- What consumers call -------------------------------------------------------------


async def arrive(room_id: int, username: str, conn: str) -> Joined:
    """Mark `conn` present; the room hears of the user, in its next presence frame, if
    this is their first tab (and they were not still listed from a moment ago)."""
    joined = await store().join(room_id, username, conn)
    tracker().add(conn, room_id, username)
    if joined.first:
        await tracker().changed(room_id, [username])
    return joined


async def depart(room_id: int, username: str, conn: str, *, linger: bool = False) -> None:
    """`conn` is gone. With `linger` (it did not close normally), the user stays listed
    for CHAT_PRESENCE_GRACE: a drained or dropped client that is back by then was never
    gone for the room."""
    tracker().discard(conn)
    grace = float(settings.CHAT_PRESENCE_GRACE)
    if linger and grace > 0:
        await store().linger(room_id, username, conn, grace)
        tracker().sweep_later(room_id, grace + 0.5)
    elif await store().leave(room_id, username, conn):
        await tracker().changed(room_id, [username])
