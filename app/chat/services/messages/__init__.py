"""Messages, private messages, edits, deletes, reactions and typing notices.

Each action is the same three steps whoever asks (a consumer, the HTTP API, a command):
check the user and spend their rate-limit token, persist and commit (store.py), then
deliver (services/delivery.py). Only committed rows are ever delivered, and every
delivery carries the stored id.
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from django.conf import settings

from ... import names
from ...models import Room
from ...protocol import frames
from ...protocol.errors import ChatError
from .. import delivery, ratelimit
from . import store

# Messages in one resume reply; a client that missed more pages on (has_more).
RESUME_LIMIT = 500


def require_user(user) -> None:
    if not user.is_authenticated:
        raise ChatError("not_authenticated", "Log in (or send a token) to do that.")


async def post(
    room: Room, user, body: str, *, rate_limited: bool = True, client_id: str | None = None
) -> dict:
    require_user(user)
    if rate_limited:
        await ratelimit.consume(user.id)
    payload = await store.store_message_async(room, user, body)
    if client_id:
        payload["client_id"] = client_id
    await delivery.to_room(room.pk, payload)
    return payload


async def post_private(sender, to: str, body: str, *, client_id: str | None = None) -> dict:
    require_user(sender)
    await ratelimit.consume(sender.id)
    recipient_id, incoming, receipt = await database_sync_to_async(store.store_private)(
        sender, to, body
    )
    if client_id:
        receipt["client_id"] = client_id
    await delivery.to_user(recipient_id, incoming)
    await delivery.to_user(sender.pk, receipt)
    return receipt


async def edit(room: Room, user, message_id: int, body: str) -> None:
    require_user(user)
    await ratelimit.consume(user.id)
    frame = await database_sync_to_async(store.edit_message)(room, user, message_id, body)
    await delivery.to_room(room.pk, frame)


async def delete(room: Room, user, message_id: int) -> None:
    require_user(user)
    await ratelimit.consume(user.id)
    frame = await database_sync_to_async(store.delete_message)(room, user, message_id)
    await delivery.to_room(room.pk, frame)


async def react(room: Room, user, message_id: int, emoji: str) -> None:
    require_user(user)
    await ratelimit.consume(user.id)
    frame = await database_sync_to_async(store.toggle_reaction)(room, user, message_id, emoji)
    await delivery.to_room(room.pk, frame)


async def typing(room: Room, user) -> None:
    require_user(user)
    await ratelimit.consume(user.id)
    key, group = f"typing:{room.pk}:{user.pk}", names.room_group(room.pk)
    if await ratelimit.once_per(key, settings.CHAT_TYPING_INTERVAL, group):
        await delivery.to_room(room.pk, frames.typing_frame(user.username), skip_user=user.username)


async def history(room: Room, *, before: int | None = None, limit: int) -> tuple[list[dict], bool]:
    return await database_sync_to_async(store.page)(room, before=before, limit=limit)


async def missed(room: Room, after: int) -> tuple[list[dict], bool]:
    return await database_sync_to_async(store.page)(room, after=after, limit=RESUME_LIMIT)


async def missed_private(user, after: int) -> tuple[list[dict], bool]:
    """What a reconnecting user missed of their private messages (sent on other tabs too)."""
    require_user(user)
    return await database_sync_to_async(store.private_page)(user, after=after, limit=RESUME_LIMIT)
