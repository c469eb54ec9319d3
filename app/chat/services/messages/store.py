"""The database side of messages: rows of Message, PrivateMessage and Reaction, and pages.

Plain synchronous ORM functions (the service runs them with database_sync_to_async),
except the hot path's insert, which the server's event loop runs on its own PostgreSQL
connection (chat/pg_client.py). Each write returns the frame its change becomes, so
what is delivered is exactly what was committed, with its stored id. Lookups that fail
(no such room, message or user) raise ChatError; so does the author-or-staff check,
which is made on the locked row, inside the transaction that changes it.
"""

from __future__ import annotations

import functools
from datetime import datetime

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from ... import metrics, pg_client
from ...models import Message, PrivateMessage, Reaction, Room
from ...protocol import frames
from ...protocol.errors import ChatError
from .. import delivery


def store_message(room: Room, user, body: str) -> dict:
    """Store a room message with ids committed in the order they are allocated.

    The room row is locked while the id is taken and until the commit, so a client
    resuming "after id N" can never miss a smaller id committed later. On PostgreSQL that
    is one statement (lock, insert, commit: one round trip); elsewhere (SQLite, whose
    writers are serialized anyway) an ORM transaction. The server's event loop runs the
    same statement without this thread (`store_message_async`).
    """
    if connection.vendor == "postgresql":
        created_at = timezone.now()
        with connection.cursor() as cursor:
            cursor.execute(_insert_in_room_order_sql(), [room.pk, user.pk, body, created_at])
            row = cursor.fetchone()
        return _stored(row, room, user, body, created_at)
    with transaction.atomic():
        Room.objects.select_for_update().only("id").get(pk=room.pk)
        msg = Message.objects.create(room=room, user=user, body=body)
    return _stored((msg.id,), room, user, body, msg.created_at)


async def store_message_async(room: Room, user, body: str) -> dict:
    """`store_message`, on the event loop's own connection where there is one
    (chat.pg_client), else on the ORM's database thread."""
    if not pg_client.enabled():
        return await database_sync_to_async(store_message)(room, user, body)
    created_at = timezone.now()
    row = await pg_client.fetchone(
        _insert_in_room_order_sql(), [room.pk, user.pk, body, created_at]
    )
    return _stored(row, room, user, body, created_at)


@functools.cache
def _insert_in_room_order_sql() -> str:
    # Autocommit: the statement is its own transaction (inside an outer one, that one's).
    rooms, messages = Room._meta, Message._meta
    column = {f.name: f.column for f in messages.concrete_fields}
    return (
        f'WITH locked AS (SELECT "id" FROM "{rooms.db_table}" WHERE "id" = %s FOR UPDATE) '
        f'INSERT INTO "{messages.db_table}" '
        f'("{column["room"]}", "{column["user"]}", "{column["body"]}", "{column["created_at"]}") '
        'SELECT "id", %s, %s, %s FROM locked RETURNING "id"'
    )


def _stored(row: tuple | None, room: Room, user, body: str, created_at: datetime) -> dict:
    if row is None:  # the room's row is gone: nothing was inserted
        raise ChatError("not_found", f"Room {room.name!r} no longer exists.")
    metrics.MESSAGES_STORED.labels("room").inc()
    msg = Message(id=row[0], room=room, user=user, body=body, created_at=created_at)
    return frames.chat_message_frame(msg, room.name, user.username)


def _reactions(message_ids: list[int]) -> dict[int, dict[str, list[str]]]:
    out: dict[int, dict[str, list[str]]] = {}
    rows = (
        Reaction.objects.filter(message_id__in=message_ids)
        .order_by("id")
        .values_list("message_id", "emoji", "user__username")
    )
    for message_id, emoji, username in rows:
        out.setdefault(message_id, {}).setdefault(emoji, []).append(username)
    return out


def page(
    room: Room, *, before: int | None = None, after: int | None = None, limit: int
) -> tuple[list[dict], bool]:
    """Up to `limit` live messages, oldest first, and whether more lie beyond the page.

    `before` pages back from an id (or from the newest); `after` pages forward from one.
    """
    rows = Message.objects.filter(room=room, deleted_at__isnull=True).select_related("user")
    if after is not None:
        rows = list(rows.filter(id__gt=after).order_by("id")[: limit + 1])
        has_more = len(rows) > limit
        rows = rows[:limit]
    else:
        if before is not None:
            rows = rows.filter(id__lt=before)
        rows = list(rows.order_by("-id")[: limit + 1])
        has_more = len(rows) > limit
        rows = rows[:limit][::-1]
    reactions = _reactions([m.id for m in rows])
    payloads = [
        frames.chat_message_frame(m, room.name, m.user.username, reactions.get(m.id)) for m in rows
    ]
    # Forward pages keep their start (the client's cursor is `after`), backward ones their end.
    payloads, cut = within_bytes(payloads, keep="first" if after is not None else "last")
    return payloads, has_more or cut


def within_bytes(payloads: list[dict], *, keep: str) -> tuple[list[dict], bool]:
    """The longest run of `payloads` from the `keep` end ("first" or "last") whose encoded
    size fits CHAT_PAGE_MAX_BYTES (one at least), and whether any were left out.

    A page of long messages in a multi-byte script is several times its character count
    on the wire: bounded here, one reply can neither pass the outbound frame limit nor
    fill a socket's buffer, and the client pages on (has_more)."""
    budget = settings.CHAT_PAGE_MAX_BYTES
    used = kept = 0
    for payload in payloads if keep == "first" else reversed(payloads):
        size = len(delivery.encode(payload).encode()) + 1  # and its comma
        if kept and used + size > budget:
            break
        used += size
        kept += 1
    if kept == len(payloads):
        return payloads, False
    return (payloads[:kept] if keep == "first" else payloads[len(payloads) - kept :]), True


def _own_message(room: Room, user, message_id: int, *, for_change: bool) -> Message:
    msg = (
        Message.objects.select_for_update()
        .filter(pk=message_id, room=room, deleted_at__isnull=True)
        .first()
    )
    if msg is None:
        raise ChatError("not_found", f"No message #{message_id} in this room.")
    if for_change and msg.user_id != user.id and not user.is_staff:
        raise ChatError("forbidden", "Only the author or staff can change this message.")
    return msg


def edit_message(room: Room, user, message_id: int, body: str) -> dict:
    with transaction.atomic():
        msg = _own_message(room, user, message_id, for_change=True)
        msg.body = body
        msg.edited_at = timezone.now()
        msg.save(update_fields=["body", "edited_at"])
    return frames.message_edited_frame(msg)


def delete_message(room: Room, user, message_id: int) -> dict:
    with transaction.atomic():
        msg = _own_message(room, user, message_id, for_change=True)
        msg.deleted_at = timezone.now()
        msg.save(update_fields=["deleted_at"])
    return frames.message_deleted_frame(msg.id)


def toggle_reaction(room: Room, user, message_id: int, emoji: str) -> dict:
    with transaction.atomic():
        msg = _own_message(room, user, message_id, for_change=False)
        removed, _ = Reaction.objects.filter(message=msg, user=user, emoji=emoji).delete()
        if not removed:
            Reaction.objects.get_or_create(message=msg, user=user, emoji=emoji)
        count = Reaction.objects.filter(message=msg, emoji=emoji).count()
    return frames.reaction_frame(msg.id, emoji, user.username, removed=bool(removed), count=count)


def store_private(sender, to: str, body: str) -> tuple[int, dict, dict]:
    """Persist a private message: (recipient id, recipient's frame, sender's receipt)."""
    recipient = get_user_model().objects.filter(username=to, is_active=True).first()
    if recipient is None:
        raise ChatError("unknown_user", f"There is no user named {to!r}.")
    if recipient.pk == sender.pk:
        raise ChatError("invalid_payload", "You cannot send a private message to yourself.")
    pm = PrivateMessage.objects.create(sender=sender, recipient=recipient, body=body)
    metrics.MESSAGES_STORED.labels("private").inc()
    incoming = frames.private_message_frame(pm, sender.username, recipient.username)
    receipt = frames.private_message_delivered_frame(
        pm.id, recipient.username, body, incoming["timestamp"]
    )
    return recipient.pk, incoming, receipt


def private_page(user, *, after: int, limit: int) -> tuple[list[dict], bool]:
    """Private messages to or from `user` after an id, oldest first, both directions."""
    rows = list(
        PrivateMessage.objects.filter(Q(sender=user) | Q(recipient=user), id__gt=after)
        .select_related("sender", "recipient")
        .order_by("id")[: limit + 1]
    )
    payloads = [
        frames.private_message_frame(pm, pm.sender.username, pm.recipient.username)
        for pm in rows[:limit]
    ]
    payloads, cut = within_bytes(payloads, keep="first")
    return payloads, len(rows) > limit or cut


def system_user():
    """The author of pushed messages that name nobody: an inactive account, no login."""
    user, created = get_user_model().objects.get_or_create(
        username=settings.CHAT_SYSTEM_USERNAME, defaults={"is_active": False}
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user
