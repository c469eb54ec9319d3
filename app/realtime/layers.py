"""channels_redis's layers, made loud where they would fail silently, and quicker.

Tracks channels_redis 4.3: the core layer's key layout (`prefix`, `_group_key`, the
sorted-set queues, `connection()`, `consistent_hash`, `create_pool`), and the pub/sub
shard's receive loop and fields (`_lock`, `_subscribed_to`, `_pubsub`, `_redis`, the
layer's `_shards`, `_get_shard`, `_get_group_channel_name`); realtime/pins.py checks
both. The public seams that would replace it: a drop count in channels_redis's
group_send, a batched receive, a hook for a lost subscription, a connection hook, and
the server a group lives on.

The core layer's group_send is this module's own (one script, or one per shard), so
queues at capacity are counted here (`chat_layer_dropped_total`) and logged as a warning;
the library would only log them at INFO. The pub/sub layer's lost subscriptions reach
the receivers (below).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

from channels.exceptions import ChannelFull
from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import (
    RedisPubSubChannelLayer,
    RedisPubSubLoopLayer,
    RedisSingleShardConnection,
)
from channels_redis.utils import _close_redis, _consistent_hash, create_pool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chat import metrics, redis_servers

from . import fast_paths

log = logging.getLogger("chat.layers")


def bounded_pool(host: dict):
    """channels_redis's create_pool for a `hosts` entry, as a blocking pool when the entry
    has `max_connections` (and `pool_timeout`, seconds a command waits for a free one
    before it fails with ConnectionError): the library's pool has no bound."""
    host = dict(host)
    limit = host.pop("max_connections", None)
    wait = host.pop("pool_timeout", 5.0)
    if limit is None:
        return create_pool(host)
    server, options = redis_servers.split_layer_host(host)
    return redis_servers.blocking_pool(server, max_connections=limit, timeout=wait, **options)


def shard_of(name: str, count: int) -> int:
    """Which of `count` servers channels_redis puts `name` on (its consistent hash);
    chat/redis_client.py places per-user keys by the same rule."""
    return _consistent_hash(name, count)


def _count_drops(dropped: int, members: int, group: str) -> None:
    metrics.LAYER_DROPS.inc(dropped)
    log.warning(
        "channel layer dropped a message for %s of %s processes in group %s (queues at capacity)",
        dropped,
        members,
        group,
    )


# channels_redis's group_send in one script: expire the group's stale members, read the
# rest, and for each expire its stale messages and queue the message unless the queue is
# full. Members with a "!" (process-local channels) need a message of their own, which a
# script cannot build: they are returned, for the caller to send them one by one.
# KEYS[1]: group key. ARGV: now, group cutoff, message cutoff, expiry, capacity, key
# prefix, serialized message. Returns {dropped, members, local channel...}.
_GROUP_SEND = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[2])
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local out = {0, #members}
local capacity = tonumber(ARGV[5])
for i = 1, #members do
  local channel = members[i]
  if string.find(channel, '!', 1, true) then
    out[#out + 1] = channel
  else
    local key = ARGV[6] .. channel
    redis.call('ZREMRANGEBYSCORE', key, 0, ARGV[3])
    if redis.call('ZCARD', key) < capacity then
      redis.call('ZADD', key, ARGV[1], ARGV[7])
      redis.call('EXPIRE', key, ARGV[4])
    else
      out[1] = out[1] + 1
    end
  end
end
return out
"""


# The queueing half of group_send, for the members that live on one shard: expire each
# queue's stale messages and queue the message unless the queue is full.
# KEYS: the members' queue keys. ARGV: now, message cutoff, expiry, serialized message,
# then each key's capacity. Returns how many were full.
_QUEUE = """
local dropped = 0
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, ARGV[2])
  if redis.call('ZCARD', KEYS[i]) < tonumber(ARGV[4 + i]) then
    redis.call('ZADD', KEYS[i], ARGV[1], ARGV[4])
    redis.call('EXPIRE', KEYS[i], ARGV[3])
  else
    dropped = dropped + 1
  end
end
return dropped
"""


class CountingRedisChannelLayer(RedisChannelLayer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._group_send_script = None
        self._queue_script = None
        self._bzmpop = True  # until Redis says it does not know BZMPOP (before 7.0)

    def create_pool(self, index: int):
        """The pool for shard `index`: the library's, but bounded (a host's
        `max_connections`, CHAT_LAYER_MAX_CONNECTIONS) so that a burst of sends waits for
        a connection instead of opening one each, and with its connections counted and,
        behind Sentinel, reporting the master they found (chat/redis_servers.py)."""
        return bounded_pool(redis_servers.with_layer_hook(self.hosts[index]))

    # --- group_send: one round trip, drops counted ------------------------------------

    async def group_send(self, group: str, message: dict) -> None:
        """channels_redis's group_send, in one cached script instead of four round trips.

        The library expires the group, reads it, expires every member's queue and then
        sends its script in full (EVAL) each time: four round trips, which in small rooms
        cost more than the fan-out itself (docs/benchmarks.md). With one Redis and no
        per-channel capacities every key lives on the one server, so one EVALSHA does it
        all; otherwise the group is read first and each shard gets one EVALSHA for the
        members it holds. Either way the full queues are counted here. With the fast path
        `group_send_script` off, the library's own group_send runs (drops then only
        logged by it, at INFO).
        """
        if not fast_paths.on("group_send_script"):
            return await super().group_send(group, message)
        assert self.require_valid_group_name(group), "Group name not valid"
        if self.ring_size != 1 or self.channel_capacity:
            dropped, members, local = await self._group_send_by_shard(group, message)
        else:
            dropped, members, local = await self._group_send_one_trip(group, message)
        for channel in local:  # process-local channels, as the library's `send` does
            try:
                await self.send(channel, message)
            except ChannelFull:
                dropped += 1
        if dropped:
            _count_drops(dropped, members, group)

    async def _group_send_one_trip(self, group: str, message: dict) -> tuple[int, int, list]:
        connection = self.connection(0)
        if self._group_send_script is None:
            self._group_send_script = connection.register_script(_GROUP_SEND)
        now = time.time()
        dropped, members, *local = await self._group_send_script(
            keys=[self._group_key(group)],
            args=[
                now,
                int(now) - self.group_expiry,
                int(now) - int(self.expiry),
                self.expiry,
                self.capacity,
                self.prefix,
                self.serialize(message),
            ],
            client=connection,
        )
        return dropped, members, [channel.decode() for channel in local]

    async def _group_send_by_shard(self, group: str, message: dict) -> tuple[int, int, list]:
        """Several shards, or per-channel capacities: read the group (one round trip),
        then queue on each shard that holds members (one script call each)."""
        key = self._group_key(group)
        now = time.time()
        async with self.connection(self.consistent_hash(group)).pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(key, 0, int(now) - self.group_expiry)
            pipe.zrange(key, 0, -1)
            _, found = await pipe.execute()
        names = [name.decode() for name in found]
        local = [name for name in names if "!" in name]
        by_shard: dict[int, list[str]] = {}
        for name in names:
            if "!" not in name:
                by_shard.setdefault(self.consistent_hash(name), []).append(name)
        if self._queue_script is None:
            self._queue_script = self.connection(0).register_script(_QUEUE)
        payload = self.serialize(message)
        dropped = 0
        for shard, channels in by_shard.items():
            dropped += await self._queue_script(
                keys=[self.prefix + channel for channel in channels],
                args=[
                    now,
                    int(now) - int(self.expiry),
                    self.expiry,
                    payload,
                    *(self.get_capacity(channel) for channel in channels),
                ],
                client=self.connection(shard),
            )
        return dropped, len(names), local

    # --- group changes in bulk, for the process fan-out hub (services/fanout.py) ----

    async def group_changes(self, changes: list[tuple[str, str, str]]) -> None:
        """Many group_add / group_discard calls (("add" | "discard", group, channel)), in
        one pipeline per shard, in order: what the library's two methods do, one round
        trip for all. Every socket has a group of its own (its user's inbox), so a join
        storm or a drain is thousands of these at once."""
        by_shard: dict[int, list[tuple[str, str, str]]] = {}
        for op, group, channel in changes:
            assert self.require_valid_group_name(group), "Group name not valid"
            assert self.require_valid_channel_name(channel), "Channel name not valid"
            by_shard.setdefault(self.consistent_hash(group), []).append((op, group, channel))
        now = time.time()
        for shard, ops in by_shard.items():
            async with self.connection(shard).pipeline(transaction=False) as pipe:
                for op, group, channel in ops:
                    key = self._group_key(group)
                    if op == "add":
                        pipe.zadd(key, {channel: now})
                        pipe.expire(key, self.group_expiry)
                    else:
                        pipe.zrem(key, channel)
                await pipe.execute()

    # --- batched receive for the process fan-out hub (services/fanout.py) ----------

    # --- placement over shards (REDIS_LAYER_URLS) ------------------------------------

    @property
    def shard_count(self) -> int:
        return self.ring_size

    def group_shard(self, group: str) -> int:
        """The server that holds `group`'s membership."""
        return self.consistent_hash(group)

    async def new_batch_channel(self, shard: int = 0) -> str:
        """A channel of its own Redis key, for `receive_batch` alone, on server `shard`.

        The hub takes one per server and adds each group to the one on the group's own
        server: a room's membership and its queue then live together, and losing a
        server stalls only the groups it holds, not every process whose one channel
        happened to hash there."""
        while True:
            name = f"chat.process.{uuid.uuid4().hex}"
            if self.consistent_hash(name) == shard:
                return name

    async def receive_batch(self, channel: str, limit: int = 256) -> list[dict]:
        """What waits for `channel` (oldest first, up to `limit`), or the next message
        when nothing waits: one round trip (BZMPOP) either way.

        channels_redis's `receive` takes four Redis round trips per message, one after the
        other under a lock (a backup-queue script, BZPOPMIN, a backup ZADD, its DEL), so a
        process received at most one message per four turns of a busy event loop: in small
        rooms that, not the fan-out, set the pace (docs/benchmarks.md). The backup queue
        protects a message from a receive cancelled mid-pop; the hub receives for the life
        of the process, so only its shutdown could lose one, and clients resume then anyway.
        """
        key = self.prefix + channel
        connection = self.connection(self.consistent_hash(channel))
        if self._bzmpop:
            # Redis 7: wait for the first message and take what waits with it, in one
            # round trip whether or not anything was waiting.
            try:
                found = await connection.bzmpop(self.brpop_timeout, 1, [key], min=True, count=limit)
            except ResponseError as exc:
                if "unknown command" not in str(exc).lower():
                    raise
                self._bzmpop = False  # Redis < 7: two commands when nothing waits
            else:
                return [self.deserialize(member) for member, _score in found[1]] if found else []
        popped = await connection.zpopmin(key, limit)
        if not popped:
            found = await connection.bzpopmin(key, timeout=self.brpop_timeout)
            if found is None:
                return []
            popped = [(found[1], found[2])]
        return [self.deserialize(member) for member, _score in popped]


# --- pub/sub: a lost subscription must not be silent ------------------------------------

# The event a receiver gets when its process's subscription failed: whatever was published
# meanwhile is gone, so services/fanout.py closes its sockets (1013) and clients resume.
LAYER_LOST = "chat.layer_lost"


class _SignallingShard(RedisSingleShardConnection):
    """channels_redis 4.3's shard connection, with two changes.

    - A failed subscription reaches the receivers (LAYER_LOST) instead of passing in
      silence, and the connection starts over.
    - `subscribe` returns once Redis has confirmed the SUBSCRIBE. The library returns as
      soon as the command is written, so a message published in the instant before Redis
      processed it would miss a newcomer whose history was already read.
    """

    # Seconds to wait for Redis to confirm a SUBSCRIBE before the join fails.
    confirm_timeout = 5.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._confirming: dict[str, asyncio.Future] = {}

    async def subscribe(self, channel: str) -> None:
        async with self._lock:
            if channel in self._subscribed_to:
                return
            confirmed = self._confirming.get(channel)
            if confirmed is None:
                self._ensure_redis()
                self._ensure_receiver()
                confirmed = asyncio.get_running_loop().create_future()
                self._confirming[channel] = confirmed
                try:
                    await self._pubsub.subscribe(channel)
                except BaseException:
                    self._confirming.pop(channel, None)
                    raise
        # Outside the lock: publishing need not wait for Redis to confirm.
        try:
            await asyncio.wait_for(asyncio.shield(confirmed), self.confirm_timeout)
        except TimeoutError:
            raise RedisTimeoutError(
                f"Redis did not confirm SUBSCRIBE {channel} within {self.confirm_timeout:g} s."
            ) from None

    async def _do_receiving(self) -> None:
        # channels_redis 4.3's receive loop, plus subscribe confirmations and telling the
        # receivers when it fails: the library logs the error, reconnects and
        # resubscribes, and what was published in between is lost without anyone knowing.
        while True:
            try:
                if self._pubsub and self._pubsub.subscribed:
                    message = await self._pubsub.get_message(
                        ignore_subscribe_messages=False, timeout=0.1
                    )
                    if message is None:
                        continue
                    if message["type"] == "message":
                        self._receive_message(message)
                    elif message["type"] == "subscribe":
                        self._confirm(message["channel"])
                else:
                    await asyncio.sleep(0.1)
            except (TimeoutError, asyncio.CancelledError, GeneratorExit):
                raise
            except Exception as exc:
                log.warning("channel layer subscription failed: %r", exc)
                layer = self.channel_layer
                lost = layer.channel_layer.serialize(
                    {"type": LAYER_LOST, "error": repr(exc), "shard": layer._shards.index(self)}
                )
                for queue in layer.channels.values():
                    queue.put_nowait(lost)
                await self._start_over(exc)
                await asyncio.sleep(1)

    def _confirm(self, name: str | bytes) -> None:
        if isinstance(name, bytes):
            name = name.decode()
        self._subscribed_to.add(name)
        confirmed = self._confirming.pop(name, None)
        if confirmed is not None and not confirmed.done():
            confirmed.set_result(None)

    async def _start_over(self, exc: Exception) -> None:
        """Drop the connection and every subscription; the next subscribe opens a fresh one.

        Left to itself, redis-py reconnects the same PubSub and resubscribes, but seen here
        (redis-py 5.3, Redis restarted under it) that read never returned, and the process
        heard nothing again. The receivers were told, so they join their groups afresh.
        """
        async with self._lock:
            redis, self._redis, self._pubsub = self._redis, None, None
            self._subscribed_to = set()
            waiting, self._confirming = self._confirming, {}
        for confirmed in waiting.values():
            if not confirmed.done():
                confirmed.set_exception(RedisConnectionError(f"subscription lost: {exc!r}"))
        if redis is not None:
            with contextlib.suppress(Exception):
                await _close_redis(redis)


class SignallingPubSubChannelLayer(RedisPubSubChannelLayer):
    """channels_redis's pub/sub layer whose receivers hear of a lost subscription."""

    @property
    def shard_count(self) -> int:
        return len(self._get_layer()._shards)

    def group_shard(self, group: str) -> int:
        """The server whose subscription carries `group` (the library hashes the group's
        channel name, not the group)."""
        layer = self._get_layer()
        return _consistent_hash(layer._get_group_channel_name(group), len(layer._shards))

    def _get_layer(self) -> RedisPubSubLoopLayer:
        fresh = asyncio.get_running_loop() not in self._layers
        layer = super()._get_layer()
        if fresh:
            layer._shards = [
                _SignallingShard(redis_servers.with_layer_hook(shard.host), layer)
                for shard in layer._shards
            ]
        return layer
