"""The resources of each event loop, and the one place that closes them.

redis.asyncio and psycopg connections, and the tasks of the fan-out hub and the presence
tracker, belong to the event loop that made them: daphne has one loop, each test has its
own, and so has each async_to_sync call from sync code. Each module makes its resource
lazily, on the running loop's `Resources` (redis_client, pg_client, services/fanout.py,
services/presence/); `close_loop` closes all of one loop's at once, so that tests,
chat.sync's one-off loops and daphne's shutdown (realtime/daphne_server.py) cannot forget
one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool
    from redis.asyncio import Redis

    from .services.fanout import Hub
    from .services.presence import Tracker

log = logging.getLogger(__name__)

# Seconds the PostgreSQL pool's close waits for its maintenance tasks (a connection
# attempt to an unreachable server must not hold a shutdown up).
POOL_CLOSE_SECONDS = 0.5


@dataclass(eq=False)
class Resources:
    """One loop's: each made on first use by the module named in its comment."""

    tracker: Tracker | None = None  # services/presence/
    redis: Redis | None = None  # redis_client.py
    redis_shards: dict[int, Redis] | None = None  # redis_client.py, REDIS_LAYER_URLS
    pg_pool: AsyncConnectionPool | None = None  # pg_client.py
    hub: Hub | None = None  # services/fanout.py
    # pg_client.py after an outage: the probe in flight, and the old pool's close.
    pg_probe: asyncio.Future | None = None
    pg_closing: asyncio.Future | None = None

    def held(self) -> list[str]:
        return [name for name, _ in _CLOSE_ORDER if getattr(self, name) is not None]

    async def close(self) -> list[str]:
        """Close what is held, in _CLOSE_ORDER; one failing does not keep the others
        open. Returns the names of what was closed."""
        closed = []
        for name, close in _CLOSE_ORDER:
            resource = getattr(self, name)
            if resource is None:
                continue
            setattr(self, name, None)
            try:
                await close(resource)
            except Exception:
                log.warning("closing this loop's %s failed", name, exc_info=True)
            else:
                closed.append(name)
        return closed


async def _stop_tracker(tracker: Tracker) -> None:
    tracker.close()


async def _close_all(clients) -> None:
    for client in list(clients):
        await client.aclose()


# The tracker's timers use the Redis client: they stop first. The hub listens on the
# channel layer's own connections, and may take a couple of seconds to stop: last, so
# that a bounded shutdown has closed the connections by then.
_CLOSE_ORDER: tuple[tuple[str, Callable[[Any], Awaitable[None]]], ...] = (
    ("tracker", _stop_tracker),
    ("redis", lambda redis: redis.aclose()),
    ("redis_shards", lambda shards: _close_all(shards.values())),
    ("pg_pool", lambda pool: pool.close(timeout=POOL_CLOSE_SECONDS)),
    ("hub", lambda hub: hub.close()),
)

# Read by the metrics from whichever thread serves /metrics: changed under the lock.
_lock = threading.Lock()
_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Resources] = (
    weakref.WeakKeyDictionary()
)


def current() -> Resources:
    """The running loop's resources (an empty set on its first call)."""
    loop = asyncio.get_running_loop()
    found = _loops.get(loop)
    if found is None:
        with _lock:
            found = _loops.setdefault(loop, Resources())
    return found


def active() -> bool:
    """Whether the running loop holds a resource: a long-lived loop (daphne's, a test's),
    not one that async_to_sync made for a single call."""
    found = _loops.get(asyncio.get_running_loop())
    return found is not None and bool(found.held())


def every_loop() -> list[Resources]:
    """Every loop's resources, for metrics: read them, do not use them off their loop."""
    with _lock:
        return list(_loops.values())


async def close_loop() -> list[str]:
    """Close all of the running loop's resources; the next use makes new ones. Returns
    the names of what was closed."""
    with _lock:
        found = _loops.pop(asyncio.get_running_loop(), None)
    return [] if found is None else await found.close()
