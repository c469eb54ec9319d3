"""Server-rendered pages: the room index and a room."""

from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from redis.exceptions import RedisError

from . import sync
from .names import ROOM_NAME_MAX, ROOM_NAME_RULE
from .protocol.errors import ChatError
from .services import presence, rooms


def index(request: HttpRequest) -> HttpResponse:
    visible = rooms.visible_rooms(request.user)
    try:
        counts = sync.call(presence.store().counts, [r.pk for r in visible])
    except (RedisError, OSError):
        counts = {}  # Redis is down: the rooms still list, their counts show as unknown
        online = dict.fromkeys((r.pk for r in visible), None)
    else:
        online = {r.pk: counts.get(r.pk, 0) for r in visible}
    return render(
        request,
        "chat/index.html",
        {
            "rooms": [(room, online[room.pk]) for room in visible],
            "room_name_rule": ROOM_NAME_RULE,
            "room_name_max": ROOM_NAME_MAX,
        },
    )


def room(request: HttpRequest, room_name: str) -> HttpResponse:
    try:
        chat_room = rooms.open_room(room_name, request.user)
    except ChatError as exc:
        if exc.code == "forbidden":
            return render(request, "chat/forbidden.html", {"reason": exc.message}, status=403)
        if exc.code == "rate_limited":  # rooms created per hour (services/abuse.py)
            response = render(request, "chat/forbidden.html", {"reason": exc.message}, status=429)
            if getattr(exc, "retry_after", None):
                response["Retry-After"] = str(exc.retry_after)
            return response
        if isinstance(exc, rooms.NameTaken):
            return render(
                request,
                "chat/name_taken.html",
                {"reason": exc.message, "existing": exc.existing},
                status=409,
            )
        raise Http404(exc.message) from None
    return render(
        request,
        "chat/room.html",
        {
            "room": chat_room,
            "max_length": settings.CHAT_MAX_MESSAGE_LENGTH,
        },
    )
