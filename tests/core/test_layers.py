"""Channel-layer drops are counted and logged, never silent."""

from __future__ import annotations

import logging
import os

import pytest

from chat import metrics
from chat.layers import CountingRedisChannelLayer


def drops() -> float:
    return metrics.LAYER_DROPS._value.get()


async def test_over_capacity_drops_are_counted_and_logged(caplog):
    layer = CountingRedisChannelLayer(
        hosts=[{"address": os.environ["REDIS_URL"]}], capacity=2, prefix="droptest"
    )
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    before = drops()
    with caplog.at_level(logging.WARNING, logger="chat.layers"):
        for i in range(5):
            await layer.group_send("room", {"type": "chat.frame", "n": i})
    assert drops() - before == 3
    assert sum("dropped a message" in r.getMessage() for r in caplog.records) == 3
    received = [(await layer.receive(channel))["n"] for _ in range(2)]
    assert received == [0, 1]  # the first two fitted; nothing else is pretended
    await layer.flush()
    await layer.close_pools()


async def test_frames_cross_the_layer_serialized_once():
    """Consumers forward `text` as is: a room of N costs one json.dumps, not N."""
    from channels.layers import get_channel_layer

    from chat.names import room_group
    from chat.services import delivery

    layer = get_channel_layer()
    channels = [await layer.new_channel() for _ in range(3)]
    for channel in channels:
        await layer.group_add(room_group(7), channel)
    frame = {"type": "chat_message", "id": 1, "message": "héllo"}
    await delivery.to_room(7, frame, skip_channel=channels[0])
    events = [await layer.receive(channel) for channel in channels]
    for event in events:
        assert event["type"] == "chat.frame" and event["kind"] == "chat_message"
        assert event["text"] == '{"type":"chat_message","id":1,"message":"héllo"}'
        assert event["skip_channel"] == channels[0]  # each consumer skips itself
    await layer.close_pools()


@pytest.mark.django_db(transaction=True)
async def test_relayed_frames_skip_the_shared_sync_thread(ws, make_user, monkeypatch):
    """channels hops to the one sync thread before every handler; relays must not."""
    import channels.consumer
    from channels.db import database_sync_to_async

    from chat.models import Room
    from chat.services import delivery

    hops = []
    original = channels.consumer.aclose_old_connections

    async def counting():
        hops.append(1)
        await original()

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counting)
    alice = await database_sync_to_async(make_user)("alice")
    comm = await ws.connect(user=alice)
    lobby = await database_sync_to_async(Room.objects.get)(name="lobby")
    hops.clear()
    for n in range(5):
        await delivery.to_room(lobby.pk, {"type": "chat_message", "id": n})
    for n in range(5):
        assert (await comm.receive_json_from(timeout=3))["id"] == n
    assert hops == []
    await comm.send_json_to({"type": "ping"})  # client frames still get the hop
    assert (await comm.receive_json_from(timeout=3))["type"] == "pong"
    assert hops == [1]
