"""Storing a room message: ids committed in allocation order, nothing half-stored."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from chat.errors import ChatError
from chat.models import Message, Room
from chat.services import messages

pytestmark = pytest.mark.django_db(transaction=True)


def store(room: Room, user, out: list[dict]) -> None:
    try:
        out.append(messages.store_message(room, user, "after the lock"))
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
    assert stored[0]["timestamp"] == messages.iso(row.created_at)


def test_ids_rise_with_each_store_and_history_returns_what_was_stored(make_user, room):
    lobby, alice = room("lobby"), make_user("alice")
    payloads = [messages.store_message(lobby, alice, f"m{n} ✓") for n in range(5)]
    ids = [p["id"] for p in payloads]
    assert ids == sorted(ids) and len(set(ids)) == 5
    page, has_more = messages.page(lobby, limit=10)
    assert not has_more
    assert [(m["id"], m["message"], m["user"]) for m in page] == [
        (p["id"], p["message"], "alice") for p in payloads
    ]
    assert [m["timestamp"] for m in page] == [p["timestamp"] for p in payloads]


def test_a_room_that_is_gone_is_a_clear_error_and_stores_nothing(make_user, room):
    lobby, alice = room("lobby"), make_user("alice")
    Room.objects.filter(pk=lobby.pk).delete()
    with pytest.raises(ChatError) as caught:
        messages.store_message(lobby, alice, "into the void")
    assert caught.value.code == "not_found" and "no longer exists" in str(caught.value)
    assert not Message.objects.exists()
