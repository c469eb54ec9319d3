"""The shared async Redis client for presence and rate limits (not the channel layer's).

redis.asyncio connections belong to the event loop that opened them, so there is one
client per loop (chat/runtime.py keeps it, and closes it with the loop's other resources):
daphne has one loop, tests and async_to_sync callers have their own.
"""

from __future__ import annotations

import asyncio
import weakref

from django.conf import settings
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import runtime
from .batching import Coalescer

# Scripts by source, registered once per process: redis-py hashes a script when it is
# registered and runs it by that hash (EVALSHA), loading it again only if Redis has
# forgotten it. Call them with `client=` (this loop's client, or a pipeline).
_scripts: dict[str, AsyncScript] = {}


def get_redis() -> Redis:
    """This loop's client, over a bounded pool of CHAT_REDIS_MAX_CONNECTIONS.

    redis-py's default pool opens a connection for every command in flight, and opens
    them one at a time under the pool's lock: a drain's thousands of concurrent
    disconnects became thousands of new connections, made one by one, and the drain ran
    out of time. Here commands past the bound wait (at most CHAT_REDIS_POOL_TIMEOUT
    seconds, then a ConnectionError the caller reports as `unavailable`) for one of a
    few connections that each carry a command in well under a millisecond.
    """
    resources = runtime.current()
    client = resources.redis
    if client is None:
        pool = BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=settings.CHAT_REDIS_MAX_CONNECTIONS,
            timeout=settings.CHAT_REDIS_POOL_TIMEOUT,
            socket_timeout=5,
            socket_connect_timeout=3,
            health_check_interval=10,
            # Ride out a blip (a failover, a restart) without surfacing an error.
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        client = resources.redis = Redis.from_pool(pool)
    return client


# A burst is cut into pipelines of at most this many calls.
BATCH_CALLS = 500

ScriptCall = tuple[str, list, list]  # (source, keys, args)

_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Coalescer[ScriptCall]] = (
    weakref.WeakKeyDictionary()
)


async def _pipeline(calls: list[ScriptCall]) -> list[object]:
    async with get_redis().pipeline(transaction=False) as pipe:
        for source, keys, args in calls:
            await script(source)(keys=keys, args=args, client=pipe)
        return await pipe.execute(raise_on_error=False)


async def run_script(source: str, keys: list, args: list) -> object:
    """Run a script (by source) on this loop's client, in one pipeline with the calls that
    arrive with it (chat/batching.py): a storm's presence and slot scripts cost a few
    round trips, not one each."""
    loop = asyncio.get_running_loop()
    batcher = _batchers.get(loop)
    if batcher is None:
        batcher = _batchers[loop] = Coalescer(_pipeline, BATCH_CALLS)
    return await batcher.call((source, keys, args))


def script(source: str) -> AsyncScript:
    found = _scripts.get(source)
    if found is None:
        found = _scripts[source] = get_redis().register_script(source)
    return found


async def close_redis() -> None:
    """Close this loop's client (runtime.close_loop closes it with the rest)."""
    resources = runtime.current()
    client, resources.redis = resources.redis, None
    if client is not None:
        await client.aclose()
