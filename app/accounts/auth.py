"""Who is calling: bearer tokens for HTTP and WebSocket, and the WebSocket origin rule.

Browsers authenticate with the session cookie; other clients send
`Authorization: Bearer <token>`. A WebSocket handshake whose Origin names a host
outside ALLOWED_HOSTS is refused (cross-site WebSocket hijacking). One that sends no
Origin is not a browser page, so its cookies are ignored: it must bring a token to be
anyone but anonymous.
"""

from __future__ import annotations

from channels.auth import AuthMiddleware
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import AllowedHostsOriginValidator, OriginValidator
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.contrib.auth.models import AnonymousUser
from django.db import DatabaseError
from django.http import JsonResponse

from chat.errors import UNAVAILABLE

from .models import ApiToken, hash_token

BEARER = "bearer "


def bearer_from_header(value: str | None) -> str | None:
    """The token of an `Authorization: Bearer …` value, '' for a malformed one, None if absent."""
    if not value:
        return None
    if value[: len(BEARER)].lower() != BEARER:
        return ""
    return value[len(BEARER) :].strip()


def user_for_token(token: str):
    """The active user owning `token`, or None."""
    if not token:
        return None
    row = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=hash_token(token), user__is_active=True)
        .first()
    )
    return row.user if row else None


class BearerTokenMiddleware:
    """HTTP: a valid bearer token sets request.user; an invalid one is remembered for a 401."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.token_invalid = False
        token = bearer_from_header(request.headers.get("Authorization"))
        if token is not None:
            try:
                user = user_for_token(token)
            except DatabaseError:
                # The API's error shape and code, not an HTML 500: the client may retry.
                return JsonResponse(
                    {"error": {"code": "unavailable", "message": UNAVAILABLE}}, status=503
                )
            if user is None:
                request.user = AnonymousUser()
                request.token_invalid = True
            else:
                request.user = user
            # Browsers never attach this header on their own, so CSRF does not apply.
            request._dont_enforce_csrf_checks = True
        return self.get_response(request)


class WebSocketTokenMiddleware(BaseMiddleware):
    """WebSocket: a bearer token overrides the session user; a bad one is flagged in scope."""

    async def __call__(self, scope, receive, send):
        headers = dict(scope.get("headers", []))
        raw = headers.get(b"authorization")
        token = bearer_from_header(raw.decode("latin1") if raw else None)
        scope = dict(scope)
        scope["token_invalid"] = False
        if token is not None:
            try:
                user = await database_sync_to_async(user_for_token)(token)
            except DatabaseError as exc:
                # Database down: the consumer answers "unavailable" (a frame, then 1013)
                # rather than the handshake failing with a bare HTTP 500.
                scope["user"] = AnonymousUser()
                scope["auth_error"] = exc
                return await super().__call__(scope, receive, send)
            scope["user"] = user or AnonymousUser()
            scope["token_invalid"] = user is None
        return await super().__call__(scope, receive, send)


class ResilientAuthMiddleware(AuthMiddleware):
    """Channels' session auth, but a database outage flags the scope instead of a 500."""

    async def resolve_scope(self, scope):
        try:
            await super().resolve_scope(scope)
        except DatabaseError as exc:
            scope["user"]._wrapped = AnonymousUser()
            scope["auth_error"] = exc


def WebSocketAuthStack(inner):
    """Session cookie, then bearer token (which wins), for WebSocket handshakes."""
    return CookieMiddleware(
        SessionMiddleware(ResilientAuthMiddleware(WebSocketTokenMiddleware(inner)))
    )


class OriginGuard:
    """Refuse foreign Origins; drop cookies from handshakes that send no Origin at all."""

    def __init__(self, application):
        self.application = application
        self._validator: OriginValidator = AllowedHostsOriginValidator(application)

    async def __call__(self, scope, receive, send):
        headers = scope.get("headers", [])
        if not any(name == b"origin" for name, _ in headers):
            scope = dict(scope)
            scope["headers"] = [(n, v) for n, v in headers if n != b"cookie"]
            return await self.application(scope, receive, send)
        return await self._validator(scope, receive, send)
