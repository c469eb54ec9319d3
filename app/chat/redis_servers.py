"""Redis connections for every user of Redis, one server or a master behind Sentinel.

config/redis_urls.py says where a Redis is; this module opens pools to it: bounded async
pools (presence, limits), sync clients (/readyz), Django's cache pool, and the connect
hook every pool shares. The hook is how a process learns, without polling, that a
Sentinel failover moved the master (`chat_redis_master`, `chat_redis_failovers_seen_total`)
and how often connections had to be opened again (`chat_redis_reconnects_total`).

After a failover nothing is restarted: a Sentinel-managed connection asks the sentinels
for the master each time it connects, and one still talking to a demoted master gets
READONLY, drops the connection and reconnects (redis-py's SentinelManagedConnection).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from django.conf import settings

from config.redis_urls import RedisServer, parse

from . import metrics

log = logging.getLogger(__name__)

# Master address last seen per server name, in this process (every pool and loop).
_masters: dict[str, str] = {}
_masters_lock = threading.Lock()


def _seen(server: str, host: object, port: object) -> None:
    address = f"{host}:{port}"
    with _masters_lock:
        before = _masters.get(server)
        if before == address:
            return
        _masters[server] = address
    if before is not None:
        metrics.REDIS_MASTER.labels(server, before).set(0)
        metrics.REDIS_FAILOVERS.labels(server).inc()
        log.warning("redis %s: master moved from %s to %s", server, before, address)
    metrics.REDIS_MASTER.labels(server, address).set(1)


def _note_connect(conn, client: str, server: RedisServer) -> None:
    if getattr(conn, "_chat_connected_before", False):
        metrics.REDIS_RECONNECTS.labels(client).inc()
    conn._chat_connected_before = True
    if server.is_sentinel:
        _seen(server.name, conn.host, conn.port)


# The keys of a channels_redis `hosts` entry that say where the server is
# (config/redis_urls.layer_host writes them); the rest are connection options.
_WHERE = ("address", "sentinels", "master_name", "sentinel_kwargs", "db", "username", "password")


def split_layer_host(host: dict) -> tuple[RedisServer, dict]:
    """The server a channels_redis `hosts` entry names, and its connection options."""
    options = {k: v for k, v in host.items() if k not in _WHERE}
    if "address" in host:
        return parse(host["address"]), options
    server = RedisServer(
        url="",
        sentinels=tuple((h, int(p)) for h, p in host["sentinels"]),
        master=host["master_name"],
        db=int(host.get("db", 0)),
        username=host.get("username"),
        password=host.get("password"),
        sentinel_password=(host.get("sentinel_kwargs") or {}).get("password"),
    )
    return server, options


def with_layer_hook(host: dict) -> dict:
    """A channels_redis `hosts` entry whose connections report to the metrics above."""
    server, _ = split_layer_host(host)
    return {**host, "redis_connect_func": async_connect_hook("layer", server)}


def async_connect_hook(client: str, server: RedisServer) -> Callable:
    """redis-py's `redis_connect_func` for asyncio connections: the usual handshake,
    then the bookkeeping above."""

    async def on_connect(conn) -> None:
        await conn.on_connect()
        _note_connect(conn, client, server)

    return on_connect


def sync_connect_hook(client: str, server: RedisServer) -> Callable:
    def on_connect(conn) -> None:
        conn.on_connect()
        _note_connect(conn, client, server)

    return on_connect


class BlockingSentinelPool(
    redis.asyncio.sentinel.SentinelConnectionPool, redis.asyncio.BlockingConnectionPool
):
    """A Sentinel-managed pool that waits for a free connection at its bound, as
    BlockingConnectionPool does (redis-py has the two only separately; the mix relies on
    both calling super(), guarded by tests/core/test_redis_sentinel.py)."""


def blocking_pool(server: RedisServer, **kwargs) -> redis.asyncio.ConnectionPool:
    """An asyncio pool to the server that waits at its bound (max_connections, timeout)."""
    if not server.is_sentinel:
        return redis.asyncio.BlockingConnectionPool.from_url(server.url, **kwargs)
    sentinel = redis.asyncio.sentinel.Sentinel(
        server.sentinels, sentinel_kwargs=server.sentinel_kwargs()
    )
    return BlockingSentinelPool(server.master, sentinel, **server.master_kwargs(), **kwargs)


def async_pool(server: RedisServer, client: str, **kwargs) -> redis.asyncio.ConnectionPool:
    """A bounded asyncio pool whose connections report as `client`."""
    return blocking_pool(server, redis_connect_func=async_connect_hook(client, server), **kwargs)


def sync_pool(server: RedisServer, client: str, **kwargs) -> redis.ConnectionPool:
    """A synchronous pool (threads: /readyz, Django's cache) reporting as `client`."""
    kwargs["redis_connect_func"] = sync_connect_hook(client, server)
    if not server.is_sentinel:
        return redis.ConnectionPool.from_url(server.url, **kwargs)
    sentinel = redis.sentinel.Sentinel(server.sentinels, sentinel_kwargs=server.sentinel_kwargs())
    return redis.sentinel.SentinelConnectionPool(
        server.master, sentinel, **server.master_kwargs(), **kwargs
    )


def sync_client(server: RedisServer, client: str, **kwargs) -> redis.Redis:
    return redis.Redis(connection_pool=sync_pool(server, client, **kwargs))


def server(url: str | None = None) -> RedisServer:
    """REDIS_URL (or `url`) parsed, with Sentinel's password from the settings (tests
    change REDIS_URL, so the parsed REDIS_SERVER is used only while it matches)."""
    url = url or settings.REDIS_URL
    known = settings.REDIS_SERVER
    if known is not None and known.url == url:
        return known
    return parse(url, settings.REDIS_SENTINEL_PASSWORD)


class CachePool:
    """Django's RedisCache `pool_class`: it builds pools with `from_url(location, **options)`,
    so reading the redis+sentinel form here gives the cache (django-axes' counts, the
    signup and room-creation limits) the same failover as everything else."""

    @classmethod
    def from_url(cls, url: str, **kwargs) -> redis.ConnectionPool:
        return sync_pool(server(url), "cache", **kwargs)
