"""Login throttling: django-axes, counting failed logins in Django's cache (Redis).

Every login goes through django.contrib.auth.authenticate (the login page, the admin's
login, anything else), and axes hooks in there: LoginThrottleBackend refuses a locked-out
username or address before the password is checked, and LoginThrottleHandler counts each
failure per username and per client address (chat.services.abuse.http_client_address).
At CHAT_LOGIN_FAILURE_LIMIT either one is locked for CHAT_LOGIN_LOCKOUT seconds, and
`lockout_response` answers 429 with Retry-After and the reason as the form's error.

Settings: config/settings/base.py, "Abuse limits". Signups are limited in views.py
(chat.services.abuse.allow_signup).
"""

from __future__ import annotations

import logging

from axes.backends import AxesStandaloneBackend
from axes.handlers.cache import AxesCacheHandler
from axes.helpers import get_cache, get_client_cache_keys, get_failure_limit
from django.conf import settings
from django.forms.utils import ErrorList
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from redis.exceptions import RedisError

from chat import metrics
from chat.services.abuse import refuse

log = logging.getLogger(__name__)


class LoginThrottleBackend(AxesStandaloneBackend):
    """axes' check, for logins that come with a request (every HTTP login does).

    Calls without one (manage.py, the test client's `login()`) are not throttled; axes
    itself would refuse them with an exception.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)


class LoginThrottleHandler(AxesCacheHandler):
    """axes' cache handler that lets logins through when Redis is unreachable.

    Logging in then works as it does without the throttle (logged, and counted in
    chat_abuse_checks_skipped_total{limit="login"}) rather than failing with a 503.
    """

    # axes keeps the cache it found at start; look it up each time, so a changed CACHES
    # setting (tests) is followed.
    @property
    def cache(self):
        return get_cache()

    @cache.setter
    def cache(self, value) -> None:
        pass

    def get_failures(self, request, credentials=None) -> int:
        try:
            return super().get_failures(request, credentials)
        except RedisError as exc:
            _skipped(exc)
            return 0

    def user_login_failed(self, sender, credentials, request=None, **kwargs):
        if request is None:  # see LoginThrottleBackend
            return None
        try:
            return super().user_login_failed(sender, credentials, request, **kwargs)
        except RedisError as exc:
            _skipped(exc)
            return None


def _skipped(exc: Exception) -> None:
    metrics.ABUSE_SKIPPED.labels("login").inc()
    log.warning("login throttle skipped, Redis unreachable: %r", exc)


def _locked_by(request: HttpRequest, credentials: dict | None) -> str:
    """Which count reached the limit: `login_username` or `login_address`."""
    keys = get_client_cache_keys(request, credentials)  # AXES_LOCKOUT_PARAMETERS' order
    try:
        counts = [get_cache().get(key, 0) for key in keys]
    except RedisError:
        counts = []
    limit = get_failure_limit(request, credentials)
    if counts and counts[0] >= limit:
        return "login_username"
    return "login_address"


def lockout_response(request: HttpRequest, response=None, credentials=None) -> HttpResponse:
    """axes' AXES_LOCKOUT_CALLABLE: 429, Retry-After, and the login form saying why.

    `response` is the login view's own answer (a TemplateResponse with the bound form);
    axes' async path passes (request, credentials) instead, and gets a plain answer.
    """
    if not isinstance(response, HttpResponse):
        credentials, response = response, None
    limit = _locked_by(request, credentials)
    seconds = settings.CHAT_LOGIN_LOCKOUT
    minutes = max(1, round(seconds / 60))
    whom = "this username" if limit == "login_username" else "your network address"
    refused = refuse(
        limit,
        f"Too many failed logins for {whom}: logging in is paused for up to "
        f"{minutes} minute{'s' if minutes != 1 else ''}. Try again later.",
        seconds,
    )
    form = None
    if isinstance(response, TemplateResponse) and response.context_data:
        form = response.context_data.get("form")
    if form is not None and form.is_bound:
        # The form was validated by the view: replace its "wrong password" with the reason.
        form.errors["__all__"] = ErrorList([refused.message], error_class="nonfield")
        response.content = response.rendered_content
    else:
        response = HttpResponse(refused.message, content_type="text/plain; charset=utf-8")
    response.status_code = 429
    response["Retry-After"] = str(refused.retry_after)
    return response
