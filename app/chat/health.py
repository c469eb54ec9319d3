"""Liveness, readiness and metrics endpoints, served by every process (gunicorn and daphne).

/healthz says the process answers. /readyz says the process can take traffic: it is up
and not draining. PostgreSQL and Redis are reported in its body (and in the
`chat_dependency_up` gauge) but do not fail it: a blip in a shared dependency would take
every pod out of its Service at once, and clients would meet the load balancer's 502
instead of the app's own answer to an outage (503 JSON, the `unavailable` frame, 1013).
/metrics is Prometheus's; nginx does not expose it publicly.

All three answer whatever the Host header says (HealthEndpointsMiddleware): the kubelet
and Prometheus address a pod by its IP, which ALLOWED_HOSTS (the public names) does not
list, and every other path keeps Django's host check.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.utils.cache import add_never_cache_headers
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from . import metrics, redis_servers

log = logging.getLogger(__name__)

# Set when a ws process starts draining: load balancers should stop sending it clients.
draining = False

# How long /readyz waits for a dependency check before it reports "timeout": below the
# probes' timeoutSeconds, so a hung database never fails the probe itself.
CHECK_WAIT = 1.0

_redis: redis.Redis | None = None
# One thread per dependency at most: a check that hangs (a blackholed host) is waited for
# by the next probes instead of piling up new threads.
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="readyz")
_running: dict[str, concurrent.futures.Future] = {}
_running_lock = threading.Lock()


def _redis_client() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis_servers.sync_client(
            redis_servers.server(), "health", socket_timeout=2, socket_connect_timeout=2
        )
    return _redis


def _check_database() -> None:
    # This thread's own connection: no request cycle closes it, so CONN_MAX_AGE is applied
    # here, and a broken one is dropped to reconnect from scratch next time.
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        connection.close()
        raise
    connection.close_if_unusable_or_obsolete()


def _check_redis() -> None:
    _redis_client().ping()


def _checks() -> dict[str, Callable[[], None]]:
    checks = {"database": _check_database}
    if settings.REDIS_URL:
        checks["redis"] = _check_redis
    return checks


def dependency_states(wait: float = CHECK_WAIT) -> dict[str, str]:
    """Each dependency's state: "ok", the exception's class name, or "timeout"."""
    with _running_lock:
        futures = {}
        for name, check in _checks().items():
            future = _running.get(name)
            if future is None or future.done():
                future = _running[name] = _pool.submit(check)
            futures[name] = future
    concurrent.futures.wait(futures.values(), timeout=wait)
    states = {}
    for name, future in futures.items():
        if not future.done():
            states[name] = "timeout"
        elif future.exception() is not None:
            exc = future.exception()
            states[name] = type(exc).__name__
            log.warning("readiness: %s unreachable: %s", name, str(exc)[:300])
        else:
            states[name] = "ok"
        metrics.DEPENDENCY_UP.labels(name).set(1 if states[name] == "ok" else 0)
    return states


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    body = {"status": "draining" if draining else "ready", "dependencies": dependency_states()}
    return JsonResponse(body, status=503 if draining else 200)


def metrics_view(request: HttpRequest) -> HttpResponse:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


ENDPOINTS: dict[str, Callable[[HttpRequest], HttpResponse]] = {
    "/healthz": healthz,
    "/readyz": readyz,
    "/metrics": metrics_view,
}


class HealthEndpointsMiddleware:
    """Answer the three endpoints before anything reads the Host (CommonMiddleware, CSRF).

    Placed ahead of those in MIDDLEWARE; no session, user or database is touched on the way.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        view = ENDPOINTS.get(request.path_info)
        if view is None:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "HEAD"])
        response = view(request)
        add_never_cache_headers(response)
        return response
