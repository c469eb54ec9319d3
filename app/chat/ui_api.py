"""Read-only JSON for the browser pages: the room index's live online counts.

`GET /api/rooms` lists the rooms the caller may see (staff-only rooms for staff only),
each with how many users are online in it now. The index page polls it; nothing here
writes. Errors use the HTTP API's shape: {"error": {"code", "message"}}.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.http import require_GET

from . import sync
from .api import error_response
from .protocol.errors import TOKEN_INVALID, ChatError, unexpected
from .services import presence, rooms


@require_GET
def room_list(request: HttpRequest) -> JsonResponse:
    if getattr(request, "token_invalid", False):
        return error_response(ChatError("not_authenticated", TOKEN_INVALID))
    try:
        visible = rooms.visible_rooms(request.user)
        counts = sync.call(presence.store().counts, [r.pk for r in visible])
    except Exception as exc:  # Redis or the database unreachable: say so, in JSON
        return error_response(unexpected(exc))
    response = JsonResponse(
        {
            "rooms": [
                {
                    "name": room.name,
                    "staff_only": room.staff_only,
                    "online": counts.get(room.pk, 0),
                    "url": reverse("chat:room", args=[room.name]),
                }
                for room in visible
            ]
        }
    )
    response["Cache-Control"] = "no-store"
    return response
