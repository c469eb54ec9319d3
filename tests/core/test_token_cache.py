"""WebSocket handshakes remember a valid token's user briefly (accounts/auth.py TokenCache)."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from accounts import auth
from accounts.models import ApiToken

from .conftest import recv

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def lookups(monkeypatch):
    """Counts the database look-ups of tokens."""
    auth.token_cache.clear()
    calls: list[str] = []
    original = auth.user_for_token

    def counted(token):
        calls.append(token)
        return original(token)

    monkeypatch.setattr(auth, "user_for_token", counted)
    yield calls
    auth.token_cache.clear()


async def test_a_reconnect_within_the_ttl_skips_the_look_up(ws, make_user, lookups, settings):
    settings.CHAT_WS_AUTH_CACHE = 30.0
    alice = await database_sync_to_async(make_user)("alice")
    token = await database_sync_to_async(lambda: ApiToken.issue(alice)[1])()
    first = await ws.connect(token=token)
    await first.disconnect()
    await ws.connect(token=token)
    assert lookups == [token]


async def test_no_cache_when_off_and_bad_tokens_are_never_kept(ws, make_user, lookups, settings):
    settings.CHAT_WS_AUTH_CACHE = 0
    alice = await database_sync_to_async(make_user)("alice")
    token = await database_sync_to_async(lambda: ApiToken.issue(alice)[1])()
    await ws.connect(token=token)
    await ws.connect(token=token)
    assert lookups == [token, token]
    settings.CHAT_WS_AUTH_CACHE = 30.0
    for _ in range(2):
        bad = await ws.connect(token="not-a-token", skip_greeting=False)
        assert (await recv(bad))["code"] == "not_authenticated"
    assert lookups[2:] == ["not-a-token", "not-a-token"]


def test_the_cache_is_bounded_and_expires(settings, monkeypatch):
    settings.CHAT_WS_AUTH_CACHE = 10.0
    cache = auth.TokenCache(size=2)
    now = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: now[0])
    for name in ("a", "b", "c"):
        cache.put(name, f"user-{name}")
    assert cache.get("a") is None  # the least recently used went first
    assert cache.get("b") == "user-b" and cache.get("c") == "user-c"
    now[0] += 10.0
    assert cache.get("b") is None  # expired
