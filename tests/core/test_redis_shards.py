"""A channel layer over two Redis servers (REDIS_LAYER_URLS): where keys are placed, and
what losing one server does. Two real redis-servers, one of them SIGKILLed."""

from __future__ import annotations

import asyncio
import signal

import pytest
import redis
from channels.layers import channel_layers

from chat import names, redis_client, runtime
from chat.services import delivery, fanout, presence, ratelimit
from localstack.servers import Redis
from realtime.layers import shard_of

from .test_fanout import Socket, until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def servers(tmp_path):
    found = [Redis(tmp_path / f"s{n}").start() for n in range(2)]
    yield found
    for server in found:
        server.stop()


@pytest.fixture
async def sharded(servers, settings):
    """The app configured for the two servers: REDIS_URL is the first."""
    urls = [server.url for server in servers]
    settings.REDIS_URL = urls[0]
    settings.REDIS_LAYER_URLS = urls
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "realtime.layers.CountingRedisChannelLayer",
            "CONFIG": {"hosts": [{"address": url} for url in urls], "prefix": "shardtest"},
        }
    }
    yield servers
    await runtime.close_loop()
    layer = channel_layers.backends.pop("default", None)
    if layer is not None:
        await layer.close_pools()


def _rooms_by_shard(count: int = 2) -> dict[int, list[int]]:
    """Room ids whose groups live on each shard (channels_redis's hash of the group)."""
    found: dict[int, list[int]] = {0: [], 1: []}
    room = 1
    while min(len(rooms) for rooms in found.values()) < count:
        found[shard_of(names.room_group(room), 2)].append(room)
        room += 1
    return found


def _keys(server: Redis, pattern: str) -> set[str]:
    return {k.decode() for k in redis.Redis(port=server.port).keys(pattern)}


async def test_a_rooms_presence_lives_on_the_server_of_its_group(sharded):
    rooms = _rooms_by_shard()
    for shard, ids in rooms.items():
        for room in ids:
            assert redis_client.shard_for_group(names.room_group(room)) == shard
            await presence.store().join(room, f"u{room}", f"c{room}")
    for shard, ids in rooms.items():
        here = _keys(sharded[shard], "chat:presence:*")
        assert {f"chat:presence:{{{room}}}" for room in ids} <= here
        other = _keys(sharded[1 - shard], "chat:presence:*")
        assert not {f"chat:presence:{{{room}}}" for room in ids} & other
    counts = await presence.store().counts([r for ids in rooms.values() for r in ids])
    assert set(counts.values()) == {1}  # one script per server, answers merged


async def test_rate_limits_are_placed_by_user(sharded):
    for user in range(1, 9):
        await ratelimit.consume(user)
        shard = shard_of(f"chat:rate:{user}", 2)
        assert f"chat:rate:{user}" in _keys(sharded[shard], "chat:rate:*")
        assert f"chat:rate:{user}" not in _keys(sharded[1 - shard], "chat:rate:*")


async def test_losing_one_server_closes_only_the_members_of_its_groups(sharded, monkeypatch):
    """The hub has a channel on each server and adds each group to the one on the group's
    own server: when server 1 dies, members of rooms on it are closed once (they
    reconnect and resume), members of rooms on server 0 keep receiving; once server 1 is
    back (empty), a room on it works again."""
    monkeypatch.setattr(fanout, "RETRY_SECONDS", 0.2)
    rooms = _rooms_by_shard(1)
    room0, room1 = rooms[0][0], rooms[1][0]
    hub = fanout.hub()
    on0, on1 = Socket("zero"), Socket("one")
    await hub.join(names.room_group(room0), on0.member)
    await hub.join(names.room_group(room1), on1.member)
    for socket in (on0, on1):
        await socket.member.ready()
    assert len(hub.channels) == 2
    assert {shard_of(channel, 2) for channel in hub.channels.values()} == {0, 1}

    sharded[1].stop(signal.SIGKILL)
    await until(lambda: on1.failed, timeout=15)
    await delivery.to_room(room0, {"type": "chat_message", "id": 1})
    await until(lambda: on0.got)
    assert on0.failed == [] and len(on1.failed) == 1
    assert names.room_group(room0) in hub.groups and names.room_group(room1) not in hub.groups

    sharded[1].start()  # same port, no data
    again = Socket("again")

    async def rejoin() -> bool:
        try:
            await hub.join(names.room_group(room1), again.member)
        except (redis.ConnectionError, ConnectionError, OSError):
            return False
        return True

    for _ in range(100):
        if await rejoin():
            break
        await asyncio.sleep(0.1)
    await again.member.ready()
    await delivery.to_room(room1, {"type": "chat_message", "id": 2})
    await until(lambda: again.got, timeout=10)
    assert again.got == ['{"type":"chat_message","id":2}']
