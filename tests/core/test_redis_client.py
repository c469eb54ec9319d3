"""The process's Redis client keeps to its pool: a burst of commands shares a few
connections instead of opening one each (chat/redis_client.py)."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from chat import redis_client


@pytest.fixture
async def fresh_client():
    await redis_client.close_redis()
    yield
    await redis_client.close_redis()


async def _connected_clients() -> int:
    probe = redis_client.get_redis()
    return int((await probe.info("clients"))["connected_clients"])


async def test_a_burst_of_commands_opens_at_most_the_pools_connections(settings, fresh_client):
    settings.CHAT_REDIS_MAX_CONNECTIONS = 4
    before = await _connected_clients()  # this opens the pool's first connection
    client = redis_client.get_redis()
    await asyncio.gather(*(client.incr("chat:test:burst") for _ in range(500)))
    assert int(await client.get("chat:test:burst")) == 500
    assert await _connected_clients() - before <= 3  # four in all, one was there
    await client.delete("chat:test:burst")


async def test_a_pool_that_stays_busy_says_so_after_its_timeout(settings, fresh_client):
    settings.CHAT_REDIS_MAX_CONNECTIONS = 1
    settings.CHAT_REDIS_POOL_TIMEOUT = 0.2
    client = redis_client.get_redis()
    blocked = asyncio.create_task(client.blpop(["chat:test:never"], timeout=2))
    await asyncio.sleep(0.1)  # the one connection is held by the blocking read
    with pytest.raises(RedisConnectionError, match="No connection available"):
        await client.ping()
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked


async def test_script_calls_of_a_burst_share_pipelines_and_keep_their_own_results(
    fresh_client, monkeypatch
):
    client = redis_client.get_redis()
    pipelines = []
    original = client.pipeline

    def counted(*args, **kwargs):
        pipelines.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(client, "pipeline", counted)
    echo = "return tonumber(ARGV[1]) * 2"
    failing = "return redis.call('INCR', KEYS[1])"  # on a key that holds a string
    await client.set("chat:test:text", "not a number")
    calls = [redis_client.run_script(echo, [], [i]) for i in range(600)]
    calls.insert(300, redis_client.run_script(failing, ["chat:test:text"], []))
    results = await asyncio.gather(*calls, return_exceptions=True)
    bad = results.pop(300)
    assert isinstance(bad, Exception) and "not an integer" in str(bad)
    assert results == [i * 2 for i in range(600)]  # each call its own answer, in order
    assert 2 <= len(pipelines) <= 4, pipelines  # 601 calls: a few pipelines of <= 500
    await client.delete("chat:test:text")


async def _calls(client, command: str) -> int:
    stats = await client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_pipelined_scripts_cost_one_round_trip_and_survive_a_script_flush(fresh_client):
    """run_scripts sends EVALSHA straight away (redis-py's pipelined Script objects ask
    SCRIPT EXISTS first, every time); a server that forgot the script (a restart, a
    failover) gets it loaded and the calls that did not run run again, once each."""
    source = "return redis.call('INCR', KEYS[1])"
    client = redis_client.get_redis()
    await client.script_flush()
    exists = await _calls(client, "script|exists")
    calls = [(source, ["chat:test:scripts"], []) for _ in range(5)]
    assert await redis_client.run_scripts(calls) == [1, 2, 3, 4, 5]  # loaded, run again
    assert await redis_client.run_scripts(calls) == [6, 7, 8, 9, 10]
    assert await _calls(client, "script|exists") == exists
    assert await _calls(client, "script|load") >= 1
    await client.delete("chat:test:scripts")
