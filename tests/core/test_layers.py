"""Channel-layer drops are counted and logged, never silent; pub/sub joins are confirmed."""

from __future__ import annotations

import asyncio
import logging
import os
import time

import pytest
import redis.asyncio
from redis.exceptions import TimeoutError as RedisTimeoutError

from chat import metrics
from realtime.layers import CountingRedisChannelLayer, SignallingPubSubChannelLayer


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
async def test_frames_skip_the_shared_sync_thread(ws, make_user, monkeypatch):
    """channels hops to the one sync thread before every handler (to close stale
    connections); neither relays nor client frames may: ORM calls do that themselves,
    inside database_sync_to_async."""
    import channels.consumer
    import channels.generic.websocket
    from channels.db import database_sync_to_async

    from chat.models import Room
    from chat.services import delivery

    hops = []
    original = channels.consumer.aclose_old_connections

    async def counting():
        hops.append(1)
        await original()

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counting)
    # channels' websocket_disconnect does it too: a drain is thousands of them.
    monkeypatch.setattr(channels.generic.websocket, "aclose_old_connections", counting)
    alice = await database_sync_to_async(make_user)("alice")
    comm = await ws.connect(user=alice)
    lobby = await database_sync_to_async(Room.objects.get)(name="lobby")
    hops.clear()
    for n in range(5):
        await delivery.to_room(lobby.pk, {"type": "chat_message", "id": n})
    for n in range(5):
        assert (await comm.receive_json_from(timeout=3))["id"] == n
    await comm.send_json_to({"type": "ping"})
    assert (await comm.receive_json_from(timeout=3))["type"] == "pong"
    await comm.send_json_to({"type": "chat_message", "message": "hi"})
    assert (await comm.receive_json_from(timeout=3))["message"] == "hi"
    await comm.send_json_to({"type": "history", "limit": 5})  # reads through the ORM
    frame = await comm.receive_json_from(timeout=3)
    assert frame["type"] == "history" and [m["message"] for m in frame["messages"]] == ["hi"]
    await comm.disconnect()
    assert hops == []


# --- pub/sub: a join has taken effect when group_add returns ------------------------------


@pytest.fixture
async def pubsub_layer():
    layer = SignallingPubSubChannelLayer(hosts=[os.environ["REDIS_URL"]], prefix="subtest")
    admin = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"])
    # Open the subscription connection first: redis-py waits for replies while it
    # connects, which would make any later group_add wait on a paused Redis anyway.
    warm = await layer.new_channel()
    await layer.group_add("warm", warm)
    yield layer, admin
    await admin.execute_command("CLIENT", "UNPAUSE")
    await admin.aclose()
    await layer.flush()


async def test_pubsub_group_add_returns_only_once_redis_has_subscribed(pubsub_layer):
    """channels_redis returns once SUBSCRIBE is written; a message published before Redis
    processed it would miss a member whose history was already read."""
    layer, admin = pubsub_layer
    channel = await layer.new_channel()
    await admin.execute_command("CLIENT", "PAUSE", "400", "ALL")
    started = time.monotonic()
    await layer.group_add("room", channel)
    assert time.monotonic() - started >= 0.3, "returned before Redis ran the SUBSCRIBE"
    await layer.group_send("room", {"type": "chat.frame", "n": 1})
    assert await asyncio.wait_for(layer.receive(channel), 3) == {"type": "chat.frame", "n": 1}


async def test_pubsub_unconfirmed_subscribe_fails_the_join_clearly_and_recovers(pubsub_layer):
    layer, admin = pubsub_layer
    for shard in layer._get_layer()._shards:
        shard.confirm_timeout = 0.2
    channel = await layer.new_channel()
    await admin.execute_command("CLIENT", "PAUSE", "1000", "ALL")
    with pytest.raises(RedisTimeoutError, match=r"did not confirm SUBSCRIBE .* within 0\.2 s"):
        await layer.group_add("room", channel)
    await admin.execute_command("CLIENT", "UNPAUSE")
    await layer.group_add("room", channel)  # the same join, once Redis answers
    await layer.group_send("room", {"type": "chat.frame", "n": 2})
    assert await asyncio.wait_for(layer.receive(channel), 3) == {"type": "chat.frame", "n": 2}


# --- the hub's batched receive ------------------------------------------------------------


@pytest.mark.parametrize("bzmpop", [True, False], ids=["redis7", "before-redis7"])
async def test_receive_batch_takes_every_waiting_message_in_order_then_waits(bzmpop):
    layer = CountingRedisChannelLayer(
        hosts=[{"address": os.environ["REDIS_URL"]}], capacity=50, prefix="batchtest"
    )
    layer._bzmpop = bzmpop  # False: the path for a Redis without BZMPOP (< 7.0)
    channel = await layer.new_batch_channel()
    await layer.group_add("room", channel)
    for n in range(5):
        await layer.group_send("room", {"type": "chat.frame", "n": n})
    assert [m["n"] for m in await layer.receive_batch(channel)] == [0, 1, 2, 3, 4]
    waiting = asyncio.ensure_future(layer.receive_batch(channel))
    await asyncio.sleep(0.2)
    assert not waiting.done(), "returned with nothing to return"
    await layer.group_send("room", {"type": "chat.frame", "n": 5})
    assert [m["n"] for m in await asyncio.wait_for(waiting, 5)] == [5]
    for n in range(6, 9):
        await layer.group_send("room", {"type": "chat.frame", "n": n})
    assert [m["n"] for m in await layer.receive_batch(channel, limit=2)] == [6, 7]
    assert [m["n"] for m in await layer.receive_batch(channel, limit=2)] == [8]
    await layer.flush()
    await layer.close_pools()


# --- group_send in one script -------------------------------------------------------------


def _layer(prefix: str, **config) -> CountingRedisChannelLayer:
    return CountingRedisChannelLayer(
        hosts=[{"address": os.environ["REDIS_URL"]}], prefix=prefix, **config
    )


async def _calls(admin, command: str) -> int:
    stats = await admin.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_group_send_is_one_cached_script_call():
    """channels_redis's group_send takes four round trips and sends its script in full."""
    layer = _layer("onetrip", capacity=50)
    admin = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"])
    channels = [await layer.new_batch_channel() for _ in range(3)]
    for channel in channels:
        await layer.group_add("room", channel)
    await layer.group_send("room", {"type": "chat.frame", "n": 0})  # loads the script
    before = {c: await _calls(admin, c) for c in ("evalsha", "eval", "zrange", "zremrangebyscore")}
    for n in range(1, 4):
        await layer.group_send("room", {"type": "chat.frame", "n": n})
    after = {c: await _calls(admin, c) for c in before}
    # commandstats counts the script's own calls too: those run inside Redis, not as
    # round trips; only EVALSHA may arrive from the client.
    assert after["evalsha"] - before["evalsha"] == 3
    assert after["eval"] == before["eval"]
    for channel in channels:
        assert [m["n"] for m in await layer.receive_batch(channel)] == [0, 1, 2, 3]
    await admin.aclose()
    await layer.flush()
    await layer.close_pools()


async def test_group_send_forgets_stale_members_and_expired_messages():
    layer = _layer("stale", capacity=50, expiry=60, group_expiry=3600)
    admin = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"])
    live, gone = await layer.new_batch_channel(), await layer.new_batch_channel()
    await layer.group_add("room", live)
    await layer.group_add("room", gone)
    group_key = layer._group_key("room")
    await admin.zadd(group_key, {gone: time.time() - 7200})  # joined two hours ago
    old = layer.serialize({"type": "chat.frame", "n": "old"})
    await admin.zadd(layer.prefix + live, {old: time.time() - 120})  # queued 2 min ago
    await layer.group_send("room", {"type": "chat.frame", "n": 1})
    assert [m["n"] for m in await layer.receive_batch(live)] == [1]
    assert [m.decode() for m in await admin.zrange(group_key, 0, -1)] == [live]
    assert await admin.zcard(layer.prefix + gone) == 0
    await admin.aclose()
    await layer.flush()
    await layer.close_pools()


async def test_group_send_drops_only_for_full_queues_and_counts_them(caplog):
    layer = _layer("fullq", capacity=2)
    slow, fast = await layer.new_batch_channel(), await layer.new_batch_channel()
    await layer.group_add("room", slow)
    await layer.group_add("room", fast)
    before = drops()
    with caplog.at_level(logging.WARNING, logger="chat.layers"):
        for n in range(3):
            await layer.group_send("room", {"type": "chat.frame", "n": n})
            assert [m["n"] for m in await layer.receive_batch(fast)] == [n]
    assert drops() - before == 1
    assert [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()] == [
        "channel layer dropped a message for 1 of 2 processes in group room (queues at capacity)"
    ]
    assert [m["n"] for m in await layer.receive_batch(slow)] == [0, 1]
    await layer.flush()
    await layer.close_pools()


async def test_group_send_reaches_process_local_and_process_channels_alike():
    """A consumer's own channel ("…!…") needs its name inside the message: sent apart."""
    layer = _layer("mixed", capacity=50)
    local, process = await layer.new_channel(), await layer.new_batch_channel()
    await layer.group_add("room", local)
    await layer.group_add("room", process)
    await layer.group_send("room", {"type": "chat.frame", "n": 1})
    assert await asyncio.wait_for(layer.receive(local), 3) == {"type": "chat.frame", "n": 1}
    assert [m["n"] for m in await layer.receive_batch(process)] == [1]
    await layer.flush()
    await layer.close_pools()


async def test_group_send_with_per_channel_capacities_honours_each_capacity():
    layer = _layer("capped", capacity=50, channel_capacity={"chat.process.*": 1})
    channel = await layer.new_batch_channel()
    await layer.group_add("room", channel)
    for n in range(3):
        await layer.group_send("room", {"type": "chat.frame", "n": n})
    assert [m["n"] for m in await layer.receive_batch(channel)] == [0]
    await layer.flush()
    await layer.close_pools()


async def test_receive_batch_is_one_round_trip_waiting_or_not():
    layer = _layer("onepop", capacity=50)
    admin = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"])
    channel = await layer.new_batch_channel()
    await layer.group_add("room", channel)
    await layer.group_send("room", {"type": "chat.frame", "n": 0})
    before = {c: await _calls(admin, c) for c in ("bzmpop", "zpopmin", "bzpopmin")}
    assert [m["n"] for m in await layer.receive_batch(channel)] == [0]  # one waited
    waiting = asyncio.ensure_future(layer.receive_batch(channel))  # nothing waits
    await asyncio.sleep(0.2)
    await layer.group_send("room", {"type": "chat.frame", "n": 1})
    assert [m["n"] for m in await asyncio.wait_for(waiting, 5)] == [1]
    after = {c: await _calls(admin, c) for c in before}
    assert after["bzmpop"] - before["bzmpop"] == 2
    assert (after["zpopmin"], after["bzpopmin"]) == (before["zpopmin"], before["bzpopmin"])
    await admin.aclose()
    await layer.flush()
    await layer.close_pools()


async def test_group_changes_go_in_one_pipeline_in_order():
    layer = CountingRedisChannelLayer(hosts=[os.environ["REDIS_URL"]], prefix="chat-test-gc")
    try:
        await layer.group_changes(
            [
                ("add", "g1", "c1"),
                ("add", "g1", "c2"),
                ("add", "g2", "c1"),
                ("discard", "g1", "c1"),
                ("discard", "g3", "c9"),  # not a member: nothing to do, no error
            ]
        )
        connection = layer.connection(0)
        g1 = sorted(m.decode() for m in await connection.zrange(layer._group_key("g1"), 0, -1))
        g2 = [m.decode() for m in await connection.zrange(layer._group_key("g2"), 0, -1)]
        assert (g1, g2) == (["c2"], ["c1"])
        assert 0 < await connection.ttl(layer._group_key("g1")) <= layer.group_expiry
    finally:
        await layer.flush()
        await layer.close_pools()


async def test_the_hub_batches_a_burst_of_group_changes(monkeypatch):
    """Sockets joining (each with an inbox group of its own) at once: a few pipelines,
    not a round trip (and a pool connection) each."""
    from chat.services import fanout

    layer = CountingRedisChannelLayer(hosts=[os.environ["REDIS_URL"]], prefix="chat-test-hub")
    batches: list[int] = []
    original = layer.group_changes

    async def counted(changes):
        batches.append(len(changes))
        await original(changes)

    monkeypatch.setattr(layer, "group_changes", counted)
    hub = fanout.Hub(layer)
    members = [
        fanout.Member(f"c{i}", f"u{i}", send=None, fail=None)  # type: ignore[arg-type]
        for i in range(300)
    ]
    try:
        await asyncio.gather(*(hub.join(f"inbox.{i}", m) for i, m in enumerate(members)))
        assert sum(batches) == 300 and len(batches) <= 3, batches
        await asyncio.gather(*(hub.leave(f"inbox.{i}", m) for i, m in enumerate(members)))
        assert sum(batches) == 600 and len(batches) <= 6, batches
        assert hub.groups == {}
    finally:
        await hub.close()
        await layer.flush()
        await layer.close_pools()


def _shard_url(db: int) -> str:
    """The test Redis, database `db`."""
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(os.environ["REDIS_URL"])._replace(path=f"/{db}"))


async def test_group_send_over_shards_reaches_every_member_and_counts_full_queues(caplog):
    """Two shards (two databases of one Redis stand in for two servers): the group lives
    on one, its members' queues on both; each shard gets its script, and a full queue is
    counted here, not left to the library's INFO line."""
    layer = CountingRedisChannelLayer(
        hosts=[{"address": _shard_url(1)}, {"address": _shard_url(2)}],
        prefix="sharded",
        capacity=2,
    )
    channels = [await layer.new_batch_channel(n % 2) for n in range(8)]
    # Each channel is on the shard it was asked for.
    assert [layer.consistent_hash(c) for c in channels] == [n % 2 for n in range(8)]
    for channel in channels:
        await layer.group_add("room", channel)
    before = drops()
    with caplog.at_level(logging.WARNING, logger="chat.layers"):
        for n in range(3):
            await layer.group_send("room", {"type": "chat.frame", "n": n})
    assert drops() - before == len(channels)  # the third found every queue full
    assert any("dropped a message for 8 of 8" in r.getMessage() for r in caplog.records)
    for channel in channels:
        assert [m["n"] for m in await layer.receive_batch(channel)] == [0, 1]
    await layer.flush()
    await layer.close_pools()


async def test_group_send_fast_path_off_is_the_librarys_own(settings):
    """CHAT_FAST_PATHS_OFF=group_send_script: what make bench measures against."""
    settings.CHAT_FAST_PATHS_OFF = frozenset({"group_send_script"})
    layer = _layer("libpath", capacity=50)
    admin = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"])
    channel = await layer.new_batch_channel()
    await layer.group_add("room", channel)
    before = await _calls(admin, "zrange")
    await layer.group_send("room", {"type": "chat.frame", "n": 1})
    assert await _calls(admin, "zrange") == before + 1  # the library reads the group itself
    assert [m["n"] for m in await layer.receive_batch(channel)] == [1]
    await admin.aclose()
    await layer.flush()
    await layer.close_pools()


async def test_the_core_layers_pool_is_bounded_and_a_burst_waits_for_it():
    """channels_redis's pool opens a connection for every command in flight; with
    `max_connections` (CHAT_LAYER_MAX_CONNECTIONS) a burst waits for a few instead."""
    admin = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"])
    before = int((await admin.info("clients"))["connected_clients"])
    layer = CountingRedisChannelLayer(
        hosts=[{"address": os.environ["REDIS_URL"], "max_connections": 3, "pool_timeout": 5}],
        prefix="boundtest",
    )
    client = layer.connection(0)
    started = asyncio.get_running_loop().time()
    # Nine commands that each hold a connection for 0.2 s: three at a time.
    await asyncio.gather(*(client.blpop(["chat:test:none"], timeout=0.2) for _ in range(9)))
    assert asyncio.get_running_loop().time() - started >= 0.55
    assert int((await admin.info("clients"))["connected_clients"]) - before <= 3
    channel = await layer.new_batch_channel()
    await layer.group_add("room", channel)
    await layer.group_send("room", {"type": "x", "n": 1})
    assert [m["n"] for m in await layer.receive_batch(channel)] == [1]
    await layer.flush()
    await layer.close_pools()
    await admin.aclose()
