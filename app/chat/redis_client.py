"""The shared async Redis client for presence and rate limits (not the channel layer's).

redis.asyncio connections belong to the event loop that opened them, so there is one
client per loop (chat/runtime.py keeps it, and closes it with the loop's other resources):
daphne has one loop, tests and async_to_sync callers have their own.
"""

from __future__ import annotations

import asyncio
import weakref

from channels.layers import get_channel_layer
from django.conf import settings
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import names, redis_servers, runtime
from .batching import Coalescer
from .redis_servers import RedisServer

# Scripts by source, registered once per process: redis-py hashes a script when it is
# registered and runs it by that hash (EVALSHA), loading it again only if Redis has
# forgotten it. Call them with `client=` (this loop's client, or a pipeline).
_scripts: dict[str, AsyncScript] = {}


def get_redis(shard: int | None = None) -> Redis:
    """This loop's client, over a bounded pool of CHAT_REDIS_MAX_CONNECTIONS.

    redis-py's default pool opens a connection for every command in flight, and opens
    them one at a time under the pool's lock: a drain's thousands of concurrent
    disconnects became thousands of new connections, made one by one, and the drain ran
    out of time. Here commands past the bound wait (at most CHAT_REDIS_POOL_TIMEOUT
    seconds, then a ConnectionError the caller reports as `unavailable`) for one of a
    few connections that each carry a command in well under a millisecond.

    `shard` picks one of the channel layer's servers (REDIS_LAYER_URLS; see `placement`
    below); None, or a layer server that is REDIS_URL itself, is REDIS_URL's client.
    """
    resources = runtime.current()
    main = redis_servers.server()
    target = main
    if shard is not None:
        target = layer_servers()[shard]
        if target.name == main.name:
            shard = None
    if shard is not None:
        shards = resources.redis_shards
        if shards is None:
            shards = resources.redis_shards = {}
        client = shards.get(shard)
        if client is None:
            client = shards[shard] = _client(target)
        return client
    client = resources.redis
    if client is None:
        client = resources.redis = _client(main)
    return client


def _client(server: RedisServer) -> Redis:
    return Redis.from_pool(
        redis_servers.async_pool(
            server,
            "app",
            max_connections=settings.CHAT_REDIS_MAX_CONNECTIONS,
            timeout=settings.CHAT_REDIS_POOL_TIMEOUT,
            socket_timeout=5,
            socket_connect_timeout=3,
            health_check_interval=10,
            # Ride out a blip (a failover, a restart) without surfacing an error.
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
    )


# --- placement over the layer's servers (docs/deploy.md "Redis") -------------------------
# A room's presence keys live on the server that holds the room's channel-layer group, so
# a room's messages and its presence share one fate when a server is lost; a user's rate
# limit on the server of the user's inbox group, for the same reason. (Not on its own
# key's hash: CRC-32 is linear, so "chat:rate:<id>" and "chat.user.<id>", of equal
# length, always land on opposite servers of two, and every user would then depend on
# both.) Everything else (abuse counters, the cache, /readyz) stays on REDIS_URL.

_layer_servers: tuple[tuple[str, ...], list[RedisServer]] | None = None


def layer_servers() -> list[RedisServer]:
    """The channel layer's servers, in REDIS_LAYER_URLS order (REDIS_URL alone if unset)."""
    global _layer_servers
    urls = tuple(settings.REDIS_LAYER_URLS or [settings.REDIS_URL])
    if _layer_servers is None or _layer_servers[0] != urls:
        _layer_servers = (urls, [redis_servers.server(url) for url in urls])
    return _layer_servers[1]


def shard_for_group(group: str) -> int | None:
    """The layer server holding `group` (None: there is only one)."""
    if len(settings.REDIS_LAYER_URLS) < 2:
        return None
    return get_channel_layer().group_shard(group)


def shard_for_user(user_id: int) -> int | None:
    """The layer server holding a user's keys: their inbox group's (None: only one)."""
    return shard_for_group(names.user_inbox(user_id))


# A burst is cut into pipelines of at most this many calls.
BATCH_CALLS = 500

ScriptCall = tuple[str, list, list]  # (source, keys, args)

_batchers: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[int | None, Coalescer[ScriptCall]]
] = weakref.WeakKeyDictionary()


def _pipeline(shard: int | None):
    async def send(calls: list[ScriptCall]) -> list[object]:
        return await run_scripts(calls, shard)

    return send


async def _evalsha_all(client: Redis, calls: list[ScriptCall]) -> list[object]:
    async with client.pipeline(transaction=False) as pipe:
        for source, keys, args in calls:
            pipe.evalsha(script(source).sha, len(keys), *keys, *args)
        return await pipe.execute(raise_on_error=False)


async def run_scripts(
    calls: list[ScriptCall], shard: int | None = None, *, raise_on_error: bool = False
) -> list[object]:
    """Run scripts (by source) in one pipeline of EVALSHA: one round trip. A script the
    server does not know yet (first use, a restart, a failover) is loaded and its calls
    run again: NOSCRIPT means they did not run. redis-py's Script objects on a pipeline
    instead ask SCRIPT EXISTS first, a second round trip for every pipeline. A call's
    error is its result, or with `raise_on_error` raised (the first)."""
    client = get_redis(shard)
    results = await _evalsha_all(client, calls)
    missing = [i for i, found in enumerate(results) if isinstance(found, NoScriptError)]
    if missing:
        for source in {calls[i][0] for i in missing}:
            await client.script_load(source)
        again = await _evalsha_all(client, [calls[i] for i in missing])
        for i, found in zip(missing, again, strict=True):
            results[i] = found
    if raise_on_error:
        for found in results:
            if isinstance(found, Exception):
                raise found
    return results


async def run_script(source: str, keys: list, args: list, shard: int | None = None) -> object:
    """Run a script (by source) on this loop's client for `shard`, in one pipeline with
    the calls that arrive with it (chat/batching.py): a storm's presence and slot scripts
    cost a few round trips, not one each."""
    by_shard = _batchers.setdefault(asyncio.get_running_loop(), {})
    batcher = by_shard.get(shard)
    if batcher is None:
        batcher = by_shard[shard] = Coalescer(_pipeline(shard), BATCH_CALLS)
    return await batcher.call((source, keys, args))


def script(source: str) -> AsyncScript:
    found = _scripts.get(source)
    if found is None:
        found = _scripts[source] = get_redis().register_script(source)
    return found


async def close_redis() -> None:
    """Close this loop's clients (runtime.close_loop closes them with the rest)."""
    resources = runtime.current()
    client, resources.redis = resources.redis, None
    shards, resources.redis_shards = resources.redis_shards, None
    for each in [client, *(shards or {}).values()]:
        if each is not None:
            await each.aclose()
