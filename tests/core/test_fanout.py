"""The process fan-out hub, without sockets: one layer subscription per group per process."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import channel_layers, get_channel_layer

from chat.names import room_group
from chat.services import delivery, fanout
from realtime.layers import LAYER_LOST


class Socket:
    """What a consumer gives the hub: a send and a fail callback, recorded."""

    def __init__(self, conn_id: str, username: str | None = None):
        self.got: list[str] = []
        self.failed: list[Exception] = []
        self.member = fanout.Member(conn_id, username, self.send, self.fail)

    async def send(self, text: str) -> None:
        self.got.append(text)

    async def fail(self, exc: Exception) -> None:
        self.failed.append(exc)


@pytest.fixture
async def hub():
    found = fanout.hub()
    yield found
    await fanout.close_hub()
    layer = channel_layers.backends.pop("default", None)
    if layer is not None:
        await layer.flush()
        await layer.close_pools()


async def group_size(group: str) -> int:
    layer = get_channel_layer()
    return await layer.connection(0).zcard(layer._group_key(group))


async def until(check, timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_group_costs_one_layer_member_however_many_sockets(hub):
    sockets = [Socket(f"c{i}") for i in range(50)]
    await asyncio.gather(*(hub.join(room_group(1), s.member) for s in sockets))
    assert await group_size(room_group(1)) == 1
    for s in sockets:
        await s.member.ready()
    await delivery.to_room(1, {"type": "chat_message", "id": 7})
    await until(lambda: all(s.got for s in sockets))
    assert {s.got[0] for s in sockets} == {'{"type":"chat_message","id":7}'}
    for s in sockets[:-1]:
        await hub.leave(room_group(1), s.member)
    assert await group_size(room_group(1)) == 1  # one socket is left
    await hub.leave(room_group(1), sockets[-1].member)
    assert await group_size(room_group(1)) == 0 and hub.members(room_group(1)) == 0


async def test_skips_and_a_greeting_that_is_not_out_yet(hub):
    me, other, same_user = Socket("me", "ann"), Socket("other", "bob"), Socket("tab2", "ann")
    for s in (me, other, same_user):
        await hub.join(room_group(2), s.member)
    await me.member.ready()
    await same_user.member.ready()
    await delivery.to_room(2, {"type": "typing", "user": "ann"}, skip_user="ann")
    await delivery.to_room(2, {"type": "user_join", "user": "x"}, skip_channel="me")
    await until(lambda: len(other.member.pending or []) == 2)
    assert me.got == [] and same_user.got == ['{"type":"user_join","user":"x"}']
    assert other.got == []  # held until its history and online list are out
    await other.member.ready()
    assert [t[:20] for t in other.got] == ['{"type":"typing","us', '{"type":"user_join",']


async def test_an_event_for_a_group_nobody_here_is_in_unsubscribes_it(hub):
    s = Socket("c1")
    await hub.join(room_group(3), s.member)
    hub.forget(s.member)  # a consumer that died without leaving
    assert await group_size(room_group(3)) == 1
    await delivery.to_room(3, {"type": "chat_message", "id": 1})
    for _ in range(300):
        if await group_size(room_group(3)) == 0:
            break
        await asyncio.sleep(0.01)
    assert await group_size(room_group(3)) == 0 and s.got == []


async def test_a_failing_layer_fails_every_member_once_and_forgets_them(hub, monkeypatch):
    sockets = [Socket("a"), Socket("b")]
    await hub.join(room_group(4), sockets[0].member)
    await hub.join("chat.user.4", sockets[1].member)

    async def broken(channel, limit=1):
        raise ConnectionError("Redis went away")

    monkeypatch.setattr(fanout, "RETRY_SECONDS", 60)
    # A fault we cannot cause on cue. The hub receives in batches from realtime.layers' core
    # layer (what the tests run on).
    monkeypatch.setattr(hub.layer, "receive_batch", broken)
    hub._tasks.pop(0).cancel()
    await hub._start()
    await until(lambda: all(s.failed for s in sockets))
    assert [len(s.failed) for s in sockets] == [1, 1]
    assert hub.groups == {}


async def test_a_lost_pubsub_subscription_fails_every_member(hub, monkeypatch):
    """realtime.layers tells receivers when a pub/sub subscription failed (messages lost)."""
    s = Socket("a")
    await hub.join(room_group(5), s.member)
    events = [{"type": LAYER_LOST, "error": "ConnectionError('gone')"}]

    async def receive(channel, limit=1):
        if events:
            return [events.pop()]
        await asyncio.sleep(3600)

    monkeypatch.setattr(hub.layer, "receive_batch", receive)
    hub._tasks.pop(0).cancel()
    await hub._start()
    await until(lambda: s.failed)
    assert "gone" in str(s.failed[0]) and hub.groups == {}
