"""Settings shared by every layer, each read from the environment with a safe default.

The layers (local, test, production) only change defaults; nothing here is a secret.
With DEBUG off, SECRET_KEY and ALLOWED_HOSTS have no default and start-up stops
with one sentence saying which is missing.
"""

from __future__ import annotations

import warnings
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from config import redis_urls

APP_DIR = Path(__file__).resolve().parents[2]
REPO_DIR = APP_DIR.parent
DATA_DIR = Path(environ.Env().str("CHAT_DATA_DIR", default=str(REPO_DIR / ".data")))

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set: export SECRET_KEY to a long random string "
            "(or DEBUG=1 for local development)."
        )
    SECRET_KEY = "insecure-local-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])
if not ALLOWED_HOSTS:
    if not DEBUG:
        raise ImproperlyConfigured(
            "ALLOWED_HOSTS is not set: export ALLOWED_HOSTS as a comma-separated list of "
            "the host names this service answers to (or DEBUG=1 for local development)."
        )
    ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]

CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    "accounts",
    "chat",
]

MIDDLEWARE = [
    "chat.http.RequestIdMiddleware",
    # Before anything reads the Host: probes and scrapes come by pod IP (chat/health.py).
    "chat.health.HealthEndpointsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # /static/ from STATIC_ROOT in every process: nginx serves what it has on disk and asks
    # the web tier for the rest, so pages and their hashed assets always come from one release.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.auth.BearerTokenMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "chat.http.ContentSecurityPolicyMiddleware",
    # Turns a login that django-axes refused into the lockout answer (accounts/throttle.py).
    # Above a sync-only middleware, so it runs sync (and sees the response) under ASGI too.
    "axes.middleware.AxesMiddleware",
    "chat.http.ServiceUnavailableMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [APP_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    if DATABASES["default"]["NAME"] == str(DATA_DIR / "db.sqlite3"):
        DATA_DIR.mkdir(parents=True, exist_ok=True)
    # One process serves everything on SQLite: WAL and IMMEDIATE transactions keep
    # the thread pool of database_sync_to_async from tripping over "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=5)
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer and Redis -------------------------------------------------
# One Redis (REDIS_URL), or a master watched by Sentinel: REDIS_SENTINELS (host:port,…)
# and REDIS_SENTINEL_MASTER, or the same as a redis+sentinel:// REDIS_URL
# (config/redis_urls.py; docs/deploy.md "Redis").
REDIS_URL = env.str("REDIS_URL", default="")
REDIS_SENTINELS = env.str("REDIS_SENTINELS", default="")
REDIS_SENTINEL_PASSWORD = env.str("REDIS_SENTINEL_PASSWORD", default="")
if REDIS_SENTINELS:
    if REDIS_URL:
        raise ImproperlyConfigured(
            "REDIS_URL and REDIS_SENTINELS are both set: give one (a redis+sentinel:// "
            "REDIS_URL is the same as REDIS_SENTINELS with REDIS_SENTINEL_MASTER)."
        )
    try:
        REDIS_URL = redis_urls.sentinel_url(
            REDIS_SENTINELS,
            env.str("REDIS_SENTINEL_MASTER", default=""),
            password=env.str("REDIS_PASSWORD", default=""),
            db=env.int("REDIS_DB", default=0),
        )
    except redis_urls.RedisURLError as exc:
        raise ImproperlyConfigured(str(exc)) from exc
# The channel layer's shards (channels_redis's consistent hashing); unset: REDIS_URL alone.
# A room's presence lives on its group's shard, a user's rate limits on the user's;
# abuse counters, the cache and /readyz stay on REDIS_URL.
REDIS_LAYER_URLS = redis_urls.split_urls(env.str("REDIS_LAYER_URLS", default=""))
if REDIS_LAYER_URLS and not REDIS_URL:
    raise ImproperlyConfigured(
        "REDIS_LAYER_URLS is set but REDIS_URL is not: the cache, abuse limits and "
        "/readyz need REDIS_URL (it may be one of the layer's servers)."
    )
try:
    REDIS_SERVER = redis_urls.parse(REDIS_URL, REDIS_SENTINEL_PASSWORD) if REDIS_URL else None
    REDIS_LAYER_SERVERS = (
        [redis_urls.parse(url, REDIS_SENTINEL_PASSWORD) for url in REDIS_LAYER_URLS or [REDIS_URL]]
        if REDIS_URL
        else []
    )
except redis_urls.RedisURLError as exc:
    raise ImproperlyConfigured(str(exc)) from exc
# "redis" (channels_redis core: per-process queues with capacity) or "pubsub".
CHAT_CHANNEL_LAYER = env.str("CHAT_CHANNEL_LAYER", default="redis")
# Messages a process's queue may hold before group_send drops (and counts) one.
CHAT_LAYER_CAPACITY = env.int("CHAT_LAYER_CAPACITY", default=5000)
# Seconds an undelivered message may wait in a queue.
CHAT_LAYER_EXPIRY = env.int("CHAT_LAYER_EXPIRY", default=60)


# Connections of a process's core-layer pool per Redis server (the hub's blocking receive
# holds one); past it a send waits up to 5 s for a free one, then fails (`unavailable`).
CHAT_LAYER_MAX_CONNECTIONS = env.int("CHAT_LAYER_MAX_CONNECTIONS", default=32)
if CHAT_LAYER_MAX_CONNECTIONS < 2:
    raise ImproperlyConfigured(
        f"CHAT_LAYER_MAX_CONNECTIONS={CHAT_LAYER_MAX_CONNECTIONS} must be at least 2 (the "
        "receive holds one)."
    )


def _redis_host(server: redis_urls.RedisServer, **bounds) -> dict:
    # socket_timeout must stay above channels_redis's 5 s blocking receive, or an idle
    # consumer's receive loop times out and the client is closed with 1011.
    return redis_urls.layer_host(
        server,
        **bounds,
        socket_timeout=15,
        socket_connect_timeout=5,
        socket_keepalive=True,
        health_check_interval=10,
        retry_on_timeout=True,
    )


if REDIS_URL:
    if CHAT_CHANNEL_LAYER == "pubsub":
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "realtime.layers.SignallingPubSubChannelLayer",
                "CONFIG": {
                    "hosts": [_redis_host(server) for server in REDIS_LAYER_SERVERS],
                    "prefix": "chat",
                },
            }
        }
    elif CHAT_CHANNEL_LAYER == "redis":
        _bounds = {"max_connections": CHAT_LAYER_MAX_CONNECTIONS, "pool_timeout": 5.0}
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "realtime.layers.CountingRedisChannelLayer",
                "CONFIG": {
                    "hosts": [_redis_host(server, **_bounds) for server in REDIS_LAYER_SERVERS],
                    "prefix": "chat",
                    "capacity": CHAT_LAYER_CAPACITY,
                    "expiry": CHAT_LAYER_EXPIRY,
                    "group_expiry": 86400,
                },
            }
        }
    else:
        raise ImproperlyConfigured(
            f"CHAT_CHANNEL_LAYER={CHAT_CHANNEL_LAYER!r} is not one of: redis, pubsub."
        )
else:
    # One process: services/fanout.py's one channel carries every room's traffic.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": CHAT_LAYER_CAPACITY, "expiry": CHAT_LAYER_EXPIRY},
        }
    }


# --- The ws role's daphne (config/wsserver.py) -----------------------------------
def _seconds(name: str, default: float) -> float:
    raw = env.str(name, default="")
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number of seconds.") from None


WS_PING_INTERVAL = _seconds("WS_PING_INTERVAL", 20)
WS_PING_TIMEOUT = _seconds("WS_PING_TIMEOUT", 30)
WS_MAX_CONNECTION_AGE = _seconds("WS_MAX_CONNECTION_AGE", 86400)
WS_CONNECT_TIMEOUT = _seconds("WS_CONNECT_TIMEOUT", 20)
WS_HANDSHAKE_TIMEOUT = _seconds("WS_HANDSHAKE_TIMEOUT", 5)
WS_APPLICATION_CLOSE_TIMEOUT = _seconds("WS_APPLICATION_CLOSE_TIMEOUT", 10)
# The ws role's garbage collector (config/wsserver.py): what start-up made is frozen out of
# collections, and the youngest generation is collected every this many allocations, not
# Python's 700 (docs/operations.md, "Join storms"). "python" keeps Python's own.
_gc = env.str("CHAT_WS_GC_THRESHOLD", default="50000,20,100").strip()
try:
    CHAT_WS_GC_THRESHOLD: tuple[int, ...] | None = (
        None if _gc == "python" else tuple(int(part) for part in _gc.split(","))
    )
except ValueError:
    CHAT_WS_GC_THRESHOLD = ()
if CHAT_WS_GC_THRESHOLD is not None and (
    len(CHAT_WS_GC_THRESHOLD) != 3 or min(CHAT_WS_GC_THRESHOLD) < 1
):
    raise ImproperlyConfigured(
        f"CHAT_WS_GC_THRESHOLD={_gc!r}: give three positive whole numbers (e.g. 50000,20,100) "
        "or 'python'."
    )
# Optimisations that lean on library internals (realtime/fast_paths.py) to turn off, by
# name, or `all`: for measuring them, or ruling one out after an upgrade.
try:
    from realtime.fast_paths import parse_off as _parse_fast_paths_off

    CHAT_FAST_PATHS_OFF = _parse_fast_paths_off(env.list("CHAT_FAST_PATHS_OFF", default=[]))
except ValueError as exc:
    raise ImproperlyConfigured(str(exc)) from None

# --- Chat tunables -------------------------------------------------------------
CHAT_HISTORY_ON_JOIN = env.int("CHAT_HISTORY_ON_JOIN", default=50)
CHAT_HISTORY_MAX_LIMIT = env.int("CHAT_HISTORY_MAX_LIMIT", default=100)
# Bytes of unsent frames a ws process holds for one socket; past it the socket is closed
# with 4008 ("too slow") and its client resumes (docs/protocol.md).
CHAT_WS_MAX_BUFFER = env.int("CHAT_WS_MAX_BUFFER", default=1024 * 1024)
# Bytes of messages in one history/resume/private_history page; past it the page ends
# early with has_more set and the client pages on. Well under the outbound frame limit
# (daphne's 1 MiB) and the per-socket buffer, so one reply can neither fail nor fill it.
CHAT_PAGE_MAX_BYTES = env.int("CHAT_PAGE_MAX_BYTES", default=256 * 1024)
if not 0 < CHAT_PAGE_MAX_BYTES <= CHAT_WS_MAX_BUFFER // 2:
    raise ImproperlyConfigured(
        f"CHAT_PAGE_MAX_BYTES={CHAT_PAGE_MAX_BYTES} must be positive and at most half of "
        f"CHAT_WS_MAX_BUFFER={CHAT_WS_MAX_BUFFER}, or one page could fill a socket's buffer."
    )
# history and resume requests per connection: a token bucket (per second, burst).
CHAT_HISTORY_PER_SECOND = env.float("CHAT_HISTORY_PER_SECOND", default=2.0)
CHAT_HISTORY_BURST = env.int("CHAT_HISTORY_BURST", default=20)
CHAT_MAX_MESSAGE_LENGTH = env.int("CHAT_MAX_MESSAGE_LENGTH", default=2000)
CHAT_RATE_LIMIT_PER_SECOND = env.float("CHAT_RATE_LIMIT_PER_SECOND", default=5.0)
CHAT_RATE_LIMIT_BURST = env.int("CHAT_RATE_LIMIT_BURST", default=10)
# Connections of a process's Redis client (presence, rate limits, abuse limits; not the
# channel layer's own), and seconds a command waits for one when all are busy.
CHAT_REDIS_MAX_CONNECTIONS = env.int("CHAT_REDIS_MAX_CONNECTIONS", default=32)
CHAT_REDIS_POOL_TIMEOUT = env.float("CHAT_REDIS_POOL_TIMEOUT", default=5.0)
if CHAT_REDIS_MAX_CONNECTIONS < 1:
    raise ImproperlyConfigured(
        f"CHAT_REDIS_MAX_CONNECTIONS={CHAT_REDIS_MAX_CONNECTIONS} must be at least 1."
    )
# The pool of PostgreSQL connections each server event loop keeps for its hot-path
# statements (chat/pg_client.py; connections are replaced after CONN_MAX_AGE): at least
# MIN_SIZE and at most MAX_SIZE connections; a statement waits at most TIMEOUT seconds
# for one when all are busy (or the database is unreachable), then fails as
# `unavailable`; a connection beyond MIN_SIZE unused for MAX_IDLE seconds is closed.
CHAT_PG_POOL_MIN_SIZE = env.int("CHAT_PG_POOL_MIN_SIZE", default=1)
CHAT_PG_POOL_MAX_SIZE = env.int("CHAT_PG_POOL_MAX_SIZE", default=4)
CHAT_PG_POOL_TIMEOUT = env.float("CHAT_PG_POOL_TIMEOUT", default=5.0)
CHAT_PG_POOL_MAX_IDLE = env.float("CHAT_PG_POOL_MAX_IDLE", default=60.0)
if not 0 <= CHAT_PG_POOL_MIN_SIZE <= CHAT_PG_POOL_MAX_SIZE or CHAT_PG_POOL_MAX_SIZE < 1:
    raise ImproperlyConfigured(
        f"CHAT_PG_POOL_MIN_SIZE={CHAT_PG_POOL_MIN_SIZE} and CHAT_PG_POOL_MAX_SIZE="
        f"{CHAT_PG_POOL_MAX_SIZE}: need 0 <= MIN_SIZE <= MAX_SIZE and MAX_SIZE >= 1."
    )
if CHAT_PG_POOL_TIMEOUT <= 0 or CHAT_PG_POOL_MAX_IDLE <= 0:
    raise ImproperlyConfigured("CHAT_PG_POOL_TIMEOUT and CHAT_PG_POOL_MAX_IDLE must be positive.")
CHAT_PRESENCE_TTL = env.float("CHAT_PRESENCE_TTL", default=30.0)
# Names in one user_list frame (the newcomer's, or a page it asks for); beyond it the frame
# says has_more and total (docs/protocol.md).
CHAT_PRESENCE_LIST_MAX = env.int("CHAT_PRESENCE_LIST_MAX", default=100)
# Seconds between a room's presence frames: joins and leaves since the last one go out
# together, one frame per room per interval across all replicas (0: at once).
CHAT_PRESENCE_INTERVAL = env.float("CHAT_PRESENCE_INTERVAL", default=1.0)
# Deliveries per second a room's presence frames may cost: a room bigger than this times
# the interval gets them less often (100,000 online: one every 5 s). 0: no bound.
CHAT_PRESENCE_MAX_RATE = env.float("CHAT_PRESENCE_MAX_RATE", default=20000.0)
# Seconds a user whose socket went without a normal close (a drain's 1012, a dropped
# network, a reload) stays listed: back within it, the room hears nothing.
CHAT_PRESENCE_GRACE = env.float("CHAT_PRESENCE_GRACE", default=15.0)
# Seconds one history read is shared by the joiners of a room on one process (while no
# new event arrives for the room); 0 reads it for every join.
CHAT_HISTORY_SHARE = env.float("CHAT_HISTORY_SHARE", default=1.0)
if CHAT_PRESENCE_INTERVAL < 0 or CHAT_PRESENCE_GRACE < 0 or CHAT_HISTORY_SHARE < 0:
    raise ImproperlyConfigured(
        "CHAT_PRESENCE_INTERVAL, CHAT_PRESENCE_GRACE and CHAT_HISTORY_SHARE are seconds "
        "and cannot be negative (0 turns each off)."
    )
CHAT_TYPING_INTERVAL = env.float("CHAT_TYPING_INTERVAL", default=2.0)
CHAT_SYSTEM_USERNAME = env.str("CHAT_SYSTEM_USERNAME", default="system")
# Seconds a draining ws process waits for its clients to go before it exits.
CHAT_DRAIN_TIMEOUT = env.float("CHAT_DRAIN_TIMEOUT", default=10.0)
# Seconds over which a draining ws process spreads its 1012 closes (in batches), so its
# clients do not all reconnect to the other replicas at once (docs/operations.md,
# "Graceful drain"). At most half of CHAT_DRAIN_TIMEOUT: the last sockets closed still
# need time to run their disconnect. Unset: 5, or half the drain timeout if less.
CHAT_DRAIN_SPREAD = env.float("CHAT_DRAIN_SPREAD", default=min(5.0, CHAT_DRAIN_TIMEOUT / 2))
if not 0 <= CHAT_DRAIN_SPREAD <= CHAT_DRAIN_TIMEOUT / 2:
    raise ImproperlyConfigured(
        f"CHAT_DRAIN_SPREAD={CHAT_DRAIN_SPREAD:g} must be between 0 and half of "
        f"CHAT_DRAIN_TIMEOUT={CHAT_DRAIN_TIMEOUT:g}, so the last sockets closed by a drain "
        f"still have time to leave before it ends; lower it or raise CHAT_DRAIN_TIMEOUT."
    )
if 0 < CHAT_PRESENCE_GRACE <= CHAT_DRAIN_SPREAD:
    raise ImproperlyConfigured(
        f"CHAT_PRESENCE_GRACE={CHAT_PRESENCE_GRACE:g} must be longer than "
        f"CHAT_DRAIN_SPREAD={CHAT_DRAIN_SPREAD:g}: the clients a drain closes last would be "
        f"announced leaving before they are back; raise it (or 0 turns the grace off)."
    )
# Admission control per ws process (chat/services/admission.py; 0 turns one off): joins
# in progress (connect until the greeting is sent) and open sockets; past either a new
# handshake gets HTTP 503 with Retry-After instead of the upgrade (nginx then tries another
# replica), before any database or Redis work. Kubernetes sets the cap from the per-pod
# budget (k8s/base/chat-config.env).
CHAT_WS_MAX_HANDSHAKES = env.int("CHAT_WS_MAX_HANDSHAKES", default=200)
# Seconds a ws process remembers a valid bearer token's user (a reconnect storm then skips
# the look-up); a revoked token or deactivated user is refused that much later. 0: off.
CHAT_WS_AUTH_CACHE = env.float("CHAT_WS_AUTH_CACHE", default=10.0)
CHAT_WS_MAX_CONNECTIONS = env.int("CHAT_WS_MAX_CONNECTIONS", default=10000)
# Seconds `migrate` waits for another run's advisory lock, and `wait-migrations` (the web
# and ws init containers) for the schema to be this release's.
CHAT_MIGRATE_LOCK_TIMEOUT = env.float("CHAT_MIGRATE_LOCK_TIMEOUT", default=600.0)
CHAT_MIGRATE_WAIT_TIMEOUT = env.float("CHAT_MIGRATE_WAIT_TIMEOUT", default=600.0)

# --- Auth ----------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat:index"
LOGOUT_REDIRECT_URL = "chat:index"

# --- Abuse limits (docs/operations.md "Abuse limits"; 0 turns one off) ----------------
# Shared by every replica through Redis: Django's cache for the HTTP-side counters (failed
# logins, signups, room creations), chat.services.abuse's sorted sets for open sockets.
# Without REDIS_URL (make run: one process) both live in the process's memory.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            # A list: Django splits a LOCATION string at commas, which would cut a
            # redis+sentinel:// URL of several Sentinels into pieces.
            "LOCATION": [REDIS_URL],
            "KEY_PREFIX": "chat:cache",
            "OPTIONS": {
                # Reads redis+sentinel:// URLs too, and counts reconnects.
                "pool_class": "chat.redis_servers.CachePool",
                "socket_timeout": 3,
                "socket_connect_timeout": 3,
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    # axes warns that a per-process cache is not shared: with one process it need not be.
    SILENCED_SYSTEM_CHECKS = ["axes.W001"]
# Failed logins (the admin's too) per username and per client address before both are
# refused for CHAT_LOGIN_LOCKOUT seconds (django-axes; counted until that long a pause).
CHAT_LOGIN_FAILURE_LIMIT = env.int("CHAT_LOGIN_FAILURE_LIMIT", default=10)
CHAT_LOGIN_LOCKOUT = env.int("CHAT_LOGIN_LOCKOUT", default=900)
# Accounts created per client address per clock hour.
CHAT_SIGNUPS_PER_ADDRESS_PER_HOUR = env.int("CHAT_SIGNUPS_PER_ADDRESS_PER_HOUR", default=10)
# Rooms a (non-staff) user may create per clock hour.
CHAT_ROOMS_PER_USER_PER_HOUR = env.int("CHAT_ROOMS_PER_USER_PER_HOUR", default=20)
# Open WebSockets per logged-in user and per client address, across all replicas.
CHAT_WS_PER_USER = env.int("CHAT_WS_PER_USER", default=20)
CHAT_WS_PER_ADDRESS = env.int("CHAT_WS_PER_ADDRESS", default=60)

AUTHENTICATION_BACKENDS = [
    # Refuses a locked-out username or address before the password is even checked.
    "accounts.throttle.LoginThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = CHAT_LOGIN_FAILURE_LIMIT > 0
AXES_HANDLER = "accounts.throttle.LoginThrottleHandler"
AXES_FAILURE_LIMIT = max(CHAT_LOGIN_FAILURE_LIMIT, 1)
AXES_COOLOFF_TIME = timedelta(seconds=max(CHAT_LOGIN_LOCKOUT, 1))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # each counted on its own
AXES_CLIENT_IP_CALLABLE = "chat.services.abuse.http_client_address"
AXES_LOCKOUT_CALLABLE = "accounts.throttle.lockout_response"
# Attempts during a lockout do not extend it: a locked-out user can wait it out.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# A success must not clear the address's count: one valid account would reset it.
AXES_RESET_ON_SUCCESS = False
AXES_ENABLE_ADMIN = False  # the cache handler keeps no rows to show
AXES_VERBOSE = False

# --- I18N / static ------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(DATA_DIR / "static")))
# WhiteNoise: in DEBUG straight from the apps' folders (make run needs no collectstatic);
# otherwise the collected, hashed files, cached for a year by name.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
if DEBUG:
    # Nothing is collected under `make run`; the finders are the source.
    warnings.filterwarnings("ignore", message="No directory at: ")

# --- Security ----------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# nginx overwrites X-Forwarded-Proto on every request, so the header is only trusted
# because nothing but the proxy reaches the app servers (see nginx/ and k8s/ policies).
TRUST_PROXY_HEADERS = env.bool("TRUST_PROXY_HEADERS", default=False)
if TRUST_PROXY_HEADERS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    USE_X_FORWARDED_HOST = False

# --- Logging ---------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("LOG_FORMAT", default="text")  # "json" for one object per line
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "config.logs.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "filters": {"context": {"()": "config.logs.ContextFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT if LOG_FORMAT in ("json", "text") else "text",
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        # django-axes: failed logins and lockouts (WARNING), not every login and logout.
        "axes": {"level": "WARNING"},
        # psycopg_pool logs every connection request at INFO; its warnings (a broken
        # connection discarded, a failed connection attempt) are the ones to keep.
        "psycopg.pool": {"level": "WARNING"},
    },
}
