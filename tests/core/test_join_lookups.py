"""What a join looks up, made cheap: a valid token's user is remembered briefly
(accounts/auth.py TokenCache), and with persistent connections the token's user and an
existing room are read on the loop's own connection, as the ORM would read them."""

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


@pytest.fixture
async def own_connection(settings, monkeypatch):
    """Persistent connections on, as in production: the look-up uses the loop's own."""
    from asgiref.sync import sync_to_async
    from django.db import connections

    from chat import pg_client

    monkeypatch.setitem(settings.DATABASES["default"], "CONN_MAX_AGE", 60)
    assert pg_client.enabled()
    auth.token_cache.clear()
    yield
    await pg_client.close()
    await sync_to_async(connections.close_all)()


async def test_the_look_up_on_the_loops_own_connection_is_the_orms(make_user, own_connection):
    def setup():
        staff = make_user("sam")
        staff.is_staff = True
        staff.save()
        gone = make_user("gone")
        gone.is_active = False
        gone.save()
        return staff, ApiToken.issue(staff)[1], ApiToken.issue(gone)[1]

    staff, token, inactive = await database_sync_to_async(setup)()
    user = await auth.websocket_user_for_token(token)
    orm = await database_sync_to_async(auth.user_for_token)(token)
    assert user == orm == staff
    assert (user.username, user.is_staff, user.is_active) == ("sam", True, True)
    assert user._state.adding is False and user.is_authenticated
    assert await auth.websocket_user_for_token(inactive) is None
    assert await auth.websocket_user_for_token("no-such-token") is None
    assert await auth.websocket_user_for_token("") is None


async def test_an_existing_room_is_read_on_the_loops_own_connection(
    make_user, room, own_connection
):
    from chat.models import Room
    from chat.protocol.errors import ChatError
    from chat.services import rooms

    def setup():
        return make_user("amy"), room("lobby"), room("ops", staff_only=True)

    amy, lobby, _ = await database_sync_to_async(setup)()
    found = await rooms.open_room_async("lobby", amy)
    assert found == lobby and found.name == "lobby" and found.staff_only is False
    assert found._state.adding is False
    with pytest.raises(ChatError) as refused:
        await rooms.open_room_async("ops", amy)
    assert refused.value.code == "forbidden"
    with pytest.raises(ChatError) as invalid:
        await rooms.open_room_async("no spaces", amy)
    assert invalid.value.code == "not_found"
    created = await rooms.open_room_async("fresh", amy)  # not there: the ORM creates it
    assert await Room.objects.filter(pk=created.pk, name="fresh").aexists()
