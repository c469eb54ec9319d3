"""Presence at scale: batched frames, protocol versions, grace after a drain, shared history."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async

from chat import metrics, redis_client
from chat.services import presence

from .conftest import nothing, recv, recv_type

pytestmark = pytest.mark.django_db(transaction=True)


async def _users(make_user, *names):
    return [await database_sync_to_async(make_user)(name) for name in names]


async def _presence_frames(comm, quiet: float) -> list[dict]:
    """Every presence frame until none has come for `quiet` seconds."""
    frames = []
    # receive_nothing, not a receive that times out: that would cancel the consumer.
    while not await nothing(comm, timeout=quiet):
        frame = await recv(comm)
        assert frame["type"] == "presence", frame
        frames.append(frame)
    return frames


async def test_a_join_storm_is_a_few_presence_frames(ws, make_user, settings):
    settings.CHAT_PRESENCE_INTERVAL = 0.3
    watcher, *crowd = await _users(make_user, "watcher", *[f"u{i:02}" for i in range(12)])
    w = await ws.connect(user=watcher, version=2)
    # Protocol 2 has one frame for everyone: a newcomer may find itself among the joins.
    assert await recv(w) == {"type": "presence", "joins": ["watcher"], "leaves": [], "total": 1}
    await asyncio.gather(*(ws.connect(user=u, version=2) for u in crowd))
    frames = await _presence_frames(w, quiet=1.0)
    # Twelve joins within about one interval: one frame, two if the storm straddled a flush.
    assert 1 <= len(frames) <= 2, frames
    joined = {name for f in frames for name in f["joins"]}
    assert joined == {u.username for u in crowd}
    assert all(f["leaves"] == [] for f in frames)
    assert frames[-1]["total"] == 13
    assert metrics.PRESENCE_BATCH_NAMES.collect()[0].samples  # the histogram is exported


async def test_protocol_1_clients_get_a_frame_per_name_and_never_their_own(ws, make_user, settings):
    settings.CHAT_PRESENCE_INTERVAL = 0.3
    old, new, bea, cy = await _users(make_user, "old", "new", "bea", "cy")
    o = await ws.connect(user=old)  # no ?v=: protocol 1
    n = await ws.connect(user=new, version=2)
    assert await recv(o) == {"type": "user_join", "user": "new"}
    assert (await recv(n))["joins"] == ["new"]
    b, c = await asyncio.gather(ws.connect(user=bea), ws.connect(user=cy))
    got = [await recv(o), await recv(o)]
    assert sorted(got, key=lambda f: f["user"]) == [
        {"type": "user_join", "user": "bea"},
        {"type": "user_join", "user": "cy"},
    ]
    assert await nothing(o)
    # bea joined in the same batch as cy: she hears of cy, not of herself.
    assert await recv(b) == {"type": "user_join", "user": "cy"}
    assert await recv(c) == {"type": "user_join", "user": "bea"}
    frame = await recv(n)
    assert frame == {"type": "presence", "joins": ["bea", "cy"], "leaves": [], "total": 4}
    await c.disconnect()
    assert await recv(o) == {"type": "user_leave", "user": "cy"}
    assert await recv(n) == {"type": "presence", "joins": [], "leaves": ["cy"], "total": 3}


async def test_an_unknown_protocol_version_is_refused_with_a_reason(ws):
    comm = await ws.connect(version=3, skip_greeting=False)
    error = await recv(comm)
    assert error["type"] == "error" and error["code"] == "unsupported_version"
    assert "1, 2" in error["message"]
    assert (await comm.receive_output(timeout=3)) == {"type": "websocket.close", "code": 4400}


@pytest.mark.parametrize("code", [1012, 1006, 1001])
async def test_a_quick_return_after_a_drain_or_drop_tells_the_room_nothing(
    ws, make_user, settings, code
):
    settings.CHAT_PRESENCE_GRACE = 2.0
    watcher, alice = await _users(make_user, "watcher", "alice")
    w = await ws.connect(user=watcher, version=2)
    await recv(w)  # its own arrival
    a = await ws.connect(user=alice, version=2)
    assert (await recv(w))["joins"] == ["alice"]
    await a.disconnect(code=code)
    await ws.connect(user=alice, version=2)  # back within the grace
    assert await nothing(w, timeout=settings.CHAT_PRESENCE_GRACE + 1.5)
    room_id = await _room_id()
    assert await presence.store().users(room_id) == ["alice", "watcher"]


async def test_a_client_that_does_not_return_leaves_when_its_grace_ends(ws, make_user, settings):
    settings.CHAT_PRESENCE_GRACE = 1.0
    watcher, alice = await _users(make_user, "watcher", "alice")
    w = await ws.connect(user=watcher, version=2)
    await recv(w)  # its own arrival
    a = await ws.connect(user=alice, version=2)
    assert (await recv(w))["joins"] == ["alice"]
    await a.disconnect(code=1012)
    assert await nothing(w, timeout=0.6)  # still within the grace: still listed
    assert await presence.store().users(await _room_id()) == ["alice", "watcher"]
    frame = await recv(w, timeout=3)
    assert frame == {"type": "presence", "joins": [], "leaves": ["alice"], "total": 1}


async def test_a_normal_close_is_not_held_back(ws, make_user, settings):
    settings.CHAT_PRESENCE_GRACE = 30.0
    watcher, alice = await _users(make_user, "watcher", "alice")
    w = await ws.connect(user=watcher, version=2)
    await recv(w)  # its own arrival
    a = await ws.connect(user=alice, version=2)
    await recv(w)
    await a.disconnect(code=1000)
    assert (await recv(w, timeout=1))["leaves"] == ["alice"]


async def _room_id(name: str = "lobby") -> int:
    from chat.models import Room

    return (await database_sync_to_async(Room.objects.get)(name=name)).pk


# --- the store's batching primitives, for both stores ---------------------------------


@pytest.fixture(params=["redis", "memory"])
async def store(request, settings):
    if request.param == "memory":
        settings.REDIS_URL = ""
    yield presence.store()
    await redis_client.close_redis()


async def test_store_batches_by_room_and_reports_the_room_as_it_stands(store):
    await store.join(7, "alice", "a1")
    # The first change claims the flush; later ones, from any process, ride along.
    assert await store.mark(7, ["alice"], hold=5) is True
    await store.join(7, "bob", "b1")
    assert await store.mark(7, ["bob"], hold=5) is False
    await store.join(7, "cy", "c1")
    await store.leave(7, "cy", "c1")  # came and went within the interval
    assert await store.mark(7, ["cy"], hold=5) is False
    assert await store.mark(8, [], hold=5) is False  # nothing to say: no claim
    batch = await store.flush(7)
    assert (batch.joins, batch.leaves, batch.total) == (["alice", "bob"], ["cy"], 2)
    empty = await store.flush(7)
    assert (empty.joins, empty.leaves) == ([], [])
    assert await store.mark(7, ["alice"], hold=5) is True  # the flush gave the claim back


async def test_store_claim_lapses_so_a_dead_flusher_is_replaced(store):
    assert await store.mark(9, ["alice"], hold=0.2) is True
    assert await store.mark(9, [], hold=0.2) is False
    await asyncio.sleep(0.3)  # the claimant died without flushing
    assert await store.mark(9, [], hold=0.2) is True  # what it held is still there
    assert (await store.flush(9)).leaves == ["alice"]


async def test_store_linger_keeps_a_closed_connection_listed_for_the_grace(store):
    await store.join(3, "alice", "a1")
    await store.linger(3, "alice", "a1", grace=0.3)
    assert await store.users(3) == ["alice"]
    assert await store.sweep(3) == []
    rejoined = await store.join(3, "alice", "a2")
    assert rejoined.first is False  # back within the grace: no join to announce
    await store.leave(3, "alice", "a2")
    await store.join(3, "bob", "b1")
    await store.linger(3, "bob", "b1", grace=0.2)
    await store.linger(3, "bob", "unknown-conn", grace=5)  # not a connection: no effect
    await asyncio.sleep(0.35)
    assert await store.users(3) == []
    # alice's first connection lingered past its grace (her second one left normally).
    assert await store.sweep(3) == ["alice", "bob"]


async def test_store_a_big_room_pauses_between_frames(store, settings):
    """Presence frames of a room cost at most CHAT_PRESENCE_MAX_RATE deliveries a second."""
    settings.CHAT_PRESENCE_INTERVAL = 0.1
    settings.CHAT_PRESENCE_MAX_RATE = 10  # three online: a frame every 0.3 s at most
    for name in ("a", "b", "c"):
        await store.join(5, name, f"{name}1")
    assert await store.mark(5, ["a", "b", "c"], hold=5) is True
    batch = await store.flush(5)
    assert batch.total == 3 and batch.pause == pytest.approx(0.3)
    await store.leave(5, "c", "c1")
    assert await store.mark(5, ["c"], hold=5) is False  # paused: it waits in the diff
    await asyncio.sleep(0.35)
    assert await store.mark(5, [], hold=5) is True  # the pause is over: claimed again
    later = await store.flush(5)
    assert (later.leaves, later.total) == (["c"], 2)
    assert later.pause == pytest.approx(0.2)  # two online: 0.2 s
    settings.CHAT_PRESENCE_MAX_RATE = 0  # no bound
    await asyncio.sleep(0.25)
    assert await store.mark(5, ["a"], hold=5) is True
    assert (await store.flush(5)).pause == 0.0


async def test_a_paused_rooms_news_goes_out_when_the_pause_ends(ws, make_user, settings):
    settings.CHAT_PRESENCE_INTERVAL = 0.1
    settings.CHAT_PRESENCE_MAX_RATE = 2  # two online: a frame per second at most
    watcher, alice, bob = await _users(make_user, "watcher", "alice", "bob")
    w = await ws.connect(user=watcher, version=2)
    await recv(w)  # its own arrival; two online after alice, so the next frame pauses 1 s
    a = await ws.connect(user=alice, version=2)
    assert (await recv(w, timeout=2))["joins"] == ["alice"]
    started = asyncio.get_running_loop().time()
    await ws.connect(user=bob, version=2)
    frame = await recv(w, timeout=3)
    assert frame["joins"] == ["bob"] and frame["total"] == 3
    assert asyncio.get_running_loop().time() - started >= 0.8, "sent within the pause"
    await a.disconnect()


async def test_store_pages_names_without_reading_the_whole_room(store, settings):
    settings.CHAT_PRESENCE_TTL = 0.4
    for name in ["eve", "abe", "dora", "cleo", "bea"]:
        await store.join(4, name, f"{name}-1")
    joined = await store.join(4, "fay", "fay-1", limit=2)
    assert (joined.users, joined.total, joined.more, joined.first) == (
        ["abe", "bea"],
        6,
        True,
        True,
    )
    page = await store.page(4, "bea", 2)
    assert (page.users, page.total, page.more) == (["cleo", "dora"], 6, True)
    page = await store.page(4, "dora", 2)
    assert (page.users, page.more) == (["eve", "fay"], False)
    await store.leave(4, "cleo", "cleo-1")
    assert (await store.page(4, "bea", 2)).users == ["dora", "eve"]
    # Entries that expired (not yet swept) are not listed; the sweep drops them from the
    # index; one that comes back (a heartbeat after a stall) is listed again.
    await asyncio.sleep(0.25)
    await store.refresh([(4, "abe", "abe-1"), (4, "eve", "eve-1")])
    await asyncio.sleep(0.25)
    page = await store.page(4, None, 10)
    assert (page.users, page.total, page.more) == (["abe", "eve"], 2, False)
    assert sorted(await store.sweep(4)) == ["bea", "dora", "fay"]
    await asyncio.sleep(0.5)
    assert await store.refresh([(4, "dora", "dora-1")]) == [(4, "dora")]
    assert (await store.page(4, None, 10)).users == ["dora"]


# --- the join's history, read once per room and shared -------------------------------


def _reads(source: str, kind: str = "join") -> float:
    return metrics.SHARED_HISTORY.labels(kind, source)._value.get()


async def test_joiners_of_a_room_share_one_history_read(ws, make_user, settings):
    settings.CHAT_HISTORY_SHARE = 5.0
    users = await _users(make_user, "host", *[f"j{i}" for i in range(8)])
    h = await ws.connect(user=users[0])
    await h.send_json_to({"message": "before"})
    await recv_type(h, "chat_message")
    read, shared = _reads("read"), _reads("shared")
    joined = await asyncio.gather(
        *(ws.connect(user=u, skip_greeting=False, version=2) for u in users[1:])
    )
    for comm in joined:
        history = await recv(comm)
        assert [m["message"] for m in history["messages"]] == ["before"]
    assert _reads("read") - read == 1
    assert _reads("shared") - shared == 7


async def test_a_new_message_ends_the_sharing(ws, make_user, settings):
    """A joiner after a message must find it in its history, shared read or not."""
    settings.CHAT_HISTORY_SHARE = 60.0
    host, late, edit = await _users(make_user, "host", "late", "edit")
    h = await ws.connect(user=host)
    await h.send_json_to({"message": "one"})
    first = await recv_type(h, "chat_message")
    await h.send_json_to({"message": "two"})
    await recv_type(h, "chat_message")
    lc = await ws.connect(user=late, skip_greeting=False)
    assert [m["message"] for m in (await recv(lc))["messages"]] == ["one", "two"]
    await h.send_json_to({"type": "edit_message", "id": first["id"], "message": "uno"})
    await recv_type(h, "message_edited")
    ec = await ws.connect(user=edit, skip_greeting=False)
    assert [m["message"] for m in (await recv(ec))["messages"]] == ["uno", "two"]


async def test_resumes_from_the_same_id_share_one_read_until_the_room_changes(
    ws, make_user, settings
):
    settings.CHAT_HISTORY_SHARE = 60.0
    host, *movers = await _users(make_user, "host", "m1", "m2", "m3", "m4")
    h = await ws.connect(user=host)
    await h.send_json_to({"message": "seen"})
    seen = (await recv_type(h, "chat_message"))["id"]
    await h.send_json_to({"message": "missed"})
    await recv_type(h, "chat_message")
    read, shared = _reads("read", "resume"), _reads("shared", "resume")
    back = [await ws.connect(user=u, version=2) for u in movers[:3]]
    for comm in back:
        await comm.send_json_to({"type": "resume", "after": seen})
    for comm in back:
        frame = await recv_type(comm, "history")
        assert frame["reason"] == "resume"
        assert [m["message"] for m in frame["messages"]] == ["missed"]
    assert (_reads("read", "resume") - read, _reads("shared", "resume") - shared) == (1, 2)
    # A reaction changes what a resume returns: the next one reads anew and sees it.
    missed = frame["messages"][0]["id"]
    await h.send_json_to({"type": "reaction", "id": missed, "emoji": "👍"})
    await recv_type(h, "reaction")
    late = await ws.connect(user=movers[3], version=2)
    await late.send_json_to({"type": "resume", "after": seen})
    frame = await recv_type(late, "history")
    assert frame["messages"][0]["reactions"] == {"👍": ["host"]}
    assert _reads("read", "resume") - read == 2
