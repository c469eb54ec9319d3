"""Storing a room message: ids committed in allocation order, nothing half-stored."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError, connection, connections

from chat import pg_client, sync
from chat.models import Message, Room
from chat.protocol import frames
from chat.protocol.errors import ChatError
from chat.services import messages

pytestmark = pytest.mark.django_db(transaction=True)


def store(room: Room, user, out: list[dict]) -> None:
    try:
        out.append(messages.store.store_message(room, user, "after the lock"))
    finally:
        connection.close()  # this thread's own connection


def test_a_store_waits_for_the_room_lock_so_ids_commit_in_order(make_user, room):
    """While another transaction holds the room row, no id may be taken and committed
    around it: a client resuming "after id N" would otherwise skip a smaller id."""
    lobby, alice = room("lobby"), make_user("alice")
    blocker = connection.get_new_connection(connection.get_connection_params())
    stored: list[dict] = []
    try:
        # NO KEY UPDATE: what a rename would take. It does not block the key-share lock
        # that an INSERT's foreign-key check takes, so only the store's own lock waits.
        lock = f'SELECT id FROM "{Room._meta.db_table}" WHERE id = %s FOR NO KEY UPDATE'
        blocker.execute(lock, [lobby.pk])
        worker = threading.Thread(target=store, args=(lobby, alice, stored))
        worker.start()
        worker.join(0.5)
        assert worker.is_alive() and not stored, "stored while the room row was locked"
        assert not Message.objects.exists()
    finally:
        blocker.commit()
        blocker.close()
    worker.join(10)
    assert stored and stored[0]["message"] == "after the lock"
    row = Message.objects.get()
    assert (row.id, row.room_id, row.user_id) == (stored[0]["id"], lobby.pk, alice.pk)
    assert stored[0]["timestamp"] == frames.iso(row.created_at)


def test_ids_rise_with_each_store_and_history_returns_what_was_stored(make_user, room):
    lobby, alice = room("lobby"), make_user("alice")
    payloads = [messages.store.store_message(lobby, alice, f"m{n} ✓") for n in range(5)]
    ids = [p["id"] for p in payloads]
    assert ids == sorted(ids) and len(set(ids)) == 5
    page, has_more = messages.store.page(lobby, limit=10)
    assert not has_more
    assert [(m["id"], m["message"], m["user"]) for m in page] == [
        (p["id"], p["message"], "alice") for p in payloads
    ]
    assert [m["timestamp"] for m in page] == [p["timestamp"] for p in payloads]


def test_a_room_that_is_gone_is_a_clear_error_and_stores_nothing(make_user, room):
    lobby, alice = room("lobby"), make_user("alice")
    Room.objects.filter(pk=lobby.pk).delete()
    with pytest.raises(ChatError) as caught:
        messages.store.store_message(lobby, alice, "into the void")
    assert caught.value.code == "not_found" and "no longer exists" in str(caught.value)
    assert not Message.objects.exists()


# --- the server loop's own connection (chat.pg_client) -----------------------------------


@pytest.fixture
async def own_connection(settings, monkeypatch):
    """Persistent connections on, as in production (the test settings turn them off);
    every connection closed afterwards, so that the test database can be dropped."""
    monkeypatch.setitem(settings.DATABASES["default"], "CONN_MAX_AGE", 60)
    settings.CHAT_PG_POOL_MAX_SIZE = 1  # the statements below share one connection
    assert pg_client.enabled()
    yield
    await pg_client.close()
    await sync_to_async(connections.close_all)()


async def _backend_pid() -> int:
    return (await pg_client.fetchone("SELECT pg_backend_pid()", []))[0]


def _blocker_locking(room: Room):
    blocker = connection.get_new_connection(connection.get_connection_params())
    lock = f'SELECT id FROM "{Room._meta.db_table}" WHERE id = %s FOR NO KEY UPDATE'
    blocker.execute(lock, [room.pk])
    return blocker


async def test_the_loop_store_waits_for_the_room_lock_too(make_user, room, own_connection):
    lobby, alice = await sync_to_async(room)("lobby"), await sync_to_async(make_user)("alice")
    blocker = await sync_to_async(_blocker_locking)(lobby)
    try:
        storing = asyncio.ensure_future(messages.store.store_message_async(lobby, alice, "queued"))
        await asyncio.sleep(0.5)
        assert not storing.done(), "stored while the room row was locked"
        assert not await Message.objects.aexists()
    finally:
        await sync_to_async(blocker.commit)()
        await sync_to_async(blocker.close)()
    stored = await asyncio.wait_for(storing, 10)
    row = await Message.objects.aget()
    assert (row.id, row.room_id, row.user_id, row.body) == (
        stored["id"],
        lobby.pk,
        alice.pk,
        "queued",
    )
    assert stored["timestamp"] == frames.iso(row.created_at)


async def test_the_loop_store_of_a_gone_room_is_a_clear_error(make_user, room, own_connection):
    lobby, alice = await sync_to_async(room)("lobby"), await sync_to_async(make_user)("alice")
    await Room.objects.filter(pk=lobby.pk).adelete()
    with pytest.raises(ChatError) as caught:
        await messages.store.store_message_async(lobby, alice, "into the void")
    assert caught.value.code == "not_found"
    assert not await Message.objects.aexists()


async def test_a_cancelled_store_is_cancelled_whole_and_the_connection_serves_on(
    make_user, room, own_connection
):
    """A caller cancelled mid-statement must not leave the connection mid-protocol, nor
    a statement half done: it is cancelled in the server too."""
    lobby, alice = await sync_to_async(room)("lobby"), await sync_to_async(make_user)("alice")
    blocker = await sync_to_async(_blocker_locking)(lobby)
    storing = asyncio.ensure_future(messages.store.store_message_async(lobby, alice, "first"))
    await asyncio.sleep(0.3)
    assert not storing.done(), "stored while the room row was locked"
    storing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await storing
    await sync_to_async(blocker.commit)()
    await sync_to_async(blocker.close)()
    second = await asyncio.wait_for(messages.store.store_message_async(lobby, alice, "second"), 10)
    assert [m.body async for m in Message.objects.order_by("id")] == ["second"]
    assert second["message"] == "second"


async def test_a_connection_cut_mid_statement_fails_one_store_clearly_then_reconnects(
    make_user, room, own_connection
):
    """Cut while the store waits in the server (here for the room's lock): that store
    fails as Django's OperationalError (consumers answer `unavailable`), nothing half
    done is stored, and the next store runs on a new connection. (A connection cut while
    idle in the pool is found before use: tests/core/test_pg_pool.py.)"""
    lobby, alice = await sync_to_async(room)("lobby"), await sync_to_async(make_user)("alice")
    first = await _backend_pid()
    blocker = await sync_to_async(_blocker_locking)(lobby)
    try:
        storing = asyncio.ensure_future(
            messages.store.store_message_async(lobby, alice, "lost with the connection")
        )
        await asyncio.sleep(0.3)
        assert not storing.done()
        await sync_to_async(_terminate)(first)
        with pytest.raises(OperationalError):
            await asyncio.wait_for(storing, 10)
    finally:
        await sync_to_async(blocker.commit)()
        await sync_to_async(blocker.close)()
    stored = await messages.store.store_message_async(lobby, alice, "on a new connection")
    assert await _backend_pid() != first
    assert [m.body async for m in Message.objects.all()] == [stored["message"]]


async def test_an_idle_connection_is_checked_and_replaced_before_use(
    make_user, room, own_connection, monkeypatch
):
    lobby, alice = await sync_to_async(room)("lobby"), await sync_to_async(make_user)("alice")
    monkeypatch.setattr(pg_client, "CHECK_AFTER_IDLE", 0.0)
    first = await _backend_pid()
    await sync_to_async(_terminate)(first)
    stored = await messages.store.store_message_async(lobby, alice, "after a restart")
    assert await _backend_pid() != first
    assert [m.body async for m in Message.objects.all()] == [stored["message"]]


async def test_an_old_connection_is_replaced_only_once_its_statements_are_done(
    make_user, room, own_connection, settings, monkeypatch
):
    """CONN_MAX_AGE rotates the connection; a store running on it must not be cut."""
    monkeypatch.setitem(settings.DATABASES["default"], "CONN_MAX_AGE", 0.2)
    lobby, alice = await sync_to_async(room)("lobby"), await sync_to_async(make_user)("alice")
    first = await _backend_pid()
    blocker = await sync_to_async(_blocker_locking)(lobby)
    running = asyncio.ensure_future(messages.store.store_message_async(lobby, alice, "in flight"))
    await asyncio.sleep(0.4)  # older than CONN_MAX_AGE, with a statement running
    after = asyncio.ensure_future(messages.store.store_message_async(lobby, alice, "after"))
    await asyncio.sleep(0.2)
    assert not running.done() and not after.done()
    await sync_to_async(blocker.commit)()
    await sync_to_async(blocker.close)()
    await asyncio.wait_for(asyncio.gather(running, after), 10)
    assert [m.body async for m in Message.objects.order_by("id")] == ["in flight", "after"]
    assert await _backend_pid() != first


def _terminate(pid: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    connection.close()


def test_one_off_loops_use_the_orm_connection(db, settings, monkeypatch):
    """A WSGI view or a command gets a loop per call: no connection is opened for it."""
    # Persistent connections on, as in production: otherwise the loop's connection is
    # off anyway (the test settings' CONN_MAX_AGE=0) and the flag would go unchecked.
    monkeypatch.setitem(settings.DATABASES["default"], "CONN_MAX_AGE", 60)
    assert pg_client.enabled()

    async def which() -> bool:
        return pg_client.enabled()

    assert sync.call(which) is False
    assert pg_client.one_off_loop.get() is False  # async_to_sync copies context back
    assert pg_client.enabled()
