"""Finding rooms and checking who may use them."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from ..errors import ChatError
from ..models import Room
from ..names import ROOM_NAME_RULE, normalize_room_name

User = AbstractBaseUser | AnonymousUser


def valid_name(raw: str) -> str:
    name = normalize_room_name(raw)
    if name is None:
        raise ChatError("not_found", f"No such room: a room name is {ROOM_NAME_RULE}.")
    return name


def check_access(room: Room, user: User) -> None:
    if room.staff_only and not (user.is_authenticated and user.is_staff):
        raise ChatError("forbidden", f"Room {room.name!r} is for staff only.")


def open_room(raw_name: str, user: User, *, create: bool = True) -> Room:
    """The room a user may enter; a logged-in user's first visit creates it."""
    name = valid_name(raw_name)
    room = Room.objects.filter(name=name).first()
    if room is None:
        if not (create and user.is_authenticated):
            raise ChatError("not_found", f"Room {name!r} does not exist yet.")
        room, _ = Room.objects.get_or_create(name=name)
    check_access(room, user)
    return room


def visible_rooms(user: User) -> list[Room]:
    rooms = Room.objects.all()
    if not (user.is_authenticated and user.is_staff):
        rooms = rooms.filter(staff_only=False)
    return list(rooms)
