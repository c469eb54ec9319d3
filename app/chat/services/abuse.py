"""Abuse limits shared by every replica: open sockets per user and per address, and hourly
budgets for signups (per address) and room creation (per user).

Open sockets. Each admitted WebSocket holds one slot in its user's set and one in its
address's set: Redis sorted sets of connection ids scored by an expiry from Redis's own
clock, checked and filled by one script, so two replicas admitting at once cannot both
take the last slot. The process that holds a slot refreshes it every TTL/3 (jittered;
the TTL is CHAT_PRESENCE_TTL) in one pipeline, and every check drops expired entries
first: a socket whose process died without running disconnect() frees its slots within
the TTL. `release_socket` frees them at once. Limits: CHAT_WS_PER_USER, CHAT_WS_PER_ADDRESS.

Hourly budgets. Signups per client address and rooms created per user are counted in
Django's cache (Redis on REDIS_URL, shared like django-axes' failed-login counts) per
clock hour; past the limit the caller gets `Refused` saying when the hour ends. A
refused attempt does not count. When Redis is unreachable these checks let the request
through (logged, and counted in chat_abuse_checks_skipped_total): pages keep working
through a Redis outage, as they do otherwise.

Without REDIS_URL (`make run`, one process) everything lives in this process's memory.
Refusals raise `Refused`, a ChatError with code `rate_limited`, which names the limit and,
where known, the seconds until a retry can succeed (`retry_after`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import random
import time
import weakref

from django.conf import settings
from django.core.cache import cache
from redis.exceptions import RedisError

from .. import metrics
from ..protocol.errors import ChatError
from ..redis_client import get_redis, run_script, run_scripts, script

log = logging.getLogger(__name__)

HOUR = 3600


class Refused(ChatError):
    """A request over one abuse limit: code `rate_limited`, `limit` names which one."""

    def __init__(self, limit: str, message: str, retry_after: float | None = None):
        super().__init__("rate_limited", message)
        self.limit = limit
        self.retry_after = None if retry_after is None else max(1, math.ceil(retry_after))

    def as_frame(self, for_type: str | None = None, client_id: str | None = None) -> dict:
        frame = super().as_frame(for_type, client_id)
        frame["limit"] = self.limit
        if self.retry_after is not None:
            frame["retry_after"] = self.retry_after
        return frame


def refuse(limit: str, message: str, retry_after: float | None = None) -> Refused:
    """A counted refusal (chat_abuse_refusals_total{limit}), to raise."""
    metrics.ABUSE_REFUSALS.labels(limit).inc()
    return Refused(limit, message, retry_after)


# --- Client addresses ---------------------------------------------------------------


def client_key(address: str | None) -> str:
    """The unit an address limit counts: the IPv4 address, or the IPv6 /64 (one
    subscriber's network: an attacker picks any address inside it at will)."""
    if not address:
        return ""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return address.strip()[:64]
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def http_client_address(request) -> str:
    """The client's address for an HTTP request, as a `client_key`.

    Behind nginx (TRUST_PROXY_HEADERS=1) the peer is nginx, which overwrites X-Real-IP
    and X-Forwarded-For with its own $remote_addr; only then are they read. Without it a
    client could name any address it likes in them.
    """
    if settings.TRUST_PROXY_HEADERS:
        real = request.META.get("HTTP_X_REAL_IP", "").strip()
        if real:
            return client_key(real)
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")[-1].strip()
        if forwarded:
            return client_key(forwarded)
    return client_key(request.META.get("REMOTE_ADDR"))


def scope_address(scope: dict) -> str:
    """The client's address for a WebSocket, as a `client_key`: daphne has already put
    X-Forwarded-For's address in scope["client"] when TRUST_PROXY_HEADERS is on."""
    client = scope.get("client")
    return client_key(client[0]) if client else ""


# --- Hourly budgets (Django's cache) --------------------------------------------------


def _skipped(limit: str, exc: Exception) -> None:
    metrics.ABUSE_SKIPPED.labels(limit).inc()
    log.warning("abuse check %s skipped, Redis unreachable: %r", limit, exc)


def _spend(limit: str, key: str, allowed: int, period: int = HOUR) -> float | None:
    """Count one event for `key` in this clock period: None if within `allowed`, else the
    seconds until the period ends (the refused event is not counted)."""
    now = time.time()
    window = int(now // period)
    name = f"abuse:{limit}:{key}:{window}"
    try:
        if cache.add(name, 1, timeout=period + 60):
            count = 1
        else:
            try:
                count = cache.incr(name)
            except ValueError:  # expired between add and incr
                cache.add(name, 1, timeout=period + 60)
                count = 1
        if count <= allowed:
            return None
        with contextlib.suppress(ValueError):  # ValueError: it expired meanwhile
            cache.decr(name)
    except RedisError as exc:
        _skipped(limit, exc)
        return None
    return (window + 1) * period - now


def _in_minutes(seconds: float) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def allow_signup(address: str) -> None:
    """Count one account created from `address`; raise Refused past
    CHAT_SIGNUPS_PER_ADDRESS_PER_HOUR. Call it before the account is saved."""
    allowed = settings.CHAT_SIGNUPS_PER_ADDRESS_PER_HOUR
    if allowed <= 0 or not address:
        return
    wait = _spend("signup_address", client_key(address), allowed)
    if wait is not None:
        raise refuse(
            "signup_address",
            f"Too many new accounts from your network address (at most {allowed} an hour); "
            f"try again in {_in_minutes(wait)}.",
            wait,
        )


def allow_room_creation(user) -> None:
    """Count one room created by `user`; raise Refused past CHAT_ROOMS_PER_USER_PER_HOUR.
    Staff are not limited. Synchronous: call it where the room is about to be created."""
    allowed = settings.CHAT_ROOMS_PER_USER_PER_HOUR
    if allowed <= 0 or not user.is_authenticated or user.is_staff:
        return
    wait = _spend("room_creation", str(user.pk), allowed)
    if wait is not None:
        raise refuse(
            "room_creation",
            f"You have created too many rooms (at most {allowed} an hour); "
            f"try again in {_in_minutes(wait)}, or join an existing room.",
            wait,
        )


# --- Open sockets: Redis ---------------------------------------------------------------
# One hash tag for every slot key: the admit script touches a user's and an address's key
# at once, which Redis Cluster allows only within one slot.

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# KEYS: the sets to check; ARGV: connection id, ttl, then each key's limit.
# Returns 0 (admitted: a slot taken in every set) or the 1-based index of the full set.
_ADMIT = (
    _NOW
    + """
local ttl = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if not redis.call('ZSCORE', key, ARGV[1])
     and redis.call('ZCARD', key) >= tonumber(ARGV[2 + i]) then
    return i
  end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + ttl, ARGV[1])
  redis.call('EXPIRE', key, math.ceil(ttl * 4))
end
return 0
"""
)

# KEYS[1]: one set; ARGV: ttl, then this process's connection ids in it.
_REFRESH = (
    _NOW
    + """
local exp = now + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], exp, ARGV[i]) end
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) * 4))
return redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
"""
)

_RELEASE = "for _, key in ipairs(KEYS) do redis.call('ZREM', key, ARGV[1]) end return 0"

_COUNT = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""
)


def _ttl() -> float:
    return float(settings.CHAT_PRESENCE_TTL)


def user_slots_key(user_id: int) -> str:
    return f"chat:{{ws-slots}}:user:{user_id}"


def address_slots_key(address: str) -> str:
    return f"chat:{{ws-slots}}:addr:{address}"


class RedisSlots:
    async def admit(self, conn: str, keys: list[str], limits: list[int]) -> int:
        return int(await run_script(_ADMIT, keys, [conn, _ttl(), *limits]))

    async def release(self, conn: str, keys: list[str]) -> None:
        await run_script(_RELEASE, keys, [conn])

    async def refresh(self, by_key: dict[str, list[str]]) -> None:
        calls = [(_REFRESH, [key], [_ttl(), *conns]) for key, conns in by_key.items()]
        await run_scripts(calls, raise_on_error=True)

    async def count(self, key: str) -> int:
        return int(await script(_COUNT)(keys=[key], args=[], client=get_redis()))


# --- Open sockets: memory (one process: make run) ----------------------------------------


class MemorySlots:
    def __init__(self) -> None:
        self._sets: dict[str, dict[str, float]] = {}  # key -> connection id -> expiry

    def _live(self, key: str, now: float) -> dict[str, float]:
        entries = self._sets.setdefault(key, {})
        for conn in [c for c, exp in entries.items() if exp <= now]:
            del entries[conn]
        return entries

    async def admit(self, conn: str, keys: list[str], limits: list[int]) -> int:
        now = time.monotonic()
        for i, (key, limit) in enumerate(zip(keys, limits, strict=True), start=1):
            entries = self._live(key, now)
            if conn not in entries and len(entries) >= limit:
                return i
        for key in keys:
            self._sets[key][conn] = now + _ttl()
        return 0

    async def release(self, conn: str, keys: list[str]) -> None:
        for key in keys:
            entries = self._sets.get(key)
            if entries is not None:
                entries.pop(conn, None)
                if not entries:
                    del self._sets[key]

    async def refresh(self, by_key: dict[str, list[str]]) -> None:
        now = time.monotonic()
        for key, conns in by_key.items():
            entries = self._live(key, now)
            for conn in conns:
                entries[conn] = now + _ttl()

    async def count(self, key: str) -> int:
        return len(self._live(key, time.monotonic()))


_memory = MemorySlots()
_redis = RedisSlots()


def slots() -> RedisSlots | MemorySlots:
    return _redis if settings.REDIS_URL else _memory


# --- Heartbeats: one task per process (per event loop) -----------------------------------


class SlotKeeper:
    """Refreshes the slots of this process's sockets until they are released."""

    def __init__(self) -> None:
        self.held: dict[str, list[str]] = {}  # connection id -> its slot keys
        self.slots = 0  # keys held over all connections (kept, not summed: a storm adds many)
        self._task: asyncio.Task | None = None

    def add(self, conn: str, keys: list[str]) -> None:
        self.slots -= len(self.held.get(conn, ()))
        self.held[conn] = keys
        self.slots += len(keys)
        metrics.ABUSE_SOCKET_SLOTS.set(self.slots)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def discard(self, conn: str) -> list[str] | None:
        keys = self.held.pop(conn, None)
        self.slots -= len(keys or ())
        metrics.ABUSE_SOCKET_SLOTS.set(self.slots)
        return keys

    async def _run(self) -> None:
        while self.held:
            interval = _ttl() / 3
            await asyncio.sleep(interval * random.uniform(0.8, 1.0))
            try:
                await self.beat()
            except Exception:
                log.exception("socket slot heartbeat failed; retrying in %.0f s", interval)

    async def beat(self) -> None:
        by_key: dict[str, list[str]] = {}
        for conn, keys in list(self.held.items()):
            for key in keys:
                by_key.setdefault(key, []).append(conn)
        if by_key:
            await slots().refresh(by_key)


_keepers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SlotKeeper] = (
    weakref.WeakKeyDictionary()
)


def keeper() -> SlotKeeper:
    loop = asyncio.get_running_loop()
    if loop not in _keepers:
        _keepers[loop] = SlotKeeper()
    return _keepers[loop]


# --- What consumers call -------------------------------------------------------------------


def _socket_limits(user_id: int | None, address: str | None) -> list[tuple[str, int, str]]:
    """(key, limit, limit name) of each socket limit that applies."""
    found = []
    per_user = settings.CHAT_WS_PER_USER
    if user_id is not None and per_user > 0:
        found.append((user_slots_key(user_id), per_user, "ws_user"))
    per_address = settings.CHAT_WS_PER_ADDRESS
    address = client_key(address)
    if address and per_address > 0:
        found.append((address_slots_key(address), per_address, "ws_address"))
    return found


async def admit_socket(user_id: int | None, address: str | None, conn_id: str) -> None:
    """Take a slot for WebSocket `conn_id` of `user_id` (None: anonymous) from `address`,
    or raise Refused (`rate_limited`, limit `ws_user` or `ws_address`). Admitting the same
    connection again is a no-op. Redis errors propagate (the socket cannot work anyway).
    Pair with `release_socket(conn_id)` when the socket goes."""
    found = _socket_limits(user_id, address)
    if not found:
        return
    keys = [key for key, _, _ in found]
    full = await slots().admit(conn_id, keys, [limit for _, limit, _ in found])
    if full:
        _, limit, name = found[full - 1]
        if name == "ws_user":
            message = (
                f"Too many open connections for your account (at most {limit} at once); "
                "close another tab or window, then reconnect."
            )
        else:
            message = (
                f"Too many open connections from your network address (at most {limit} "
                "at once); close some, then reconnect."
            )
        raise refuse(name, message)
    keeper().add(conn_id, keys)


async def release_socket(conn_id: str) -> None:
    """Give back the slots of `conn_id` (idempotent; unknown ids are ignored). If Redis
    cannot be told, the slots expire within CHAT_PRESENCE_TTL all the same."""
    keys = keeper().discard(conn_id)
    if keys:
        await slots().release(conn_id, keys)


async def open_sockets(*, user_id: int | None = None, address: str | None = None) -> int:
    """Live slots held for one user or one address, across all replicas (for tests, ops)."""
    key = user_slots_key(user_id) if user_id is not None else address_slots_key(client_key(address))
    return await slots().count(key)
