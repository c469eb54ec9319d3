"""Presence: two tabs are one user, ghosts expire after the TTL, both stores agree."""

from __future__ import annotations

import asyncio
import contextlib
import re

import pytest
from channels.db import database_sync_to_async

from chat import redis_client, sync
from chat.services import presence

from .conftest import nothing, recv, recv_type

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


async def test_two_tabs_are_one_user(ws, alice, bob):
    b = await ws.connect(user=bob)
    a1 = await ws.connect(user=alice, skip_greeting=False)
    await recv(a1)
    assert await recv(a1) == {"type": "user_list", "users": ["alice", "bob"]}
    assert await recv(b) == {"type": "user_join", "user": "alice"}
    a2 = await ws.connect(user=alice, skip_greeting=False)
    await recv(a2)
    assert await recv(a2) == {"type": "user_list", "users": ["alice", "bob"]}
    assert await nothing(b)  # a second tab tells the room nothing
    assert await nothing(a1)
    await a1.disconnect()
    assert await nothing(b)  # one tab left: alice is still here
    await a2.disconnect()
    assert await recv(b) == {"type": "user_leave", "user": "alice"}


async def test_a_big_rooms_user_list_is_capped_and_pages_on(ws, make_user, settings):
    settings.CHAT_PRESENCE_LIST_MAX = 2
    names = ["dora", "abe", "cleo", "bea", "eve"]
    users = [await database_sync_to_async(make_user)(name) for name in names]
    for user in users[:-1]:
        await ws.connect(user=user)
    e = await ws.connect(user=users[-1], skip_greeting=False)
    await recv(e)
    first = await recv(e)
    assert first == {"type": "user_list", "users": ["abe", "bea"], "total": 5, "has_more": True}
    await e.send_json_to({"type": "user_list", "after": "bea"})
    assert await recv_type(e, "user_list") == {
        "type": "user_list",
        "users": ["cleo", "dora"],
        "after": "bea",
        "total": 5,
        "has_more": True,
    }
    await e.send_json_to({"type": "user_list", "after": "dora"})
    last = await recv_type(e, "user_list")
    assert last == {"type": "user_list", "users": ["eve"], "after": "dora", "total": 5}
    # The same frame's rules for a bad cursor: a clear error, the socket lives.
    await e.send_json_to({"type": "user_list", "after": 7})
    error = await recv_type(e, "error")
    assert error["code"] == "invalid_payload" and error["for"] == "user_list"


async def test_newcomer_gets_list_others_get_one_join(ws, alice, bob, make_user):
    carol = await database_sync_to_async(make_user)("carol")
    a = await ws.connect(user=alice)
    b = await ws.connect(user=bob)
    assert await recv(a) == {"type": "user_join", "user": "bob"}
    c = await ws.connect(user=carol, skip_greeting=False)
    await recv(c)
    assert await recv(c) == {"type": "user_list", "users": ["alice", "bob", "carol"]}
    assert await nothing(c)  # no user_join about itself
    for conn in (a, b):
        assert await recv(conn) == {"type": "user_join", "user": "carol"}
        assert await nothing(conn)


async def test_anonymous_readers_are_not_listed(ws, alice, room):
    await database_sync_to_async(room)("lobby")
    a = await ws.connect(user=alice)
    await ws.connect()
    assert await nothing(a)
    assert await presence.store().users(await _room_id("lobby")) == ["alice"]


async def _room_id(name: str) -> int:
    from chat.models import Room

    return (await database_sync_to_async(Room.objects.get)(name=name)).pk


async def test_vanished_connection_expires_after_ttl(ws, bob, settings):
    """A replica that dies runs no disconnect(); its entries go after the TTL."""
    settings.CHAT_PRESENCE_TTL = 1.5
    b = await ws.connect(user=bob)
    room_id = await _room_id("lobby")
    # A connection of another process that will never refresh or leave:
    joined = await presence.store().join(room_id, "ghost", "specific.dead!conn")
    assert joined.users == ["bob", "ghost"]
    frame = await recv_type(b, "user_leave", timeout=4)
    assert frame == {"type": "user_leave", "user": "ghost"}
    # bob's own entry is refreshed by his process's heartbeats and stays
    await asyncio.sleep(2 * settings.CHAT_PRESENCE_TTL)
    assert await presence.store().users(room_id) == ["bob"]
    assert await nothing(b)


@pytest.fixture(params=["redis", "memory"])
async def store(request, settings):
    settings.CHAT_PRESENCE_TTL = 0.4
    if request.param == "memory":
        settings.REDIS_URL = ""
    yield presence.store()
    await redis_client.close_redis()


async def test_store_join_leave_semantics(store):
    first = await store.join(1, "alice", "c1")
    assert first.first is True and first.users == ["alice"]
    second = await store.join(1, "alice", "c2")
    assert second.first is False and second.users == ["alice"]
    other_room = await store.join(2, "alice", "c3")
    assert other_room.first is True
    assert await store.leave(1, "alice", "c1") is False
    assert await store.users(1) == ["alice"]
    assert await store.leave(1, "alice", "c2") is True
    assert await store.users(1) == []
    assert await store.leave(1, "alice", "c2") is False  # already gone: no second leave
    assert await store.counts([1, 2, 3]) == {1: 0, 2: 1, 3: 0}


async def test_store_expiry_sweep_and_refresh(store):
    await store.join(1, "alice", "a1")
    await store.join(1, "bob", "b1")
    await asyncio.sleep(0.25)
    assert await store.refresh([(1, "bob", "b1")]) == []  # bob was present
    await asyncio.sleep(0.25)
    assert await store.users(1) == ["bob"]  # alice's entry expired, not yet swept
    gone = await asyncio.gather(store.sweep(1), store.sweep(1))
    assert sorted(gone[0] + gone[1]) == ["alice"]  # announced exactly once
    assert await store.sweep(1) == []
    # a connection whose entry expired and comes back is announced again
    await asyncio.sleep(0.5)
    assert await store.refresh([(1, "bob", "b1")]) == [(1, "bob")]
    assert await store.users(1) == ["bob"]


def test_index_shows_online_counts(client, make_user, room):
    """The room index reads the same presence store the sockets write."""
    lobby = room("lobby")
    room("quiet")
    sync.call(presence.store().join, lobby.pk, "alice", "x1")
    sync.call(presence.store().join, lobby.pk, "bob", "x2")
    text = re.sub(r"<[^>]+>", " ", client.get("/chat/").content.decode())
    assert re.search(r"lobby\s+2\s+online", text) and re.search(r"quiet\s+0\s+online", text)


async def test_a_consumer_that_dies_stops_refreshing_its_entry(ws, alice):
    """No disconnect() ran, but the heartbeat must not keep a dead consumer listed."""
    a = await ws.connect(user=alice)
    assert len(presence.tracker().entries) == 1
    ws.open.remove(a)
    a.future.cancel()  # the consumer task ends abruptly, as at a crash or shutdown
    with contextlib.suppress(asyncio.CancelledError):
        await a.future
    assert presence.tracker().entries == {}
