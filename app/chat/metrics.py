"""Prometheus metrics of one process; under gunicorn they are aggregated through
PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from .protocol import frames, inbound

WS_OPEN = Gauge("chat_ws_connections", "Open WebSocket connections.", multiprocess_mode="livesum")
WS_CONNECTS = Counter("chat_ws_connects_total", "WebSocket handshakes by outcome.", ["outcome"])
WS_CLOSES = Counter("chat_ws_disconnects_total", "WebSocket disconnects by close code.", ["code"])
FRAMES_IN = Counter("chat_ws_frames_in_total", "Frames received by type.", ["type"])
FRAMES_OUT = Counter("chat_ws_frames_out_total", "Frames sent by type.", ["type"])
FANOUT_WRITES = Counter(
    "chat_ws_fanout_writes_total",
    "Fan-out frames by how they reached the socket: the server's frame writer (direct) or "
    "the ASGI send (send; the direct_writer fast path off, or a server without one).",
    ["path"],
)
FRAMES_QUEUED = Counter(
    "chat_ws_frames_queued_total",
    "Frames a socket could not take at once and the server buffered (slow or stalled readers).",
)
SLOW_DISCONNECTS = Counter(
    "chat_ws_slow_disconnects_total",
    "WebSockets closed with 4008 because their unsent backlog passed CHAT_WS_MAX_BUFFER.",
)
ERRORS = Counter("chat_ws_errors_total", "Error frames sent by code.", ["code"])
BROADCASTS = Counter(
    "chat_broadcasts_total", "Events handed to the channel layer by frame type.", ["type"]
)
LAYER_SEND_SECONDS = Histogram(
    "chat_layer_send_seconds",
    "Time to hand one event to the channel layer.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
FANOUT_SECONDS = Histogram(
    "chat_fanout_seconds",
    "From an event's group_send to its last local socket write on this process (wall "
    "clocks of two processes: trust it to the precision of their clock sync).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
FANOUT_GROUPS = Gauge(
    "chat_fanout_groups",
    "Channel-layer groups (rooms, inboxes) this process subscribes to, once each.",
    multiprocess_mode="livesum",
)
LAYER_ERRORS = Counter(
    "chat_layer_errors_total",
    "Channel-layer calls that failed, by operation (send, receive, group) and cause "
    "(the exception's class: ConnectionError, TimeoutError, ReadOnlyError, …).",
    ["op", "cause"],
)
# Redis connections (chat/redis_servers.py): which master a Sentinel-managed pool uses,
# failovers this process has followed, and connections opened again after a loss.
REDIS_MASTER = Gauge(
    "chat_redis_master",
    "1 for the master address this process uses for a Sentinel-watched Redis.",
    ["server", "address"],
    multiprocess_mode="liveall",
)
REDIS_FAILOVERS = Counter(
    "chat_redis_failovers_seen_total",
    "Times this process found a Sentinel-watched Redis at a new master address.",
    ["server"],
)
REDIS_RECONNECTS = Counter(
    "chat_redis_reconnects_total",
    "Redis connections opened again after they were lost, by client "
    "(app: presence and limits; layer; cache; health).",
    ["client"],
)
LAYER_DROPS = Counter(
    "chat_layer_dropped_total",
    "Deliveries the channel layer dropped because a process queue was at capacity.",
)
PRESENCE_ENTRIES = Gauge(
    "chat_presence_entries",
    "Presence entries (logged-in connections) this process keeps alive.",
    multiprocess_mode="livesum",
)
PRESENCE_BATCH_NAMES = Histogram(
    "chat_presence_batch_names",
    "Names (joins + leaves) in one presence frame sent to a room.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 1000, 5000),
)
SHARED_HISTORY = Counter(
    "chat_shared_history_total",
    "Join and resume history: read from the database, or shared with another socket.",
    ["kind", "source"],
)
MESSAGES_STORED = Counter("chat_messages_stored_total", "Messages stored, by kind.", ["kind"])
DEPENDENCY_UP = Gauge(
    "chat_dependency_up",
    "1 when the last readiness check reached the dependency, else 0.",
    ["dependency"],
    # gunicorn: the newest check of any live worker, so one worker's stale 0 does not
    # outlive a recovery that another worker has seen.
    multiprocess_mode="livemostrecent",
)
# The PostgreSQL pools of the server's event loops (chat/pg_client.py), read from
# psycopg_pool's get_stats() when scraped.
PG_POOL_CONNECTIONS = Gauge(
    "chat_pg_pool_connections",
    "Connections of the event loop's PostgreSQL pool (open, or being opened).",
    multiprocess_mode="livesum",
)
PG_POOL_IDLE = Gauge(
    "chat_pg_pool_idle_connections",
    "Connections of the event loop's PostgreSQL pool that wait, unused, for a statement.",
    multiprocess_mode="livesum",
)
PG_POOL_WAITING = Gauge(
    "chat_pg_pool_waiting",
    "Statements waiting for a connection of the event loop's PostgreSQL pool.",
    multiprocess_mode="livesum",
)
PG_POOL_TIMEOUTS = Counter(
    "chat_pg_pool_timeouts_total",
    "Statements that waited CHAT_PG_POOL_TIMEOUT for a pooled connection and failed "
    "as `unavailable`.",
)
HTTP_REQUESTS = Counter(
    "chat_http_requests_total", "HTTP requests by method and status.", ["method", "status"]
)

# Every frame type of the protocol, either way (a label per type, and no more).
KNOWN_FRAME_TYPES = inbound.TYPES | frames.TYPES


def frame_label(kind: object) -> str:
    """A bounded label: client-chosen type names never become new time series."""
    return kind if isinstance(kind, str) and kind in KNOWN_FRAME_TYPES else "other"


# Abuse limits (services/abuse.py, accounts/throttle.py): every series exists from the start.
ABUSE_LIMITS = (
    "login_username",
    "login_address",
    "signup_address",
    "room_creation",
    "ws_user",
    "ws_address",
)
ABUSE_REFUSALS = Counter(
    "chat_abuse_refusals_total", "Requests refused by an abuse limit, by limit.", ["limit"]
)
# The HTTP-side checks let a request through when Redis is unreachable (a socket, which
# needs Redis anyway, is refused with `unavailable` instead).
ABUSE_SKIPPED = Counter(
    "chat_abuse_checks_skipped_total",
    "HTTP-side abuse checks let through unchecked because Redis was unreachable, by check.",
    ["limit"],
)
for _limit in ABUSE_LIMITS:
    ABUSE_REFUSALS.labels(_limit)
for _limit in ("login", "signup_address", "room_creation"):
    ABUSE_SKIPPED.labels(_limit)
ABUSE_SOCKET_SLOTS = Gauge(
    "chat_abuse_socket_slots",
    "WebSocket slots (per-user and per-address counts) this process holds and refreshes.",
    multiprocess_mode="livesum",
)

# Admission control (services/admission.py): handshakes this process refused (503 before
# the upgrade; `overloaded` + 1013 under a server without the denial response) because it
# had CHAT_WS_MAX_HANDSHAKES joins in progress (`handshakes`) or CHAT_WS_MAX_CONNECTIONS
# sockets (`connections`), and the joins in progress now. Behind nginx most refusals are
# passed on to another replica, unseen by the client: nginx's access log says which were
# not (status 503).
ADMISSION_REFUSALS = Counter(
    "chat_ws_admission_refusals_total",
    "WebSocket handshakes refused by admission control (503 + Retry-After), by reason.",
    ["reason"],
)
for _reason in ("handshakes", "connections"):
    ADMISSION_REFUSALS.labels(_reason)
WS_JOINING = Gauge(
    "chat_ws_joins_in_progress",
    "WebSocket joins in progress (connect until the greeting is sent).",
    multiprocess_mode="livesum",
)
