"""Liveness, readiness and metrics endpoints, served by every process (gunicorn and daphne).

/healthz says the process answers; /readyz says it can do its job (database and Redis
reachable, not draining) and names what fails: the part and the kind of error, while the
details (addresses, messages) go to the log, not to whoever asks. /metrics is
Prometheus's; nginx does not expose it publicly.
"""

from __future__ import annotations

import logging
import os

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

# Set when a ws process starts draining: load balancers should stop sending it clients.
draining = False

_redis: redis.Redis | None = None


def _redis_client() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2
        )
    return _redis


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_redis() -> None:
    if settings.REDIS_URL:
        _redis_client().ping()


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    failing: dict[str, str] = {}
    if draining:
        failing["process"] = "draining"
    for name, check in (("database", _check_database), ("redis", _check_redis)):
        try:
            check()
        except Exception as exc:
            failing[name] = type(exc).__name__
            log.warning("readiness: %s unreachable: %s", name, str(exc)[:300])
            if name == "database":
                connection.close()  # reconnect from scratch next time
    if failing:
        return JsonResponse({"status": "unavailable", "failing": failing}, status=503)
    return JsonResponse({"status": "ready"})


@never_cache
def metrics_view(request: HttpRequest) -> HttpResponse:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
