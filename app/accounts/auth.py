"""Who is calling: bearer tokens for HTTP and WebSocket, and the WebSocket origin rule.

Browsers authenticate with the session cookie; other clients send
`Authorization: Bearer <token>`. A WebSocket handshake whose Origin is not the site's
own (scheme, host and port) nor a CSRF_TRUSTED_ORIGINS entry is refused (cross-site
WebSocket hijacking). One that sends no
Origin is not a browser page, so its cookies are ignored: it must bring a token to be
anyone but anonymous.
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from urllib.parse import urlsplit

from channels.auth import AuthMiddleware
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import WebsocketDenier
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.db import DatabaseError
from django.http import JsonResponse
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

from chat import pg_client
from chat.protocol.errors import UNAVAILABLE, ChatError

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
                error = ChatError("unavailable", UNAVAILABLE)
                return JsonResponse(error.as_http_body(), status=error.status)
            if user is None:
                request.user = AnonymousUser()
                request.token_invalid = True
            else:
                request.user = user
            # Browsers never attach this header on their own, so CSRF does not apply.
            request._dont_enforce_csrf_checks = True
        return self.get_response(request)


class TokenCache:
    """Users of recently checked tokens, for CHAT_WS_AUTH_CACHE seconds, per process.

    A reconnect storm (a drain, a blip) brings each client's token back within seconds;
    the cache spares those handshakes the database query and its thread hop. Bounded
    (least recently used out first); a revoked token or deactivated user is refused by
    this process at most that many seconds later. Only valid tokens are kept.
    """

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._users: OrderedDict[str, tuple[float, object]] = OrderedDict()

    def get(self, token: str):
        key = hash_token(token)
        found = self._users.get(key)
        if found is None:
            return None
        expires, user = found
        if expires <= time.monotonic():
            del self._users[key]
            return None
        self._users.move_to_end(key)
        return user

    def put(self, token: str, user) -> None:
        ttl = float(settings.CHAT_WS_AUTH_CACHE)
        if ttl <= 0 or user is None:
            return
        key = hash_token(token)
        self._users[key] = (time.monotonic() + ttl, user)
        self._users.move_to_end(key)
        while len(self._users) > self.size:
            self._users.popitem(last=False)

    def clear(self) -> None:
        self._users.clear()


token_cache = TokenCache()


async def websocket_user_for_token(token: str):
    """user_for_token, through the cache (WebSocket handshakes only: HTTP stays exact)."""
    if not token:
        return None
    user = token_cache.get(token)
    if user is None:
        user = await _user_for_token_async(token)
        token_cache.put(token, user)
    return user


async def _user_for_token_async(token: str):
    """user_for_token without the database thread, where the loop has its own connection.

    A join storm is mostly this look-up: through the ORM each one is a hop to the one
    database thread and, with CONN_HEALTH_CHECKS, a `SELECT 1` before the query. Here it is
    one query on the loop's connection (chat/pg_client.py), the same row as the ORM's.
    """
    if not pg_client.enabled():
        return await database_sync_to_async(user_for_token)(token)
    row = await pg_client.fetchone(_token_user_sql(), [hash_token(token)])
    return None if row is None else pg_client.instance(get_user_model(), row)


@functools.cache
def _token_user_sql() -> str:
    user_meta, token_meta = get_user_model()._meta, ApiToken._meta
    columns = pg_client.columns(get_user_model(), "u")
    owner = token_meta.get_field("user").column
    key = token_meta.get_field("key_hash").column
    active = user_meta.get_field("is_active").column
    return (
        f'SELECT {columns} FROM "{user_meta.db_table}" u '
        f'JOIN "{token_meta.db_table}" t ON t."{owner}" = u."{user_meta.pk.column}" '
        f'WHERE t."{key}" = %s AND u."{active}" LIMIT 1'
    )


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
                user = await websocket_user_for_token(token)
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
        session = scope.get("session")
        if session is not None and not session.session_key:
            # No session cookie (a token client): nobody to look up, and no hop to the
            # database thread for it.
            scope["user"]._wrapped = AnonymousUser()
            return
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


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin1")
    return None


def _is_secure(scope) -> bool:
    """What the browser spoke: wss/https directly, or as the trusted proxy says."""
    if scope.get("scheme") in ("wss", "https"):
        return True
    proxy = settings.SECURE_PROXY_SSL_HEADER
    if proxy:  # ("HTTP_X_FORWARDED_PROTO", "https") when TRUST_PROXY_HEADERS is on
        name = proxy[0].removeprefix("HTTP_").replace("_", "-").lower().encode()
        return _header(scope, name) == proxy[1]
    return False


def origin_allowed(origin: str, scope) -> bool:
    """Django's CSRF origin rule for a handshake: the Origin is the site's own — the
    scheme the client used and the Host it asked for, that Host being allowed — or one of
    CSRF_TRUSTED_ORIGINS (`https://*.example.com` forms included). Scheme, host and port
    all count: `http://127.0.0.1:9999` is not the site at `http://127.0.0.1:8080`."""
    host = _header(scope, b"host")
    own = f"{'https' if _is_secure(scope) else 'http'}://{host}"
    if host and origin == own and validate_host(split_domain_port(host)[0], settings.ALLOWED_HOSTS):
        return True
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        if "*" not in trusted:
            if origin == trusted:
                return True
            continue
        scheme, _, pattern = trusted.partition("://")
        if parsed.scheme == scheme and is_same_domain(parsed.netloc, pattern[1:]):
            return True
    return False


class OriginGuard:
    """Refuse foreign Origins; drop cookies from handshakes that send no Origin at all."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        origin = _header(scope, b"origin")
        if origin is None:
            scope = dict(scope)
            scope["headers"] = [(n, v) for n, v in scope.get("headers", []) if n != b"cookie"]
            return await self.application(scope, receive, send)
        if not origin_allowed(origin, scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
