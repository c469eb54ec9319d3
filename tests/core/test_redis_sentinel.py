"""Every Redis user behind Sentinel, and following a failover without a restart: a real
master, replica and sentinel from the system's redis-server, a failover forced with
SENTINEL FAILOVER (what a dead master's down-after would start, without the wait)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis
from django.core.cache import caches

from chat import metrics, redis_client, redis_servers, runtime
from config.redis_urls import layer_host, parse
from localstack.servers import Proc, binary, free_port, wait_until
from realtime.layers import CountingRedisChannelLayer, SignallingPubSubChannelLayer

MASTER = "chatmaster"


class Trio:
    """A master, its replica and one sentinel (quorum 1), on free ports."""

    def __init__(self, root: Path, password: str = "", sentinel_password: str = "") -> None:
        self.root = root
        self.password = password
        self.sentinel_password = sentinel_password
        self.ports = {"a": free_port(), "b": free_port()}
        self.sentinel_port = free_port()
        self.procs: list[Proc] = []

    def _redis(self, name: str, *extra: str) -> None:
        folder = self.root / name
        folder.mkdir()
        argv = [binary("redis-server"), "--port", str(self.ports[name]), "--bind", "127.0.0.1"]
        argv += ["--dir", str(folder), "--save", "", "--appendonly", "no", *extra]
        if self.password:
            argv += ["--requirepass", self.password, "--masterauth", self.password]
        self.procs.append(Proc(name, argv, folder / "log"))
        wait_until(lambda: self.server(self.ports[name]).ping(), 15, name, self.procs[-1])

    def server(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=self.password or None)

    def start(self) -> Trio:
        self._redis("a")
        self._redis("b", "--replicaof", "127.0.0.1", str(self.ports["a"]))
        conf = self.root / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {self.root}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {self.ports['a']} 1\n"
            f"sentinel down-after-milliseconds {MASTER} 2000\n"
            f"sentinel failover-timeout {MASTER} 4000\n"
        )
        if self.password:
            conf.write_text(conf.read_text() + f"sentinel auth-pass {MASTER} {self.password}\n")
        if self.sentinel_password:
            conf.write_text(conf.read_text() + f"requirepass {self.sentinel_password}\n")
        argv = [binary("redis-server"), str(conf), "--sentinel"]
        self.procs.append(Proc("sentinel", argv, self.root / "sentinel.log"))
        wait_until(self._replica_known, 20, "sentinel", self.procs[-1])
        return self

    def sentinel(self) -> redis.Redis:
        return redis.Redis(
            port=self.sentinel_port,
            password=self.sentinel_password or None,
            decode_responses=True,
        )

    def _replica_known(self) -> bool:
        return bool(self.sentinel().sentinel_slaves(MASTER))

    def master_port(self) -> int:
        return int(self.sentinel().sentinel_get_master_addr_by_name(MASTER)[1])

    def fail_over(self) -> int:
        """Promote the replica; the port of the new master once both agree."""
        before = self.master_port()
        wait_until(self._replica_synced, 20, "replica in sync")
        self.sentinel().execute_command("SENTINEL", "FAILOVER", MASTER)
        wait_until(lambda: self.master_port() != before, 30, "failover")
        after = self.master_port()
        wait_until(lambda: self._role(after) == "master", 30, "promoted")
        # Until the sentinel demotes it, the old master still takes writes that its
        # resync then drops (asynchronous replication: docs/deploy.md "Redis").
        wait_until(lambda: self._role(before) == "slave", 30, "old master demoted")
        return after

    def _role(self, port: int) -> str:
        return self.server(port).info("replication")["role"]

    def _replica_synced(self) -> bool:
        info = self.server(self.master_port()).info("replication")
        return info.get("connected_slaves", 0) >= 1 and info["slave0"]["state"] == "online"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis+sentinel://{auth}127.0.0.1:{self.sentinel_port}/{MASTER}/0"

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@pytest.fixture
def trio(tmp_path):
    started = Trio(tmp_path).start()
    yield started
    started.stop()


def _failovers(server: str) -> float:
    return metrics.REDIS_FAILOVERS.labels(server)._value.get()


def _master_gauge(server: str, port: int) -> float:
    return metrics.REDIS_MASTER.labels(server, f"127.0.0.1:{port}")._value.get()


async def _until(check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = await check()
        except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        await asyncio.sleep(0.1)


async def test_presence_and_limits_client_follows_a_failover_without_a_restart(trio, settings):
    """REDIS_URL in the sentinel form: get_redis() finds the master through the sentinel,
    says which one it uses, and after a failover writes to the new master with the same
    client (no restart), counting the failover and the reconnects."""
    settings.REDIS_URL = trio.url
    server = parse(trio.url).name
    first = trio.master_port()
    try:
        client = redis_client.get_redis()
        await client.set("chat:test:k", "1")
        assert _master_gauge(server, first) == 1
        failovers = _failovers(server)
        reconnects = metrics.REDIS_RECONNECTS.labels("app")._value.get()

        second = await asyncio.to_thread(trio.fail_over)
        assert second != first
        assert await _until(lambda: client.set("chat:test:k", "2"))
        assert redis.Redis(port=second).get("chat:test:k") == b"2"
        assert redis_client.get_redis() is client
        assert _failovers(server) == failovers + 1
        assert _master_gauge(server, second) == 1 and _master_gauge(server, first) == 0
        assert metrics.REDIS_RECONNECTS.labels("app")._value.get() > reconnects
    finally:
        await runtime.close_loop()


async def test_the_sentinel_pool_waits_at_its_bound_instead_of_failing(trio, settings):
    """The Sentinel-managed pool keeps BlockingConnectionPool's behaviour (redis-py has
    the two separately; redis_servers mixes them): past CHAT_REDIS_MAX_CONNECTIONS a
    command waits for a free connection, and fails clearly only after the pool timeout."""
    settings.REDIS_URL = trio.url
    settings.CHAT_REDIS_MAX_CONNECTIONS = 1
    settings.CHAT_REDIS_POOL_TIMEOUT = 5
    try:
        client = redis_client.get_redis()
        pool = client.connection_pool
        assert isinstance(pool, redis_servers.BlockingSentinelPool)
        busy = asyncio.ensure_future(client.blpop(["chat:test:none"], timeout=1))
        await asyncio.sleep(0.1)
        assert await client.ping()  # waited for the one connection, then ran
        assert await busy is None
        settings.CHAT_REDIS_POOL_TIMEOUT = 0.2
        await runtime.close_loop()
        client = redis_client.get_redis()
        busy = asyncio.ensure_future(client.blpop(["chat:test:none"], timeout=1))
        await asyncio.sleep(0.1)
        with pytest.raises(redis.ConnectionError, match="No connection available"):
            await client.ping()
        await busy
    finally:
        await runtime.close_loop()


@pytest.mark.parametrize("backend", [CountingRedisChannelLayer, SignallingPubSubChannelLayer])
async def test_both_channel_layers_deliver_after_a_failover(trio, backend):
    """A layer configured from the sentinel URL (config/redis_urls.layer_host) delivers
    before and after the master moves, with the same layer object."""
    kwargs = {"prefix": "sentineltest"}
    # The core layer's pool is bounded as the settings bound it (realtime/layers.bounded_pool).
    bounds = (
        {"max_connections": 4, "pool_timeout": 5} if backend is CountingRedisChannelLayer else {}
    )
    layer = backend(hosts=[layer_host(parse(trio.url), socket_timeout=15, **bounds)], **kwargs)
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    await layer.group_send("room", {"type": "chat.frame", "n": 1})
    assert (await asyncio.wait_for(layer.receive(channel), 5))["n"] == 1

    await asyncio.to_thread(trio.fail_over)

    async def delivered() -> bool:
        await layer.group_add("room", channel)
        await layer.group_send("room", {"type": "chat.frame", "n": 2})
        while True:  # a pub/sub layer may first say the subscription was lost
            got = await asyncio.wait_for(layer.receive(channel), 5)
            if got.get("n") == 2:
                return True

    assert await _until(delivered, 30)
    await layer.flush()
    if hasattr(layer, "close_pools"):
        await layer.close_pools()


def test_the_cache_and_readiness_follow_a_failover(trio, settings):
    """Django's cache (django-axes, signup and room limits) reads the sentinel form
    through redis_servers.CachePool; the readiness check's client does too."""
    from chat import health

    settings.REDIS_URL = trio.url
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": trio.url,
            "OPTIONS": {"pool_class": "chat.redis_servers.CachePool", "socket_timeout": 3},
        }
    }
    cache = caches.create_connection("default")
    cache.set("chat:test:cache", 1)
    health._redis = None
    try:
        health._check_redis()
        trio.fail_over()
        deadline = time.monotonic() + 15
        while True:
            try:
                cache.set("chat:test:cache", 2)
                health._check_redis()
                break
            except (redis.ConnectionError, redis.ReadOnlyError, redis.TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert redis.Redis(port=trio.master_port()).exists(":1:chat:test:cache")
    finally:
        health._redis = None
        cache.close()


def test_passwords_for_the_master_and_the_sentinels(tmp_path, settings):
    """REDIS_PASSWORD (the master's, in the URL) and REDIS_SENTINEL_PASSWORD (the
    sentinels' own) reach every client: presence and limits, the layer, the cache."""
    trio = Trio(tmp_path, password="m-secret", sentinel_password="s-secret").start()
    try:
        settings.REDIS_URL = trio.url
        settings.REDIS_SENTINEL_PASSWORD = "s-secret"

        async def use() -> None:
            try:
                await redis_client.get_redis().set("chat:test:auth", "1")
                server = parse(trio.url, sentinel_password="s-secret")
                layer = CountingRedisChannelLayer(hosts=[layer_host(server)], prefix="authtest")
                channel = await layer.new_channel()
                await layer.send(channel, {"type": "chat.frame", "n": 1})
                assert (await asyncio.wait_for(layer.receive(channel), 5))["n"] == 1
                await layer.close_pools()
            finally:
                await runtime.close_loop()

        asyncio.run(use())
        pool = redis_servers.CachePool.from_url(trio.url)
        assert redis.Redis(connection_pool=pool).get("chat:test:auth") == b"1"
        pool.disconnect()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=trio.sentinel_port).ping()  # the sentinel wants its password
    finally:
        trio.stop()
