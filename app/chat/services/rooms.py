"""Finding rooms and checking who may use them."""

from __future__ import annotations

import functools

from channels.db import database_sync_to_async
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import IntegrityError

from .. import pg_client
from ..models import Room
from ..names import ROOM_NAME_RULE, lookalike_detail, normalize_room_name
from ..protocol.errors import ChatError
from . import abuse

User = AbstractBaseUser | AnonymousUser


def valid_name(raw: str) -> str:
    name = normalize_room_name(raw)
    if name is None:
        raise ChatError("not_found", f"No such room: a room name is {ROOM_NAME_RULE}.")
    return name


def check_access(room: Room, user: User) -> None:
    if room.staff_only and not (user.is_authenticated and user.is_staff):
        raise ChatError("forbidden", f"Room {room.name!r} is for staff only.")


class NameTaken(ChatError):
    """A new room's name looks like an existing room's (names.name_key)."""

    def __init__(self, name: str, existing: Room):
        super().__init__(
            "name_taken",
            f"Room name {name!r}{lookalike_detail(name, existing.name)} looks like the "
            f"existing room {existing.name!r}; open that one or pick another name.",
        )
        self.existing = existing


def create_room(name: str, *, staff_only: bool = False) -> tuple[Room, bool]:
    """The room called `name` (already valid), created if it does not exist.

    Refused with `name_taken` when its name looks like another room's (names.name_key),
    also when two creators race: the unique name_key column decides.
    """
    room = Room.objects.filter(name=name).first()
    if room is not None:
        return room, False
    existing = Room.looking_like(name)
    if existing is not None:
        raise NameTaken(name, existing)
    try:
        return Room.objects.get_or_create(name=name, defaults={"staff_only": staff_only})
    except IntegrityError:  # a look-alike was created since the check above
        existing = Room.looking_like(name)
        if existing is None:
            raise
        raise NameTaken(name, existing) from None


def open_room(raw_name: str, user: User, *, create: bool = True) -> Room:
    """The room a user may enter; a logged-in user's first visit creates it."""
    name = valid_name(raw_name)
    room = Room.objects.filter(name=name).first()
    if room is None:
        if not (create and user.is_authenticated):
            raise ChatError("not_found", f"Room {name!r} does not exist yet.")
        abuse.allow_room_creation(user)
        room, _ = create_room(name)
    check_access(room, user)
    return room


async def open_room_async(raw_name: str, user: User) -> Room:
    """open_room for a socket's join: an existing room is read on the loop's own
    connection (chat/pg_client.py), without the hop to the database thread and its
    `SELECT 1`; only a room that must be created goes through the ORM."""
    if pg_client.enabled():
        name = valid_name(raw_name)
        row = await pg_client.fetchone(_room_sql(), [name])
        if row is not None:
            room = pg_client.instance(Room, row)
            check_access(room, user)
            return room
    return await database_sync_to_async(open_room)(raw_name, user)


@functools.cache
def _room_sql() -> str:
    name = Room._meta.get_field("name").column
    return f'SELECT {pg_client.columns(Room)} FROM "{Room._meta.db_table}" WHERE "{name}" = %s'


def visible_rooms(user: User) -> list[Room]:
    rooms = Room.objects.all()
    if not (user.is_authenticated and user.is_staff):
        rooms = rooms.filter(staff_only=False)
    return list(rooms)
