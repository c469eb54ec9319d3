"""HTTP API: read a room's history and push messages into it from outside.

Bearer tokens authenticate non-browser clients; a logged-in browser session works too,
with the CSRF check that sessions need. Errors are JSON: {"error": {"code", "message"}}
with the protocol's codes.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from . import protocol, sync
from .protocol.errors import TOKEN_INVALID, ChatError, unexpected
from .services import messages, rooms


def error_response(error: ChatError) -> JsonResponse:
    response = JsonResponse(error.as_http_body(), status=error.status)
    if error.code == "not_authenticated":
        response["WWW-Authenticate"] = 'Bearer realm="chat"'
    if error.code == "rate_limited":
        response["Retry-After"] = "1"
    return response


def _int_param(request: HttpRequest, name: str, *, default=None, low=1, high=protocol.MAX_ID):
    raw = request.GET.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ChatError("invalid_payload", f"{name!r} must be an integer from {low} to {high}.")
    return value


def _authenticate_post(request: HttpRequest) -> None:
    if request.token_invalid:
        raise ChatError("not_authenticated", TOKEN_INVALID)
    if not request.user.is_authenticated:
        raise ChatError("not_authenticated", "Send Authorization: Bearer <token>.")
    if not getattr(request, "_dont_enforce_csrf_checks", False):
        # A session cookie rides along on cross-site requests; tokens do not.
        rejected = CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})
        if rejected is not None:
            raise ChatError("forbidden", "CSRF check failed: send the X-CSRFToken header.")


def _message_body(request: HttpRequest) -> str:
    try:
        content = protocol.decode(request.body or b"")
    except ChatError as exc:
        if exc.code != "invalid_json":
            raise
        raise ChatError("invalid_json", 'The body must be JSON: {"message": "…"}.') from None
    if not isinstance(content, dict) or "message" not in content:
        raise ChatError("invalid_payload", 'The body must be a JSON object with "message".')
    return protocol.message_text(content["message"])


@csrf_exempt  # enforced in _authenticate_post for session users; tokens need none
@require_http_methods(["GET", "POST"])
def room_messages(request: HttpRequest, room_name: str) -> JsonResponse:
    try:
        if request.token_invalid:
            raise ChatError("not_authenticated", TOKEN_INVALID)
        if request.method == "POST":
            _authenticate_post(request)
            body = _message_body(request)
            room = rooms.open_room(room_name, request.user, create=False)
            payload = sync.call(messages.post, room, request.user, body)
            return JsonResponse(payload, status=201, json_dumps_params={"ensure_ascii": False})
        room = rooms.open_room(room_name, request.user, create=False)
        limit = _int_param(
            request,
            "limit",
            default=settings.CHAT_HISTORY_ON_JOIN,
            high=settings.CHAT_HISTORY_MAX_LIMIT,
        )
        before = _int_param(request, "before")
        after = _int_param(request, "after", low=0)
        page, has_more = messages.store.page(room, before=before, after=after, limit=limit)
        return JsonResponse(
            {"room": room.name, "messages": page, "has_more": has_more},
            json_dumps_params={"ensure_ascii": False},
        )
    except ChatError as exc:
        return error_response(exc)
    except Exception as exc:
        return error_response(unexpected(exc))
