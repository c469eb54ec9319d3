"""Per-user token bucket shared by every replica (Redis) or by the one process (memory).

CHAT_RATE_LIMIT_PER_SECOND refills the bucket, CHAT_RATE_LIMIT_BURST is its size; sends,
edits, reactions and typing each take one token, on the WebSocket and the HTTP API alike.
"""

from __future__ import annotations

import time

from django.conf import settings

from ..protocol.errors import ChatError
from ..redis_client import get_redis, script, shard_for_key

_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return allowed
"""

_ONCE = "return redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) and 1 or 0"

# Memory backend: user key -> (tokens, last refill time); throttle key -> until.
_buckets: dict[str, tuple[float, float]] = {}
_until: dict[str, float] = {}


async def _take(key: str, rate: float, burst: int) -> bool:
    if settings.REDIS_URL:
        bucket = script(_BUCKET)
        client = get_redis(shard_for_key(key))
        return bool(await bucket(keys=[key], args=[rate, burst], client=client))
    now = time.monotonic()
    tokens, at = _buckets.get(key, (float(burst), now))
    tokens = min(burst, tokens + (now - at) * rate)
    allowed = tokens >= 1
    _buckets[key] = (tokens - 1 if allowed else tokens, now)
    return allowed


async def consume(user_id: int) -> None:
    """Spend one token of the user's budget, or raise rate_limited."""
    rate = settings.CHAT_RATE_LIMIT_PER_SECOND
    burst = settings.CHAT_RATE_LIMIT_BURST
    if rate <= 0:
        return
    if not await _take(f"chat:rate:{user_id}", rate, burst):
        raise ChatError(
            "rate_limited",
            f"Slow down: at most {rate:g} actions per second (bursts of {burst}).",
        )


async def once_per(key: str, seconds: float) -> bool:
    """True for the first call per `key` in any `seconds` window (e.g. typing notices)."""
    if settings.REDIS_URL:
        once = script(_ONCE)
        name = f"chat:once:{key}"
        client = get_redis(shard_for_key(name))
        ok = await once(keys=[name], args=[int(seconds * 1000)], client=client)
        return bool(ok)
    now = time.monotonic()
    if _until.get(key, 0) > now:
        return False
    _until[key] = now + seconds
    return True


class ConnectionBudget:
    """A token bucket owned by one connection, for replies that cost the server far more
    than the request costs the client (a history page per small frame). It lives and dies
    with the socket: no Redis round trip, nothing to clean up."""

    def __init__(self, rate: float, burst: int, what: str):
        self.rate, self.burst, self.what = rate, burst, what
        self.tokens = float(burst)
        self.at = time.monotonic()

    def spend(self) -> None:
        """Take one token, or raise rate_limited saying when the next one comes."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            wait = (1 - self.tokens) / self.rate
            raise ChatError(
                "rate_limited",
                f"Too many {self.what} on this connection: at most {self.rate:g} per second "
                f"(bursts of {self.burst}); try again in {wait:.1f} s.",
            )
        self.tokens -= 1
