"""The shared async Redis client for presence and rate limits (not the channel layer's).

redis.asyncio connections belong to the event loop that opened them, so there is one
client per loop: daphne has one loop, tests and async_to_sync callers have their own.
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

# Scripts by source, registered once per process: redis-py hashes a script when it is
# registered and runs it by that hash (EVALSHA), loading it again only if Redis has
# forgotten it. Call them with `client=` (this loop's client, or a pipeline).
_scripts: dict[str, AsyncScript] = {}

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Redis] = weakref.WeakKeyDictionary()


def get_redis() -> Redis:
    """This loop's client, over a bounded pool of CHAT_REDIS_MAX_CONNECTIONS.

    redis-py's default pool opens a connection for every command in flight, and opens
    them one at a time under the pool's lock: a drain's thousands of concurrent
    disconnects became thousands of new connections, made one by one, and the drain ran
    out of time. Here commands past the bound wait (at most CHAT_REDIS_POOL_TIMEOUT
    seconds, then a ConnectionError the caller reports as `unavailable`) for one of a
    few connections that each carry a command in well under a millisecond.
    """
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
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
        client = _clients[loop] = Redis.from_pool(pool)
    return client


# A burst is cut into pipelines of at most this many calls.
BATCH_CALLS = 500

_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batcher] = (
    weakref.WeakKeyDictionary()
)


class _Batcher:
    """Script calls that arrive together, sent in one pipeline.

    A join storm or a drain makes thousands of presence and socket-slot calls at once;
    one by one they queue for the pool's few connections on a busy loop, each a round
    trip. Queued here while a pipeline is out, they go in the next one: the calls of a
    burst cost a few round trips, and a quiet process still sends each call at once.
    """

    def __init__(self) -> None:
        self.queue: list[tuple[AsyncScript, list, list, asyncio.Future]] = []
        self.task: asyncio.Task | None = None

    async def call(self, source: str, keys: list, args: list) -> object:
        done = asyncio.get_running_loop().create_future()
        self.queue.append((script(source), keys, args, done))
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._send())
        return await done

    async def _send(self) -> None:
        while self.queue:
            batch = self.queue[:BATCH_CALLS]
            del self.queue[:BATCH_CALLS]
            try:
                async with get_redis().pipeline(transaction=False) as pipe:
                    for found, keys, args, _ in batch:
                        await found(keys=keys, args=args, client=pipe)
                    results = await pipe.execute(raise_on_error=False)
            except Exception as exc:  # the connection or the pool: every call fails alike
                results = [exc] * len(batch)
            for (*_, done), result in zip(batch, results, strict=True):
                if done.done():
                    continue
                if isinstance(result, BaseException):
                    done.set_exception(result)
                else:
                    done.set_result(result)


async def run_script(source: str, keys: list, args: list) -> object:
    """Run a script (by source) on this loop's client, batched with the calls that arrive
    with it (see _Batcher)."""
    loop = asyncio.get_running_loop()
    batcher = _batchers.get(loop)
    if batcher is None:
        batcher = _batchers[loop] = _Batcher()
    return await batcher.call(source, keys, args)


def script(source: str) -> AsyncScript:
    found = _scripts.get(source)
    if found is None:
        found = _scripts[source] = get_redis().register_script(source)
    return found


async def close_redis() -> None:
    """Close this loop's client (tests and shutdown)."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()
