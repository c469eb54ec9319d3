"""The presence store shared by every replica: Redis keys changed only by Lua scripts.

One script per operation, so a join, a leave or a sweep is atomic across replicas:
whoever sweeps an expired user first is the one that reports them gone, exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from django.conf import settings

from ... import names
from ...redis_client import run_script, run_scripts, shard_for_group
from .interface import Batch, Entry, Joined, Page, list_max, pause_after, ttl

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


def _shard(room_id: int) -> int | None:
    """A room's presence lives on the layer server that holds the room's group
    (chat/redis_client.py, "placement")."""
    return shard_for_group(names.room_group(room_id))


def _decode(values: list) -> list[str]:
    return sorted(v.decode() if isinstance(v, bytes) else v for v in values)


class RedisPresence:
    async def join(self, room_id: int, username: str, conn: str, limit: int = 0) -> Joined:
        keys = [_room_key(room_id), _user_key(room_id, username), _names_key(room_id)]
        first, total, more, users = await run_script(
            _JOIN, keys, [username, conn, ttl(), limit or list_max()], _shard(room_id)
        )
        return Joined(_decode(users), int(total), bool(more), first=bool(first))

    async def page(self, room_id: int, after: str | None, limit: int) -> Page:
        keys = [_room_key(room_id), _names_key(room_id)]
        total, more, users = await run_script(
            _USERS_PAGE, keys, [after or "", limit], _shard(room_id)
        )
        return Page(_decode(users), int(total), bool(more))

    async def leave(self, room_id: int, username: str, conn: str) -> bool:
        keys = [_room_key(room_id), _user_key(room_id, username), _names_key(room_id)]
        removed = await run_script(_LEAVE, keys, [username, conn], _shard(room_id))
        return bool(removed)

    async def refresh(self, entries: Iterable[Entry]) -> list[tuple[int, str]]:
        by_shard: dict[int | None, list[Entry]] = {}
        for entry in entries:
            by_shard.setdefault(_shard(entry[0]), []).append(entry)
        back: set[tuple[int, str]] = set()
        for shard, group in by_shard.items():
            calls = [
                (_REFRESH, [_room_key(r), _user_key(r, u), _names_key(r)], [u, conn, ttl()])
                for r, u, conn in group
            ]
            results = await run_scripts(calls, shard, raise_on_error=True)
            back.update(
                (room_id, username)
                for (room_id, username, _), came in zip(group, results, strict=True)
                if came
            )
        return sorted(back)

    async def sweep(self, room_id: int) -> list[str]:
        keys = [_room_key(room_id), _names_key(room_id)]
        gone = await run_script(_SWEEP, keys, [_room_key(room_id) + ":"], _shard(room_id))
        return _decode(gone)

    async def users(self, room_id: int) -> list[str]:
        return _decode(await run_script(_USERS, [_room_key(room_id)], [], _shard(room_id)))

    async def counts(self, room_ids: Iterable[int]) -> dict[int, int]:
        by_shard: dict[int | None, list[int]] = {}
        for room_id in room_ids:
            by_shard.setdefault(_shard(room_id), []).append(room_id)
        found: dict[int, int] = {}
        for shard, rooms in by_shard.items():
            values = await run_script(_COUNT, [_room_key(r) for r in rooms], [], shard)
            found.update(zip(rooms, (int(v) for v in values), strict=True))
        return found

    async def linger(self, room_id: int, username: str, conn: str, grace: float) -> None:
        await run_script(
            _LINGER,
            [_room_key(room_id), _user_key(room_id, username)],
            [username, conn, grace],
            _shard(room_id),
        )

    async def mark(self, room_id: int, usernames: Iterable[str], hold: float) -> bool:
        keep = math.ceil(ttl() * 4)
        args = [keep, max(1, int(hold * 1000)), *usernames]
        return bool(await run_script(_MARK, _batch_keys(room_id), args, _shard(room_id)))

    async def flush(self, room_id: int) -> Batch:
        rate, interval = settings.CHAT_PRESENCE_MAX_RATE, settings.CHAT_PRESENCE_INTERVAL
        joins, leaves, total = await run_script(
            _FLUSH, [_room_key(room_id), *_batch_keys(room_id)], [rate, interval], _shard(room_id)
        )
        return Batch(_decode(joins), _decode(leaves), int(total), pause_after(int(total)))
