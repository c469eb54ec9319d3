"""The in-memory presence store: one process's rooms (`make run`, without REDIS_URL).

The same answers as redis_store.py for a single process, from plain dicts and the
monotonic clock; nothing is shared, so it only suits the in-memory channel layer.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable

from .interface import Batch, Entry, Joined, Page, list_max, pause_after, ttl


def _page(users: list[str], after: str | None, limit: int) -> Page:
    """A page of a sorted list of names, as the Redis script makes it."""
    start = bisect.bisect_right(users, after) if after is not None else 0
    return Page(users[start : start + limit], len(users), start + limit < len(users))


class MemoryPresence:
    def __init__(self) -> None:
        # room id -> username -> connection id -> expiry (monotonic seconds)
        self._rooms: dict[int, dict[str, dict[str, float]]] = {}
        self._diffs: dict[int, set[str]] = {}  # room id -> names changed since its last frame
        self._due: dict[int, float] = {}  # room id -> when its flush claim lapses

    def _live(self, room_id: int, username: str, now: float) -> dict[str, float]:
        conns = self._rooms.setdefault(room_id, {}).setdefault(username, {})
        for conn in [c for c, exp in conns.items() if exp <= now]:
            del conns[conn]
        return conns

    def _users(self, room_id: int, now: float) -> list[str]:
        room = self._rooms.get(room_id, {})
        return sorted(u for u, conns in room.items() if any(e > now for e in conns.values()))

    async def join(self, room_id: int, username: str, conn: str, limit: int = 0) -> Joined:
        now = time.monotonic()
        conns = self._live(room_id, username, now)
        first = not conns
        conns[conn] = now + ttl()
        page = _page(self._users(room_id, now), None, limit or list_max())
        return Joined(page.users, page.total, page.more, first=first)

    async def page(self, room_id: int, after: str | None, limit: int) -> Page:
        return _page(self._users(room_id, time.monotonic()), after, limit)

    async def leave(self, room_id: int, username: str, conn: str) -> bool:
        room = self._rooms.get(room_id, {})
        if username not in room:
            return False
        conns = self._live(room_id, username, time.monotonic())
        conns.pop(conn, None)
        if conns:
            return False
        del room[username]
        return True

    async def refresh(self, entries: Iterable[Entry]) -> list[tuple[int, str]]:
        now = time.monotonic()
        back = set()
        for room_id, username, conn in entries:
            conns = self._live(room_id, username, now)
            if not conns:
                back.add((room_id, username))
            conns[conn] = now + ttl()
        return sorted(back)

    async def sweep(self, room_id: int) -> list[str]:
        now = time.monotonic()
        room = self._rooms.get(room_id, {})
        gone = [u for u in list(room) if not self._live(room_id, u, now)]
        for username in gone:
            del room[username]
        return sorted(gone)

    async def users(self, room_id: int) -> list[str]:
        return self._users(room_id, time.monotonic())

    async def counts(self, room_ids: Iterable[int]) -> dict[int, int]:
        now = time.monotonic()
        return {r: len(self._users(r, now)) for r in room_ids}

    async def linger(self, room_id: int, username: str, conn: str, grace: float) -> None:
        conns = self._rooms.get(room_id, {}).get(username, {})
        if conn in conns:
            conns[conn] = time.monotonic() + grace

    async def mark(self, room_id: int, usernames: Iterable[str], hold: float) -> bool:
        diff = self._diffs.setdefault(room_id, set())
        diff.update(usernames)
        if not diff:
            del self._diffs[room_id]
            return False
        now = time.monotonic()
        if self._due.get(room_id, 0.0) > now:
            return False
        self._due[room_id] = now + hold
        return True

    async def flush(self, room_id: int) -> Batch:
        names = self._diffs.pop(room_id, set())
        now = time.monotonic()
        online = set(self._users(room_id, now))
        joins = sorted(n for n in names if n in online)
        leaves = sorted(n for n in names if n not in online)
        pause = pause_after(len(online))
        if pause:
            self._due[room_id] = now + pause
        else:
            self._due.pop(room_id, None)
        return Batch(joins, leaves, len(online), pause)
