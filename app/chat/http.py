"""HTTP middleware: request ids, request metrics and the Content-Security-Policy."""

from __future__ import annotations

import logging
import re
import uuid

from django.db import DatabaseError
from django.http import HttpResponse, JsonResponse
from redis.exceptions import RedisError

from config import logs

from . import metrics
from .protocol.errors import UNAVAILABLE, ChatError

log = logging.getLogger(__name__)

UNAVAILABLE_PAGE = (
    "<!doctype html><html lang=en><meta charset=utf-8><title>Unavailable · Chat</title>"
    '<link rel=stylesheet href="/static/chat/chat.css">'
    f"<main class=card><h1>Back in a moment</h1><p>{UNAVAILABLE}</p>"
    '<p><a href="">Try again</a></p></main></html>'
)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class RequestIdMiddleware:
    """Tag each request (and its log lines) with an id: the proxy's, or a new one."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        rid = incoming if _SAFE_ID.fullmatch(incoming) else uuid.uuid4().hex
        token = logs.request_id.set(rid)
        request.request_id = rid  # for log lines written after the response (django.request)
        try:
            response = self.get_response(request)
        finally:
            logs.request_id.reset(token)
        response["X-Request-ID"] = rid
        method = request.method if request.method in _METHODS else "other"
        metrics.HTTP_REQUESTS.labels(method, str(response.status_code)).inc()
        return response


class ContentSecurityPolicyMiddleware:
    """No inline script or style anywhere: user text can never become code."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.setdefault("Content-Security-Policy", CSP)
        return response


class ServiceUnavailableMiddleware:
    """A page or API call that meets a dead database or Redis answers 503, not 500.

    The page is static HTML: rendering the site's base template would touch the
    session, and with it the database that just failed.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, (DatabaseError, RedisError)):
            return None
        log.warning("dependency unavailable during %s: %r", request.path, exception)
        if request.path.startswith("/api/"):
            error = ChatError("unavailable", UNAVAILABLE)
            response = JsonResponse(error.as_http_body(), status=error.status)
        else:
            response = HttpResponse(UNAVAILABLE_PAGE, status=503)
        response["Retry-After"] = "5"
        return response
