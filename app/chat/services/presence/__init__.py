"""Who is online in each room: per-connection entries with a TTL, in Redis or in memory.

Every connection of a logged-in user is an entry that expires after CHAT_PRESENCE_TTL
unless its process refreshes it. Each process refreshes all of its entries in one
pipeline every TTL/3 (jittered) and sweeps the rooms it serves, so a replica that dies
without running disconnect() leaves no ghost beyond the TTL: whoever sweeps first
announces the `user_leave`, exactly once, because the sweep is one atomic script.

Two tabs are one user: `join` reports whether the user was already present, `leave`
whether the user's last connection just went.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings

from ... import metrics, runtime
from ...protocol import frames
from ...redis_client import get_redis, run_script
from ...redis_client import script as redis_script
from .. import delivery

log = logging.getLogger(__name__)

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


@dataclass(frozen=True, slots=True)
class Batch:
    """What a room's presence frame says: who changed since the last one, as they are now."""

    joins: list[str]
    leaves: list[str]
    total: int  # everyone online in the room after these changes
    pause: float = 0.0  # seconds before the room's next frame may go (a big room's rate)


def _pause(total: int) -> float:
    """How long a room of `total` waits after a frame, so that its presence frames cost
    at most CHAT_PRESENCE_MAX_RATE deliveries a second (0: no longer than the interval)."""
    rate = float(settings.CHAT_PRESENCE_MAX_RATE)
    pause = total / rate if rate > 0 else 0.0
    return pause if pause > float(settings.CHAT_PRESENCE_INTERVAL) else 0.0


def _ttl() -> float:
    return float(settings.CHAT_PRESENCE_TTL)


# --- Redis -------------------------------------------------------------------------
# Scores are expiry times from Redis's own clock (TIME), so replicas with skewed clocks
# agree. Room key: username -> latest expiry of that user's connections. User key:
# connection id -> expiry. A hash tag keeps a room's keys in one cluster slot.

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# A page of names in name order, from the room's names index (score 0, so ZRANGEBYLEX
# sorts by name) checked against the room key: only live users, at most `limit`, and
# whether more follow. A newcomer gets the first page without Redis sending (and the
# server parsing) every name of a big room on every join.
_PAGE = """
local function page(room, names, now, after, limit)
  local out = {}
  local start = '-'
  if after ~= '' then start = '(' .. after end
  while true do
    local chunk = redis.call('ZRANGEBYLEX', names, start, '+', 'LIMIT', 0, limit + 1)
    for _, user in ipairs(chunk) do
      local score = redis.call('ZSCORE', room, user)
      if score and tonumber(score) > now then
        if #out == limit then return out, 1 end
        table.insert(out, user)
      end
      start = '(' .. user
    end
    if #chunk < limit + 1 then return out, 0 end
  end
end
"""

_JOIN = (
    _NOW
    + _PAGE
    + """
local exp = now + tonumber(ARGV[3])
local keep = math.ceil(tonumber(ARGV[3]) * 4)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local others = redis.call('ZCARD', KEYS[2])
redis.call('ZADD', KEYS[2], exp, ARGV[2])
redis.call('EXPIRE', KEYS[2], keep)
redis.call('ZADD', KEYS[1], 'GT', exp, ARGV[1])
redis.call('EXPIRE', KEYS[1], keep)
redis.call('ZADD', KEYS[3], 0, ARGV[1])
redis.call('EXPIRE', KEYS[3], keep)
local first = 0
if others == 0 then first = 1 end
local names, more = page(KEYS[1], KEYS[3], now, '', tonumber(ARGV[4]))
return {first, redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf'), more, names}
"""
)

_USERS_PAGE = (
    _NOW
    + _PAGE
    + """
local names, more = page(KEYS[1], KEYS[2], now, ARGV[1], tonumber(ARGV[2]))
return {redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf'), more, names}
"""
)

_LEAVE = (
    _NOW
    + """
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if #top == 0 then
  redis.call('DEL', KEYS[2])
  redis.call('ZREM', KEYS[3], ARGV[1])
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
redis.call('ZADD', KEYS[1], top[2], ARGV[1])
return 0
"""
)

_REFRESH = (
    _NOW
    + """
local exp = now + tonumber(ARGV[3])
local keep = math.ceil(tonumber(ARGV[3]) * 4)
local before = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], exp, ARGV[2])
redis.call('EXPIRE', KEYS[2], keep)
redis.call('ZADD', KEYS[1], 'GT', exp, ARGV[1])
redis.call('EXPIRE', KEYS[1], keep)
redis.call('EXPIRE', KEYS[3], keep)
if before and tonumber(before) > now then return 0 end
redis.call('ZADD', KEYS[3], 0, ARGV[1])
return 1
"""
)

_SWEEP = (
    _NOW
    + """
local gone = {}
for _, user in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  local key = ARGV[1] .. user
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if #top == 0 then
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[1], user)
    redis.call('ZREM', KEYS[2], user)
    table.insert(gone, user)
  else
    redis.call('ZADD', KEYS[1], top[2], user)
  end
end
return gone
"""
)

_COUNT = (
    _NOW
    + """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('ZCOUNT', key, '(' .. now, '+inf') end
return out
"""
)

_USERS = _NOW + "return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')"

# A closed connection that may come back: it stays listed until now + grace, unrefreshed.
_LINGER = (
    _NOW
    + """
if not redis.call('ZSCORE', KEYS[2], ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('ZADD', KEYS[1], top[2], ARGV[1])
return 1
"""
)

# Batching (one presence frame per room per interval, whichever replica saw the change):
# changed names gather in the room's diff set; whoever adds to it while no flush is due
# takes the flush (a key that expires, so a flusher that died is replaced) and, an
# interval later, sends what the set holds as the room now stands.
_MARK = """
for i = 3, #ARGV do redis.call('SADD', KEYS[1], ARGV[i]) end
if redis.call('SCARD', KEYS[1]) == 0 then return 0 end
redis.call('EXPIRE', KEYS[1], ARGV[1])
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

_FLUSH = (
    _NOW
    + """
local names = redis.call('SMEMBERS', KEYS[2])
redis.call('DEL', KEYS[2])
local joins, leaves = {}, {}
for _, user in ipairs(names) do
  local score = redis.call('ZSCORE', KEYS[1], user)
  if score and tonumber(score) > now then
    table.insert(joins, user)
  else
    table.insert(leaves, user)
  end
end
local total = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
-- A big room keeps the claim for a pause after its frame (ARGV[1] deliveries/s at most):
-- changes meanwhile wait in the diff set for the next frame.
local pause = 0
if tonumber(ARGV[1]) > 0 then pause = total / tonumber(ARGV[1]) end
if pause > tonumber(ARGV[2]) then
  redis.call('SET', KEYS[3], '1', 'PX', math.ceil(pause * 1000))
else
  redis.call('DEL', KEYS[3])
end
return {joins, leaves, total}
"""
)


def _room_key(room_id: int) -> str:
    return f"chat:presence:{{{room_id}}}"


def _user_key(room_id: int, username: str) -> str:
    return f"{_room_key(room_id)}:{username}"


def _names_key(room_id: int) -> str:
    return f"chat:presence-names:{{{room_id}}}"


def _batch_keys(room_id: int) -> list[str]:
    # Not under _room_key's prefix, where a user named "diff" would collide.
    return [f"chat:presence-diff:{{{room_id}}}", f"chat:presence-flush:{{{room_id}}}"]


def _list_max() -> int:
    return int(settings.CHAT_PRESENCE_LIST_MAX)


def _page(users: list[str], after: str | None, limit: int) -> Page:
    """A page of a sorted list of names, as the Redis script makes it."""
    start = bisect.bisect_right(users, after) if after is not None else 0
    return Page(users[start : start + limit], len(users), start + limit < len(users))


def _decode(values: list) -> list[str]:
    return sorted(v.decode() if isinstance(v, bytes) else v for v in values)


class RedisPresence:
    async def _eval(self, script: str, keys: list[str], args: list) -> object:
        return await run_script(script, keys, args)

    async def join(self, room_id: int, username: str, conn: str, limit: int = 0) -> Joined:
        keys = [_room_key(room_id), _user_key(room_id, username), _names_key(room_id)]
        first, total, more, users = await self._eval(
            _JOIN, keys, [username, conn, _ttl(), limit or _list_max()]
        )
        return Joined(_decode(users), int(total), bool(more), first=bool(first))

    async def page(self, room_id: int, after: str | None, limit: int) -> Page:
        keys = [_room_key(room_id), _names_key(room_id)]
        total, more, users = await self._eval(_USERS_PAGE, keys, [after or "", limit])
        return Page(_decode(users), int(total), bool(more))

    async def leave(self, room_id: int, username: str, conn: str) -> bool:
        keys = [_room_key(room_id), _user_key(room_id, username), _names_key(room_id)]
        removed = await self._eval(_LEAVE, keys, [username, conn])
        return bool(removed)

    async def refresh(self, entries: Iterable[Entry]) -> list[tuple[int, str]]:
        entries = list(entries)
        if not entries:
            return []
        client = get_redis()
        script = redis_script(_REFRESH)
        async with client.pipeline(transaction=False) as pipe:
            for room_id, username, conn in entries:
                await script(
                    keys=[_room_key(room_id), _user_key(room_id, username), _names_key(room_id)],
                    args=[username, conn, _ttl()],
                    client=pipe,
                )
            results = await pipe.execute()
        back = zip(entries, results, strict=True)
        return sorted({(room_id, username) for (room_id, username, _), came in back if came})

    async def sweep(self, room_id: int) -> list[str]:
        keys = [_room_key(room_id), _names_key(room_id)]
        gone = await self._eval(_SWEEP, keys, [_room_key(room_id) + ":"])
        return _decode(gone)

    async def users(self, room_id: int) -> list[str]:
        return _decode(await self._eval(_USERS, [_room_key(room_id)], []))

    async def counts(self, room_ids: Iterable[int]) -> dict[int, int]:
        room_ids = list(room_ids)
        if not room_ids:
            return {}
        values = await self._eval(_COUNT, [_room_key(r) for r in room_ids], [])
        return dict(zip(room_ids, (int(v) for v in values), strict=True))

    async def linger(self, room_id: int, username: str, conn: str, grace: float) -> None:
        await self._eval(
            _LINGER, [_room_key(room_id), _user_key(room_id, username)], [username, conn, grace]
        )

    async def mark(self, room_id: int, usernames: Iterable[str], hold: float) -> bool:
        keep = math.ceil(_ttl() * 4)
        args = [keep, max(1, int(hold * 1000)), *usernames]
        return bool(await self._eval(_MARK, _batch_keys(room_id), args))

    async def flush(self, room_id: int) -> Batch:
        rate, interval = settings.CHAT_PRESENCE_MAX_RATE, settings.CHAT_PRESENCE_INTERVAL
        joins, leaves, total = await self._eval(
            _FLUSH, [_room_key(room_id), *_batch_keys(room_id)], [rate, interval]
        )
        return Batch(_decode(joins), _decode(leaves), int(total), _pause(int(total)))


# --- Memory (one process: make run) ------------------------------------------------


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
        conns[conn] = now + _ttl()
        page = _page(self._users(room_id, now), None, limit or _list_max())
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
            conns[conn] = now + _ttl()
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
        pause = _pause(len(online))
        if pause:
            self._due[room_id] = now + pause
        else:
            self._due.pop(room_id, None)
        return Batch(joins, leaves, len(online), pause)


_memory = MemoryPresence()
_redis = RedisPresence()


def store() -> PresenceStore:
    return _redis if settings.REDIS_URL else _memory


# --- Heartbeats and batches: one of each per process (per event loop) ---------------


class Tracker:
    """Refreshes this process's entries, sweeps the rooms it serves, batches their news."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[int, str]] = {}  # connection id -> (room id, username)
        self._task: asyncio.Task | None = None
        self._timers: dict[int, asyncio.TimerHandle] = {}  # rooms whose flush this process owns
        self._sweeps: dict[int, asyncio.TimerHandle] = {}  # rooms with a grace running out
        self._running: set[asyncio.Task] = set()

    def add(self, conn: str, room_id: int, username: str) -> None:
        self.entries[conn] = (room_id, username)
        metrics.PRESENCE_ENTRIES.set(len(self.entries))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def discard(self, conn: str) -> None:
        self.entries.pop(conn, None)
        metrics.PRESENCE_ENTRIES.set(len(self.entries))

    async def _run(self) -> None:
        while self.entries or self._sweeps:
            interval = _ttl() / 3
            await asyncio.sleep(interval * random.uniform(0.8, 1.0))
            try:
                await self.beat()
            except Exception:
                log.exception("presence heartbeat failed; retrying in %.0f s", interval)

    async def beat(self) -> None:
        presence = store()
        entries = [(room, user, conn) for conn, (room, user) in self.entries.items()]
        back: dict[int, list[str]] = {}
        for room_id, username in await presence.refresh(entries):
            back.setdefault(room_id, []).append(username)
        for room_id in sorted({room for room, _, _ in entries} | back.keys()):
            # Also claims a flush another process took and did not live to send.
            await self.changed(room_id, back.get(room_id, []) + await presence.sweep(room_id))

    # --- batching -------------------------------------------------------------------

    async def changed(self, room_id: int, usernames: list[str]) -> None:
        """These users joined or left the room: tell it within an interval, in one frame."""
        interval = float(settings.CHAT_PRESENCE_INTERVAL)
        # The claim outlives the interval, so a process that dies holding it is replaced.
        if not await store().mark(room_id, usernames, hold=max(3 * interval, 1.0)):
            return
        if interval <= 0:
            await self.flush(room_id)
        elif room_id not in self._timers:
            self._timers[room_id] = asyncio.get_running_loop().call_later(
                interval, self._spawn, self.flush, room_id
            )

    async def flush(self, room_id: int) -> None:
        self._timers.pop(room_id, None)
        batch = await store().flush(room_id)
        if batch.pause:
            # What changes during the pause is sent when it ends (or by the next beat).
            self._timers[room_id] = asyncio.get_running_loop().call_later(
                batch.pause + 0.05, self._spawn, self._after_pause, room_id
            )
        if batch.joins or batch.leaves:
            metrics.PRESENCE_BATCH_NAMES.observe(len(batch.joins) + len(batch.leaves))
            await delivery.to_room(room_id, frames.presence_frame(batch))

    async def _after_pause(self, room_id: int) -> None:
        self._timers.pop(room_id, None)
        await self.changed(room_id, [])

    def sweep_later(self, room_id: int, delay: float) -> None:
        """Sweep the room once a grace has run out (if this process lives that long;
        otherwise the heartbeat of another one serving the room does)."""
        if room_id not in self._sweeps:
            self._sweeps[room_id] = asyncio.get_running_loop().call_later(
                delay, self._spawn, self._sweep, room_id
            )

    async def _sweep(self, room_id: int) -> None:
        self._sweeps.pop(room_id, None)
        await self.changed(room_id, await store().sweep(room_id))

    def _spawn(self, step, room_id: int) -> None:
        task = asyncio.get_running_loop().create_task(self._guarded(step(room_id)))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    @staticmethod
    async def _guarded(coro) -> None:
        try:
            await coro
        except Exception:  # Redis down: the diff waits; the next beat or change retries
            log.warning("presence batch failed", exc_info=True)

    def close(self) -> None:
        """Forget pending timers (shutdown, tests); what they held waits in the store."""
        for handle in [*self._timers.values(), *self._sweeps.values()]:
            handle.cancel()
        self._timers.clear()
        self._sweeps.clear()
        for task in (self._task, *self._running):
            if task is not None:
                task.cancel()


def tracker() -> Tracker:
    """This loop's tracker (kept in chat/runtime.py)."""
    resources = runtime.current()
    found = resources.tracker
    if found is None:
        found = resources.tracker = Tracker()
    return found


def close_tracker() -> None:
    """Stop this loop's tracker (runtime.close_loop stops it with the rest)."""
    resources = runtime.current()
    found, resources.tracker = resources.tracker, None
    if found is not None:
        found.close()


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
